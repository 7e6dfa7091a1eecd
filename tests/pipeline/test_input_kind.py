"""The wrong kind of input is refused per file with the reason, never stored as if it were the right kind.

- CXR: DICOM that is not a projection radiograph (CT/MR slices, secondary captures) in every source kind.
- CT: NIfTI (no modality) whose values do not look like a CT in HU, including the test files nibabel ships;
  `--allow-unusual-ct` lets such a file through; the project's phantoms all pass.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as nibabel_data
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import InputError
from xpgan.pipeline.ct.validate import check_ct_plausible, read_checked_ct
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.cxr.readers import read_cxr, write_dicom_cxr
from xpgan.pipeline.synth.anatomy import chest_phantom
from xpgan.pipeline.synth.archives import ARCHIVE_SPACING_RANGE_MM, write_mosmed_archive
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

runner = CliRunner()
SPACING = (2.0, 1.0, 1.0)
NOT_RADIOGRAPH = "DICOM Modality CT is not a projection radiograph (CR, DX, RG)"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------------------- CXR: projection radiographs

def _ct_slices(folder: Path, seed: int) -> list[Path]:
    """One CT series, files named S<seed>_IMnnnn.dcm (each name unique across series, as in real exports)."""
    return write_dicom_series(folder, simple_chest((6, 16, 16), seed, dtype=np.float32), SPACING, seed=seed,
                              prefix=f"S{seed}_IM")


def _class_folders(root: Path) -> Path:
    _ct_slices(root / "covid", 0)
    _ct_slices(root / "normal", 1)
    return root


def _manifest(root: Path) -> Path:
    files = _ct_slices(root / "study", 0)
    (root / "m.csv").write_text("path,label\n" + "".join(f"study/{f.name},{i % 2}\n" for i, f in enumerate(files)))
    return root / "m.csv"


def _cohen(root: Path) -> Path:
    files = _ct_slices(root / "images", 0)
    rows = "".join(f"p{i},COVID-19,PA,X-ray,images,{f.name}\n" for i, f in enumerate(files))
    (root / "metadata.csv").write_text("patientid,finding,view,modality,folder,filename\n" + rows)
    return root


@pytest.mark.parametrize("make", [_class_folders, _manifest, _cohen], ids=["class_folders", "manifest", "cohen"])
def test_ct_slices_given_to_prep_cxr_are_refused_per_file(tmp_path, make):
    src = make(tmp_path / "src")
    summary = prep_cxr([src], tmp_path / "x.zarr", size=8, workers=0, progress=False, test_fraction=0.0)
    assert summary.done == 0 and summary.failed == summary.total >= 6
    assert all(reason == NOT_RADIOGRAPH + " (a slice of a cross-sectional series)"
               for _, reason in summary.failures), summary.failures


def test_cli_prep_cxr_names_each_refused_slice(tmp_path):
    src = _class_folders(tmp_path / "src")
    res = run("prep", "cxr", src, tmp_path / "x.zarr", "--size", "32", "--workers", "0", "--no-progress")
    assert res.exit_code == 1
    assert "0/12 items done" in res.output, res.output
    assert f"covid/S0_IM0000.dcm: {NOT_RADIOGRAPH}" in res.output


@pytest.mark.parametrize("name, modality", [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR"),
                                            ("SC_rgb_small_odd.dcm", "OT")])
def test_pydicom_test_files_are_not_radiographs(name, modality):
    with pytest.raises(InputError, match=f"DICOM Modality {modality} is not a projection radiograph"):
        read_cxr(get_testdata_file(name))


def test_dicom_without_modality_needs_a_radiograph_sop_class(tmp_path):
    path = write_dicom_cxr(tmp_path / "x.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8))
    ds = pydicom.dcmread(path)
    del ds.Modality
    ds.save_as(path)
    assert read_cxr(path).shape == (8, 8)  # Digital X-Ray Image Storage
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.save_as(path)
    with pytest.raises(InputError, match=r"DICOM without a Modality whose SOP class \(1.2.840.10008.5.1.4.1.1.7\) "
                                         "is not a radiograph"):
        read_cxr(path)


@pytest.mark.parametrize("modality", ["CR", "DX", "RG"])
def test_projection_radiographs_are_read(tmp_path, modality):
    path = write_dicom_cxr(tmp_path / "x.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8), modality=modality)
    assert read_cxr(path).shape == (8, 8)


# ------------------------------------------------------------------------------------ CT: plausible HU

NIBABEL_REASONS = {
    "anatomical.nii": "does not look like a CT in HU: no air (0.00% of voxels between -1100 and -900 HU; "
                      "values -610 to 30393); if it is a valid CT, pass --allow-unusual-ct",
    "standard.nii.gz": "too small for a CT: shape (7, 5, 4) has an axis under 8 voxels; if it is a valid CT, "
                       "pass --allow-unusual-ct",
}


@pytest.mark.parametrize("name", sorted(NIBABEL_REASONS))
def test_nibabel_test_files_are_refused_by_drr_render(tmp_path, name):
    path = Path(nibabel_data) / name
    res = run("drr", "render", path, tmp_path / "o.png", "--size", "16", "--backend", "cpu")
    assert res.exit_code == 2 and res.output.strip() == f"error: {path}: {NIBABEL_REASONS[name]}", res.output
    assert not (tmp_path / "o.png").exists()


def test_nibabel_test_files_are_failures_of_prep_drr_with_the_same_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in NIBABEL_REASONS:
        shutil.copy(Path(nibabel_data) / name, src / name)
    write_nifti(src / "chest.nii.gz", simple_chest((8, 16, 16), 0, dtype=np.float32), SPACING)
    res = run("prep", "drr", src, tmp_path / "ct.zarr", "--shape", "8", "8", "8", "--size", "32", "--backend", "cpu",
              "--workers", "0", "--no-progress")
    assert res.exit_code == 1 and "1/3 items done" in res.output, res.output
    for name, reason in NIBABEL_REASONS.items():
        assert f"failed: {name}: {reason}" in res.output, res.output


@pytest.mark.parametrize("name, reason", [("example4d.nii.gz", "expected a 3D image, got shape (128, 96, 24, 2)"),
                                          ("example_nifti2.nii.gz", "expected a 3D image, got shape (32, 20, 12, 2)")])
def test_nibabel_4d_test_files_are_refused(tmp_path, name, reason):
    path = Path(nibabel_data) / name
    res = run("drr", "render", path, tmp_path / "o.png", "--size", "16", "--backend", "cpu")
    assert res.exit_code == 2 and res.output.strip() == f"error: {path}: {reason}", res.output


@pytest.mark.parametrize("name, reason", [
    ("CT_small.dcm", "a single CT slice (2D image), not a volume"),
    ("MR_small.dcm", "no CT images with pixel data among 1 DICOM file(s) (modalities: MR)")])
def test_pydicom_test_files_are_refused_as_ct(tmp_path, name, reason):
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(get_testdata_file(name), folder / name)
    res = run("drr", "render", folder, tmp_path / "o.png", "--size", "16", "--backend", "cpu")
    assert res.exit_code == 2 and reason in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_allow_unusual_ct_lets_a_valid_but_unusual_volume_through(tmp_path):
    path = Path(nibabel_data) / "anatomical.nii"
    res = run("drr", "render", path, tmp_path / "o.npy", "--size", "16", "--backend", "cpu", "--allow-unusual-ct")
    assert res.exit_code == 0, res.output
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(path, src / "anatomical.nii")
    res = run("prep", "drr", src, tmp_path / "ct.zarr", "--shape", "8", "8", "8", "--size", "32", "--backend", "cpu",
              "--workers", "0", "--no-progress", "--allow-unusual-ct")
    assert res.exit_code == 0 and "1/1 items done" in res.output, res.output


def test_hu_without_its_intercept_has_no_air(tmp_path):
    stored = simple_chest((8, 16, 16), 0).astype(np.int32) + 1024  # unsigned HU+1024, the intercept lost
    path = write_nifti(tmp_path / "v.nii.gz", stored.astype(np.float32), SPACING, dtype=np.uint16)
    with pytest.raises(InputError, match="no air"):
        read_checked_ct(path)


def test_mostly_brighter_than_bone_is_refused():
    hu = simple_chest((8, 16, 16), 0, dtype=np.float32)
    hu[:, :8] = 5000.0  # half the volume far above bone, air still present
    with pytest.raises(InputError, match=r"0.5% of voxels are above 5000 HU, brighter than bone \(3071\)"):
        check_ct_plausible(hu, "v.nii")


@pytest.mark.parametrize("shape", [(8, 16, 16), (12, 40, 36), (64, 96, 96)])
def test_simple_chest_phantoms_are_plausible(shape):
    check_ct_plausible(simple_chest(shape, 3), "simple")


@pytest.mark.parametrize("seed, severity", [(0, 0), (1, 2), (2, 4)])
def test_anatomical_phantoms_are_plausible(seed, severity):
    ph = chest_phantom(seed, shape=(16, 64, 64), severity=severity)
    check_ct_plausible(ph.hu, "phantom")


@pytest.mark.parametrize("as_dicom", [False, True])
def test_synthetic_archives_read_as_plausible_ct(tmp_path, as_dicom):
    write_mosmed_archive(tmp_path, 2, seed=1, shape=(8, 32, 32), as_dicom=as_dicom, workers=1)
    studies = sorted((tmp_path / "dicom").iterdir()) if as_dicom else sorted((tmp_path / "studies").glob("CT-*/*"))
    assert len(studies) == 2 and all(p.is_dir() == as_dicom for p in studies)
    for study in studies:
        read_checked_ct(study, spacing_range_mm=ARCHIVE_SPACING_RANGE_MM)
