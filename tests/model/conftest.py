"""Tiny seeded CT and CXR Zarr v3 stores following DESIGN.md, with a separable toy.

Positives carry a bright blob (CT: a dense nodule inside the lungs, so the DRR shows it too; CXR: a bright
Gaussian spot); negatives have none. Items listed in `not_done` hold garbage and `done = False`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr


def _blob(shape, centre, radius):
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return np.exp(-r2 / (2.0 * radius ** 2)).astype(np.float32)


def _write_str(g, name, values):
    arr = g.create_array(name, shape=(len(values),), dtype=str, chunks=(len(values),))
    arr[:] = np.array(values, dtype=object)


def write_ct_store(path, *, n=40, shape=(8, 32, 32), drr_size=32, seed=0, not_done=(), shard=8):
    """CT store: volume int16 HU [N, D, H, W], drr float32 [N, R, R], labels alternating 0/1."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    labels = (np.arange(n) % 2).astype(np.int8)
    vol = np.empty((n, d, h, w), np.int16)
    drr = np.empty((n, drr_size, drr_size), np.float32)
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, d), np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    body = (yy / 0.8) ** 2 + (xx / 0.9) ** 2 < 1.0
    lungs = body & ((((xx - 0.4) / 0.3) ** 2 + (yy / 0.55) ** 2 < 1.0) | (((xx + 0.4) / 0.3) ** 2 + (yy / 0.55) ** 2 < 1.0))
    for i in range(n):
        hu = np.full(shape, -1000.0, np.float32)
        hu[body] = 40.0
        hu[lungs] = -850.0
        hu += rng.normal(0, 20, shape).astype(np.float32)
        if labels[i] == 1:
            side = rng.choice([-0.4, 0.4])
            c = (rng.uniform(0.3, 0.7) * (d - 1), rng.uniform(0.35, 0.65) * (h - 1), (side + 1) / 2 * (w - 1))
            hu += 1100.0 * _blob(shape, c, radius=max(w, h) / 10)
        vol[i] = np.clip(hu, -1024, 3000).astype(np.int16)
        mu = 0.02 * np.maximum(0.0, 1.0 + vol[i].astype(np.float32) / 1000.0)
        p = mu.sum(axis=1) * 1.0                                   # [d, w] AP line integral, 1 mm voxels
        img = 1.0 - np.exp(-p)
        rows = np.linspace(0, d - 1, drr_size)
        cols = np.linspace(0, w - 1, drr_size)
        # nearest-neighbour resize keeps the toy simple; only the label signal matters here
        drr[i] = img[np.rint(rows).astype(int)][:, np.rint(cols).astype(int)]
    for i in not_done:
        vol[i] = 3000
        drr[i] = np.nan
    g = zarr.open_group(str(path), mode="w")
    g.attrs["xpgan"] = {"kind": "ct", "version": 1, "shape": list(shape), "drr_size": drr_size}
    g.create_array("volume", data=vol, chunks=(1, d, h, w), shards=(shard, d, h, w))
    g.create_array("drr", data=drr, chunks=(1, drr_size, drr_size), shards=(shard, drr_size, drr_size))
    g.create_array("label", data=labels, chunks=(n,))
    g.create_array("severity", data=np.where(labels == 1, 2, 0).astype(np.int8), chunks=(n,))
    _write_str(g, "study_id", [f"study_{i:04d}" for i in range(n)])
    g.create_array("spacing", data=np.ones((n, 3), np.float32), chunks=(n, 3))
    done = np.ones(n, bool)
    done[list(not_done)] = False
    g.create_array("done", data=done, chunks=(n,))
    return Path(path)


def write_cxr_store(path, *, n=80, size=32, seed=1, test_every=4, not_done=(), shard=8, poison=()):
    """CXR store: image float32 [N, R, R] in [0, 1]; patient k owns items 2k, 2k+1; every
    `test_every`-th patient is in the test split. `poison` items get a NaN pixel (but stay done)."""
    rng = np.random.default_rng(seed)
    labels = ((np.arange(n) // 2 + np.arange(n)) % 2).astype(np.int8)   # both labels in every patient
    img = np.empty((n, size, size), np.float32)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    base = np.clip(0.55 - 0.35 * ((yy / 0.8) ** 2 + (xx / 0.9) ** 2 < 1.0), 0, 1).astype(np.float32)
    for i in range(n):
        x = base + rng.normal(0, 0.04, (size, size)).astype(np.float32)
        if labels[i] == 1:
            c = (rng.uniform(0.3, 0.7) * (size - 1), rng.uniform(0.2, 0.8) * (size - 1))
            x += 0.5 * _blob((size, size), c, radius=size / 8)
        img[i] = np.clip(x, 0.0, 1.0)
    for i in not_done:
        img[i] = np.nan
    for i in poison:
        img[i, 0, 0] = np.nan
    patient_idx = np.arange(n) // 2
    split = (patient_idx % test_every == test_every - 1).astype(np.int8)
    g = zarr.open_group(str(path), mode="w")
    g.attrs["xpgan"] = {"kind": "cxr", "version": 1, "size": size}
    g.create_array("image", data=img, chunks=(1, size, size), shards=(shard, size, size))
    g.create_array("label", data=labels, chunks=(n,))
    _write_str(g, "patient", [f"p{k:08x}" for k in patient_idx])
    _write_str(g, "source", ["toy"] * n)
    g.create_array("split", data=split, chunks=(n,))
    done = np.ones(n, bool)
    done[list(not_done)] = False
    g.create_array("done", data=done, chunks=(n,))
    return Path(path)


@pytest.fixture(scope="session")
def toy_stores(tmp_path_factory):
    """(ct_path, cxr_path): 40 CT items 8x32x32 with 32x32 DRRs, 80 CXR items 32x32; shared, read-only."""
    root = tmp_path_factory.mktemp("toy_stores")
    ct = write_ct_store(root / "ct.zarr", n=40, not_done=(39,))
    cxr = write_cxr_store(root / "cxr.zarr", n=80, not_done=(79,))
    return ct, cxr


@pytest.fixture(scope="session")
def store_writers():
    return write_ct_store, write_cxr_store


@pytest.fixture
def one_thread():
    """Tiny CPU training is faster and steadier on one intra-op thread on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_xpgan_config(ct, cxr, out, **over):
    """A few-second xpgan run: tiny preset, batches of 2, Dreg every 2 steps."""
    from xpgan.model.config import TrainConfig

    kw = dict(ct=str(ct), cxr=str(cxr), mode="xpgan", out=str(out), max_steps=4, batch_size=2,
              cxr_batch_size=2, preset="tiny", device="cpu", num_workers=0, r1_interval=2, log_every=1,
              sample_every=2, checkpoint_every=100, progress=False, seed=3)
    kw.update(over)
    return TrainConfig(**kw)


@pytest.fixture(scope="session")
def tiny_xpgan_run(toy_stores, tmp_path_factory):
    """(config, TrainResult) of one uninterrupted 4-step xpgan run on the toy stores."""
    import torch

    from xpgan.model.train import train

    ct, cxr = toy_stores
    cfg = tiny_xpgan_config(ct, cxr, tmp_path_factory.mktemp("runs") / "full")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cfg)
    finally:
        torch.set_num_threads(before)
    return cfg, result


@pytest.fixture
def xpgan_config():
    return tiny_xpgan_config
