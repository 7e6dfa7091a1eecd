"""A full disk while prep writes: one line naming the store, what is kept and how to resume; the run
resumes byte-exact once there is space. The disk is full for real: the shard's temp file is /dev/full."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.synth.writers import write_nifti

SHAPE = (8, 24, 24)
ARGS = ["--shape", *map(str, SHAPE), "--size", "32", "--workers", "0", "--no-progress"]


def _archive(root):
    rng = np.random.default_rng(9)
    for i in range(4):
        write_nifti(root / f"s{i}.nii.gz", rng.normal(-300, 300, size=(10, 30, 28)).astype(np.float32),
                    (4.0, 1.0, 1.0))
    return root


def _digests(store):
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (writes fail with ENOSPC)")
def test_disk_full_names_the_store_and_how_to_resume(tmp_path):
    src = _archive(tmp_path / "src")
    out = tmp_path / "ct.zarr"
    prep_drr(src, out, shape=SHAPE, geometry={"kind": "cone", "size": 32}, workers=0, progress=False,
             items_per_shard=2)
    shard = out / "drr" / "c" / "1" / "0" / "0"
    shard.unlink()  # items 2 and 3 are redone on the next run...
    shard.with_name("0.tmp").symlink_to("/dev/full")  # ...and writing their shard hits a full disk
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    run = subprocess.run([sys.executable, "-m", "xpgan.cli", "prep", "drr", str(src), str(out), *ARGS],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"error: {out}: the disk is full (No space left on device); 2 of 4 items are kept; free "
        f"some space, then run the same command again to resume; resume with: xpgan prep drr {src} {out} "
        + " ".join(ARGS)]
    assert not shard.with_name("0.tmp").exists()  # the failed temp file is gone

    resumed = prep_drr(src, out, shape=SHAPE, geometry={"kind": "cone", "size": 32}, workers=0, progress=False)
    assert resumed.skipped == 2 and resumed.done == 4
    ref = tmp_path / "ref.zarr"
    prep_drr(src, ref, shape=SHAPE, geometry={"kind": "cone", "size": 32}, workers=0, progress=False,
             items_per_shard=2)
    assert _digests(out) == _digests(ref)
