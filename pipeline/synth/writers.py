"""Writers of CT volumes as NIfTI files and DICOM series, for tests and synthetic (demo) archives.

Both take a volume in the canonical orientation of docs/design.md (`[d, h, w]` = (I, P, L), spacing
`(sd, sh, sw)` mm) and store the same anatomy under any on-disk orientation, with an affine /
ImageOrientationPatient that says so. `xpgan.pipeline.ct.readers.read_ct` gives the canonical array back.

World coordinates of canonical voxel (i, j, k), before `origin_mm`: the patient's superior direction is
-i * sd, posterior +j * sh, left +k * sw; i.e. in RAS: (-k * sw, -j * sh, -i * sd), in LPS:
(k * sw, j * sh, -i * sd).

No PHI policy applies here: these files are synthetic; the patient fields exist so that tests can check
that nothing downstream copies them into a store.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from xpgan.pipeline.ct.readers import CANONICAL_AXCODES

# ImageOrientationPatient presets (LPS direction of a row, then of a column).
DICOM_ORIENTATIONS: dict[str, tuple[float, ...]] = {
    # Standard axial: columns run to the patient's left, rows to posterior (viewed from the feet).
    "axial": (1, 0, 0, 0, 1, 0),
    # Axial with mirrored rows: columns run to the patient's right.
    "axial_flipped": (-1, 0, 0, 0, 1, 0),
    # Axial rotated 180 degrees in plane (columns to the right, rows to anterior).
    "axial_rotated": (-1, 0, 0, 0, -1, 0),
    # Axial transposed: columns run posterior, rows to the patient's left.
    "axial_transposed": (0, 1, 0, 1, 0, 0),
    # Coronal: columns to the patient's left, rows to inferior.
    "coronal": (1, 0, 0, 0, 0, -1),
    # Sagittal: columns to posterior, rows to inferior.
    "sagittal": (0, 1, 0, 0, 0, -1),
}


def _canonical_affine_ras(shape_dhw, spacing, origin_mm) -> np.ndarray:
    """Voxel (i, j, k) of the canonical array -> RAS mm."""
    sd, sh, sw = (float(s) for s in spacing)
    aff = np.zeros((4, 4))
    aff[0, 2] = -sw  # k: patient right -> left, i.e. towards -R
    aff[1, 1] = -sh  # j: anterior -> posterior, towards -A
    aff[2, 0] = -sd  # i: superior -> inferior, towards -S
    aff[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    aff[3, 3] = 1.0
    return aff


def _reorient(hu_dhw: np.ndarray, axcodes: Sequence[str]):
    """(array in `axcodes` orientation, transform canonical -> axcodes)."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    transform = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), axcodes2ornt(tuple(axcodes)))
    return apply_orientation(hu_dhw, transform), transform


def _check_volume(hu_dhw: np.ndarray, spacing) -> np.ndarray:
    hu = np.asarray(hu_dhw)
    if hu.ndim != 3:
        raise ValueError(f"hu_dhw must be 3D [d, h, w], got shape {hu.shape}")
    if len(spacing) != 3 or not all(float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values, got {spacing}")
    return hu


def _to_stored(hu: np.ndarray, dtype, slope: float, inter: float) -> np.ndarray:
    dtype = np.dtype(dtype)
    stored = (np.asarray(hu, dtype=np.float64) - inter) / slope
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        stored = np.clip(np.rint(stored), info.min, info.max)
    return stored.astype(dtype)


def write_nifti(
    path: str | os.PathLike,
    hu_dhw: np.ndarray,  # [d, h, w] canonical (I, P, L), HU
    spacing: Sequence[float],  # (sd, sh, sw), mm
    *,
    axcodes: Sequence[str] = CANONICAL_AXCODES,  # on-disk orientation, nibabel axis codes, e.g. ("R","A","S")
    dtype=np.int16,  # stored voxel type; integer types are rounded and clipped
    extra_affine_shift: Sequence[float] = (0.0, 0.0, 0.0),  # origin of the first voxel, RAS mm
    rotate_deg: float = 0.0,  # rotate the affine about the S axis (an oblique scan); data untouched
    scl_slope: float = 1.0,  # stored = (hu - scl_inter) / scl_slope
    scl_inter: float = 0.0,
    singleton_4d: bool = False,  # write shape (x, y, z, 1)
) -> Path:
    """Write the canonical volume as a NIfTI-1 file whose voxel axes follow `axcodes`.

    The affine (sform and qform, code "scanner") is the canonical affine composed with the axis
    permutation/flips, so reading it back through the affine gives the canonical array exactly (for
    |rotate_deg| < 45: the closest axes are unchanged), provided the values survive `dtype` and the
    scaling: integer dtypes round `(hu - scl_inter) / scl_slope` to the nearest integer and clip.
    """
    import nibabel as nib
    from nibabel.orientations import inv_ornt_aff

    hu = _check_volume(hu_dhw, spacing)
    data, transform = _reorient(hu, axcodes)
    affine = _canonical_affine_ras(hu.shape, spacing, extra_affine_shift) @ inv_ornt_aff(transform, hu.shape)
    if rotate_deg:
        t = np.deg2rad(rotate_deg)
        rot = np.eye(4)
        rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
        affine = rot @ affine
    stored = _to_stored(data, dtype, scl_slope, scl_inter)
    if singleton_4d:
        stored = stored[..., None]
    img = nib.Nifti1Image(stored, affine)
    img.set_sform(affine, code="scanner")
    img.set_qform(affine, code="scanner")
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(scl_slope, scl_inter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _fmt_ds(v: float) -> str:
    """A DS string (at most 16 characters) for a float value."""
    s = f"{float(v):.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s


def _lps_code(vec: np.ndarray) -> str:
    k = int(np.argmax(np.abs(vec)))
    return ("L", "P", "S")[k] if vec[k] > 0 else ("R", "A", "I")[k]


class _SeriesGeometry(NamedTuple):
    """Where the slices of a DICOM series lie: the volume in file layout and its LPS affine."""
    iop: np.ndarray        # ImageOrientationPatient: row direction, then column direction (LPS)
    normal: np.ndarray     # slice normal, cross(row direction, column direction)
    native: np.ndarray     # the volume as [slice, row, col]
    aff_lps: np.ndarray    # native voxel (slice, row, col) -> LPS mm
    slice_mm: float        # between slices
    row_mm: float          # between rows (along the column direction)
    col_mm: float          # between columns (along the row direction)


def _series_geometry(hu: np.ndarray, spacing, orientation, origin_mm) -> _SeriesGeometry:
    """The canonical volume laid out for `orientation` (a DICOM_ORIENTATIONS name or 6 axis-aligned cosines)."""
    from nibabel.orientations import inv_ornt_aff

    iop = np.asarray(DICOM_ORIENTATIONS[orientation] if isinstance(orientation, str) else orientation,
                     dtype=np.float64)
    if iop.shape != (6,):
        raise ValueError(f"orientation must be a name in {sorted(DICOM_ORIENTATIONS)} or 6 direction cosines")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    # Native array [slice, row, col]: slices along +normal, rows along col_dir, columns along row_dir.
    axcodes = (_lps_code(normal), _lps_code(col_dir), _lps_code(row_dir))
    if len({c for c in axcodes}) != 3:
        raise ValueError(f"orientation {tuple(iop)} is not axis-aligned and orthogonal")
    native, transform = _reorient(hu, axcodes)  # [n, rows, cols]
    aff_ras = _canonical_affine_ras(hu.shape, spacing, (0, 0, 0)) @ inv_ornt_aff(transform, hu.shape)
    aff_lps = aff_ras.copy()
    aff_lps[:2] *= -1
    aff_lps[:3, 3] += np.asarray(origin_mm, dtype=np.float64)
    slice_mm = float(np.linalg.norm(aff_lps[:3, 0]))
    row_mm = float(np.linalg.norm(aff_lps[:3, 1]))
    col_mm = float(np.linalg.norm(aff_lps[:3, 2]))
    assert np.allclose(aff_lps[:3, 0] / slice_mm, normal) and np.allclose(aff_lps[:3, 2] / col_mm, row_dir)
    return _SeriesGeometry(iop, normal, native, aff_lps, slice_mm, row_mm, col_mm)


def _stored_series(native: np.ndarray, signed: bool | None, slope: float, intercept: float):
    """(stored values, their dtype, PixelRepresentation signedness); signed=None: unsigned if all stored >= 0."""
    stored = _to_stored(native, np.float64, slope, intercept)
    if signed is None:
        signed = bool(stored.min() < 0)
    dtype = np.dtype(np.int16 if signed else np.uint16)
    return _to_stored(native, dtype, slope, intercept), dtype, signed


def _file_order(n: int, slice_order: str, seed: int) -> np.ndarray:
    """Slice indices in the order the files are written: ascending, descending or shuffled (by seed)."""
    if slice_order == "ascending":
        return np.arange(n)
    if slice_order == "descending":
        return np.arange(n)[::-1]
    if slice_order == "shuffled":
        return np.random.default_rng(seed).permutation(n)
    raise ValueError(f"slice_order must be 'ascending', 'descending' or 'shuffled', got {slice_order!r}")


def _ct_slice(geo: _SeriesGeometry, s: int, file_index: int, pixels: bytes, uids: dict, patient: dict,
              rescale: tuple[float, float], signed: bool):
    """The CT Image Storage dataset of native slice `s`, written as file number `file_index`.

    `uids` holds study, series and frame UIDs; `patient` the PatientName, PatientID and PatientBirthDate;
    `rescale` is (intercept, slope).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ipp = geo.aff_lps[:3, :3] @ np.array([s, 0.0, 0.0]) + geo.aff_lps[:3, 3]
    sop_uid = generate_uid(entropy_srcs=[uids["series"], str(int(s))])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = patient["PatientName"]
    ds.PatientID = patient["PatientID"]
    ds.PatientBirthDate = patient["PatientBirthDate"]
    ds.PatientSex = "O"
    ds.StudyDate = "20200401"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = file_index + 1
    ds.ImagePositionPatient = [_fmt_ds(v) for v in ipp]
    ds.ImageOrientationPatient = [_fmt_ds(v) for v in geo.iop]
    ds.PixelSpacing = [_fmt_ds(geo.row_mm), _fmt_ds(geo.col_mm)]
    ds.SliceThickness = _fmt_ds(geo.slice_mm)
    ds.SliceLocation = _fmt_ds(float(ipp @ geo.normal))
    ds.Rows, ds.Columns = int(geo.native.shape[1]), int(geo.native.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = _fmt_ds(rescale[0])
    ds.RescaleSlope = _fmt_ds(rescale[1])
    ds.RescaleType = "HU"
    ds.PixelData = pixels
    return ds


def write_dicom_series(
    folder: str | os.PathLike,
    hu_dhw: np.ndarray,  # [d, h, w] canonical (I, P, L), HU
    spacing: Sequence[float],  # (sd, sh, sw), mm
    *,
    orientation: str | Sequence[float] = "axial",  # a DICOM_ORIENTATIONS name or 6 axis-aligned cosines (LPS)
    slice_order: str = "ascending",  # file order along the slice normal: ascending | descending | shuffled
    patient_name: str = "Phantom^Test",
    patient_id: str = "PHANTOM-0001",
    birth_date: str = "19700101",
    series_uid: str | None = None,
    study_uid: str | None = None,
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    origin_mm: Sequence[float] = (0.0, 0.0, 0.0),  # LPS mm of canonical voxel (0, 0, 0)
    signed: bool | None = None,  # PixelRepresentation; None: unsigned if every stored value is >= 0
    seed: int = 0,  # shuffled order and UIDs
    prefix: str = "IM",
) -> list[Path]:
    """Write the canonical volume as single-frame CT Image Storage files (Explicit VR Little Endian).

    The slice normal is cross(row direction, column direction) of ImageOrientationPatient; slices are
    named `{prefix}{n:04d}.dcm` in `slice_order` (InstanceNumber follows the file order, so a reader that
    trusts file names or InstanceNumber instead of positions gets "descending"/"shuffled" wrong).
    Returns the file paths in the order written.
    """
    from pydicom.uid import generate_uid

    hu = _check_volume(hu_dhw, spacing)
    geo = _series_geometry(hu, spacing, orientation, origin_mm)
    stored, dtype, signed = _stored_series(geo.native, signed, rescale_slope, rescale_intercept)
    order = _file_order(geo.native.shape[0], slice_order, seed)

    entropy = [str(seed), patient_id]
    uids = {"study": study_uid or generate_uid(entropy_srcs=entropy + ["study"]),
            "series": series_uid or generate_uid(entropy_srcs=entropy + ["series", str(tuple(geo.iop))]),
            "frame": generate_uid(entropy_srcs=entropy + ["frame"])}
    patient = {"PatientName": patient_name, "PatientID": patient_id, "PatientBirthDate": birth_date}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for file_index, s in enumerate(order):
        pixels = np.ascontiguousarray(stored[s]).astype("<" + dtype.str[1:]).tobytes()
        ds = _ct_slice(geo, s, file_index, pixels, uids, patient, (rescale_intercept, rescale_slope), signed)
        path = folder / f"{prefix}{file_index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
