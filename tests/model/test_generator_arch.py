"""Both generator architectures: shapes and dtypes for every preset, the beam projection, the choice recorded
in checkpoints, exact resume, and checkpoints that name no architecture (the global-vector G)."""
import math

import numpy as np
import pytest
import torch

from xpgan.drr.geometry import make_geometry
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.beam import example_beam, study_beam
from xpgan.model.config import G_ARCH_NAMES, TrainConfig
from xpgan.model.generate import generate
from xpgan.model.networks import (
    G_ARCHS,
    PRESETS,
    BeamProjection,
    Generator,
    NetConfig,
    encoder_plan,
    net_config_for,
    projection_plan,
)
from xpgan.pipeline import schema


def test_architecture_names_have_one_owner():
    assert set(G_ARCH_NAMES) == set(G_ARCHS)
    assert TrainConfig().g_arch == NetConfig().g_arch == "projected"


@pytest.mark.parametrize("arch", sorted(G_ARCHS))
def test_tiny_shapes_dtypes_and_mapping_rate(arch):
    cfg = net_config_for("tiny", (8, 32, 32), 32, g_arch=arch)
    assert cfg.mapping_lr_mult == G_ARCHS[arch]
    G = Generator(cfg)
    with torch.no_grad():
        y = G(torch.rand(3, 1, 8, 32, 32) * 2 - 1, torch.from_numpy(example_beam((8, 32, 32), 32, 3)))
    assert y.shape == (3, 1, 32, 32) and y.dtype == torch.float32
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert all(layer.lr_mult == G_ARCHS[arch] for layer in G.mapping.layers)
    assert (G.projections is not None) == (arch == "projected")


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(G_ARCHS))
def test_paper_preset_shapes(arch):
    G = Generator(net_config_for("paper", (64, 256, 256), 256, g_arch=arch))
    with torch.no_grad():
        y = G(torch.zeros(1, 1, 64, 256, 256), torch.from_numpy(example_beam((64, 256, 256), 256, 1)))
    assert y.shape == (1, 1, 256, 256) and y.dtype == torch.float32


def test_projection_plan_feeds_each_resolution_its_matching_level():
    cfg = PRESETS["paper"]
    plan = projection_plan(cfg)
    levels = encoder_plan(cfg)
    assert plan == {4: 6, 8: 5, 16: 4, 32: 3, 64: 2, 128: 1, 256: 0}
    assert all(levels[lvl][0][2] == res for res, lvl in plan.items())       # right-left size = resolution
    tiny = projection_plan(net_config_for("tiny", (32, 64, 64), 64))
    assert tiny == {4: 4, 8: 3, 16: 2, 32: 1, 64: 0}


def test_beam_projection_starts_as_the_mean_along_the_beam_and_keeps_the_detector_frame():
    # parallel beam, one detector pixel per voxel column (equal d and w extents): the map is the volume's
    # mean along the beam, sampled at voxel centres, rows superior->inferior and columns right->left
    shape = (6, 5, 6)
    r = torch.from_numpy(study_beam(make_geometry("parallel", size=6), shape, (1.0, 2.0, 1.0)))[None].repeat(3, 1, 1)
    x = torch.randn(3, 2, *shape)                                              # [N, C, D, H(AP), W(RL)]
    for slabs in (1, 2, 5):
        proj = BeamProjection(channels=2, depth=5, slabs=slabs)
        torch.testing.assert_close(proj(x, r, 6), x.mean(dim=3))
        with torch.no_grad():
            proj.weight.zero_()
            proj.weight[:, 2] = 5.0                                            # only the middle AP plane
        torch.testing.assert_close(proj(x, r, 6), x[:, :, :, 2])


@pytest.mark.parametrize("view", ["pa", "ap"])
def test_beam_projection_puts_a_point_where_the_siddon_drr_puts_it(view):
    # one dense voxel off-centre, near the source or the detector: the cone beam magnifies it differently;
    # the projection with one slab per plane must put it where the DRR renderer's image has it
    from xpgan.drr import render_drr

    shape, spacing, size = (12, 16, 16), (8.0, 6.0, 6.0), 128   # pixels much finer than voxels
    geometry = make_geometry("cone", view=view, size=size, sid_mm=300.0, sdd_mm=400.0)
    r = torch.from_numpy(study_beam(geometry, shape, spacing))[None]
    for voxel in [(2, 1, 3), (9, 14, 12), (5, 8, 2)]:
        vol = np.full(shape, -1000.0, np.float32)
        vol[voxel] = 3000.0
        drr = render_drr(vol, spacing, geometry, backend="cpu", output="line_integral")
        proj = BeamProjection(channels=1, depth=shape[1], slabs=shape[1])
        x = torch.from_numpy(vol + 1000.0)[None, None]
        with torch.no_grad():
            mapped = proj(x, r, size)[0, 0].numpy()
        np.testing.assert_allclose(centroid(mapped), centroid(drr), atol=0.25)


def centroid(img: np.ndarray) -> np.ndarray:
    """Intensity-weighted (row, column) centre of an image, pixels."""
    rr, cc = np.meshgrid(np.arange(img.shape[0]), np.arange(img.shape[1]), indexing="ij")
    return np.array([(img * rr).sum(), (img * cc).sum()]) / img.sum()


def test_study_beams_follow_each_study_spacing(toy_stores):
    from xpgan.model.data import CTDataset

    ct, _ = toy_stores
    ds = CTDataset(ct)
    item = ds[0]
    assert item["beam"].shape == (8, 3) and item["beam"].dtype == np.float32
    geometry, mu_water = schema.ct_render_setup(schema.open_store(ct, "ct"), ct, "")
    spacing = schema.read(schema.open_store(ct, "ct"), ct, "spacing")[item["index"]]
    np.testing.assert_allclose(item["beam"], study_beam(geometry, ds.ct_shape, spacing, mu_water), rtol=1e-6)
    np.testing.assert_allclose(item["beam"][6], spacing, rtol=1e-6)


def test_a_config_that_names_no_architecture_is_the_vector_generator():
    d = PRESETS["tiny"].to_dict()
    d.pop("g_arch")
    d["mapping_lr_mult"] = 0.01
    cfg = NetConfig.from_dict(d)
    assert cfg.g_arch == "vector" and cfg.mapping_lr_mult == 0.01
    assert TrainConfig.from_dict({"mode": "xpgan"}).g_arch == "vector"


@pytest.mark.slow
def test_old_vector_checkpoint_loads_for_generate(toy_stores, tmp_path, xpgan_config, one_thread):
    from xpgan.model.train import train

    ct, cxr = toy_stores
    res = train(xpgan_config(ct, cxr, tmp_path / "run", g_arch="vector"))
    st = ckpt_io.load(res.checkpoint)
    assert st["net"]["g_arch"] == "vector" and st["config"]["g_arch"] == "vector"
    # a checkpoint written before the architecture was recorded
    del st["net"]["g_arch"], st["config"]["g_arch"]
    st["net"]["mapping_lr_mult"] = 0.01
    old = ckpt_io.save_atomic(st, tmp_path / "old.pt")
    G = ckpt_io.networks_from_checkpoint(ckpt_io.load(old), ("G_ema",), torch.device("cpu"))["G_ema"]
    assert G.cfg.g_arch == "vector" and G.projections is None
    out = generate(old, ct, tmp_path / "gen", limit=2, device="cpu")
    assert len(out["images"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(G_ARCHS))
def test_resume_is_exact_for_both_architectures(toy_stores, tmp_path, xpgan_config, one_thread, arch):
    from xpgan.model.train import train

    ct, cxr = toy_stores
    full = train(xpgan_config(ct, cxr, tmp_path / "full", g_arch=arch))
    train(xpgan_config(ct, cxr, tmp_path / "part", g_arch=arch, stop_at=2))
    resumed = train(xpgan_config(ct, cxr, tmp_path / "part", g_arch=arch, resume="latest"))
    assert resumed.digests == full.digests
    assert ckpt_io.load(resumed.checkpoint)["net"]["g_arch"] == arch
    assert math.isfinite(resumed.last_stats["loss/G_l1"])
    assert set(full.digests) == {"G", "D", "C", "G_ema"}


def test_projected_generator_refuses_a_store_without_geometry(store_writers, tmp_path, xpgan_config, one_thread):
    from xpgan.errors import InputError
    from xpgan.model.greport import generate_images
    from xpgan.model.train import train

    bare = store_writers[0](tmp_path / "bare.zarr", n=8, geometry=False)
    cxr = store_writers[1](tmp_path / "cxr.zarr", n=16)
    with pytest.raises(InputError, match=r"bare\.zarr: the store records no DRR geometry"):
        train(xpgan_config(bare, cxr, tmp_path / "run"))
    G = Generator(net_config_for("tiny", (8, 32, 32), 32))
    with pytest.raises(InputError, match=r"bare\.zarr: the store records no DRR geometry"):
        generate_images(G, bare, (-1000.0, 1000.0), torch.device("cpu"))
    vector = Generator(net_config_for("tiny", (8, 32, 32), 32, g_arch="vector"))
    assert generate_images(vector, bare, (-1000.0, 1000.0), torch.device("cpu")).fake.shape[0] == 8
