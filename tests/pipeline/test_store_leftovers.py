"""Nothing is left beside OUT that a run does not need: no salt after a refused prep, no lock file after a
finished one; a store is locked through every spelling of its path."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from xpgan.errors import XPGANError
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.schema import lock_path, salt_path
from xpgan.pipeline.store import StoreLock, lock_holder


def _class_folders(root):
    for cls in ("covid", "normal"):
        for i in range(2):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((24, 20), 40 * i + 60, np.uint8)).save(root / cls / f"{cls}{i}.png")
    return root


def test_refused_prep_cxr_leaves_no_salt(tmp_path):
    src = _class_folders(tmp_path / "src")
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "unrelated.txt").write_text("not a store")
    with pytest.raises(XPGANError, match="not a Zarr store"):
        prep_cxr([src], out, size=16, workers=0, progress=False)
    assert not salt_path(out).exists() and not lock_path(out).exists()


def test_finished_prep_cxr_keeps_its_salt_and_removes_its_lock_file(tmp_path):
    src = _class_folders(tmp_path / "src")
    out = tmp_path / "out.zarr"
    prep_cxr([src], out, size=16, workers=0, progress=False)
    assert salt_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "out.zarr.salt", "src"]


def test_lock_is_taken_on_the_resolved_store(tmp_path):
    real = tmp_path / "real.zarr"
    real.mkdir()
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    (tmp_path / "x").mkdir()
    with StoreLock(real):
        assert lock_holder(link) == str(os.getpid())
        for other in (link, tmp_path / "x" / ".." / "real.zarr"):
            with pytest.raises(XPGANError, match="another process .* is writing this store"):
                StoreLock(other).acquire()
    assert lock_holder(link) is None and not lock_path(real).exists()
    with StoreLock(link):  # and the other way round
        with pytest.raises(XPGANError, match="is writing this store"):
            StoreLock(real).acquire()


def test_release_removes_the_lock_file_and_the_next_writer_locks_a_new_one(tmp_path):
    """A finishing writer removes the lock file while holding it; a file opened just before is then a removed
    one (acquire checks it still is the file at the path), and the next writers share the new file."""
    store = tmp_path / "s.zarr"
    first = StoreLock(store).acquire()
    stale_fd = os.open(lock_path(store), os.O_RDWR)  # opened before the first writer finishes
    first.release()
    second = StoreLock(store).acquire()
    try:
        with pytest.raises(XPGANError, match="is writing this store"):
            StoreLock(store).acquire()
        assert os.fstat(stale_fd).st_nlink == 0  # the old file is gone: locking it would protect nothing
    finally:
        os.close(stale_fd)
        second.release()
