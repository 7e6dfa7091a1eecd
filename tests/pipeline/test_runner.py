"""xpgan.pipeline.runner: single-writer Dask runs, failure isolation, grouping per shard."""
import os
import threading
import time

import numpy as np
import pytest

from xpgan.errors import InputError
from xpgan.pipeline import schema
from xpgan.pipeline import store as st
from xpgan.pipeline.runner import PrepSummary, Task, run_items


def slow_item(i):
    """Deterministic content per item, finishing out of order."""
    time.sleep(0.002 * ((i * 7) % 5))
    rng = np.random.default_rng(i)
    return {"image": rng.normal(size=(16, 16)).astype(np.float32), "label": i % 2, "name": f"id{i}"}


def fail_some(i):
    if i % 5 == 3:
        raise InputError(f"/data/item{i}.nii.gz", "truncated gzip stream")
    if i == 4:
        raise RuntimeError("a bug in a library")
    return slow_item(i)


def test_many_concurrent_items_all_land_in_sharded_store(tmp_path):
    # Four worker threads produce results concurrently; shards of 8 items must each be written whole by
    # the single writer (concurrent writes into one shard lose data: zarr-python #3514, #3682).
    n = 64
    g = st.create_or_open(tmp_path / "s.zarr", kind="t", arrays={"image": ("float32", (16, 16)), "label": ("int8", ()),
                                                                "name": st.ArraySpec("str")},
                          n_items=n, attrs={}, identity={}, items_per_shard=8)
    writer_threads, batches = set(), []

    def write(batch):
        writer_threads.add(threading.get_ident())
        batches.append(sorted(batch))
        st.write_items(g, batch)

    res = run_items([Task(i, i) for i in range(n)], slow_item, write, group_size=8, workers=4, processes=False,
                    progress=False)
    assert sorted(res.done) == list(range(n)) and not res.failed
    assert writer_threads == {threading.get_ident()}
    assert sorted(batches) == [list(range(k, k + 8)) for k in range(0, n, 8)]  # one write per shard
    g = schema.open_store(tmp_path / "s.zarr")
    assert st.done_mask(g).all()
    for i in range(n):
        want = slow_item(i)
        np.testing.assert_array_equal(g["image"][i], want["image"])
        assert str(g["name"][i]) == want["name"] and int(g["label"][i]) == want["label"]


@pytest.mark.parametrize("workers", [0, 2])
def test_failures_are_isolated(workers):
    written = {}
    res = run_items([Task(i, i) for i in range(12)], fail_some, written.update, group_size=4, workers=workers,
                    processes=False, progress=False)
    assert sorted(res.failed) == [3, 4, 8]
    assert "truncated gzip stream" in res.failed[3] and "RuntimeError: a bug" in res.failed[4]
    assert sorted(written) == sorted(res.done) == [i for i in range(12) if i not in (3, 4, 8)]


def test_only_given_tasks_run_and_groups_with_skipped_items_complete():
    written = {}
    res = run_items([Task(i, i) for i in (1, 2, 9)], slow_item, written.update, group_size=4, workers=0,
                    progress=False)
    assert sorted(written) == [1, 2, 9] and sorted(res.done) == [1, 2, 9]


def test_summary_text_names_failures():
    s = PrepSummary(total=3, done=2, skipped=1, failed=1, failures=[("a/b.nii.gz", "truncated")], seconds=2.0,
                    store="x.zarr")
    text = s.text()
    assert "2/3 items done" in text and "failed: a/b.nii.gz: truncated" in text


def numba_threads(_):
    import numba

    return {"n": numba.get_num_threads()}


def test_numba_threads_share_the_cores_between_workers():
    from xpgan.pipeline.runner import usable_cores

    got = {}
    run_items([Task(i, i) for i in range(4)], numba_threads, got.update, workers=2, processes=False, progress=False)
    assert {r["n"] for r in got.values()} == {max(1, usable_cores() // 2)}


def test_progress_bar_shows_done_failed_rate_eta(monkeypatch):
    import io
    import sys

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    run_items([Task(i, i) for i in range(10)], fail_some, lambda b: None, workers=0, progress=True, desc="prep")
    text = err.getvalue()
    assert "prep" in text and "10/10" in text and "ok=7 failed=3" in text and "item/s" in text and "<" in text
    quiet = Tty()
    monkeypatch.setattr(sys, "stderr", quiet)
    run_items([Task(i, i) for i in range(3)], slow_item, lambda b: None, workers=0, progress=False)
    assert quiet.getvalue() == ""


def test_progress_off_a_terminal_is_periodic_lines(monkeypatch):
    import io
    import sys

    from xpgan.pipeline import runner

    err = io.StringIO()  # a log file or a pipe: no bar, lines instead
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)
    run_items([Task(i, i) for i in range(10)], fail_some, lambda b: None, workers=0, progress=True, desc="prep")
    lines = err.getvalue().splitlines()
    assert lines[0] == "prep: 10 items to process"
    assert lines[-1].startswith("prep: 10/10 items (7 ok, 3 failed), ") and "items/s" in lines[-1]
    assert "\r" not in err.getvalue() and len(lines) == 11


def test_local_worker_processes_get_our_worker_config():
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 costs ~25 % CPU per item (every large temporary an mmap)
    # and the statistical profiler (for a dashboard we do not serve) ~7 %: the runner's local cluster drops
    # both for its worker processes and keeps the other defaults (OMP_NUM_THREADS=1).
    def worker_settings(_):  # defined here so that it is pickled by value (test modules are not importable)
        import dask

        return {"trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "omp": os.environ.get("OMP_NUM_THREADS"),
                "profile": dask.config.get("distributed.worker.profile.enabled")}

    got = {}
    res = run_items([Task(0, 0)], worker_settings, got.update, workers=1, processes=True, progress=False)
    assert not res.failed, res.failed
    assert got[0] == {"trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "omp": "1", "profile": False}
