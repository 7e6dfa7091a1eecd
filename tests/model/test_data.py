import pickle

import numpy as np
import pytest
import torch

from xpgan.errors import InputError, XPGANError
from xpgan.model.data import (
    BatchStream,
    BlockShuffleSampler,
    CTDataset,
    CXRDataset,
    ct_store_info,
    cxr_store_info,
)
from xpgan.model.transforms import normalize_hu
from xpgan.pipeline.schema import open_store


def test_ct_dataset_shapes_and_normalisation(toy_stores):
    ct, _ = toy_stores
    ds = CTDataset(ct, hu_window=(-1000.0, 1000.0))
    item = ds[1]
    assert item["ct"].shape == (1, 8, 32, 32) and item["ct"].dtype == np.float32
    assert item["drr"].shape == (1, 32, 32)
    hu = open_store(ct, "ct")["volume"][int(ds.indices[1])].astype(np.float32)
    np.testing.assert_allclose(item["ct"][0], np.clip(hu / 1000.0, -1, 1), atol=1e-6)
    assert item["ct"].min() >= -1.0 and item["ct"].max() <= 1.0
    assert 0.0 <= item["drr"].min() and item["drr"].max() <= 1.0


def test_normalize_hu_window_edges():
    x = normalize_hu(np.array([-2000, -500, 0, 250, 500, 900], np.int16), (-500.0, 500.0))
    np.testing.assert_allclose(x, [-1, -1, 0, 0.5, 1, 1], atol=1e-6)


def test_ct_dataset_only_done(toy_stores):
    ct, _ = toy_stores
    ds = CTDataset(ct)
    assert len(ds) == 39 and 39 not in ds.indices.tolist()
    assert ct_store_info(ct).ct_shape == (8, 32, 32) and ct_store_info(ct).img_res == 32
    assert ct_store_info(ct).block == 8


def test_cxr_parts_partition_train_and_filter_test(toy_stores):
    _, cxr = toy_stores
    g = open_store(cxr, "cxr")
    split, done = g["split"][:], g["done"][:]
    train, val = CXRDataset(cxr, part="train", val_fraction=0.3), CXRDataset(cxr, part="val", val_fraction=0.3)
    test, every = CXRDataset(cxr, part="test"), CXRDataset(cxr, part="train_all")
    assert set(train.indices) | set(val.indices) == set(every.indices)
    assert not set(train.indices) & set(val.indices)
    assert len(val) > 0 and len(train) > 0
    assert all(split[i] == 0 and done[i] for i in every.indices)
    assert set(test.indices) == {i for i in range(80) if split[i] == 1 and done[i]}
    patients = [str(p) for p in g["patient"][:].tolist()]
    assert not {patients[i] for i in train.indices} & {patients[i] for i in val.indices}
    assert cxr_store_info(cxr).img_res == 32


def test_dataset_pickles_without_open_handle(toy_stores):
    _, cxr = toy_stores
    ds = CXRDataset(cxr, part="test")
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._group is None
    np.testing.assert_array_equal(clone[0]["cxr"], ds[0]["cxr"])


def test_wrong_kind_and_missing_store_are_input_errors(toy_stores, tmp_path):
    ct, cxr = toy_stores
    with pytest.raises(InputError, match="not an xpgan cxr store"):
        CXRDataset(ct)
    with pytest.raises(InputError, match="no such store"):
        CTDataset(tmp_path / "nope.zarr")


def test_block_sampler_covers_each_index_once_and_keeps_blocks_together():
    block_ids = np.arange(100) // 10
    s = BlockShuffleSampler(block_ids, seed=3, window_blocks=1)
    for epoch in range(3):
        s.set_epoch(epoch)
        order = np.array(list(s))
        assert sorted(order.tolist()) == list(range(100))
        # window of one block: each run of 10 consecutive positions is one whole block
        assert all(len(set(block_ids[order[k:k + 10]])) == 1 for k in range(0, 100, 10))
    assert not np.array_equal(s.epoch_order(0), s.epoch_order(1))
    again = BlockShuffleSampler(block_ids, seed=3, window_blocks=1)
    np.testing.assert_array_equal(s.epoch_order(2), again.epoch_order(2))


def test_block_sampler_partitions_across_ranks():
    block_ids = np.arange(37) // 4
    parts = [BlockShuffleSampler(block_ids, seed=1, rank=r, world_size=3).epoch_order(5) for r in range(3)]
    assert all(len(p) == 13 for p in parts)
    together = np.concatenate(parts)
    assert set(together.tolist()) == set(range(37))          # 39 slots: 2 wrapped repeats
    assert len(together) - len(set(together.tolist())) == 2


def test_batch_stream_resume_continues_the_same_sequence(toy_stores):
    _, cxr = toy_stores
    ds = CXRDataset(cxr, part="train_all")
    a = BatchStream(ds, batch_size=8, seed=4)
    full = [next(a)["index"] for _ in range(11)]             # crosses epoch boundaries (7 per epoch)
    b = BatchStream(ds, batch_size=8, seed=4)
    first = [next(b)["index"] for _ in range(5)]
    state = b.state_dict()
    c = BatchStream(ds, batch_size=8, seed=4, num_workers=2)
    c.load_state_dict(state)
    rest = [next(c)["index"] for _ in range(6)]
    c.close()
    for x, y in zip(full, first + rest):
        assert torch.equal(x, y)
    assert a.state_dict() == {"epoch": 1, "batch": 11 - a.batches_per_epoch}


def test_batch_stream_too_small_for_a_batch(toy_stores):
    _, cxr = toy_stores
    with pytest.raises(XPGANError, match="fewer than one batch"):
        BatchStream(CXRDataset(cxr, part="test", limit=3), batch_size=4)


def test_positive_share_keeps_that_share_of_positive_patients_and_nothing_else(toy_stores):
    import math

    from xpgan.model.data import CXRDataset, read_strings
    from xpgan.pipeline.schema import open_store

    _, cxr = toy_stores
    full = CXRDataset(cxr, part="train", val_fraction=0.2)
    half = CXRDataset(cxr, part="train", val_fraction=0.2, positive_share=0.5)
    patients = read_strings(open_store(cxr, "cxr")["patient"], cxr)
    pos_patients = sorted({patients[j] for j in full.indices[full.labels == 1]})
    kept = {patients[j] for j in half.indices[half.labels == 1]}
    assert kept == set(pos_patients[:math.ceil(0.5 * len(pos_patients))])     # the first by their hashed id
    assert list(full.indices[full.labels == 0]) == list(half.indices[half.labels == 0])   # negatives unchanged
    again = CXRDataset(cxr, part="train", val_fraction=0.2, positive_share=0.5)
    assert list(again.indices) == list(half.indices)                              # the same on every call
    with pytest.raises(ValueError, match="train part only"):
        CXRDataset(cxr, part="test", positive_share=0.5)
