"""Inputs that are not regular files fail alone, with the reason, and never block: a FIFO named like a NIfTI
or an image, a link to /dev/zero; and one frontal-only rule for every CXR source."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from xpgan.pipeline import fingerprint as fp_mod
from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.cxr.readers import write_dicom_cxr
from xpgan.pipeline.cxr.sources import discover
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_nifti


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24), value, np.uint8)).save(path)


def test_a_fifo_beside_a_good_nifti_fails_alone_and_is_never_opened(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_nifti(src / "good.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), (2.0, 1.0, 1.0))
    os.mkfifo(src / "bad.nii")  # opening it for reading would block for ever
    assert fp_mod.source_fingerprint(src / "bad.nii") == "not-regular"
    summary = prep_drr(src, tmp_path / "ct.zarr", shape=(8, 16, 16), geometry={"kind": "cone", "size": 16},
                       workers=0, progress=False)
    assert summary.done == 1 and summary.failed == 1
    (path, reason), = summary.failures
    assert path == "bad.nii" and reason == "a FIFO (named pipe), not a regular file: not read"


def test_a_fifo_and_a_dev_zero_link_named_png_in_a_class_folder_fail_with_their_reason(tmp_path):
    _png(tmp_path / "src" / "covid" / "a.png", 100)
    _png(tmp_path / "src" / "normal" / "b.png", 50)
    os.mkfifo(tmp_path / "src" / "normal" / "pipe.png")
    os.symlink("/dev/zero", tmp_path / "src" / "covid" / "zero.png")
    summary = prep_cxr([tmp_path / "src"], tmp_path / "cxr.zarr", size=16, workers=0, progress=False)
    assert summary.total == 4 and summary.done == 2 and summary.failed == 2
    reasons = {os.path.basename(p): r for p, r in summary.failures}
    assert reasons == {"pipe.png": "a FIFO (named pipe), not a regular file: not read",
                       "zero.png": "a character device, not a regular file: not read"}


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_a_dicom_marked_lateral_is_left_out_in_every_source_like_cohen_lateral_rows(tmp_path, view):
    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    write_dicom_cxr(tmp_path / "folders" / "covid" / "side.dcm", pixels, extra={"ViewPosition": view})
    write_dicom_cxr(tmp_path / "folders" / "covid" / "front.dcm", pixels + 1, extra={"ViewPosition": "PA"})
    _png(tmp_path / "folders" / "normal" / "n.png", 40)
    found = discover([tmp_path / "folders"])
    assert sorted(it.path.name for it in found.items) == ["front.dcm", "n.png"]
    assert found.excluded["view not selected"] == 1
    (tmp_path / "m.csv").write_text("path,label\nfolders/covid/side.dcm,1\nfolders/normal/n.png,0\n")
    found = discover([tmp_path / "m.csv"])
    assert [it.path.name for it in found.items] == ["n.png"] and found.excluded["view not selected"] == 1
