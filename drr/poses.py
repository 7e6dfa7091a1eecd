"""Pose sweeps, random poses for augmentation, and posed resampling (the pose convention: geometry.py).

    sweep_values("-10,10,5")            -> [-10.0, -5.0, 0.0, 5.0, 10.0]
    render_drr_poses(volumes [B, d, h, w], spacings, geometries) -> float32 [B, P, S, S], one launch
    random_pose(rng, PoseRanges()) -> {"yaw_deg", "pitch_deg", "roll_deg", "offset_mm", "sid_mm"}
    apply_pose(geometry, pose)     -> the posed geometry (cone: SID changed, detector gap kept)
    resample_to_pose(hu, spacing, pose) -> the volume in the posed frame: its plain view is the posed view

Arrays in, arrays out: writing files is the caller's job.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from xpgan.drr.geometry import ConeGeometry, Geometry, ParallelGeometry, pose_rotation
from xpgan.drr.physics import MU_WATER_PER_MM
from xpgan.errors import DRRArgumentError

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


@dataclass(frozen=True)
class PoseRanges:
    """Random poses: each angle uniform in [-x, +x] degrees, each offset uniform in [-x, +x] mm (d, h, w),
    the source-isocentre distance uniform in [lo, hi] mm (cone only; the source-detector gap is kept).

    Defaults: a few degrees of patient rotation and tilt as seen on real chest films, AP bedside
    (about 1000 mm) to PA standing (1800 mm) distances, and about a centimetre of positioning error.
    """

    yaw_deg: float = 8.0                          # about superior-inferior (LAO/RAO obliquity), degrees
    pitch_deg: float = 8.0                        # cranio-caudal tilt, degrees
    roll_deg: float = 5.0                         # in-plane rotation, degrees
    offset_mm: tuple = (10.0, 5.0, 10.0)          # isocentre shift half-ranges (d, h, w), mm
    sid_mm: tuple = (1000.0, 1800.0)              # source-isocentre distance range, mm (cone)

    def describe(self) -> str:
        """The ranges in words, for help texts: `yaw/pitch +-8, roll +-5 deg, offsets +-10 mm, SID 1000-1800 mm`."""
        def g(x):
            return f"{x:g}"
        angles = (f"yaw/pitch +-{g(self.yaw_deg)}" if self.yaw_deg == self.pitch_deg
                  else f"yaw +-{g(self.yaw_deg)}, pitch +-{g(self.pitch_deg)}")
        return (f"{angles}, roll +-{g(self.roll_deg)} deg, offsets +-{g(max(self.offset_mm))} mm, "
                f"SID {g(self.sid_mm[0])}-{g(self.sid_mm[1])} mm")


@dataclass(frozen=True)
class IntensityRanges:
    """A random exposure (train --drr-aug pose+intensity): line integrals scaled by a factor uniform in
    `atten_scale` (beam energy / exposure), then Gaussian image noise of std uniform in [0, noise_std]."""

    atten_scale: tuple = (0.85, 1.15)   # factor on the line integrals
    noise_std: float = 0.01             # Gaussian image noise std drawn from U(0, noise_std)

    def describe(self) -> str:
        """The ranges in words, for help texts: `exposure x0.85-1.15 and noise`."""
        return f"exposure x{self.atten_scale[0]:g}-{self.atten_scale[1]:g} and noise"


def random_pose(rng: np.random.Generator, ranges: PoseRanges = PoseRanges()) -> dict:
    """One random pose; always the same number of draws from `rng` (7), so streams of poses stay aligned."""
    u = rng.uniform(-1.0, 1.0, size=6)
    t = rng.uniform(0.0, 1.0)
    lo, hi = ranges.sid_mm
    return {"yaw_deg": float(u[0] * ranges.yaw_deg), "pitch_deg": float(u[1] * ranges.pitch_deg),
            "roll_deg": float(u[2] * ranges.roll_deg),
            "offset_mm": tuple(float(v) for v in u[3:6] * np.asarray(ranges.offset_mm, dtype=np.float64)),
            "sid_mm": float(lo + t * (hi - lo))}


def apply_pose(geometry: Geometry, pose: dict) -> Geometry:
    """`geometry` with the pose's angles and offset; a cone also takes `sid_mm` (when given), keeping its
    source-detector gap (detector behind the patient).  Parallel views have no source distance."""
    g = geometry.with_pose(**{k: pose[k] for k in ("yaw_deg", "pitch_deg", "roll_deg", "offset_mm") if k in pose})
    if isinstance(g, ConeGeometry) and pose.get("sid_mm") is not None:
        sid = float(pose["sid_mm"])
        g = replace(g, sid_mm=sid, sdd_mm=sid + (g.sdd_mm - g.sid_mm))
    return g


def pose_resample_map(shape, spacing_mm, pose: dict) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [3, 3], start [3]): output voxel o of the posed-frame volume samples input voxel index
    matrix @ o + start, i.e. V'(x) = V(c + offset + R (x - c)) with voxel centres at (i + 0.5) * spacing."""
    s = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    rot = pose_rotation(pose.get("yaw_deg", 0.0), pose.get("pitch_deg", 0.0), pose.get("roll_deg", 0.0))
    centre = np.array(shape, dtype=np.float64) * s / 2.0
    shift = np.asarray(pose.get("offset_mm", (0.0, 0.0, 0.0)), dtype=np.float64)
    matrix = rot * (1.0 / s)[:, None] * s[None, :]                       # S^-1 R S, voxel units
    start = (centre + shift + rot @ (0.5 * s - centre)) / s - 0.5        # input index of output voxel 0
    return matrix, start


def resample_to_pose(hu: np.ndarray, spacing_mm, pose: dict) -> np.ndarray:
    """The volume in the posed frame, float32 [d, h, w] HU: V'(x) = V(c + offset + R (x - c)), c the volume
    centre, R the pose's rotation, air (-1000 HU) outside.  The plain (unposed) view of V' is the posed
    view of V, up to interpolation: a network shown V' and asked for the plain view's DRR sees the pose.
    Trilinear between voxel centres (drr/resample.py)."""
    from xpgan.drr.resample import affine_resample

    matrix, start = pose_resample_map(np.shape(hu), spacing_mm, pose)
    return affine_resample(hu, matrix, start, fill=-1000.0)
