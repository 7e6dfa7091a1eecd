"""Tiny seeded CT and CXR stores, written through the store writer (xpgan.pipeline.store) in the format of
xpgan.pipeline.schema (docs/design.md), with a separable toy.

Positives carry a bright blob (CT: a dense nodule inside the lungs, so the DRR shows it too; CXR: a bright
Gaussian spot); negatives have none. Items listed in `not_done` are recorded as failed (done = False, fill
values); the store is marked complete like a finished prep run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xpgan.drr.geometry import make_geometry
from xpgan.drr.physics import hu_to_mu
from xpgan.pipeline import schema
from xpgan.pipeline import store as st
from xpgan.pipeline.synth.simple import gaussian_blob, simple_chest

# mm per voxel (sd, sh, sw): a 32-voxel chest is about 250 mm deep, and 8 slices span as much as 32 columns,
# so the recorded parallel geometry (field of view fitted to the larger extent) puts the volume on the whole
# detector, as the nearest-neighbour resized projection below does
CT_SPACING = (32.0, 8.0, 8.0)


def _write(path, kind, arrays, items, *, n, not_done, shard, attrs):
    """A finished store: `items` {index: {array: value}} written, `not_done` recorded as failures."""
    g = st.create_or_open(path, kind=kind, arrays=arrays, n_items=n, attrs=attrs, identity={"toy": True},
                          overwrite=True, items_per_shard=shard)
    st.write_items(g, {i: r for i, r in items.items() if i not in set(not_done)})
    st.set_failures(g, path, [{"index": i, "id": f"item{i}", "path": "", "reason": "toy failure"}
                              for i in sorted(not_done)])
    st.set_complete(g, True)
    return Path(path)


def write_ct_store(path, *, n=40, shape=(8, 32, 32), drr_size=32, seed=0, not_done=(), shard=8, geometry=True,
                   unlabelled=False):
    """CT store: volume int16 HU [N, D, H, W], drr float32 [N, R, R] (the schema's image map of a parallel
    AP projection, recorded as a parallel geometry unless `geometry` is false), labels alternating 0/1 (with
    `unlabelled`, the volumes alike but every label -1, as a folder archive gives)."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    labels = (np.arange(n) % 2).astype(np.int8)
    rows = np.rint(np.linspace(0, d - 1, drr_size)).astype(int)
    cols = np.rint(np.linspace(0, w - 1, drr_size)).astype(int)
    items = {}
    for i in range(n):
        nodule = None
        if labels[i] == 1:  # a dense nodule inside one lung
            side = rng.choice([-0.42, 0.42])
            c = (rng.uniform(0.3, 0.7) * (d - 1), rng.uniform(0.35, 0.65) * (h - 1), (side + 1) / 2 * (w - 1))
            nodule = (c, max(w, h) / 10, 1100.0)
        vol = simple_chest(shape, seed=int(rng.integers(2**31)), nodule=nodule)
        mu = hu_to_mu(vol.astype(np.float32))                                  # 1/mm
        p = mu.sum(axis=1) * CT_SPACING[1]                                     # [d, w] AP line integral
        # nearest-neighbour resize keeps the toy simple; only the label signal matters here
        drr = schema.image_map(p)[rows][:, cols]
        items[i] = {"volume": vol, "drr": drr, "label": -1 if unlabelled else int(labels[i]),
                    "severity": -1 if unlabelled else 2 if labels[i] else 0,
                    "study_id": f"study_{i:04d}", "spacing": np.asarray(CT_SPACING, np.float32)}
    arrays = schema.item_arrays("ct", {"D": d, "H": h, "W": w, "S": drr_size})
    return _write(path, "ct", arrays, items, n=n, not_done=not_done, shard=shard,
                  attrs={"shape": list(shape), "drr_size": drr_size,
                         **({"geometry": make_geometry("parallel", size=drr_size).to_dict()} if geometry else {})})


def write_cxr_store(path, *, n=80, size=32, seed=1, test_every=4, not_done=(), shard=8, poison=(),
                    negatives_only=False):
    """CXR store: image float32 [N, R, R] in [0, 1]; patient k owns items 2k, 2k+1; every
    `test_every`-th patient is in the test split. `poison` items get a NaN pixel (but stay done);
    `negatives_only`: every label 0 (a collection whose positive class was not recognised)."""
    rng = np.random.default_rng(seed)
    labels = ((np.arange(n) // 2 + np.arange(n)) % 2).astype(np.int8)   # both labels in every patient
    if negatives_only:
        labels[:] = 0
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    base = np.clip(0.55 - 0.35 * ((yy / 0.8) ** 2 + (xx / 0.9) ** 2 < 1.0), 0, 1).astype(np.float32)
    patient_idx = np.arange(n) // 2
    split = np.where(patient_idx % test_every == test_every - 1, schema.SPLIT_TEST, schema.SPLIT_TRAIN)
    items = {}
    for i in range(n):
        x = base + rng.normal(0, 0.04, (size, size)).astype(np.float32)
        if labels[i] == 1:
            c = (rng.uniform(0.3, 0.7) * (size - 1), rng.uniform(0.2, 0.8) * (size - 1))
            x += 0.5 * gaussian_blob((size, size), c, radius=size / 8)
        img = np.clip(x, 0.0, 1.0)
        if i in poison:
            img[0, 0] = np.nan
        items[i] = {"image": img, "label": int(labels[i]), "patient": f"p{patient_idx[i]:08x}", "source": "toy",
                    "split": int(split[i])}
    return _write(path, "cxr", schema.item_arrays("cxr", {"S": size}), items, n=n, not_done=not_done,
                  shard=shard, attrs={"size": size})


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
