"""prep drr survives SIGKILL: rerun finishes, every item once, bit-identical to an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from prep_helpers import noise_ct_archive

from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.schema import open_store

SHAPE = (8, 24, 24)
GEOM = {"kind": "cone", "size": 24}
N = 16

# The child slows each item down (a sleep around the real process_ct) so the kill lands mid-run.
CHILD = """
import sys, time, functools
import xpgan.pipeline.ct.prep_drr as p
real = p.process_ct
def slow(path, *, job):
    time.sleep(0.15)
    return real(path, job=job)
p.process_ct = slow
p.prep_drr(sys.argv[1], sys.argv[2], shape={shape}, geometry={geom}, workers=0, progress=False, items_per_shard=2)
print("finished", flush=True)
"""


@pytest.mark.slow
def test_sigkill_then_rerun_is_complete_and_bit_identical(tmp_path):
    src = noise_ct_archive(tmp_path / "src", N, seed=3)
    out = tmp_path / "killed.zarr"
    script = CHILD.format(shape=SHAPE, geom=GEOM)
    proc = subprocess.Popen([sys.executable, "-c", script, str(src), str(out)], stdout=subprocess.PIPE, text=True)
    done_at_kill = 0
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                done_at_kill = int(np.asarray(open_store(out)["done"][:]).sum())
            except Exception:  # store not created yet
                done_at_kill = 0
            if done_at_kill >= 4:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = np.asarray(open_store(out)["done"][:])
    assert 4 <= partial.sum() < N, "the kill should land halfway"

    resumed = prep_drr(src, out, shape=SHAPE, geometry=GEOM, workers=0, progress=False, items_per_shard=2)
    assert resumed.skipped == partial.sum() and resumed.done == N and resumed.failed == 0

    ref_path = tmp_path / "ref.zarr"
    prep_drr(src, ref_path, shape=SHAPE, geometry=GEOM, workers=0, progress=False, items_per_shard=2)
    got, ref = open_store(out), open_store(ref_path)
    assert sorted(got.array_keys()) == sorted(ref.array_keys())
    ids = [str(s) for s in got["study_id"][:]]
    assert len(set(ids)) == N and ids == [str(s) for s in ref["study_id"][:]]
    for name in ref.array_keys():
        a, b = np.asarray(got[name][:]), np.asarray(ref[name][:])
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
