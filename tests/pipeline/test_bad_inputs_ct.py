"""Bad-input corpus for `xpgan prep drr` and `xpgan drr render` (spacing, orientation, HU range, decompression).

One archive holds good studies beside every kind of bad one; one CLI run of prep drr must end with exit
code 1, one failure line per bad study naming the file and the reason, every good study done with the
right values, and nothing stored for a bad study (done False, fill values).
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from markers import marker_phantom
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.pipeline.ct.readers import read_ct
from xpgan.pipeline.schema import open_store
from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

SPACING = (2.0, 0.8, 0.8)
OPTS = ["--shape", "4", "8", "8", "--size", "32", "--backend", "cpu", "--workers", "0", "--no-progress"]
GOOD = ["good_nifti", "good_series", "linked_series"]


def _vol(seed=1):
    return marker_phantom((10, 12, 14), seed=seed)


def _damage(files, pos, how):
    f = sorted(files)[pos]
    data = f.read_bytes()
    f.write_bytes({"zeroed_header": b"\0" * 132 + data[132:], "truncated": data[: len(data) // 2],
                   "flipped_header": data[:140] + bytes(x ^ 0xFF for x in data[140:400]) + data[400:],
                   "empty": b""}[how])
    return f.name


def _nifti_raw(path, data, pixdim=(1.0, 1.0, 1.0), sform=0, qform=0):
    img = nib.Nifti1Image(np.asarray(data), None)
    img.header["pixdim"][1:4] = pixdim
    img.header["sform_code"], img.header["qform_code"] = sform, qform
    nib.save(img, str(path))


def _series(how, pos):
    def build(src, name):
        _damage(write_dicom_series(src / name, _vol(), SPACING), pos, how)
    return build


# name -> (what its failure line must contain, builder of a damaged series or None: built in build_archive)
BAD = {
    # item 3: a damaged slice at either end or in the middle fails the item, naming the slice
    "zeroed_first": (["zeroed_first/IM0000.dcm: not a DICOM file (no DICM marker"], _series("zeroed_header", 0)),
    "truncated_middle": (["truncated_middle/IM0004.dcm: a CT image without pixel data"], _series("truncated", 4)),
    "flipped_last": (["flipped_last/IM0009.dcm: damaged DICOM header"], _series("flipped_header", 9)),
    "empty_middle": (["empty_middle/IM0005.dcm: not a DICOM file"], _series("empty", 5)),
    # item 4: a folder of .dcm files that are not DICOM, a broken link to a NIfTI file
    "fake_dcm": (["no DICOM images in the folder: 2 file(s) named like DICOM"], None),
    "broken_link.nii.gz": (["no such file"], None),
    # item 6: implausible geometry and values
    "pixdim0.nii": (["voxel size unknown: pixdim (0.0, 0.0, 0.0) with no sform"], None),
    "tiny_spacing.nii.gz": (["voxel spacing (1e-06, 0.8, 0.8) mm is outside", "--spacing-range"], None),
    "huge_value.nii.gz": (["1 of 1680 voxels are outside the storable HU range", "max 1e+30"], None),
    "nan_value.nii.gz": (["2 of 1680 voxels are NaN or infinite"], None),
}


def build_archive(root: Path) -> Path:
    src = root / "archive"
    write_nifti(src / "good_nifti.nii.gz", _vol(2), SPACING)
    write_dicom_series(src / "good_series", _vol(3), SPACING)
    write_dicom_series(root / "elsewhere" / "series", _vol(4), SPACING)
    (src / "linked_series").symlink_to(root / "elsewhere" / "series", target_is_directory=True)
    (src / "good_series" / "loop").symlink_to("..", target_is_directory=True)  # a loop: skipped, listed
    (src / "notes.txt").write_text("not a study")
    for name, (_, build) in BAD.items():
        if build is not None:
            build(src, name)
    (src / "fake_dcm").mkdir()
    for k in range(2):
        (src / "fake_dcm" / f"IM{k}.dcm").write_text("exported as text by mistake")
    (src / "broken_link.nii.gz").symlink_to(root / "gone.nii.gz")
    _nifti_raw(src / "pixdim0.nii", np.zeros((6, 7, 8), np.int16), pixdim=(0, 0, 0))
    write_nifti(src / "tiny_spacing.nii.gz", _vol(), (1e-6, 0.8, 0.8))
    huge, nan = _vol().copy(), _vol().copy()
    huge[3, 3, 3] = 1e30
    nan[3, 3, 3], nan[4, 4, 4] = np.nan, -np.inf
    write_nifti(src / "huge_value.nii.gz", huge, SPACING, dtype=np.float32)
    write_nifti(src / "nan_value.nii.gz", nan, SPACING, dtype=np.float32)
    return src


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctbad")
    src = build_archive(root)
    out = root / "ct.zarr"
    res = CliRunner().invoke(app, ["prep", "drr", str(src), str(out), *OPTS])
    return src, out, res


def _failure_line(output: str, rel: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip().startswith(f"failed: {rel}:")]
    assert len(lines) == 1, output
    return lines[0]


def test_exit_code_and_discovery_summary(prepped):
    src, out, res = prepped
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    first = res.output.splitlines()[0]
    assert first.startswith(f"discovery: found {len(GOOD) + len(BAD)} (")
    assert "1 symlink loop (good_series/loop)" in first and "1 not NIfTI or DICOM (notes.txt)" in first


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_study_is_a_listed_one_line_failure(prepped, name):
    _, _, res = prepped
    line = _failure_line(res.output, name)
    for fragment in BAD[name][0]:
        assert fragment in line, line


def test_good_studies_landed_and_nothing_wrong_stored(prepped):
    src, out, _ = prepped
    g = open_store(out)
    ids = [str(s) for s in g["study_id"][:]]
    done = np.asarray(g["done"][:])
    assert sorted(i for i, d in zip(ids, done) if d) == sorted(GOOD)
    failed = {int(f["index"]): f["id"] for f in g.attrs["failures"]}
    assert sorted(failed.values()) == sorted(Path(n).name.split(".")[0] for n in BAD)
    assert sorted(failed) == sorted(np.flatnonzero(~done).tolist())
    vol, drr = np.asarray(g["volume"][:]), np.asarray(g["drr"][:])
    assert not vol[~done].any() and not drr[~done].any()  # fill values only
    assert np.isfinite(drr).all() and all(drr[i].max() > 0 for i in np.flatnonzero(done))
    for name in GOOD:  # the phantoms' markers (-1000 / +2000 HU) survive the resize: real data, read through links
        assert vol[ids.index(name)].min() < -500 and vol[ids.index(name)].max() > 1000
    assert g.attrs["xpgan"]["skipped"] == {"not NIfTI or DICOM": 1, "symlink loop": 1}


def test_rerun_still_lists_every_failure(prepped):
    src, out, _ = prepped
    res = CliRunner().invoke(app, ["prep", "drr", str(src), str(out), *OPTS])
    assert res.exit_code == 1 and f"{len(GOOD)}/{len(GOOD) + len(BAD)} items done ({len(GOOD)} already" in res.output
    for name in BAD:
        _failure_line(res.output, name)


def test_spacing_range_option_overrides(tmp_path):
    write_nifti(tmp_path / "src" / "fine.nii.gz", _vol(), (0.05, 0.8, 0.8))
    args = ["prep", "drr", str(tmp_path / "src"), *OPTS]
    res = CliRunner().invoke(app, args[:3] + [str(tmp_path / "a.zarr")] + args[3:])
    assert res.exit_code == 1 and "outside the plausible CT range 0.1 to 20 mm" in res.output
    res = CliRunner().invoke(app, args[:3] + [str(tmp_path / "b.zarr")] + args[3:] + ["--spacing-range", "0.01", "5"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, args[:3] + [str(tmp_path / "c.zarr")] + args[3:] + ["--spacing-range", "5", "1"])
    assert res.exit_code == 2 and res.output.strip() == "error: --spacing-range needs 0 < LO < HI (mm), got 5 1"


@pytest.mark.parametrize("name", ["nan_value.nii.gz", "huge_value.nii.gz", "tiny_spacing.nii.gz", "pixdim0.nii"])
def test_drr_render_refuses_what_prep_refuses(prepped, tmp_path, name):
    src, _, prep_res = prepped
    res = CliRunner().invoke(app, ["drr", "render", str(src / name), str(tmp_path / "o.npy"), "--size", "8",
                                   "--backend", "cpu"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "o.npy").exists()
    # the same validation: the reason after the file name is the one prep drr gave
    reason = res.output.strip().split(f"{name}: ", 1)[1]
    assert _failure_line(prep_res.output, name).endswith(reason)


def test_drr_render_refuses_a_damaged_series_naming_the_slice(prepped, tmp_path):
    src, _, _ = prepped
    res = CliRunner().invoke(app, ["drr", "render", str(src / "zeroed_first"), str(tmp_path / "o.npy"),
                                   "--size", "8", "--backend", "cpu"])
    assert res.exit_code == 2 and res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert "zeroed_first/IM0000.dcm: not a DICOM file" in res.output


def test_pixdim_zero_with_sform_is_fine(tmp_path):
    img = nib.Nifti1Image(np.zeros((6, 7, 8), np.int16), np.diag([0.7, 0.8, 2.0, 1.0]))
    img.header["pixdim"][1:4] = 0
    nib.save(img, str(tmp_path / "s.nii"))
    assert read_ct(tmp_path / "s.nii").spacing == pytest.approx((2.0, 0.8, 0.7))


# ---- unreadable files and folders (root reads everything: see conftest's run_cli_unprivileged)
@pytest.mark.slow  # a CLI subprocess per case (permissions apply only outside root)
def test_unreadable_slices_and_folders_fail_naming_them(tmp_path, run_cli_unprivileged):
    src = tmp_path / "archive"
    write_nifti(src / "good.nii.gz", _vol(2), SPACING)
    first = sorted(write_dicom_series(src / "locked_first", _vol(), SPACING))[0]
    middle = sorted(write_dicom_series(src / "locked_middle", _vol(), SPACING))[5]
    write_dicom_series(src / "locked_folder", _vol(), SPACING)
    for path, mode in ((first, 0), (middle, 0), (src / "locked_folder", 0)):
        path.chmod(mode)
    try:
        res = run_cli_unprivileged("prep", "drr", src, tmp_path / "ct.zarr", *OPTS)
    finally:
        (src / "locked_folder").chmod(0o755)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "Traceback" not in out, out
    assert "discovery: found 4" in out
    assert "locked_first/IM0000.dcm: cannot read the file (Permission denied)" in _failure_line(out, "locked_first")
    assert "locked_middle/IM0005.dcm: cannot read the file (Permission denied)" in _failure_line(out, "locked_middle")
    assert "cannot list the folder (Permission denied)" in _failure_line(out, "locked_folder")
    g = open_store(tmp_path / "ct.zarr")
    assert [str(s) for s, d in zip(g["study_id"][:], g["done"][:]) if d] == ["good"]
