"""Pose sweeps and contact strips of posed views (the pose convention itself: geometry.py).

    sweep_values("-10,10,5")            -> [-10.0, -5.0, 0.0, 5.0, 10.0]
    tile_views(images [V, S, S], ncols) -> one [rows*S + gaps, cols*S + gaps] float32 array
    render_drr_poses(volumes [B, d, h, w], spacings, geometries) -> float32 [B, P, S, S], one launch

Arrays in, arrays out: writing files is the caller's job.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from xpgan.drr.geometry import ConeGeometry, DRRArgumentError, Geometry, ParallelGeometry
from xpgan.drr.physics import MU_WATER_PER_MM

MAX_SWEEP_VIEWS = 256


def sweep_values(text: str, option: str = "sweep") -> list[float]:
    """'START,STOP,STEP' (degrees) -> START, START+STEP, ... up to STOP inclusive (STEP may be negative)."""
    try:
        start, stop, step = (float(v) for v in str(text).split(","))
    except ValueError:
        raise DRRArgumentError(f"{option} must be START,STOP,STEP (three numbers), got {text!r}") from None
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise DRRArgumentError(f"{option} values must be finite, got {text!r}")
    if start == stop:
        return [start]
    if step == 0 or (stop - start) / step < 0:
        raise DRRArgumentError(f"{option}: STEP {step:g} does not lead from {start:g} to {stop:g}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > MAX_SWEEP_VIEWS:
        raise DRRArgumentError(f"{option} gives {n} views; at most {MAX_SWEEP_VIEWS}")
    return [round(start + k * step, 9) for k in range(n)]


def tile_views(images: np.ndarray, ncols: Optional[int] = None, gap: int = 2, fill: float = 1.0) -> np.ndarray:
    """Views [V, H, W] side by side, row-major, `ncols` per row (default: all in one row), `gap` px of `fill`."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[0] < 1:
        raise DRRArgumentError(f"tile_views needs images [V, H, W] with V >= 1, got shape {images.shape}")
    nv, h, w = images.shape
    ncols = nv if ncols is None else max(1, min(int(ncols), nv))
    nrows = -(-nv // ncols)
    out = np.full((nrows * h + (nrows - 1) * gap, ncols * w + (ncols - 1) * gap), fill, dtype=np.float32)
    for i in range(nv):
        r, c = divmod(i, ncols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[i]
    return out


def render_drr_poses(volumes_hu: np.ndarray, spacings_mm, geometries: Sequence, *, backend: str = "auto",
                     output: str = "image", mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Every volume under several poses: float32 [B, P, size, size], all B*P views in one kernel launch.

    volumes_hu [B, d, h, w] HU; spacings [B, 3] or [3] mm; geometries: P geometries shared by all volumes
    (e.g. `pose_grid(...)`), or B sequences of P (per-volume poses).  Each volume's prefix sums are built
    once and read by its P views (render_drr_batch would need the volume repeated P times).
    """
    from xpgan.drr import render

    vols = render._check_volumes(volumes_hu, 4, "volumes")
    nb = vols.shape[0]
    spacings = render._check_spacings(spacings_mm, nb)
    geoms = list(geometries)
    if geoms and isinstance(geoms[0], (ConeGeometry, ParallelGeometry)):
        geoms = [geoms] * nb
    per_volume = [list(g) for g in geoms]
    if len(per_volume) != nb or not per_volume or len({len(g) for g in per_volume}) != 1 or not per_volume[0]:
        raise DRRArgumentError(f"geometries must be P >= 1 geometries or {nb} sequences of the same P >= 1 "
                               f"geometries for {nb} volumes")
    npose = len(per_volume[0])
    flat: list[Geometry] = [g for row in per_volume for g in row]
    vol_index = np.repeat(np.arange(nb, dtype=np.int64), npose)
    out = render._render(vols, vol_index, np.ascontiguousarray(spacings[vol_index]), flat, backend, output, mu_water)
    return out.reshape(nb, npose, *out.shape[1:])
