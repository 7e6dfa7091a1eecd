"""CT readers: NIfTI files and DICOM series folders -> HU volumes in the canonical orientation.

Canonical orientation (docs/design.md): arrays are indexed `[d, h, w]` = (superior->inferior,
anterior->posterior, patient right->patient left), nibabel axis codes `('I', 'P', 'L')`, with voxel
spacing `(sd, sh, sw)` in mm. Every reader brings its data to this orientation before anything else
touches it, so `volume.mean(axis=1)` is an AP view in chest X-ray display orientation (head at the top,
patient's right on the image's left).

Conventions and choices:
- NIfTI: nibabel's `img.affine` (sform if set, else qform) maps voxels to RAS+ world coordinates. The data
  are permuted and flipped (never resampled) to the canonical axes. An oblique affine is handled by taking,
  for each voxel axis, the closest world axis (`nibabel.orientations.io_orientation`); the obliquity itself
  is ignored, and spacing is the length of each affine column (the true voxel size along that voxel axis).
  `scl_slope` / `scl_inter` are applied under `xpgan.pipeline.values.nifti_rescale` (0 or NaN: unscaled;
  infinite or absurd values refused). A 4D image with a singleton 4th dimension is read as 3D.
- DICOM: patient coordinates are LPS (x to the patient's left, y posterior, z superior). The in-plane axes
  come from ImageOrientationPatient (first triplet: direction along a row, i.e. of increasing column index;
  second: along a column, i.e. of increasing row index), the slice axis is their cross product, slices are
  sorted by ImagePositionPatient projected on it. Pixel spacing is PixelSpacing (row spacing, column
  spacing); slice spacing is the mean difference of the sorted positions (SliceThickness is ignored).
  RescaleSlope / RescaleIntercept are applied per slice; a CT image without them, or with a slope of 0 or
  a value that is not a number, is refused (`xpgan.pipeline.values.dicom_rescale`). Oblique orientations
  take the closest axes, as for NIfTI. A series whose slices shift in plane by a pixel or more along the
  stack (gantry tilt) is refused rather than silently sheared.
- A single DICOM file is refused (pass the folder of its series): a folder is one series, and reading "the
  folder of this file" would silently pick up whatever else lies beside it.
- Reading is header-first: `probe_ct` reads headers only (NIfTI header; DICOM headers with the pixel data
  left unread) so callers can refuse absurd sizes before allocating; `read_ct(path, max_bytes=...)` does
  that check itself between parsing the headers and reading the pixels (one header parse).
- `read_ct_stored` stops before the float32 conversion: a canonical view of the stored voxels plus their
  slope and intercept, for consumers that convert while they compute (prep drr's resize).
- A .nii.gz is decompressed as a stream into a buffer of the size its header declares (ISA-L through the
  `isal` package when installed, else zlib); a stream that holds more than that plus
  `GZIP_MARGIN_BYTES` is refused ("decompressed size exceeds what the header declares"), so memory stays
  bounded by the header that the memory limit checked. The data are viewed in place; the stored values
  are then converted to float32, scaled and reoriented in a single pass into the output array
  (`_native_view`). Peak memory: the decompressed file plus the float32 volume. A DICOM series holds all
  its raw slices plus the float32 volume at the peak.
- DICOM files are those with the "DICM" marker, or preamble-less datasets starting with group 0008
  (`xpgan.pipeline.sniff`); DICOMDIR, README.txt and other files are ignored, and so are non-CT DICOM
  objects (reports, other SOP classes) beside the CT images. A file that may have been one of the slices
  and cannot be used fails the whole series, naming the file, so a damaged slice never shortens a volume
  silently: a file with a DICOM-like name (`sniff.dicom_like_name`: .dcm, no suffix, a numeric suffix)
  that cannot be read (permission, broken link) or lacks the DICOM marker, a DICOM file whose header
  names neither a SOP class nor a modality, and a CT image without pixel data.

Every bad input raises `xpgan.errors.InputError(path, reason)` with a one-line reason written for users:
the public readers turn any library error into such a reason (`xpgan.errors.as_input_errors`), never a
traceback.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xpgan.errors import InputError, as_input_errors, library_reason
from xpgan.pipeline.cxr.readers import PROJECTION_MODALITIES
from xpgan.pipeline.sniff import dicom_like_name, has_dicom_magic, is_nifti_name, not_regular_reason
from xpgan.pipeline.values import dicom_rescale, nifti_rescale

CANONICAL_AXCODES = ("I", "P", "L")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
# DICOM values are often written with limited precision: tolerances for "the same" geometry.
_DIR_TOL = 1e-3  # direction cosines
_MM_TOL = 1e-3  # mm, pixel spacing
_GAP_REL_TOL = 0.05  # relative deviation of a slice gap from the median gap
_GAP_ABS_TOL_MM = 0.02  # mm
# Pixel data is not read by the header scan: elements larger than this are read on access.
_DEFER_BYTES = 1024
GZIP_MARGIN_BYTES = 1 << 20  # bytes a .nii.gz may hold beyond its header's data (padding, trailing junk)
_GZIP_CHUNK = 4 << 20  # compressed bytes read per step


@dataclass
class CTVolume:
    hu: np.ndarray  # float32 [d, h, w], canonical orientation, Hounsfield units
    spacing: tuple[float, float, float]  # (sd, sh, sw), mm
    kind: str  # "nifti" | "dicom"
    source: str  # the path read
    # Raw DICOM PatientID when present, for salted hashing only (xpgan.pipeline.privacy); never store or log it.
    patient_id: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CTHeader:
    shape: tuple[int, int, int]  # (d, h, w) after canonical reorientation
    dtype: np.dtype  # stored voxel type (before rescaling; read_ct always returns float32)
    spacing: tuple[float, float, float]  # (sd, sh, sw), mm
    kind: str  # "nifti" | "dicom"

    @property
    def nbytes_float32(self) -> int:
        """Bytes of the float32 volume read_ct would return."""
        return int(np.prod(self.shape, dtype=np.int64)) * 4

    @property
    def read_bytes(self) -> int:
        """Peak memory of read_ct: the stored voxels (decompressed file or raw DICOM slices) + float32 output."""
        return int(np.prod(self.shape, dtype=np.int64)) * (np.dtype(self.dtype).itemsize + 4)


class MemoryLimitError(InputError):
    """read_ct refused a CT whose headers say reading it would need more than `max_bytes`."""

    def __init__(self, path, need_bytes: int, limit_bytes: int, shape):
        self.need_bytes, self.limit_bytes = int(need_bytes), int(limit_bytes)
        super().__init__(path, f"header shape {tuple(shape)} would need about {need_bytes / 1e9:.1f} GB to read, "
                               f"over the {limit_bytes / 1e9:.1f} GB memory limit")


def _check_memory(header: CTHeader, max_bytes: int | None, path: Path) -> None:
    if max_bytes is not None and header.read_bytes > max_bytes:
        raise MemoryLimitError(path, header.read_bytes, max_bytes, header.shape)


# --------------------------------------------------------------------------------------------- dispatch

def _is_nifti_name(path: Path) -> bool:
    return is_nifti_name(path.name)


def _looks_like_dicom_file(path: Path) -> bool:
    """The DICOM magic (xpgan.pipeline.sniff), DICOMDIR aside; False when the file cannot be read."""
    if path.name.upper() == "DICOMDIR":
        return False
    try:
        return has_dicom_magic(path)
    except OSError:
        return False


def _dir_files(folder: Path) -> list[Path]:
    """Visible files of a folder, with broken links (reported when their names look like DICOM)."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and (p.is_file() or (p.is_symlink() and not p.exists())))


def _classify(path: Path) -> str:
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        return "dicom"
    if _is_nifti_name(path):
        return "nifti"
    if _looks_like_dicom_file(path):
        raise InputError(path, "a single DICOM file; pass the folder that holds its series")
    raise InputError(path, "not a NIfTI file (.nii, .nii.gz) or a DICOM series folder")


@as_input_errors
def read_ct(path: str | os.PathLike, *, max_bytes: int | None = None) -> CTVolume:
    """Read a CT (NIfTI file or DICOM series folder) as float32 HU in canonical [d, h, w] orientation.

    max_bytes: refuse (MemoryLimitError, an InputError naming the limit) a CT whose headers say reading it
    would need more (`CTHeader.read_bytes`), before its pixel data is read or its volume allocated. The
    headers are parsed once (no separate probe_ct call needed). For a DICOM series the files are first
    checked by their size on disk (the raw slices are read together with the headers).
    """
    path = Path(path)
    special = not_regular_reason(path)
    if special is not None:
        raise InputError(path, special)
    if _classify(path) == "nifti":
        return _read_nifti(path, max_bytes)
    return _read_dicom_series(path, max_bytes)


@as_input_errors
def probe_ct(path: str | os.PathLike) -> CTHeader:
    """Shape (d, h, w), stored dtype, spacing and kind of a CT, from headers only (no pixel data read)."""
    path = Path(path)
    if _classify(path) == "nifti":
        return _probe_nifti(path)[0]
    return _scan_dicom_series(path, defer_pixels=True).header


# ------------------------------------------------------------------------------------------ orientation

def _canonical_transform(affine_ras: np.ndarray, path: Path) -> np.ndarray:
    """nibabel ornt transform [3, 2] taking the voxel axes of `affine_ras` to ('I', 'P', 'L')."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    if not np.all(np.isfinite(affine_ras)):
        raise InputError(path, "the affine has non-finite values")
    ornt = io_orientation(affine_ras)
    if np.any(np.isnan(ornt)):
        raise InputError(path, "the affine is degenerate (an axis has no direction)")
    return ornt_transform(ornt, axcodes2ornt(CANONICAL_AXCODES))


def _canonical_shape_spacing(shape3, zooms3, transform) -> tuple[tuple[int, ...], tuple[float, ...]]:
    out_shape = [0, 0, 0]
    out_spacing = [0.0, 0.0, 0.0]
    for i in range(3):
        j = int(transform[i, 0])
        out_shape[j] = int(shape3[i])
        out_spacing[j] = float(zooms3[i])
    return tuple(out_shape), tuple(out_spacing)


def _native_view(out: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """A view of the canonical array `out` indexed like the native (on-disk) array.

    Writing the native data through this view fills `out` in canonical order in a single pass, so
    reorientation costs no extra copy."""
    from nibabel.orientations import apply_orientation

    # `transform` sends native axis i to canonical axis transform[i, 0] (flipped if transform[i, 1] < 0);
    # its inverse sends canonical axis transform[i, 0] back to native axis i with the same flip.
    inverse = np.zeros((3, 2))
    for i in range(3):
        inverse[int(transform[i, 0])] = (i, transform[i, 1])
    view = apply_orientation(out, inverse)
    assert np.may_share_memory(view, out)  # a view, never a copy
    return view


def _check_spacing(spacing, path: Path) -> None:
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(path, f"invalid voxel spacing {tuple(round(float(s), 6) for s in spacing)} mm")


# ------------------------------------------------------------------------------------------------ NIfTI

_NIFTI_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, MemoryError, IndexError, TypeError)


def _load_nifti(path: Path):
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.imageglobals import logger as nib_logger
    from nibabel.spatialimages import HeaderDataError

    was_disabled, nib_logger.disabled = nib_logger.disabled, True  # its header-fix notes (pixdim 0 -> 1) would
    try:  # go to stderr; _check_raw_pixdim refuses the file instead
        img = nib.load(str(path))
    except HeaderDataError as e:
        raise InputError(path, library_reason(e, path)) from None
    except (ImageFileError, *_NIFTI_READ_ERRORS) as e:
        raise InputError(path, f"not a readable NIfTI file ({library_reason(e, path)})") from None
    finally:
        nib_logger.disabled = was_disabled
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def _probe_nifti(path: Path):
    img = _load_nifti(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D image, got shape {shape}")
    if min(shape) < 2:
        raise InputError(path, f"a 2D image (shape {shape}), not a CT volume")
    dtype = img.header.get_data_dtype()
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise InputError(path, f"unsupported voxel type {dtype}")
    raw = _raw_header(path, img)
    if int(img.header["sform_code"]) == 0:
        _check_raw_pixdim(path, raw)
    scaling = nifti_rescale(raw["scl_slope"], raw["scl_inter"], path)
    affine = np.asarray(img.affine, dtype=np.float64)
    transform = _canonical_transform(affine, path)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    out_shape, spacing = _canonical_shape_spacing(shape, zooms, transform)
    _check_spacing(spacing, path)
    header = CTHeader(shape=out_shape, dtype=np.dtype(dtype), spacing=spacing, kind="nifti")
    return header, img, transform, scaling


def _raw_header(path: Path, img):
    """The header as written in the file: nibabel's loaded header is edited (pixdim 0 -> 1, scl_slope inf ->
    unscaled), and those edits would silently change what the file says."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            return type(img.header).from_fileobj(fh, check=False)
    except _NIFTI_READ_ERRORS as e:
        raise InputError(path, f"not a readable NIfTI header ({library_reason(e, path)})") from None


def _check_raw_pixdim(path: Path, raw) -> None:
    """Without an sform the voxel size comes from pixdim, which nibabel silently turns from 0 into 1 mm on
    load: refuse a zero voxel size as the file writes it."""
    pixdim = [float(v) for v in raw["pixdim"][1:4]]
    if not all(np.isfinite(v) and v != 0 for v in pixdim):
        raise InputError(path, f"voxel size unknown: pixdim {tuple(pixdim)} with no sform (nibabel would "
                               "assume 1 mm)")


@dataclass
class StoredCT:
    """A CT's voxels as stored, seen in canonical orientation: HU = float32(data) * scale + offset."""
    data: np.ndarray  # [d, h, w] canonical view of the stored array (any numeric dtype, maybe mirrored axes)
    scale: float  # scl_slope / RescaleSlope
    offset: float  # scl_inter / RescaleIntercept, HU
    spacing: tuple[float, float, float]  # (sd, sh, sw), mm
    kind: str  # "nifti" | "dicom"
    source: str
    patient_id: str | None = field(default=None, repr=False)  # as CTVolume.patient_id

    def hu(self) -> np.ndarray:
        """float32 [d, h, w] HU, as read_ct returns (one pass; the data itself when already float32 HU)."""
        if self.data.dtype == np.float32 and self.scale == 1.0 and self.offset == 0.0:
            return self.data
        out = np.empty(self.data.shape, dtype=np.float32)
        _scaled_copy(out, self.data, self.scale, self.offset)
        return out


@as_input_errors
def read_ct_stored(path: str | os.PathLike, *, max_bytes: int | None = None) -> StoredCT:
    """Like read_ct, without the float32 conversion: a canonical view of the stored voxels and their scaling.

    For a NIfTI file the view shares the decompressed data (no copy; read-only), so a consumer that converts
    while it computes (`xpgan.pipeline.ct.resize.resize_volume(data, ..., scale=, offset=)`) never holds a
    full-size float32 volume. DICOM series (whose slices may each have their own rescale) are read with
    read_ct: data is the float32 HU volume, scale 1, offset 0. Same errors and `max_bytes` check as read_ct.
    """
    path = Path(path)
    special = not_regular_reason(path)
    if special is not None:
        raise InputError(path, special)
    if _classify(path) == "nifti":
        header, raw, slope, inter, transform = _nifti_stored(path, max_bytes)
        from nibabel.orientations import apply_orientation

        data = apply_orientation(raw, transform)  # views only (flips and a transpose)
        assert data.shape == header.shape and np.may_share_memory(data, raw)
        return StoredCT(data=data, scale=slope, offset=inter, spacing=header.spacing, kind="nifti",
                        source=str(path))
    ct = _read_dicom_series(path, max_bytes)
    return StoredCT(data=ct.hu, scale=1.0, offset=0.0, spacing=ct.spacing, kind="dicom", source=ct.source,
                    patient_id=ct.patient_id)


def _nifti_stored(path: Path, max_bytes: int | None):
    """(header, stored array in on-disk axis order, slope, inter, transform to canonical)."""
    header, img, transform, (slope, inter) = _probe_nifti(path)
    _check_memory(header, max_bytes, path)
    proxy = img.dataobj
    try:
        if path.name.lower().endswith(".gz") and hasattr(proxy, "get_unscaled"):
            raw = _gunzipped_data(path, img)
        elif hasattr(proxy, "get_unscaled"):
            raw = proxy.get_unscaled()  # stored type: scaling is done below in float32, in the same pass
        else:
            raw = np.asanyarray(proxy)
            slope, inter = 1.0, 0.0
    except _NIFTI_READ_ERRORS as e:
        raise InputError(path, f"cannot read the image data, truncated or corrupt? ({library_reason(e, path)})") \
            from None
    if raw.ndim == 4:
        raw = raw[..., 0]
    return header, raw, slope, inter, transform


def _read_nifti(path: Path, max_bytes: int | None = None) -> CTVolume:
    header, raw, slope, inter, transform = _nifti_stored(path, max_bytes)
    out = _allocate(header, path)  # [d, h, w]
    _scaled_copy(_native_view(out, transform), raw, slope, inter)
    return CTVolume(hu=out, spacing=header.spacing, kind="nifti", source=str(path))


def _decompressobj():
    """A gzip stream decompressor: ISA-L (`isal`, ~1.4x faster) when installed, else zlib."""
    try:
        from isal import isal_zlib as zl
    except ImportError:  # optional speed-up
        zl = zlib
    return zl.decompressobj(zl.MAX_WBITS | 16), zl.error


class DecompressedSizeError(InputError):
    """A .nii.gz whose stream holds more than its header declares (a decompression bomb or a damaged file)."""


def gunzip_capped(path: Path, need: int, margin: int = GZIP_MARGIN_BYTES) -> np.ndarray:
    """The first `need` decompressed bytes of a gzip file (uint8 [need]), streamed: never more than `need`
    plus `margin` bytes decompressed; a stream holding more is refused (DecompressedSizeError); one holding
    less gives EOFError. Concatenated gzip members are followed."""
    out = np.empty(need, dtype=np.uint8)
    view = memoryview(out)
    filled, extra = 0, 0
    d, zerror = _decompressobj()
    with open(path, "rb") as fh:
        chunk = fh.read(_GZIP_CHUNK)
        while chunk:
            while chunk:
                room = need - filled if filled < need else margin + 1 - extra
                try:
                    piece = d.decompress(chunk, max(1, room))
                except zerror as e:  # ISA-L's own error type: reported like zlib's
                    raise zlib.error(str(e)) from None
                chunk = d.unconsumed_tail
                if filled < need:
                    view[filled:filled + len(piece)] = piece
                    filled += len(piece)
                else:
                    extra += len(piece)
                if extra > margin:
                    raise DecompressedSizeError(path, f"decompressed size exceeds what the header declares "
                                                      f"(more than {need + margin} bytes for a declared {need})")
                if d.eof:  # a next gzip member may follow
                    chunk = d.unused_data + chunk
                    if not chunk:
                        break
                    d, zerror = _decompressobj()
            chunk = fh.read(_GZIP_CHUNK)
    if filled < need:
        raise EOFError(f"the data ends after {filled} of {need} bytes")
    return out


def _gunzipped_data(path: Path, img) -> np.ndarray:
    """The stored voxel array of a .nii.gz, decompressed as a capped stream and viewed in place (no copy).

    The header (shape, dtype and byte order, data offset) is the one nibabel parsed (the ArrayProxy's shape,
    dtype with byte order, offset and order); the decompressed size is bounded by it (gunzip_capped).
    """
    proxy = img.dataobj  # its layout comes from the file's header (img.header is an edited copy)
    shape = tuple(int(s) for s in proxy.shape)
    dtype = np.dtype(proxy.dtype)
    offset = int(proxy.offset)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = gunzip_capped(path, need)
    return np.ndarray(shape, dtype=dtype, buffer=data, offset=offset, order=proxy.order)


def _allocate(header: CTHeader, path: Path) -> np.ndarray:
    try:
        return np.empty(header.shape, dtype=np.float32)
    except MemoryError:
        raise InputError(path, f"not enough memory for a {header.shape} volume "
                               f"({header.nbytes_float32 / 2**30:.1f} GiB as float32)") from None


def _scaled_copy(dst: np.ndarray, src: np.ndarray, slope: float, inter: float) -> None:
    """dst[...] = src * slope + inter, computed in float32, one pass for the common slope 1, inter 0."""
    if slope == 1.0:
        np.copyto(dst, src, casting="unsafe")
    else:
        np.multiply(src, np.float32(slope), out=dst, casting="unsafe")
    if inter != 0.0:
        dst += np.float32(inter)


# ------------------------------------------------------------------------------------------------ DICOM

@dataclass
class _DicomSeries:
    header: CTHeader
    transform: np.ndarray  # native [slice, row, col] -> canonical
    datasets: list  # pydicom Datasets sorted by position along the slice normal
    files: list[Path]
    patient_id: str | None


def _lps_to_ras(m: np.ndarray) -> np.ndarray:
    out = np.array(m, dtype=np.float64)
    out[0] *= -1
    out[1] *= -1
    return out


def _floats(ds, keyword: str, n: int, f: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(f, f"missing or invalid {keyword}")
    return arr


def _fill_transfer_syntax(ds) -> None:
    """A preamble-less file has no file meta: record the encoding it was read with, for the pixel decoder."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _ct_images(folder: Path, defer_pixels: bool) -> list:
    """The single-frame CT images of a folder as (dataset, file), refusing damaged files, multi-frame CT
    and a folder without CT images (one line naming the file or folder)."""
    import pydicom

    try:
        files = _dir_files(folder)
    except OSError as e:
        raise InputError(folder, f"cannot list the folder ({library_reason(e)})") from None
    images = []  # (dataset, file)
    n_dicom = 0
    modalities: set[str] = set()
    bad: list[tuple[Path, str]] = []  # files named like DICOM images that are not readable DICOM
    for f in files:
        if f.name.upper() == "DICOMDIR":
            continue
        try:
            magic = has_dicom_magic(f)
        except OSError as e:
            if dicom_like_name(f.name):
                bad.append((f, f"cannot read the file ({library_reason(e, f)})"))
            continue
        if not magic:
            if dicom_like_name(f.name):  # README.txt, thumbnails...: not part of the series
                bad.append((f, "not a DICOM file (no DICM marker: damaged header or truncated?)"))
            continue
        try:
            ds = pydicom.dcmread(f, defer_size=_DEFER_BYTES if defer_pixels else None, force=True)
        except Exception as e:  # noqa: BLE001 - pydicom raises many types on corrupt files
            raise InputError(f, f"unreadable DICOM file ({library_reason(e, f)})") from None
        n_dicom += 1
        _fill_transfer_syntax(ds)
        sop = str(ds.get("SOPClassUID", "") or "")
        modality = str(ds.get("Modality", "") or "")
        if not sop and not modality:
            raise InputError(f, "damaged DICOM header: neither SOPClassUID nor Modality can be read")
        modalities.add(modality or "?")
        is_ct = sop == CT_IMAGE_STORAGE or (not sop and modality.upper() == "CT")
        if sop == ENHANCED_CT_IMAGE_STORAGE or (is_ct and int(ds.get("NumberOfFrames", 1) or 1) > 1):
            raise InputError(f, "multi-frame (enhanced) CT is not supported; export single-frame CT images")
        if not is_ct:
            continue  # localizer reports, structured reports, other modalities: not part of the volume
        if "PixelData" not in ds:
            raise InputError(f, "a CT image without pixel data (truncated file?)")
        dicom_rescale(ds, f, required=True)
        images.append((ds, f))
    if bad and (images or n_dicom):
        more = f" (and {len(bad) - 1} more such file(s))" if len(bad) > 1 else ""
        raise InputError(bad[0][0], f"{bad[0][1]} in a DICOM series folder{more}")
    if not images:
        if n_dicom:
            xray = "; radiographs belong in xpgan prep cxr" if modalities <= set(PROJECTION_MODALITIES) else ""
            raise InputError(folder, f"no CT images with pixel data among {n_dicom} DICOM file(s) "
                                     f"(modalities: {', '.join(sorted(modalities))}){xray}")
        if bad:
            raise InputError(folder, f"no DICOM images in the folder: {len(bad)} file(s) named like DICOM "
                                     f"are not readable DICOM (e.g. {bad[0][0].name}: {bad[0][1]})")
        n_nifti = sum(_is_nifti_name(f) for f in files)
        hint = f" (it holds {n_nifti} NIfTI file(s): pass one of them)" if n_nifti else ""
        raise InputError(folder, "no DICOM images in the folder" + hint)

    return images


def _one_series(images: list, folder: Path) -> tuple:
    """(orientation [6], pixel spacing [2], (rows, columns), positions) of images that must form one series:
    one SeriesInstanceUID, orientation, pixel spacing, size, greyscale; at least two slices."""
    def one(keyword: str):
        values = {str(ds.get(keyword, "")) for ds, _ in images}
        if len(values) > 1:
            raise InputError(folder, f"mixed series: {len(values)} different {keyword} values")

    one("SeriesInstanceUID")
    ds0, f0 = images[0]
    iop0 = _floats(ds0, "ImageOrientationPatient", 6, f0)
    ps0 = _floats(ds0, "PixelSpacing", 2, f0)
    if not np.all(np.isfinite(ps0)) or np.any(ps0 <= 0):
        raise InputError(f0, f"PixelSpacing {' '.join(f'{v:g}' for v in ps0)} is not a pixel size (each value must "
                             "be a positive number of mm)")
    shape0 = (int(ds0.get("Rows", 0) or 0), int(ds0.get("Columns", 0) or 0))
    positions = []
    for ds, f in images:
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, f), iop0, atol=_DIR_TOL):
            raise InputError(folder, f"mixed series: {f.name} has a different ImageOrientationPatient")
        if not np.allclose(_floats(ds, "PixelSpacing", 2, f), ps0, atol=_MM_TOL):
            raise InputError(folder, f"inconsistent sizes: {f.name} has a different PixelSpacing")
        shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
        if shape != shape0:
            raise InputError(folder, f"inconsistent sizes: {f.name} is {shape[0]}x{shape[1]}, "
                                     f"{f0.name} is {shape0[0]}x{shape0[1]} (rows x columns)")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise InputError(f, "not a greyscale image (SamplesPerPixel != 1)")
        positions.append(_floats(ds, "ImagePositionPatient", 3, f))
    if min(shape0) < 2:
        raise InputError(f0, f"invalid image size {shape0[0]}x{shape0[1]}")
    if len(images) < 2:
        raise InputError(folder, "a single CT slice (2D image), not a volume")

    return iop0, ps0, shape0, positions


def _slice_order(images: list, positions: list, iop0, ps0, folder: Path) -> tuple:
    """(slice order, slice normal, slice spacing mm) of a series, refusing non-orthonormal orientation,
    duplicate positions, uneven gaps (missing slices) and in-plane shifts of a pixel or more (gantry tilt)."""
    row_dir, col_dir = iop0[:3], iop0[3:]
    f0 = images[0][1]
    if abs(np.linalg.norm(row_dir) - 1) > 0.01 or abs(np.linalg.norm(col_dir) - 1) > 0.01 \
            or abs(row_dir @ col_dir) > 0.01:
        raise InputError(f0, "ImageOrientationPatient is not two orthonormal directions")
    normal = np.cross(row_dir, col_dir)
    dist = np.array([p @ normal for p in positions])
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    gaps = np.diff(dist)
    if np.any(gaps < _MM_TOL):
        k = int(np.argmin(gaps))
        names = images[order[k]][1].name, images[order[k + 1]][1].name
        raise InputError(folder, f"duplicate slice positions ({names[0]} and {names[1]} at {dist[k]:.3f} mm)")
    median = float(np.median(gaps))
    tol = max(_GAP_ABS_TOL_MM, _GAP_REL_TOL * median)
    if np.any(np.abs(gaps - median) > tol):
        k = int(np.argmax(np.abs(gaps - median)))
        raise InputError(folder, f"uneven slice gaps (missing slices?): {gaps[k]:.3f} mm between slices "
                                 f"{k} and {k + 1} where the usual gap is {median:.3f} mm")
    slice_mm = float((dist[-1] - dist[0]) / (len(dist) - 1))
    # A stack whose slices shift in plane (gantry tilt) is sheared: stacking it as a grid would be a silent
    # geometric error, so it is refused when the shift reaches one pixel.
    pos = np.array(positions)
    shift_c, shift_r = np.ptp(pos @ row_dir), np.ptp(pos @ col_dir)
    if shift_c >= ps0[1] or shift_r >= ps0[0]:
        raise InputError(folder, f"slices shift in plane by up to {max(shift_c, shift_r):.2f} mm along the "
                                 "stack (gantry tilt?); sheared series are not supported")

    return order, normal, slice_mm


def _scan_dicom_series(folder: Path, *, defer_pixels: bool) -> _DicomSeries:
    """Read every file, keep CT images, validate and sort one series.

    With `defer_pixels` the pixel data is not read (pydicom skips large values and reads them on access):
    the probe path. Without it each file is read in one pass, ~40% faster for a whole volume; its raw
    bytes are released slice by slice as the volume is filled.
    """
    images = _ct_images(folder, defer_pixels)
    iop0, ps0, shape0, positions = _one_series(images, folder)
    order, normal, slice_mm = _slice_order(images, positions, iop0, ps0, folder)
    row_dir, col_dir = iop0[:3], iop0[3:]
    ds0 = images[0][0]

    # Native array [slice, row, col]: slice axis along `normal`, rows along col_dir, columns along row_dir.
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = normal * slice_mm
    affine_lps[:3, 1] = col_dir * ps0[0]
    affine_lps[:3, 2] = row_dir * ps0[1]
    affine_lps[:3, 3] = positions[order[0]]
    transform = _canonical_transform(_lps_to_ras(affine_lps), folder)
    native_shape = (len(images), shape0[0], shape0[1])
    out_shape, spacing = _canonical_shape_spacing(native_shape, (slice_mm, ps0[0], ps0[1]), transform)
    _check_spacing(spacing, folder)

    bits = int(ds0.get("BitsAllocated", 16) or 16)
    signed = int(ds0.get("PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{max(1, bits // 8)}")
    pid = ds0.get("PatientID")
    return _DicomSeries(
        header=CTHeader(shape=out_shape, dtype=dtype, spacing=spacing, kind="dicom"),
        transform=transform,
        datasets=[images[i][0] for i in order],
        files=[images[i][1] for i in order],
        patient_id=str(pid) if pid else None,
    )


def _read_dicom_series(folder: Path, max_bytes: int | None = None) -> CTVolume:
    if max_bytes is not None:
        try:
            on_disk = sum(f.stat().st_size for f in _dir_files(folder) if f.exists())
        except OSError as e:
            raise InputError(folder, f"cannot list the folder ({library_reason(e)})") from None
        if on_disk > max_bytes:  # the one-pass scan reads every file whole: bound it before reading
            raise InputError(folder, f"the series' files hold {on_disk / 1e9:.1f} GB, over the "
                                     f"{max_bytes / 1e9:.1f} GB memory limit")
    series = _scan_dicom_series(folder, defer_pixels=False)
    _check_memory(series.header, max_bytes, folder)
    out = _allocate(series.header, folder)  # [d, h, w]
    native = _native_view(out, series.transform)  # [slice, row, col] view of out
    for k, (ds, f) in enumerate(zip(series.datasets, series.files)):
        try:
            pixels = ds.pixel_array
        except Exception as e:  # pydicom raises many types (missing decoder plugins, bad lengths...)
            raise InputError(f, f"cannot decode the pixel data ({library_reason(e, f)})") from None
        if pixels.shape != native.shape[1:]:
            raise InputError(f, f"pixel data shape {pixels.shape} does not match Rows x Columns")
        slope, inter = dicom_rescale(ds, f, required=True)
        _scaled_copy(native[k], pixels, slope, inter)
        series.datasets[k] = None  # release this slice's raw bytes
    return CTVolume(hu=out, spacing=series.header.spacing, kind="dicom", source=str(folder),
                    patient_id=series.patient_id)
