"""Numbers read from file headers: one rule per header field, shared by the CT and CXR readers.

A header number either means what the file says or the file is refused with the reason; nothing is
silently replaced by a default.

- Rescale (DICOM RescaleSlope / RescaleIntercept, NIfTI scl_slope / scl_inter): stored value x slope +
  intercept. The slope must be a finite number with `RESCALE_SLOPE_RANGE[0] <= |slope| <= RESCALE_SLOPE_RANGE[1]`
  (0 would map every voxel to one value), the intercept a finite number with |intercept| <=
  `RESCALE_INTERCEPT_MAX`. A DICOM CT image must carry both tags (the CT Image module requires them: without
  them the stored values are not Hounsfield units, e.g. an unsigned HU+1024 series); a radiograph without
  either tag has no rescale (slope 1, intercept 0); one tag without the other is refused. NIfTI follows
  its standard: scl_slope 0 (or NaN, as nibabel writes "unset") means unscaled, and the intercept is then
  ignored.
- `header_number(value, name, path)`: a header field as a float, or None when absent; "ab", "inf",
  "nan" and several values ("1\\2", where one is expected) are refused.
"""
from __future__ import annotations

import math
import os

from xpgan.errors import InputError

RESCALE_SLOPE_RANGE = (1e-6, 1e4)  # |slope|: beyond these no CT or radiograph stores its values
RESCALE_INTERCEPT_MAX = 1e5  # |intercept|, output units (HU for CT)


def header_number(value, name: str, path: str | os.PathLike) -> float | None:
    """A header field's value as a finite float; None when absent or empty; InputError when not a number."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("ascii", "replace")
    text = " ".join(str(value).split())
    if text == "":
        return None
    try:
        number = float(value if isinstance(value, (int, float)) else text)
    except (TypeError, ValueError):
        raise InputError(path, f"{name} {text[:40]!r} is not a number") from None
    if not math.isfinite(number):
        raise InputError(path, f"{name} is {text[:40]}, not a finite number")
    return number


def check_rescale(slope: float, inter: float, path: str | os.PathLike,
                  names: tuple[str, str] = ("RescaleSlope", "RescaleIntercept")) -> tuple[float, float]:
    """(slope, inter) when both are usable (see module docstring); InputError naming the field otherwise."""
    lo, hi = RESCALE_SLOPE_RANGE
    if not (math.isfinite(slope) and lo <= abs(slope) <= hi):
        raise InputError(path, f"{names[0]} {slope:g} is unusable (its size must be between {lo:g} and {hi:g}): "
                               "the stored values cannot be converted")
    if not (math.isfinite(inter) and abs(inter) <= RESCALE_INTERCEPT_MAX):
        raise InputError(path, f"{names[1]} {inter:g} is unusable (its size must be at most "
                               f"{RESCALE_INTERCEPT_MAX:g})")
    return float(slope), float(inter)


def _raw_value(ds, keyword: str):
    """The element's value without pydicom's conversion (which may warn or fail on a malformed string)."""
    if keyword not in ds:
        return None
    elem = ds.get_item(keyword)
    return elem.value


def dicom_rescale(ds, path: str | os.PathLike, *, required: bool) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of a pydicom Dataset under the rule of the module docstring.

    required: True for CT images (both tags needed); False for radiographs (both absent -> (1, 0))."""
    slope = header_number(_raw_value(ds, "RescaleSlope"), "RescaleSlope", path)
    inter = header_number(_raw_value(ds, "RescaleIntercept"), "RescaleIntercept", path)
    if slope is None and inter is None:
        if required:
            raise InputError(path, "no RescaleSlope/RescaleIntercept: the stored values cannot be read as "
                                   "Hounsfield units (a CT image must carry both)")
        return 1.0, 0.0
    if slope is None or inter is None:
        missing = "RescaleSlope" if slope is None else "RescaleIntercept"
        raise InputError(path, f"{missing} is missing while its partner is present: the stored values cannot "
                               "be converted")
    return check_rescale(slope, inter, path)


def nifti_rescale(raw_slope, raw_inter, path: str | os.PathLike) -> tuple[float, float]:
    """(slope, inter) from a NIfTI header's scl_slope / scl_inter as written in the file."""
    slope, inter = float(raw_slope), float(raw_inter)
    if slope == 0.0 or math.isnan(slope):
        return 1.0, 0.0  # the NIfTI standard's "no scaling"
    if not math.isfinite(slope):
        raise InputError(path, f"scl_slope is {slope:g}, not a finite number")
    if not math.isfinite(inter):
        raise InputError(path, f"scl_inter is {inter:g}, not a finite number")
    return check_rescale(slope, inter, path, names=("scl_slope", "scl_inter"))
