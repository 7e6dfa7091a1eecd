import numpy as np
import pytest
import torch
from PIL import Image

from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.data import CTDataset
from xpgan.model.generate import generate
from xpgan.model.networks import Generator, NetConfig


def test_generate_writes_g_ema_pngs_and_grid(tiny_xpgan_run, toy_stores, tmp_path):
    cfg, result = tiny_xpgan_run
    ct, _ = toy_stores
    out = generate(result.checkpoint, ct, tmp_path / "gen", limit=5, device="cpu")
    assert [p.split("/")[-1] for p in out["images"]] == [f"{i:06d}_study_{i:04d}.png" for i in range(5)]
    first = np.asarray(Image.open(out["images"][0]))
    assert first.shape == (32, 32) and first.dtype == np.uint8
    # the PNG is G_ema(ct) with constant noise, quantised to 8 bits
    st = ckpt_io.load(result.checkpoint)
    G = Generator(NetConfig.from_dict(st["net"]))
    G.load_state_dict(st["models"]["G_ema"])
    G.eval()
    with torch.no_grad():
        want = G(torch.from_numpy(CTDataset(ct)[0]["ct"][None]), noise_mode="const")[0, 0].numpy()
    np.testing.assert_allclose(first / 255.0, want, atol=1 / 255 + 1e-6)
    grid = np.asarray(Image.open(out["grid"]))
    assert grid.shape == (5 * 32, 2 * 32)


def test_generate_needs_a_generator(tmp_path, toy_stores):
    ct, _ = toy_stores
    path = ckpt_io.save_atomic({"models": {"C": {}}, "config": {"mode": "baseline"}, "net": NetConfig(
        ct_shape=(8, 32, 32), img_res=32).to_dict(), "step": 1}, tmp_path / "c.pt")
    with pytest.raises(XPGANError, match="mode baseline.*no G_ema"):
        generate(path, ct, tmp_path / "gen", device="cpu")
