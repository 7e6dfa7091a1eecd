"""Chest X-ray image readers and the fixed-size letterbox: file -> float32 [H, W] in [0, 1] -> [size, size].

Intensity mapping to [0, 1] (bright = attenuating, as a radiograph is displayed):

- PNG / JPEG (Pillow): the stored value divided by the largest value of its bit depth, 2**bits - 1. These
  files are already display-ready, so no contrast stretching. 8-bit images: bits = 8. 16-bit (`I;16`)
  PNGs often hold the raw values of a 10-, 12- or 14-bit detector unscaled (a 12-bit image divided by
  65535 would be stored nearly black), so their depth is taken from the observed maximum: the smallest
  of 8, 10, 12, 14, 16 bits that holds it (max 4000 -> 12 bits -> / 4095; max 20000 -> 16 bits).
  The depth used is returned (`read_cxr_depth`) and recorded per item in the store (`bits`).
  RGB(A)/palette images become grey with the ITU-R BT.601 luma weights (0.299, 0.587, 0.114) computed in
  float (no 8-bit rounding). An alpha channel that is fully opaque is ignored; an image with transparent
  or translucent pixels (alpha < max) is refused: what lies under a transparent area is unknown (it would
  silently become black). The EXIF orientation (JPEG, PNG eXIf) is applied. Pillow reads 16-bit *RGB*
  PNGs as 8-bit RGB (a Pillow limitation).
- DICOM (pydicom): stored values -> Modality LUT or rescale slope/intercept (`apply_modality_lut`) ->
  VOI LUT or the first WindowCenter/WindowWidth (`apply_voi_lut`) -> scaled by the VOI's output range
  (the values the VOI gives far below and far above the window map to 0 and 1), so the window the
  modality chose is what ends up in [0, 1]. Without any VOI the 0.5th and 99.5th percentiles of the
  modality values map to 0 and 1 (clipped): raw detector data has no display range, and the
  percentiles ignore hot/dead pixels and collimator edges. MONOCHROME1 (high value = dark) is inverted
  last (`1 - x`) so every image has the MONOCHROME2 polarity. Colour DICOM (RGB/YBR/palette) becomes
  grey like PNGs. Multi-frame files are refused. No DICOM attribute is returned or copied (the depth
  returned is BitsStored; pydicom masks the bits above it). RescaleSlope/RescaleIntercept follow the rule
  shared with the CT reader (`xpgan.pipeline.values.dicom_rescale`; absent: no rescale).
- What is refused before any pixel is decoded, per file with the reason:
  - a DICOM whose Modality is not a projection radiograph (`PROJECTION_MODALITIES`; without a Modality,
    a SOP class of `PROJECTION_SOP_CLASSES`): CT/MR slices, secondary captures, reports;
  - a DICOM radiograph with BurnedInAnnotation YES (text burnt into the pixels may name the patient),
    unless `allow_burned_in=True` (`ALLOW_BURNED_IN_OPTION`);
  - a file whose decoded pixels would need more than `DECODE_BUDGET_BYTES` while it is read (estimated from
    the header: width x height x the bytes per pixel of its mode / SamplesPerPixel x BitsAllocated, plus the
    float working copies); a deflated DICOM whose inflated data would exceed the budget.

Letterbox: the image is scaled by `size / max(H, W)` (aspect kept) with Pillow's anti-aliased bilinear
resampling (a triangle filter widened by the down-sampling factor, so no aliasing and no overshoot:
outputs stay inside the input range), then centred on a `size x size` canvas of 0 (black); an odd
margin leaves the extra pixel at the bottom/right.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from xpgan.errors import InputError, as_input_errors, library_reason
from xpgan.pipeline.sniff import DICOM_SUFFIXES, is_dicom_file, not_regular_reason
from xpgan.pipeline.values import dicom_rescale

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, the weights Pillow uses for RGB -> L
NO_VOI_PERCENTILES = (0.5, 99.5)  # % of pixels clipped at each end when a DICOM has no VOI (inverted CDF)
MAX_PIXELS = 200_000_000  # refuse absurd headers before decoding (a 14k x 14k plate is ~2e8)
MIN_SIDE = 2  # pixels: the smallest image side accepted
_DEFER_BYTES = 1024  # DICOM values larger than this (the pixel data) are read only when decoded
BIT_DEPTHS = (8, 10, 12, 14, 16)  # candidate depths of 16-bit PNG data, chosen by the observed maximum
FLOAT_DEPTH = 0  # recorded depth of float images, stretched from their own min..max
PROJECTION_MODALITIES = ("CR", "DX", "RG")  # computed, digital and conventional radiography
PROJECTION_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.1": "CR", "1.2.840.10008.5.1.4.1.1.1.1": "DX",
                          "1.2.840.10008.5.1.4.1.1.1.1.1": "DX"}  # ... Image Storage (for presentation/processing)
DECODE_BUDGET_BYTES = 1_500_000_000  # peak bytes one worker may use to read one radiograph
WORKING_BYTES_PER_PIXEL = 24  # float64 luma temporaries, the float32 image and its letterbox copy
WORKING_BYTES_PER_SAMPLE = 8  # float64 intermediate per sample (LUT, luma)
ALLOW_BURNED_IN_OPTION = "--allow-burned-in-annotation"
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"

INTENSITY_ATTRS = {
    "png_jpeg": "value / (2**bits - 1); RGB(A) -> BT.601 luma; images with transparent pixels refused",
    "png_16bit_depth": "bits = smallest of 8, 10, 12, 14, 16 holding the image's maximum (stored per item)",
    "dicom_voi": "modality LUT, VOI LUT or first window, scaled by the VOI output range",
    "dicom_no_voi": f"modality LUT, percentiles {NO_VOI_PERCENTILES[0]}..{NO_VOI_PERCENTILES[1]} -> 0..1, clipped",
    "monochrome1": "inverted (1 - x)",
}


def is_cxr_image(path: str | os.PathLike) -> bool:
    """Whether discovery should take `path` as an image: a PNG/JPEG/DICOM suffix, or (no suffix) the DICOM
    magic (`xpgan.pipeline.sniff.is_dicom_file`, also what `read_cxr` uses to pick the DICOM decoder)."""
    path = Path(path)
    if path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return path.suffix == "" and is_dicom_file(path)


def read_cxr(path: str | os.PathLike, *, allow_burned_in: bool = False) -> np.ndarray:
    """Any supported CXR file -> float32 [H, W] in [0, 1]. Raises InputError for every bad input."""
    return read_cxr_depth(path, allow_burned_in=allow_burned_in)[0]


@as_input_errors
def read_cxr_depth(path: str | os.PathLike, *, allow_burned_in: bool = False) -> tuple[np.ndarray, int]:
    """(read_cxr's image, the bit depth its values were scaled by: PNG/JPEG 2**bits - 1, DICOM BitsStored;
    0 for a float image stretched from its own range)."""
    path = Path(path)
    special = not_regular_reason(path)
    if special is not None:
        raise InputError(path, special)
    if not path.is_file():
        raise InputError(path, "file not found")
    if is_dicom_file(path):
        return read_dicom_cxr_depth(path, allow_burned_in=allow_burned_in)
    return read_raster_cxr_depth(path)


def decode_peak_bytes(height: int, width: int, samples: int, bytes_per_sample: float) -> int:
    """Peak bytes of reading one radiograph of this header (decoded pixels + working copies)."""
    per_pixel = samples * (bytes_per_sample + WORKING_BYTES_PER_SAMPLE) + WORKING_BYTES_PER_PIXEL
    return int(height) * int(width) * int(np.ceil(per_pixel))


def _check_budget(path: Path, height: int, width: int, samples: int, bytes_per_sample: float) -> None:
    need = decode_peak_bytes(height, width, samples, bytes_per_sample)
    if need > DECODE_BUDGET_BYTES:
        raise InputError(path, f"a {width}x{height} image with {samples} sample(s) of {bytes_per_sample:g} byte(s) "
                               f"would need about {need / 1e9:.1f} GB to read, over the "
                               f"{DECODE_BUDGET_BYTES / 1e9:.1f} GB per-file budget")


def _grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    # rgb: [H, W, 3] float64
    w = np.asarray(LUMA_WEIGHTS, dtype=np.float64)
    return rgb[..., 0] * w[0] + rgb[..., 1] * w[1] + rgb[..., 2] * w[2]


def read_raster_cxr(path: str | os.PathLike) -> np.ndarray:
    """PNG/JPEG (8- or 16-bit, grey/RGB/RGBA/palette) -> float32 [H, W] in [0, 1]."""
    return read_raster_cxr_depth(path)[0]


def read_raster_cxr_depth(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if getattr(im, "n_frames", 1) > 1:
                    raise InputError(path, f"multi-frame image ({im.n_frames} frames); "
                                           "one radiograph per file expected")
                if im.width * im.height > MAX_PIXELS:
                    raise InputError(path, f"image of {im.width}x{im.height} pixels is larger than the limit")
                _check_budget(path, im.height, im.width, _decoded_samples(im), _MODE_BYTES.get(im.mode, 4))
                if im.getexif().get(0x0112, 1) not in (1, None):
                    im = ImageOps.exif_transpose(im)  # rotated or mirrored by its EXIF orientation
                im.load()
                arr, bits = _pil_to_unit(im, path)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise InputError(path, f"cannot read image ({library_reason(exc, path)})") from None
    return _check_image(arr, path), bits


_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 1, "PA": 1, "La": 1, "RGB": 1, "RGBA": 1, "RGBX": 1, "CMYK": 1,
               "YCbCr": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # bytes per band; others (I, F): 4
_GREY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")  # read without a colour conversion


def _decoded_samples(im) -> int:
    """Samples per pixel while reading: colour and palette modes go through RGB(A) (_pil_to_unit)."""
    bands = len(im.getbands())
    return bands if im.mode in _GREY_MODES else max(bands, 3)


def depth_from_max(vmax: int) -> int:
    """The smallest of BIT_DEPTHS whose range 0 .. 2**bits - 1 holds `vmax` (16-bit PNG data)."""
    return next(b for b in BIT_DEPTHS if vmax < 2 ** b)


def _check_opaque(alpha: np.ndarray, full: int, path: Path) -> None:
    n = int(np.count_nonzero(alpha < full))
    if n:
        raise InputError(path, f"{100.0 * n / alpha.size:.1f}% of the image is transparent or translucent "
                               "(alpha below its maximum): what lies under it is unknown; flatten the image first")


def _pil_to_unit(im, path: Path) -> tuple[np.ndarray, int]:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(path, "32-bit integer image outside the 16-bit range")
        bits = depth_from_max(int(a.max()) if a.size else 0)
        return a.astype(np.float32) / np.float32(2 ** bits - 1), bits
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        lo, hi = np.nanmin(a), np.nanmax(a)
        return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32), FLOAT_DEPTH
    if mode == "1":
        return np.asarray(im, dtype=np.float32), 1
    if mode == "L":
        return np.asarray(im).astype(np.float32) / np.float32(255.0), 8
    if mode == "LA":
        a = np.asarray(im)
        _check_opaque(a[..., 1], 255, path)
        return a[..., 0].astype(np.float32) / np.float32(255.0), 8
    if mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if ("transparency" in im.info or mode in ("PA", "La")) else "RGB")
    a = np.asarray(im)
    if a.shape[-1] == 4:
        _check_opaque(a[..., 3], 255, path)
    rgb = a[..., :3].astype(np.float64)
    rgb /= 255.0  # in place: one float64 copy at the peak
    grey = _grey_from_rgb(rgb)
    return grey.astype(np.float32), 8


def read_dicom_cxr(path: str | os.PathLike, *, allow_burned_in: bool = False) -> np.ndarray:
    """DICOM radiograph -> float32 [H, W] in [0, 1] (see the module docstring for the mapping)."""
    return read_dicom_cxr_depth(path, allow_burned_in=allow_burned_in)[0]


def _check_projection(ds, path: Path, allow_burned_in: bool) -> None:
    """Refuse what is not a projection radiograph, and burnt-in text unless allowed (module docstring)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    kinds = ", ".join(PROJECTION_MODALITIES)
    if modality and modality not in PROJECTION_MODALITIES:
        what = " (a slice of a cross-sectional series)" if modality in ("CT", "MR", "PT") else ""
        raise InputError(path, f"DICOM Modality {modality} is not a projection radiograph ({kinds}){what}")
    if not modality and sop not in PROJECTION_SOP_CLASSES:
        raise InputError(path, f"DICOM without a Modality whose SOP class ({sop or 'none'}) is not a radiograph "
                               f"({kinds})")
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES" and not allow_burned_in:
        raise InputError(path, "BurnedInAnnotation is YES: text burnt into the image may identify the patient "
                               f"(pass {ALLOW_BURNED_IN_OPTION} to accept such images)")


def _check_dicom_budget(ds, path: Path, rows: int, cols: int) -> None:
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        raise InputError(path, "DICOM without usable SamplesPerPixel/BitsAllocated") from None
    if not (1 <= samples <= 4 and 1 <= bits <= 64):
        raise InputError(path, f"DICOM with SamplesPerPixel {samples} and BitsAllocated {bits}")
    _check_budget(path, rows, cols, samples, max(1.0, bits / 8))


def check_deflated_size(path: Path, budget: int = DECODE_BUDGET_BYTES) -> None:
    """A deflated DICOM is inflated whole by pydicom: count its inflated size first (streamed, stopped past
    `budget` bytes: InputError). Files in another transfer syntax, or without file meta, pass."""
    import zlib

    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - no file meta (a preamble-less dataset): not deflated
        return
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED_TRANSFER_SYNTAX:
        return
    group_length = meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise InputError(path, "deflated DICOM without FileMetaInformationGroupLength")
    d, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as fh:
        fh.seek(132 + 12 + int(group_length))  # preamble, DICM, the group length element, the meta group
        while chunk := fh.read(1 << 20):
            while chunk and not d.eof:
                total += len(d.decompress(chunk, 1 << 22))
                chunk = d.unconsumed_tail
                if total > budget:
                    raise InputError(path, f"deflated DICOM data inflates to more than the {budget / 1e9:.1f} GB "
                                           "per-file budget")


def read_dicom_cxr_depth(path: str | os.PathLike, *, allow_burned_in: bool = False) -> tuple[np.ndarray, int]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about every odd element; failures still raise
            check_deflated_size(path)
            ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_BYTES)  # pixels read when decoded
    except InputError:
        raise
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(path, f"cannot read DICOM ({library_reason(exc, path)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(path, "DICOM without pixel data")
    _check_projection(ds, path, allow_burned_in)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise InputError(path, "DICOM without usable Rows/Columns/NumberOfFrames") from None
    if frames != 1:
        raise InputError(path, f"multi-frame DICOM ({frames} frames); one radiograph per file expected")
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise InputError(path, f"image too small: {rows}x{cols} pixels (the minimum is {MIN_SIDE}x{MIN_SIDE})")
    if rows * cols > MAX_PIXELS:
        raise InputError(path, f"DICOM image of {rows}x{cols} pixels is larger than the limit")
    _check_dicom_budget(ds, path, rows, cols)
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:  # checked under the rule shared with CT, then used
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:.10g}" for v in dicom_rescale(ds, path, required=False))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing decoders / corrupt data
        raise InputError(path, f"cannot decode DICOM pixel data ({library_reason(exc, path)})") from None
    if raw.ndim == 3 and photometric.startswith(("MONOCHROME",)):
        raise InputError(path, f"unexpected pixel array shape {raw.shape} for {photometric}")

    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            if raw.ndim != 2:
                raise InputError(path, f"unexpected pixel array shape {raw.shape}")
            x = _dicom_grey_to_unit(raw, ds, apply_modality_lut, apply_voi_lut,
                                    invert=photometric == "MONOCHROME1")
        elif photometric == "PALETTE COLOR":
            rgb = np.asarray(apply_color_lut(raw, ds))  # uint8 or uint16 by the palette's entry size
            x = _grey_from_rgb(rgb.astype(np.float64) / float(np.iinfo(rgb.dtype).max))
        elif raw.ndim == 3 and raw.shape[-1] == 3:  # RGB, and YBR converted to RGB by pydicom
            bits = int(ds.get("BitsStored", 8) or 8)
            x = _grey_from_rgb(raw.astype(np.float64) / float(2 ** bits - 1))
        else:
            raise InputError(path, f"unsupported PhotometricInterpretation {photometric!r}")
    except InputError:
        raise
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise InputError(path, f"cannot apply DICOM LUTs ({library_reason(exc, path)})") from None
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or 0)
    return _check_image(x if x.dtype == np.float32 and photometric.startswith("MONOCHROME")
                        else np.clip(x, 0.0, 1.0).astype(np.float32), path), bits


def _dicom_grey_to_unit(raw: np.ndarray, ds, apply_modality_lut, apply_voi_lut, invert: bool) -> np.ndarray:
    """Stored grey values [H, W] -> float32 [H, W] in [0, 1], inverted (1 - x) for MONOCHROME1."""
    if raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2:
        # Integer data of <= 16 bits: run pydicom's LUTs once on every possible stored value (65536 at most)
        # and gather through the bit pattern, instead of on every pixel (~10x faster on a large plate).
        code_t = np.uint8 if raw.dtype.itemsize == 1 else np.uint16
        codes = raw.view(code_t)  # [H, W]: the bit pattern indexes the table
        domain = np.arange(np.iinfo(code_t).max + 1, dtype=code_t).view(raw.dtype).astype(np.int64)
        needs_counts = not (ds.get("VOILUTSequence") or ("WindowCenter" in ds and "WindowWidth" in ds))
        counts = np.bincount(codes.ravel(), minlength=domain.size) if needs_counts else None
        if counts is not None:  # only values present in the image take part in the percentiles
            present = counts > 0
            table = np.zeros(domain.size, dtype=np.float64)
            table[present] = _grey_map(domain[present], counts[present], ds, apply_modality_lut, apply_voi_lut)
        else:
            table = _grey_map(domain, None, ds, apply_modality_lut, apply_voi_lut)
        if invert:
            table = 1.0 - table
        return table.astype(np.float32)[codes]
    x = _grey_map(raw, None, ds, apply_modality_lut, apply_voi_lut)
    return (1.0 - x if invert else x).astype(np.float32)


def _percentiles(values: np.ndarray, weights: np.ndarray | None, qs) -> tuple[float, float]:
    """Percentiles by the inverted CDF (numpy method "inverted_cdf"), optionally with counts per value."""
    if weights is None:
        lo, hi = np.percentile(values, qs, method="inverted_cdf")
        return float(lo), float(hi)
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(weights[order])
    out = []
    for q in qs:
        k = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
        out.append(float(v[min(k, len(v) - 1)]))
    return out[0], out[1]


def _grey_map(values: np.ndarray, weights: np.ndarray | None, ds, apply_modality_lut, apply_voi_lut) -> np.ndarray:
    """Stored values -> [0, 1]; `weights` (pixel counts per value) make percentiles those of the image."""
    modality = np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        n_entries = int(item.LUTDescriptor[0]) or 2 ** 16
        first = int(item.LUTDescriptor[1])
        # pydicom indexes the LUT with integers; clip first so nothing wraps in its uint16 index array
        idx = np.clip(np.rint(modality), first, first + n_entries - 1).astype(np.int64)
        windowed = np.asarray(apply_voi_lut(idx, ds, index=0), dtype=np.float64)
        # The LUT's own output range (all its entries) is the display range it defines.
        entries = np.asarray(apply_voi_lut(np.arange(first, first + n_entries, dtype=np.int64), ds, index=0))
        lo, hi = float(entries.min()), float(entries.max())
        if hi > lo:
            return np.clip((windowed - lo) / (hi - lo), 0.0, 1.0)
        modality = windowed
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        windowed = np.asarray(apply_voi_lut(modality, ds, index=0), dtype=np.float64)
        # The window's output range: what it gives far below and far above any stored value (ordered, so
        # a negative rescale slope keeps "above the window" white).
        span = float(np.max(np.abs(modality))) + 1.0
        probe = np.asarray(apply_voi_lut(np.array([-1e6 * span, 1e6 * span]), ds, index=0), dtype=np.float64)
        lo, hi = float(probe[0]), float(probe[1])
        if hi != lo:
            return np.clip((windowed - lo) / (hi - lo), 0.0, 1.0)
        modality = windowed
    lo, hi = _percentiles(modality, weights, NO_VOI_PERCENTILES)
    if hi <= lo:
        lo, hi = float(modality.min()), float(modality.max())
    if hi <= lo:
        return np.zeros_like(modality)
    return np.clip((modality - lo) / (hi - lo), 0.0, 1.0)


def _check_image(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 2:
        raise InputError(path, f"not a 2D image (shape {arr.shape})")
    if min(arr.shape) < MIN_SIDE:
        raise InputError(path, f"image too small: {arr.shape[0]}x{arr.shape[1]} pixels (the minimum is "
                               f"{MIN_SIDE}x{MIN_SIDE})")
    if not np.isfinite(arr).all():
        raise InputError(path, "image has NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def letterbox(image: np.ndarray, size: int = 256) -> np.ndarray:
    """float32 [H, W] in [0, 1] -> float32 [size, size]: aspect kept, anti-aliased, centred on black."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"letterbox expects a 2D image, got shape {image.shape}")
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    h, w = image.shape
    scale = size / max(h, w)
    nh = min(size, max(1, int(round(h * scale))))
    nw = min(size, max(1, int(round(w * scale))))
    img = np.ascontiguousarray(image, dtype=np.float32)
    if (nh, nw) != (h, w):
        resized = Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None)
        img = np.asarray(resized, dtype=np.float32)
    out = np.zeros((size, size), dtype=np.float32)  # [size, size]
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = np.clip(img, 0.0, 1.0)
    return out


def content_box(shape_hw: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside the letterboxed canvas, as `letterbox` places it."""
    h, w = shape_hw
    scale = size / max(h, w)
    nh = min(size, max(1, int(round(h * scale))))
    nw = min(size, max(1, int(round(w * scale))))
    return (size - nh) // 2, (size - nw) // 2, nh, nw


def load_cxr(path: str | os.PathLike, size: int = 256, *, allow_burned_in: bool = False) -> np.ndarray:
    """Read and letterbox one file: float32 [size, size] in [0, 1]."""
    return letterbox(read_cxr(path, allow_burned_in=allow_burned_in), size)


def load_cxr_depth(path: str | os.PathLike, size: int = 256, *,
                   allow_burned_in: bool = False) -> tuple[np.ndarray, int]:
    """load_cxr and the bit depth the values were scaled by (read_cxr_depth)."""
    image, bits = read_cxr_depth(path, allow_burned_in=allow_burned_in)
    return letterbox(image, size), bits


def write_dicom_cxr(
    path: str | os.PathLike,
    stored: np.ndarray,  # [H, W] uint8/uint16/int16 stored values, or [F, H, W] for a multi-frame test file
    *,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,  # (centre, width) in modality units
    rescale: tuple[float, float] | None = None,  # (slope, intercept)
    bits_stored: int | None = None,
    patient_name: str = "Anonymous",
    patient_id: str = "0",
    patient_birth_date: str = "",
    modality: str = "DX",
    uid_entropy: Sequence[str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write a synthetic uncompressed DICOM radiograph (for tests and demos).

    The patient fields exist so that tests can check nothing downstream copies them. `uid_entropy`: strings
    the UIDs are derived from, so the same inputs give the same file (default: random UIDs); `extra`: more
    data elements by keyword (e.g. {"ViewPosition": "PA", "InstitutionName": ...}).
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.asarray(stored)
    if stored.dtype not in (np.uint8, np.uint16, np.int16) or stored.ndim not in (2, 3):
        raise ValueError(f"stored must be a 2D (or 3D multi-frame) uint8/uint16/int16 array, got "
                         f"{stored.dtype} {stored.shape}")
    path = Path(path)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - Presentation
    def uid(part: str) -> str:
        return generate_uid() if uid_entropy is None else generate_uid(entropy_srcs=[*uid_entropy, part])

    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = patient_birth_date
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = int(bits_stored or ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if rescale is not None:
        ds.RescaleSlope = f"{float(rescale[0]):g}"
        ds.RescaleIntercept = f"{float(rescale[1]):g}"
    if window is not None:
        ds.WindowCenter = f"{float(window[0]):g}"
        ds.WindowWidth = f"{float(window[1]):g}"
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"))).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path
