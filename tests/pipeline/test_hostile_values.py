"""Header values and labels mean what the file says, or the file (or row) is refused with the reason.

Rescale tags under one rule for CT and CXR readers, NIfTI scl_slope / scl_inter, manifest labels, burnt-in
annotations, EXIF orientation, library errors turned into user reasons. Every hostile file is generated here.
"""
from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import InputError
from xpgan.pipeline.ct.readers import read_ct
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.cxr.readers import read_cxr, write_dicom_cxr
from xpgan.pipeline.cxr.sources import discover
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

SPACING = (2.0, 1.0, 1.0)
DRR_OPTS = ["--size", "16", "--backend", "cpu"]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, *fragments):
    text = res.output.strip()
    assert res.exit_code == 2 and "Traceback" not in text and len(text.splitlines()) == 1, text
    for f in fragments:
        assert f in text, text
    return text


def _series(folder: Path) -> list[Path]:
    return write_dicom_series(folder, simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)


def _poke(path: Path, keyword: str, value: bytes | None) -> None:
    """Rewrite one data element's raw value in place (same length, space-padded) or delete it (None): values
    that pydicom refuses to write, as a damaged or crafted file holds them."""
    ds = pydicom.dcmread(path)
    if value is None:
        del ds[keyword]
        ds.save_as(path)
        return
    tag = pydicom.datadict.tag_for_keyword(keyword)
    data = path.read_bytes()
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + pydicom.datadict.dictionary_VR(tag).encode()
    at = data.index(head)
    length = struct.unpack("<H", data[at + 6:at + 8])[0]
    new = value.ljust(max(length, len(value) + len(value) % 2))
    path.write_bytes(data[:at + 6] + struct.pack("<H", len(new)) + new + data[at + 8 + length:])


# ------------------------------------------------------------------------------------------ CT rescale

def test_ct_series_without_rescale_tags_is_refused(tmp_path):
    for f in _series(tmp_path / "s"):
        _poke(f, "RescaleSlope", None)
        _poke(f, "RescaleIntercept", None)
    with pytest.raises(InputError, match="no RescaleSlope/RescaleIntercept: the stored values cannot be read as "
                                         "Hounsfield units"):
        read_ct(tmp_path / "s")


def test_ct_series_with_slope_zero_is_refused(tmp_path):
    files = _series(tmp_path / "s")
    _poke(files[3], "RescaleSlope", b"0")
    with pytest.raises(InputError, match=r"IM0003.dcm: RescaleSlope 0 is unusable"):
        read_ct(tmp_path / "s")


def test_ct_slope_that_is_not_a_number_is_one_line_in_drr_render_and_a_failure_in_prep(tmp_path):
    files = _series(tmp_path / "src" / "s")
    _poke(files[0], "RescaleSlope", b"ab")
    one_line_error(run("drr", "render", tmp_path / "src" / "s", tmp_path / "o.npy", *DRR_OPTS),
                   "IM0000.dcm: RescaleSlope 'ab' is not a number")
    res = run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", "--shape", "8", "8", "8", "--size", "32",
              "--backend", "cpu", "--workers", "0", "--no-progress")
    assert res.exit_code == 1 and "RescaleSlope 'ab' is not a number" in res.output, res.output


@pytest.mark.parametrize("slope, inter, reason", [(np.inf, 0.0, "scl_slope is inf"),
                                                  (2.0, np.nan, "not a valid NIfTI header: Valid slope but "
                                                                "invalid intercept nan"),
                                                  (1e9, 0.0, "scl_slope 1e+09 is unusable")])
def test_nifti_scaling_that_is_not_finite_or_absurd_is_refused(tmp_path, slope, inter, reason):
    img = nib.Nifti1Image(simple_chest((8, 16, 16), 0).astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, tmp_path / "v.nii")
    data = bytearray((tmp_path / "v.nii").read_bytes())
    struct.pack_into("<ff", data, 112, slope, inter)  # scl_slope, scl_inter: offsets 112 and 116
    (tmp_path / "v.nii").write_bytes(bytes(data))
    one_line_error(run("drr", "render", tmp_path / "v.nii", tmp_path / "o.npy", *DRR_OPTS), reason)


def test_nifti_slope_zero_means_unscaled(tmp_path):
    hu = simple_chest((8, 16, 16), 0, dtype=np.float32)
    path = write_nifti(tmp_path / "v.nii", hu, SPACING)
    data = bytearray(path.read_bytes())
    struct.pack_into("<ff", data, 112, 0.0, 500.0)  # the NIfTI standard: slope 0 -> no scaling at all
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_ct(path).hu, read_ct(write_nifti(tmp_path / "w.nii", hu, SPACING)).hu)


def test_nifti_header_error_is_a_user_reason(tmp_path):
    path = write_nifti(tmp_path / "v.nii", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    data = bytearray(path.read_bytes())
    struct.pack_into("<h", data, 70, 9999)  # datatype
    path.write_bytes(bytes(data))
    text = one_line_error(run("drr", "render", path, tmp_path / "o.npy", *DRR_OPTS),
                          f"{path}: not a valid NIfTI header: data code 9999 not recognized")
    assert "Error" not in text


# ------------------------------------------------------------------------------ CXR: the same rescale rule

@pytest.mark.parametrize("value, reason", [(b"ab", "RescaleSlope 'ab' is not a number"),
                                           (b"1\\2", r"RescaleSlope '1\\\\2' is not a number"),
                                           (b"0", "RescaleSlope 0 is unusable"),
                                           (b"inf", "RescaleSlope is inf, not a finite number")])
def test_radiograph_rescale_follows_the_ct_rule(tmp_path, value, reason):
    path = write_dicom_cxr(tmp_path / "x.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), rescale=(3, 0))
    _poke(path, "RescaleSlope", value)
    with pytest.raises(InputError, match=reason):
        read_cxr(path)
    files = _series(tmp_path / "ct")
    _poke(files[0], "RescaleSlope", value)
    with pytest.raises(InputError, match=reason):
        read_ct(tmp_path / "ct")


def test_radiograph_with_one_rescale_tag_is_refused(tmp_path):
    path = write_dicom_cxr(tmp_path / "x.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), rescale=(2, 10))
    _poke(path, "RescaleIntercept", None)
    with pytest.raises(InputError, match="RescaleIntercept is missing while its partner is present"):
        read_cxr(path)


# ---------------------------------------------------------------------------------------- manifest labels

def _manifest(tmp_path: Path, rows: str) -> Path:
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((20, 24), 100, np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "m.csv").write_text("path,label\n" + rows)
    return tmp_path / "m.csv"


@pytest.mark.parametrize("label", ["1.5", "0.9", "2.7", "positive", "yes", "inf", "1e400", "-1", "true", "1.0"])
def test_manifest_label_outside_the_vocabulary_fails_its_row(tmp_path, label):
    found = discover([_manifest(tmp_path, f"a.png,1\nb.png,{label}\n")])
    assert [(it.path.name, it.label) for it in found.items] == [("a.png", 1)]
    (path, reason), = found.problems
    assert Path(path).name == "b.png"
    assert reason.startswith(f"m.csv line 3: label '{label}' is not 0, 1 or a class name"), reason


def test_manifest_class_names_map_by_the_positive_list(tmp_path):
    found = discover([_manifest(tmp_path, "a.png,covid\nb.png,normal\nc.png,0\n")])
    assert [it.label for it in found.items] == [1, 0, 0] and not found.problems


def test_a_word_given_as_positive_class_is_a_class(tmp_path):
    found = discover([_manifest(tmp_path, "a.png,positive\nb.png,0\n")], positive=("positive",))
    assert [it.label for it in found.items] == [1, 0] and not found.problems


def test_empty_positive_class_is_refused(tmp_path):
    with pytest.raises(InputError, match="--positive: class names must not be empty"):
        discover([_manifest(tmp_path, "a.png,1\n")], positive=("covid", " "))
    res = run("prep", "cxr", tmp_path / "m.csv", tmp_path / "x.zarr", "--positive", "")
    one_line_error(res, "--positive: class names must not be empty")
    assert not (tmp_path / "x.zarr").exists()


def test_path_listed_twice_with_conflicting_labels_fails_both_rows(tmp_path):
    found = discover([_manifest(tmp_path, "a.png,1\nb.png,0\na.png,0\n")])
    assert [it.path.name for it in found.items] == ["b.png"]
    assert [Path(p).name for p, _ in found.problems] == ["a.png", "a.png"]
    assert [r for _, r in found.problems] == [
        f"m.csv line {n}: listed 2 times with conflicting labels (m.csv line 2: 1, m.csv line 4: 0)" for n in (2, 4)]


def test_path_listed_twice_with_the_same_label_is_kept_once(tmp_path):
    found = discover([_manifest(tmp_path, "a.png,1\na.png,1\n")])
    assert [it.path.name for it in found.items] == ["a.png"] and not found.problems
    assert found.excluded["duplicate path"] == 1


@pytest.mark.parametrize("column, value", [("severity", "2.7"), ("label", "1.0"), ("label", "1e400"),
                                           ("label", "inf"), ("severity", "nan")])
def test_ct_manifest_numbers_are_exact(tmp_path, column, value):
    write_nifti(tmp_path / "a.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    row = {"label": "1", "severity": "2", column: value}
    (tmp_path / "m.csv").write_text(f"path,label,severity\na.nii.gz,{row['label']},{row['severity']}\n")
    one_line_error(run("prep", "drr", tmp_path / "m.csv", tmp_path / "ct.zarr", "--workers", "0"),
                   f"m.csv: line 2: {column} '{value}' is not one of")
    assert not (tmp_path / "ct.zarr").exists()


# ------------------------------------------------------------------------------- burnt-in text, orientation

def test_burned_in_annotation_is_refused_unless_allowed(tmp_path):
    path = write_dicom_cxr(tmp_path / "covid" / "x.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8),
                           extra={"BurnedInAnnotation": "YES"})
    with pytest.raises(InputError, match="BurnedInAnnotation is YES.*--allow-burned-in-annotation"):
        read_cxr(path)
    assert read_cxr(path, allow_burned_in=True).shape == (8, 8)


def test_prep_cxr_refuses_burned_in_per_file_and_the_option_accepts_it(tmp_path):
    src = tmp_path / "src"
    write_dicom_cxr(src / "covid" / "text.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8),
                    extra={"BurnedInAnnotation": "YES"})
    write_dicom_cxr(src / "normal" / "clean.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8),
                    extra={"BurnedInAnnotation": "NO"})
    kw = dict(size=8, workers=0, progress=False, test_fraction=0.0)
    refused = prep_cxr([src], tmp_path / "a.zarr", **kw)
    assert (refused.done, refused.failed) == (1, 1) and "BurnedInAnnotation is YES" in refused.failures[0][1]
    allowed = prep_cxr([src], tmp_path / "b.zarr", allow_burned_in=True, **kw)
    assert (allowed.done, allowed.failed) == (2, 0)


def test_png_exif_orientation_is_applied(tmp_path):
    a = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8) * 5  # [H, W] as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    Image.fromarray(a).save(tmp_path / "r.png", exif=exif)
    np.testing.assert_allclose(read_cxr(tmp_path / "r.png"), np.rot90(a, -1) / 255.0, atol=1e-6)


def test_unsupported_images_in_class_folders_are_counted(tmp_path):
    (tmp_path / "covid").mkdir()
    Image.fromarray(np.full((20, 24), 100, np.uint8)).save(tmp_path / "covid" / "a.png")
    Image.fromarray(np.full((20, 24), 100, np.uint8)).save(tmp_path / "covid" / "b.gif")
    Image.fromarray(np.full((20, 24), 100, np.uint8)).save(tmp_path / "covid" / "c.tif")
    found = discover([tmp_path])
    assert [it.path.name for it in found.items] == ["a.png"]
    assert found.excluded == {"unsupported image format .gif (convert to PNG)": 1,
                              "unsupported image format .tif (convert to PNG)": 1}


# ------------------------------------------------------------------ manifests: columns, NUL, label vs severity

def test_a_manifest_header_with_a_repeated_column_is_refused(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    (tmp_path / "ct.csv").write_text("path,label,label\na.nii.gz,1,0\n")
    one_line_error(run("prep", "drr", tmp_path / "ct.csv", tmp_path / "ct.zarr", "--workers", "0"),
                   "ct.csv: column(s) label appear more than once in the header")
    _manifest(tmp_path, "")
    (tmp_path / "m.csv").write_text("path,label,label\na.png,1,0\n")
    one_line_error(run("prep", "cxr", tmp_path / "m.csv", tmp_path / "x.zarr"),
                   "m.csv: column(s) label appear more than once in the header")
    assert not (tmp_path / "ct.zarr").exists() and not (tmp_path / "x.zarr").exists()


def test_a_nul_byte_in_a_manifest_path_is_one_line_naming_the_row(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    (tmp_path / "ct.csv").write_text("path,label\na.nii.gz,1\nb\0.nii.gz,0\n")
    one_line_error(run("prep", "drr", tmp_path / "ct.csv", tmp_path / "ct.zarr", "--workers", "0"),
                   "ct.csv: line 3: the path holds a NUL byte")
    found = discover([_manifest(tmp_path, "a.png,1\nb\0.png,0\n")])
    assert [it.path.name for it in found.items] == ["a.png"]
    assert [r for _, r in found.problems] == ["m.csv line 3: the path holds a NUL byte, which no file name can"]


@pytest.mark.parametrize("label, severity", [(0, 4), (0, 1), (1, 0)])
def test_a_ct_manifest_label_that_contradicts_its_severity_is_refused(tmp_path, label, severity):
    write_nifti(tmp_path / "a.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    (tmp_path / "m.csv").write_text(f"path,label,severity\na.nii.gz,{label},{severity}\n")
    one_line_error(run("prep", "drr", tmp_path / "m.csv", tmp_path / "ct.zarr", "--workers", "0"),
                   f"m.csv: line 2: label {label} with severity {severity} contradicts itself",
                   "CT-1..CT-4 grades COVID-19 lesions")


# ------------------------------------------------------------------------------------- DICOM and drr render

def test_pixel_spacing_zero_or_negative_is_said_as_such_not_as_gantry_tilt(tmp_path):
    for value in (b"0\\0", b"-0.5\\-0.5"):
        files = _series(tmp_path / value.hex() / "s")
        for f in files:
            _poke(f, "PixelSpacing", value)
        with pytest.raises(InputError, match=r"IM0000.dcm: PixelSpacing .* is not a pixel size \(each value must "
                                             r"be a positive number of mm\)") as err:
            read_ct(tmp_path / value.hex() / "s")
        assert "gantry" not in str(err.value)


@pytest.mark.parametrize("offset, said", [("1e308,0,0", "--offset must be"), ("0,1001,0", "--offset must be"),
                                          ("0,0", "--offset must be 3 comma-separated numbers")])
def test_drr_render_offset_is_bounded(tmp_path, offset, said):
    write_nifti(tmp_path / "a.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    one_line_error(run("drr", "render", tmp_path / "a.nii.gz", tmp_path / "o.npy", "--offset", offset, *DRR_OPTS),
                   said)
    assert not (tmp_path / "o.npy").exists()


def test_drr_render_offset_that_leaves_the_volume_outside_the_beam_is_refused(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    ok = run("drr", "render", tmp_path / "a.nii.gz", tmp_path / "o.npy", "--offset", "2,1,-3", *DRR_OPTS)
    assert ok.exit_code == 0, ok.output
    one_line_error(run("drr", "render", tmp_path / "a.nii.gz", tmp_path / "p.npy", "--offset", "0,0,900",
                       "--pixel-mm", "1", *DRR_OPTS), "--offset 0,0,900: the shifted isocentre leaves the volume "
                                                       "outside the beam")
    assert not (tmp_path / "p.npy").exists()
