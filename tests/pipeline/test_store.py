"""xpgan.pipeline.store: layout, done flags, resume identity, overwrite safety, lock, failure records."""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from xpgan.errors import XPGANError
from xpgan.pipeline import schema
from xpgan.pipeline import store as st

ARRAYS = {"image": ("float32", (6, 5)), "label": ("int8", ()), "name": st.ArraySpec("str")}


def make(path, n=10, identity=None, **kw):
    return st.create_or_open(path, kind="test", arrays=ARRAYS, n_items=n, attrs={"note": "x"},
                             identity=identity or {"opt": 1}, items_per_shard=4, **kw)


def item(i):
    return {"image": np.full((6, 5), i, np.float32), "label": i % 3 - 1, "name": f"item-{i}"}


def test_round_trip_and_done_flags(tmp_path):
    g = make(tmp_path / "s.zarr")
    st.write_items(g, {i: item(i) for i in (0, 1, 2, 3, 7)})
    done = st.done_mask(g)
    assert done.tolist() == [i in (0, 1, 2, 3, 7) for i in range(10)]
    for i in (0, 1, 2, 3, 7):
        np.testing.assert_array_equal(g["image"][i], np.full((6, 5), i, np.float32))
        assert int(g["label"][i]) == i % 3 - 1
        assert str(g["name"][i]) == f"item-{i}"
    assert g.attrs["xpgan"]["kind"] == "test" and g.attrs["xpgan"]["note"] == "x"


def test_images_are_sharded_small_arrays_are_not(tmp_path):
    g = make(tmp_path / "s.zarr")
    assert g["image"].shards == (4, 6, 5) and g["image"].chunks == (1, 6, 5)
    assert g["label"].shards is None and g["label"].chunks == (10,)
    assert st.items_per_shard(g) == 4


def test_reopen_resumes_with_same_identity(tmp_path):
    g = make(tmp_path / "s.zarr")
    st.write_items(g, {5: item(5)})
    g2 = make(tmp_path / "s.zarr")
    assert st.done_mask(g2)[5] and st.done_mask(g2).sum() == 1


def test_reopen_with_other_identity_is_refused(tmp_path):
    make(tmp_path / "s.zarr")
    with pytest.raises(XPGANError, match="--overwrite"):
        make(tmp_path / "s.zarr", identity={"opt": 2})


def test_overwrite_starts_again(tmp_path):
    g = make(tmp_path / "s.zarr")
    st.write_items(g, {5: item(5)})
    g2 = make(tmp_path / "s.zarr", identity={"opt": 2}, overwrite=True)
    assert st.done_mask(g2).sum() == 0


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.txt").write_text("do not delete")
    with pytest.raises(XPGANError, match="not a Zarr store"):
        make(d, overwrite=True)
    assert (d / "thesis.txt").exists()


def test_failures_in_attrs_and_csv(tmp_path):
    g = make(tmp_path / "s.zarr")
    st.set_failures(g, tmp_path / "s.zarr", [{"index": 3, "id": "b", "path": "x/b.nii", "reason": "truncated"},
                                             {"index": 1, "id": "a", "path": "x/a.nii", "reason": "2D"}])
    assert [f["index"] for f in st.get_failures(g)] == [1, 3]
    with open(st.failures_csv_path(tmp_path / "s.zarr")) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["path"], r["reason"]) for r in rows] == [("x/a.nii", "2D"), ("x/b.nii", "truncated")]
    st.set_failures(g, tmp_path / "s.zarr", [])
    assert not st.failures_csv_path(tmp_path / "s.zarr").exists()


def test_failures_paths_kept_out_of_store_but_in_csv(tmp_path):
    g = make(tmp_path / "s.zarr")
    st.set_failures(g, tmp_path / "s.zarr", [{"index": 2, "id": "b", "path": "x/Jane_Doe.png", "reason": "bad"}],
                    paths_in_store=False, csv_only=[{"path": "x/gone.png", "reason": "not found"}])
    assert st.get_failures(g) == [{"index": 2, "id": "b", "path": "", "reason": "bad"}]
    with open(st.failures_csv_path(tmp_path / "s.zarr")) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["index"], r["path"], r["reason"]) for r in rows] == [("2", "x/Jane_Doe.png", "bad"),
                                                                   ("", "x/gone.png", "not found")]


def _shard_files(store):
    return {p.relative_to(store): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and "c" in p.relative_to(store).parts}


def test_worker_encoded_items_make_the_same_shard_files_as_zarr(tmp_path):
    # Items encoded with the store's ItemEncoders (on workers) are assembled into shard files byte-identical
    # to zarr's own, including a missing (failed) item and a last shard that runs past the array's end.
    items = {i: item(i) for i in range(10) if i != 5}
    plain, fast = make(tmp_path / "plain.zarr"), make(tmp_path / "fast.zarr")
    st.write_items(plain, items)
    enc = st.item_encoders(fast)
    assert sorted(enc) == ["image"]  # the sharded array; small arrays stay plain
    st.write_items(fast, {i: st.encode_items(r, enc) for i, r in items.items()})
    want, got = _shard_files(tmp_path / "plain.zarr"), _shard_files(tmp_path / "fast.zarr")
    assert len(got) == 3 + 1 + 1 + 1 + 1  # image: 3 shards of 4 items; label, name, digest, done: one chunk each
    assert got == want
    ref = make(tmp_path / "zarr.zarr")  # the image shards zarr itself writes
    image = ref["image"].with_config({"write_empty_chunks": True})
    for a, b in ((0, 5), (6, 10)):
        image[a:b] = np.stack([item(i)["image"] for i in range(a, b)])
    zarr_own = {p: b for p, b in _shard_files(tmp_path / "zarr.zarr").items() if p.parts[0] == "image"}
    assert len(zarr_own) == 3 and zarr_own == {p: b for p, b in got.items() if p.parts[0] == "image"}
    g = schema.open_store(tmp_path / "fast.zarr")
    assert st.done_mask(g).tolist() == [i != 5 for i in range(10)]
    for i in items:
        np.testing.assert_array_equal(g["image"][i], item(i)["image"])


def test_encoded_item_into_an_existing_shard_keeps_its_other_items(tmp_path):
    g = make(tmp_path / "s.zarr")
    enc = st.item_encoders(g)
    st.write_items(g, {i: st.encode_items(item(i), enc) for i in (0, 1, 3)})
    st.write_items(g, {2: st.encode_items(item(2), enc)})  # a resumed run: shard 0 is on disk already
    for i in range(4):
        np.testing.assert_array_equal(g["image"][i], item(i)["image"])
    assert st.done_mask(g).tolist()[:4] == [True] * 4


def test_second_lock_is_refused_while_first_is_held(tmp_path):
    with st.StoreLock(tmp_path / "s.zarr"):
        with pytest.raises(XPGANError, match="another process"):
            st.StoreLock(tmp_path / "s.zarr").acquire()
    st.StoreLock(tmp_path / "s.zarr").acquire().release()


def test_lock_of_a_sigkilled_process_is_released(tmp_path):
    code = ("import sys, time; from xpgan.pipeline.store import StoreLock; "
            f"StoreLock({str(tmp_path / 's.zarr')!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(XPGANError, match=f"pid {proc.pid}"):
            st.StoreLock(tmp_path / "s.zarr").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 5
    while True:
        try:
            st.StoreLock(tmp_path / "s.zarr").acquire().release()
            break
        except XPGANError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def test_open_store_rejects_non_stores(tmp_path):
    with pytest.raises(XPGANError):
        schema.open_store(tmp_path)
