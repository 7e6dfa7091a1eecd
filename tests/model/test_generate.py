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
        item = CTDataset(ct)[0]
        want = G(torch.from_numpy(item["ct"][None]), torch.from_numpy(item["beam"][None]),
                 noise_mode="const")[0, 0].numpy()
    np.testing.assert_allclose(first / 255.0, want, atol=1 / 255 + 1e-6)
    grid = np.asarray(Image.open(out["grid"]))
    assert grid.shape[0] > 5 * 32 and grid.shape[1] > 2 * 32   # five rows of [DRR | G], titled and labelled


def test_grid_rows_are_labelled_with_their_study_ids_labels_and_grades(tiny_xpgan_run, toy_stores, tmp_path):
    from xpgan.model.generate import GRID_TITLES
    from xpgan.pipeline.picture import labelled_grid

    cfg, result = tiny_xpgan_run
    ct, _ = toy_stores
    out = generate(result.checkpoint, ct, tmp_path / "gen", limit=2, device="cpu")
    tiles = [[CTDataset(ct)[i]["drr"][0], np.asarray(Image.open(out["images"][i])) / 255.0] for i in range(2)]
    want = labelled_grid(tiles, col_titles=GRID_TITLES,
                         row_labels=["study_0000\nnegative CT-0", "study_0001\nCOVID-19 CT-2"])
    np.testing.assert_array_equal(np.asarray(Image.open(out["grid"])), want)


def test_a_second_run_replaces_the_first_runs_images(tiny_xpgan_run, toy_stores, tmp_path):
    cfg, result = tiny_xpgan_run
    ct, _ = toy_stores
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "notes.txt").write_text("mine")
    generate(result.checkpoint, ct, tmp_path / "gen", limit=4, device="cpu")
    out = generate(result.checkpoint, ct, tmp_path / "gen", limit=2, device="cpu")
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == sorted(
        ["notes.txt", "grid.png", "g_report.json"] + [p.split("/")[-1] for p in out["images"]])
    assert len(out["images"]) == 2


def test_generate_takes_a_run_folder_as_its_newest_checkpoint(tiny_xpgan_run, toy_stores, tmp_path):
    cfg, result = tiny_xpgan_run
    ct, _ = toy_stores
    a = generate(result.run_dir, ct, tmp_path / "a", limit=1, device="cpu")
    b = generate(result.checkpoint, ct, tmp_path / "b", limit=1, device="cpu")
    assert Image.open(a["images"][0]).tobytes() == Image.open(b["images"][0]).tobytes()


def test_generate_needs_a_generator(tmp_path, toy_stores):
    ct, _ = toy_stores
    path = ckpt_io.save_atomic({"models": {"C": {}}, "config": {"mode": "baseline"}, "net": NetConfig(
        ct_shape=(8, 32, 32), img_res=32).to_dict(), "step": 1}, tmp_path / "c.pt")
    with pytest.raises(XPGANError, match="mode baseline.*no G_ema"):
        generate(path, ct, tmp_path / "gen", device="cpu")


def test_generate_writes_the_generator_report(tiny_xpgan_run, toy_stores, tmp_path):
    import json

    from xpgan.model.greport import summary_line

    cfg, result = tiny_xpgan_run
    ct, _ = toy_stores
    out = generate(result.checkpoint, ct, tmp_path / "gen", limit=6, device="cpu")
    rep = json.loads((tmp_path / "gen" / "g_report.json").read_text())
    assert rep["studies"] == 6 and 0.0 <= rep["identification"] <= 1.0
    assert rep["identification_chance"] == pytest.approx(1 / 6)
    assert rep["follows_study"] == out["report"]["follows_study"]
    line = summary_line(out["report"])
    assert ("G follows the study" in line) == out["report"]["follows_study"]
    assert "of 6 studies" in line
