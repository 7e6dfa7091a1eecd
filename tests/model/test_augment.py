"""--drr-aug: posed DRR samples equal the posed renders, keyed draws, workers, options and bit-exact resume."""
import numpy as np
import pytest
import torch
import zarr

from xpgan.drr import ConeGeometry, render_drr
from xpgan.drr.physics import line_integral_to_image
from xpgan.drr.poses import PoseRanges, apply_pose, random_pose, resample_to_pose
from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.augment import RNG_SALT, AugmentedCT, finish_on_device
from xpgan.model.config import TrainConfig
from xpgan.model.data import BatchStream, CTDataset
from xpgan.model.train import train
from xpgan.model.transforms import normalize_hu

GEOMETRY = ConeGeometry(view="pa", size=32)  # store DRRs are 32 px


def with_geometry(path, geometry=GEOMETRY, mu_water=0.02):
    g = zarr.open_group(str(path), mode="r+")
    meta = dict(g.attrs["xpgan"])
    meta.update(geometry=geometry.to_dict(), physics={"mu_water_per_mm": mu_water})
    g.attrs["xpgan"] = meta
    return path


@pytest.fixture(scope="module")
def aug_stores(tmp_path_factory, store_writers):
    write_ct_store, write_cxr_store = store_writers
    root = tmp_path_factory.mktemp("aug_stores")
    return with_geometry(write_ct_store(root / "ct.zarr", n=24)), write_cxr_store(root / "cxr.zarr", n=48)


def stored(ct, j):
    g = zarr.open_group(str(ct), mode="r")
    return np.asarray(g["volume"][j]), np.asarray(g["spacing"][j], np.float64)


def test_drr_mode_sample_is_the_posed_render_of_the_stored_volume(aug_stores):
    ct, _ = aug_stores
    ds = AugmentedCT(CTDataset(ct, with_volume=False), train_mode="drr", aug="pose", seed=5)
    item = ds[(3, 17)]
    hu, spacing = stored(ct, item["index"])
    pose = random_pose(np.random.default_rng([5, RNG_SALT, 0, 17]))
    want = render_drr(hu, spacing, apply_pose(GEOMETRY, pose), backend="cpu", mu_water=0.02)
    assert item["drr"].shape == (1, 32, 32) and "ct" not in item
    np.testing.assert_array_equal(item["drr"][0], want)
    assert not np.array_equal(ds[(3, 18)]["drr"], item["drr"])  # another draw, another pose
    # a zero-width range renders the store's own geometry
    still = AugmentedCT(CTDataset(ct, with_volume=False), train_mode="drr", aug="pose", seed=5,
                        ranges=PoseRanges(0.0, 0.0, 0.0, (0.0, 0.0, 0.0), (1600.0, 1600.0)))
    np.testing.assert_array_equal(still[(3, 17)]["drr"][0], render_drr(hu, spacing, GEOMETRY, backend="cpu"))


def test_intensity_scales_the_line_integrals_and_adds_noise(aug_stores):
    ct, _ = aug_stores
    base = CTDataset(ct, with_volume=False)
    item = AugmentedCT(base, train_mode="drr", aug="pose+intensity", seed=1)[(0, 4)]
    hu, spacing = stored(ct, item["index"])
    rng = np.random.default_rng([1, RNG_SALT, 0, 4])
    pose = random_pose(rng)  # the pose first, then exposure factor, noise level and noise
    p = render_drr(hu, spacing, apply_pose(GEOMETRY, pose), backend="cpu", output="line_integral")
    scale = rng.uniform(0.85, 1.15)
    img = line_integral_to_image(p * np.float32(scale))
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.01), img.shape).astype(np.float32)
    np.testing.assert_array_equal(item["drr"][0], np.clip(img, 0.0, 1.0))
    assert item["drr"].min() >= 0.0 and item["drr"].max() <= 1.0


def test_xpgan_mode_gives_g_the_posed_volume_and_its_posed_drr(aug_stores):
    ct, _ = aug_stores
    base = CTDataset(ct)
    item = AugmentedCT(base, train_mode="xpgan", aug="pose", seed=2)[(5, 9)]
    hu, spacing = stored(ct, item["index"])
    pose = random_pose(np.random.default_rng([2, RNG_SALT, 0, 9]))
    pose["sid_mm"] = None  # the store's SID: G cannot see the source distance
    p = render_drr(hu, spacing, apply_pose(GEOMETRY, pose), backend="cpu", output="line_integral")
    np.testing.assert_array_equal(item["drr"][0], line_integral_to_image(p))
    np.testing.assert_array_equal(item["ct"][0], normalize_hu(resample_to_pose(hu, spacing, pose), base.hu_window))
    assert item["ct"].shape == (1, 8, 32, 32) and not np.array_equal(item["ct"], base[5]["ct"])


def batches(ds, n, **kw):
    stream = BatchStream(ds, batch_size=3, seed=4, **kw)
    try:
        return [next(stream) for _ in range(n)], stream
    finally:
        stream.close()


@pytest.mark.slow
def test_draws_do_not_depend_on_workers_and_restart_where_the_stream_was(aug_stores):
    ct, _ = aug_stores
    ds = AugmentedCT(CTDataset(ct, with_volume=False), train_mode="drr", aug="pose", seed=7)
    main, _ = batches(ds, 4, num_workers=0)
    spawned, _ = batches(ds, 4, num_workers=1)  # a spawned worker, one numba thread
    for a, b in zip(main, spawned):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["drr"], b["drr"])
    stream = BatchStream(ds, batch_size=3, seed=4)
    stream.load_state_dict({"epoch": 0, "batch": 2})
    assert torch.equal(next(stream)["drr"], main[2]["drr"])
    stream.close()


@pytest.mark.parametrize("mode", ["drr", "xpgan"])
def test_device_path_renders_the_same_batch_as_the_workers(aug_stores, mode):
    # what a CUDA run does (workers draw, the training process renders the batch in one launch), on the CPU
    ct, _ = aug_stores
    kw = dict(train_mode=mode, aug="pose", seed=11)
    workers = AugmentedCT(CTDataset(ct, with_volume=mode == "xpgan"), **kw)
    device = AugmentedCT(CTDataset(ct, with_volume=mode == "xpgan"), render_in_workers=False, **kw)
    (want,), _ = batches(workers, 1)
    (raw,), _ = batches(device, 1)
    assert "drr" not in raw and raw["hu"].dtype == torch.int16
    got = finish_on_device(raw, device, torch.device("cpu"), backend="cpu")
    assert set(got) == set(want) and torch.equal(got["index"], want["index"])
    torch.testing.assert_close(got["drr"], want["drr"], rtol=0, atol=1e-6)  # the same kernel; the map in torch
    if mode == "xpgan":  # grid_sample against drr/resample.py: the same trilinear map
        torch.testing.assert_close(got["ct"], want["ct"], rtol=0, atol=1e-5)  # 0.01 HU


def test_device_path_exposure_is_deterministic_and_bounded(aug_stores):
    ct, _ = aug_stores
    ds = AugmentedCT(CTDataset(ct, with_volume=False), train_mode="drr", aug="pose+intensity", seed=3,
                     render_in_workers=False)
    (raw,), _ = batches(ds, 1)
    a = finish_on_device(dict(raw), ds, torch.device("cpu"), backend="cpu")["drr"]
    b = finish_on_device(dict(raw), ds, torch.device("cpu"), backend="cpu")["drr"]
    assert torch.equal(a, b) and a.min() >= 0.0 and a.max() <= 1.0
    plain = AugmentedCT(CTDataset(ct, with_volume=False), train_mode="drr", aug="pose", seed=3)
    (ref,), _ = batches(plain, 1)  # the same poses; exposure factor <= 1.15 and noise std <= 0.01
    assert 0.0 < (a - ref["drr"]).abs().max() < 0.15


def test_options_are_checked(aug_stores, tmp_path, store_writers):
    ct, cxr = aug_stores
    base = dict(ct=str(ct), cxr=str(cxr), max_steps=1)
    with pytest.raises(XPGANError, match="none, pose, pose\\+intensity"):
        TrainConfig(**base, drr_aug="rotate").validate()
    with pytest.raises(XPGANError, match="mode drr only"):
        TrainConfig(**base, mode="xpgan", drr_aug="pose+intensity").validate()
    with pytest.raises(XPGANError, match="baseline"):
        TrainConfig(**base, mode="baseline", drr_aug="pose").validate()
    bare = store_writers[0](tmp_path / "bare.zarr", n=4, geometry=False)
    with pytest.raises(XPGANError, match="records no DRR geometry"):
        AugmentedCT(CTDataset(bare), train_mode="xpgan", aug="pose", seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["xpgan", "drr"])
def test_augmented_training_resumes_bit_exactly(aug_stores, xpgan_config, tmp_path, one_thread, mode):
    ct, cxr = aug_stores
    over = dict(mode=mode, drr_aug="pose", sample_every=0)
    full = train(xpgan_config(ct, cxr, tmp_path / "full", **over))
    first = train(xpgan_config(ct, cxr, tmp_path / "split", stop_at=2, **over))
    second = train(xpgan_config(ct, cxr, tmp_path / "split", resume="latest", **over))
    assert second.step == full.step == 4
    a, b = ckpt_io.load(full.checkpoint), ckpt_io.load(second.checkpoint)
    assert a["augment"] == b["augment"] == {"mode": "pose", "key": [3, RNG_SALT], "next_draw": 8}
    assert ckpt_io.load(first.checkpoint)["augment"]["next_draw"] == 4
    for net in a["models"]:
        for key, value in a["models"][net].items():
            assert torch.equal(value, b["models"][net][key]), f"{net}.{key} differs after resume"
    plain = train(xpgan_config(ct, cxr, tmp_path / "plain", mode=mode, sample_every=0))
    c = ckpt_io.load(plain.checkpoint)["models"]["C"]  # control: augmentation changed what C learned
    assert any(not torch.equal(c[k], a["models"]["C"][k]) for k in c if c[k].is_floating_point())
    assert "augment" not in ckpt_io.load(plain.checkpoint)


@pytest.mark.parametrize("mode, aug", [("baseline", "pose"), ("xpgan", "pose+intensity"), ("drr", "rotate")])
def test_the_config_and_the_augmented_dataset_refuse_the_same_drr_aug_with_the_same_words(mode, aug):
    with pytest.raises(XPGANError) as by_config:
        TrainConfig(mode=mode, drr_aug=aug, ct="ct.zarr", cxr="cxr.zarr", max_steps=1).validate()
    with pytest.raises(XPGANError) as by_dataset:
        AugmentedCT(None, train_mode=mode, aug=aug, seed=0)
    assert str(by_config.value) == str(by_dataset.value)
    assert "--drr-aug" in str(by_config.value)
