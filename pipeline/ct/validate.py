"""Plausibility checks of a CT before it is rendered or stored: one function for `prep drr` and `drr render`.

A reader can return a volume that is well-formed yet physically absurd; rendering it gives a black or NaN
DRR with exit code 0. `check_ct(data, spacing, path)` refuses, with one line naming the file:
- voxel spacing outside `spacing_range_mm` (default 0.1 to 20 mm per axis; CT is about 0.2 to 10 mm;
  `--spacing-range LO HI` overrides it);
- NaN or infinite voxel values (the count);
- voxel values outside `HU_LIMITS` = the int16 range (-32768 .. 32767), the count and the extremes: the CT
  store holds int16 HU, so such values could only be clipped; real CT lies in about -1024 .. 3071 HU (up
  to ~30000 with metal on extended scales), padding values such as -2048 or -3024 are accepted.
`data` may be stored values with a linear map (HU = data * scale + offset, as `readers.read_ct_stored` gives):
the limits are checked on the extremes of the stored values, so the common case costs one min/max pass
and the count is computed only for a refused volume.

NIfTI files carry no modality, so `check_ct_plausible` asks whether the values look like a CT in Hounsfield
units (an MR volume, a label map or HU stored without its rescale would otherwise render as a white or
black rectangle with exit code 0). It refuses, with the reason:
- an axis shorter than `MIN_CT_AXIS_VOXELS`;
- no air: fewer than `AIR_MIN_FRACTION` of the voxels within `AIR_HU` (-1100 to -900 HU; every chest CT
  shows air around and inside the body; HU+1024 data without its intercept or MR intensities have none);
- too bright: the `BRIGHT_PERCENTILE`th percentile above `BRIGHT_MAX_HU` (bone and contrast stay below;
  metal is a small fraction; scaled data or MR intensities do not).
It looks at a regular subsample of at most `PLAUSIBILITY_SAMPLE` voxels. `ALLOW_UNUSUAL_CT_OPTION` skips it
for an unusual but valid CT. `read_checked_ct` is the one reader of `prep drr` and `drr render`: read,
then every check above.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xpgan.errors import InputError, XPGANError, safe_text
from xpgan.options import option

SPACING_RANGE_MM = (0.1, 20.0)
HU_LIMITS = (-32768.0, 32767.0)
MIN_CT_AXIS_VOXELS = 8
AIR_HU = (-1100.0, -900.0)
AIR_MIN_FRACTION = 0.001
BRIGHT_PERCENTILE = 99.5
BRIGHT_MAX_HU = 3071.0
PLAUSIBILITY_SAMPLE = 2_000_000  # voxels
PLAUSIBLE_CT_RULE = (f"air ({AIR_HU[0]:g} to {AIR_HU[1]:g} HU) in >= {100 * AIR_MIN_FRACTION:g}% of voxels, "
                     f"{BRIGHT_PERCENTILE:g}th percentile <= {BRIGHT_MAX_HU:g} HU, >= {MIN_CT_AXIS_VOXELS} voxels "
                     "per axis")
ALLOW_UNUSUAL_CT_OPTION = "--allow-unusual-ct"
_ALLOW_UNUSUAL_CT_HELP = ("Accept a volume that does not look like a CT in HU (no air near -1000 HU, more than "
                         f"{100 - BRIGHT_PERCENTILE:g}% brighter than bone, or an axis under {MIN_CT_AXIS_VOXELS} "
                         "voxels); check it yourself first.")


def check_spacing_range(spacing_range_mm) -> tuple[float, float]:
    """A valid (lo, hi) option value, mm; XPGANError otherwise."""
    try:
        lo, hi = (float(v) for v in spacing_range_mm)
    except (TypeError, ValueError):
        raise XPGANError(f"--spacing-range needs two numbers LO HI (mm), got {spacing_range_mm!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise XPGANError(f"--spacing-range needs 0 < LO < HI (mm), got {lo:g} {hi:g}")
    return lo, hi


@dataclass
class CTChecks:
    """The options of the CT checks, shared by `prep drr` and `drr render`."""

    spacing_range: tuple[float, float] = option(
        SPACING_RANGE_MM, "Plausible CT voxel spacing LO HI, mm per axis; volumes outside it are refused, as are "
        "NaN/inf voxels and values outside the int16 HU range.", bound=lambda option, value: check_spacing_range(value),
        metavar="LO HI")
    allow_unusual_ct: bool = option(False, _ALLOW_UNUSUAL_CT_HELP, flag=ALLOW_UNUSUAL_CT_OPTION)


def _memory_order(a: np.ndarray) -> np.ndarray:
    """A view of `a` with the same elements in memory order (flips and transposes undone): reductions over a
    reoriented view (readers.read_ct_stored) run ~10x faster on it."""
    for ax in range(a.ndim):
        if a.strides[ax] < 0:
            a = np.flip(a, ax)
    return a.transpose(np.argsort(a.strides, kind="stable")[::-1])


def check_ct(data: np.ndarray, spacing, path: str | os.PathLike, *, scale: float = 1.0, offset: float = 0.0,
             spacing_range_mm=SPACING_RANGE_MM) -> None:
    """Raise InputError(path, reason) for an implausible spacing or voxel values (see module docstring)."""
    lo, hi = check_spacing_range(spacing_range_mm)
    sp = [float(s) for s in spacing]
    if not all(np.isfinite(s) and lo <= s <= hi for s in sp):
        shown = ", ".join(f"{s:.6g}" for s in sp)
        raise InputError(path, f"voxel spacing ({shown}) mm is outside the plausible CT range {lo:g} to {hi:g} "
                               "mm per axis (--spacing-range to change it)")
    data = np.asarray(data)
    if data.size == 0:
        raise InputError(path, f"empty volume (shape {data.shape})")
    mem = _memory_order(data)
    dmin, dmax = np.min(mem), np.max(mem)  # NaN propagates into both
    ends = np.array([dmin, dmax], dtype=np.float64) * float(scale) + float(offset)
    if np.all(np.isfinite(ends)) and HU_LIMITS[0] <= ends.min() and ends.max() <= HU_LIMITS[1]:
        return
    hu = data.astype(np.float64) * float(scale) + float(offset) if data.dtype.kind in "iu" or scale != 1.0 \
        or offset != 0.0 else data
    finite = np.isfinite(hu)
    n_bad = int(data.size - np.count_nonzero(finite))
    if n_bad:
        raise InputError(path, f"{n_bad} of {data.size} voxels are NaN or infinite")
    outside = int(np.count_nonzero((hu < HU_LIMITS[0]) | (hu > HU_LIMITS[1])))
    raise InputError(path, f"{outside} of {data.size} voxels are outside the storable HU range "
                           f"{HU_LIMITS[0]:g} to {HU_LIMITS[1]:g} (min {float(np.min(hu)):.4g}, max "
                           f"{float(np.max(hu)):.4g} HU)")


def _sample(data: np.ndarray) -> np.ndarray:
    """A regular subsample of at most PLAUSIBILITY_SAMPLE voxels (every k-th along each axis)."""
    k = max(1, int(np.ceil((data.size / PLAUSIBILITY_SAMPLE) ** (1.0 / data.ndim))))
    return data[(slice(None, None, k),) * data.ndim]


def check_ct_plausible(data: np.ndarray, path: str | os.PathLike, *, scale: float = 1.0,
                       offset: float = 0.0) -> None:
    """Raise InputError(path, reason) when the volume does not look like a CT in HU (module docstring)."""
    data = np.asarray(data)
    hint = f"; if it is a valid CT, pass {ALLOW_UNUSUAL_CT_OPTION}"
    if min(data.shape) < MIN_CT_AXIS_VOXELS:
        raise InputError(path, f"too small for a CT: shape {tuple(data.shape)} has an axis under "
                               f"{MIN_CT_AXIS_VOXELS} voxels{hint}")
    hu = _sample(data).astype(np.float32) * np.float32(scale) + np.float32(offset)
    air = float(np.mean((hu >= AIR_HU[0]) & (hu <= AIR_HU[1])))
    lo, hi = float(hu.min()), float(hu.max())
    if air < AIR_MIN_FRACTION:
        raise InputError(path, f"does not look like a CT in HU: no air ({100 * air:.2f}% of voxels between "
                               f"{AIR_HU[0]:g} and {AIR_HU[1]:g} HU; values {lo:.6g} to {hi:.6g}){hint}")
    bright = float(np.percentile(hu, BRIGHT_PERCENTILE))
    if bright > BRIGHT_MAX_HU:
        raise InputError(path, f"does not look like a CT in HU: {100 - BRIGHT_PERCENTILE:g}% of voxels are above "
                               f"{bright:.6g} HU, brighter than bone ({BRIGHT_MAX_HU:g}){hint}")


def _is_zarr_store(path: Path) -> bool:
    try:
        return (path / "zarr.json").is_file()
    except OSError:   # a folder that cannot be listed fails when its series is read, with that reason
        return False


def read_checked_ct(path: str | os.PathLike, *, max_bytes: int | None = None,
                    spacing_range_mm=SPACING_RANGE_MM, allow_unusual_ct: bool = False):
    """The CT reader of `prep drr` and `drr render`: readers.read_ct_stored (every library error already a
    one-line InputError; `max_bytes` checked from the headers), then check_ct and, unless
    `allow_unusual_ct`, check_ct_plausible. Returns the readers.StoredCT."""
    from xpgan.pipeline.ct.readers import MemoryLimitError, read_ct_stored

    if _is_zarr_store(Path(path)):
        raise InputError(path, "a Zarr store (what xpgan prep writes), not a CT volume: `xpgan inspect "
                               f"{safe_text(str(path))} --item N` draws a stored item's DRR and slices; a CT is "
                               "a NIfTI file or a DICOM series folder")
    try:
        ct = read_ct_stored(path, max_bytes=max_bytes)
    except MemoryLimitError as exc:
        raise InputError(path, f"{exc.reason} (--memory-limit-gb)") from None
    if ct.data.ndim != 3 or min(ct.data.shape) < 2:
        raise InputError(path, f"not a 3D volume (shape {ct.data.shape})")
    check_ct(ct.data, ct.spacing, path, scale=ct.scale, offset=ct.offset, spacing_range_mm=spacing_range_mm)
    if not allow_unusual_ct:
        check_ct_plausible(ct.data, path, scale=ct.scale, offset=ct.offset)
    return ct
