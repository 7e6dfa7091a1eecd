"""File names that are not UTF-8 or hold a newline: prep keeps every good item, stores and prints the names
as one line of UTF-8 each (errors.safe_text, lossless), and a failure record stays one line."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from xpgan.errors import safe_text
from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.schema import failures_csv_path, open_store
from xpgan.pipeline.synth.writers import write_nifti

SHAPE = (8, 24, 24)
GOOD = [b"plain", b"latin1_caf\xe9", b"new\nline", b"back\\slash"]


def _name(root: Path, raw: bytes) -> Path:
    return Path(os.fsdecode(os.path.join(os.fsencode(root), raw)))


def _ct_archive(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(1)
    for raw in GOOD:
        write_nifti(_name(root, raw + b".nii.gz"), rng.normal(-300, 300, (10, 30, 28)).astype(np.float32),
                    (4.0, 1.0, 1.0))
    _name(root, b"broken\xff\nfile.nii.gz").write_bytes(b"not a NIfTI")
    return root


def test_safe_text_is_one_utf8_line_and_lossless():
    name = os.fsdecode(b"a\xffb\nc\\d\te")
    text = safe_text(name)
    assert text == "a\\xffb\\nc\\\\d\\te" and "\n" not in text
    text.encode("utf-8")  # valid UTF-8
    assert os.fsencode(name) == text.encode().decode("unicode_escape").encode("latin-1")
    assert safe_text("plain café.nii.gz") == "plain café.nii.gz"


def test_prep_drr_keeps_good_items_with_odd_names_and_one_line_failures(tmp_path):
    src = _ct_archive(tmp_path / "src")
    out = tmp_path / "ct.zarr"
    summary = prep_drr(src, out, shape=SHAPE, geometry={"kind": "cone", "size": 24}, workers=0, progress=False)
    assert summary.done == len(GOOD) and summary.failed == 1
    ids = sorted(str(s) for s in open_store(out)["study_id"][:] if s)
    assert ids == sorted(safe_text(os.fsdecode(raw)) for raw in GOOD)
    csv_lines = failures_csv_path(out).read_text(encoding="utf-8").splitlines()
    assert len(csv_lines) == 2 and csv_lines[1].startswith("1,broken\\xff\\nfile,broken\\xff\\nfile.nii.gz,")
    failed = [line for line in summary.text().splitlines() if "failed:" in line]
    assert len(failed) == 1 and failed[0].startswith("  failed: broken\\xff\\nfile.nii.gz: ")
    again = prep_drr(src, out, shape=SHAPE, geometry={"kind": "cone", "size": 24}, workers=0, progress=False)
    assert again.skipped == len(GOOD)  # the identity of odd names is stable: the run resumes


def test_prep_cxr_keeps_good_items_with_odd_names_and_no_name_reaches_the_store(tmp_path):
    src = tmp_path / "src"
    for k, cls in enumerate((b"covid", b"normal")):
        folder = _name(src, cls)
        folder.mkdir(parents=True)
        for i, raw in enumerate(GOOD):
            Image.fromarray(np.full((24, 20), 40 + 30 * i + k, np.uint8)).save(_name(folder, raw + cls + b".png"))
        _name(folder, b"broken\xff\n" + cls + b".png").write_bytes(b"not an image")
    out = tmp_path / "cxr.zarr"
    summary = prep_cxr([src], out, size=16, workers=0, progress=False)
    assert summary.done == 2 * len(GOOD) and summary.failed == 2
    group = open_store(out)
    stored = " ".join(str(f) for f in group.attrs["failures"])
    assert "broken" not in stored and "<file>" in stored
    done = np.asarray(group["done"][:], dtype=bool)
    assert all(len(str(p)) == 16 for p in np.asarray(group["patient"][:])[done])  # odd stems hash like any other
    assert len(failures_csv_path(out).read_text(encoding="utf-8").splitlines()) == 3


def test_cli_lines_naming_odd_files_stay_one_line(tmp_path):
    from typer.testing import CliRunner

    from xpgan.cli import app

    src = _ct_archive(tmp_path / "src")
    _name(src, b"odd\nnotes.txt").write_text("not a CT")
    out = tmp_path / "ct.zarr"
    ok = CliRunner().invoke(app, ["prep", "drr", str(src), str(out), "--shape", "8", "24", "24", "--size", "32",
                                  "--workers", "0", "--no-progress"])
    assert ok.exit_code == 1  # the broken file failed; the rest is done
    assert "skipped 1: 1 not NIfTI or DICOM (odd\\nnotes.txt)" in ok.output.splitlines()[0]
    blocked = _name(tmp_path, b"in\nthe way")
    blocked.write_text("a file, not a store")
    refused = CliRunner().invoke(app, ["prep", "drr", str(src), str(blocked), "--workers", "0"])
    assert refused.exit_code == 2
    assert refused.output.splitlines() == [f"error: {tmp_path}/in\\nthe way: exists and is not a Zarr store; "
                                           "choose another output path"]
