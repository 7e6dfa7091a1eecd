"""DRR geometries: turn a view (source, detector) into ray start and end points.

Frame used by every renderer ("volume frame"): millimetres, origin at the outer corner of voxel
[0, 0, 0], axes along the array axes (d, h, w) = (superior->inferior, anterior->posterior,
patient right->patient left) of docs/design.md.  Voxel (i, j, k) occupies
[i*sd, (i+1)*sd] x [j*sh, (j+1)*sh] x [k*sw, (k+1)*sw].  So "superior" is -d, "anterior" is -h and
"patient right" is -w.

The detector is centred on the volume centre (isocentre) and pixel (r, c) sits at
((size-1)/2 - r, (size-1)/2 - c) * spacing along (superior, patient right), so row 0 is the most
superior row and column 0 the patient's right, whatever the beam direction (PA or AP): images come
out in the display orientation of a chest radiograph.

Rays are described compactly by a `RayBundle`: ray (r, c) starts at src0 + r*src_dr + c*src_dc and
passes through det0 + r*det_dr + c*det_dc.  The renderers integrate along the whole ray from its
start point onwards (clipped to the volume's box), so the detector plane only sets directions and
may lie inside the CT's field of view without cutting the volume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np

from xpgan.errors import XPGANError

GEOMETRY_KINDS = ("cone", "parallel")
VIEWS = ("pa", "ap")


class DRRArgumentError(XPGANError, ValueError):
    """A bad DRR argument (name, range, shape).  Both a ValueError and a one-line CLI error."""


@dataclass(frozen=True)
class RayBundle:
    """Ray (r, c) runs from src0 + r*src_dr + c*src_dc through det0 + r*det_dr + c*det_dc (volume frame, mm)."""

    size: int
    src0: np.ndarray    # [3] mm, (d, h, w)
    src_dr: np.ndarray  # [3] mm per detector row
    src_dc: np.ndarray  # [3] mm per detector column
    det0: np.ndarray    # [3] mm
    det_dr: np.ndarray  # [3] mm per detector row
    det_dc: np.ndarray  # [3] mm per detector column

    def as_array(self) -> np.ndarray:
        """The six vectors stacked as float64 [6, 3], the form the kernels take."""
        return np.stack([self.src0, self.src_dr, self.src_dc, self.det0, self.det_dr, self.det_dc]).astype(np.float64)

    def endpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Start points and through-points of every ray, float64 [size, size, 3] each (for tests, plots)."""
        r = np.arange(self.size, dtype=np.float64)[:, None, None]
        c = np.arange(self.size, dtype=np.float64)[None, :, None]
        start = self.src0 + r * self.src_dr + c * self.src_dc
        through = self.det0 + r * self.det_dr + c * self.det_dc
        return start, through


def _check_volume_frame(shape, spacing_mm) -> tuple[tuple[int, int, int], np.ndarray]:
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DRRArgumentError(f"volume shape must be 3 positive sizes (d, h, w), got {shape}")
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise DRRArgumentError(f"voxel spacing must be 3 positive finite values in mm (sd, sh, sw), got {spacing_mm!r}")
    return shape, spacing


def _check_size_pixel(size, pixel_mm) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DRRArgumentError(f"detector size must be a positive integer number of pixels, got {size!r}")
    if pixel_mm is not None and not (np.isfinite(pixel_mm) and pixel_mm > 0):
        raise DRRArgumentError(f"pixel spacing must be a positive number of mm or None (fit), got {pixel_mm!r}")


def _detector_plane(centre: np.ndarray, size: int, pixel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel (0, 0) position and per-row / per-column steps of a detector centred at `centre`.

    Row r moves inferior (+d), column c moves towards the patient's left (+w), which is
    ((size-1)/2 - r, (size-1)/2 - c) * pixel_mm along (superior, patient right).
    """
    half = (size - 1) / 2.0
    det0 = centre + np.array([-half * pixel_mm, 0.0, -half * pixel_mm])
    return det0, np.array([pixel_mm, 0.0, 0.0]), np.array([0.0, 0.0, pixel_mm])


@dataclass(frozen=True)
class ConeGeometry:
    """Point source and flat detector, both on the anterior-posterior axis through the volume centre.

    PA (default): source behind the patient (posterior, +h), detector in front (anterior).
    AP: the reverse.  `pixel_mm` is measured in the detector plane; None fits the field of view to
    the volume's projected extent (the outermost projected box corner lands on the detector edge).
    """

    view: str = "pa"         # "pa" | "ap": beam direction, posterior->anterior or the reverse
    sdd_mm: float = 1800.0   # source-to-detector distance, mm (a standard chest PA distance)
    sid_mm: float = 1600.0   # source-to-isocentre (volume centre) distance, mm
    size: int = 256          # detector pixels per side (square)
    pixel_mm: Optional[float] = None  # detector pixel spacing in the detector plane, mm; None: fit

    kind = "cone"

    def __post_init__(self):
        if self.view not in VIEWS:
            raise DRRArgumentError(f"unknown view {self.view!r}; allowed: {', '.join(VIEWS)}")
        if not (np.isfinite(self.sid_mm) and self.sid_mm > 0):
            raise DRRArgumentError(f"source-isocentre distance must be > 0 mm, got {self.sid_mm!r}")
        if not (np.isfinite(self.sdd_mm) and self.sdd_mm > self.sid_mm):
            raise DRRArgumentError(
                f"source-detector distance ({self.sdd_mm!r} mm) must exceed the source-isocentre distance "
                f"({self.sid_mm!r} mm)")
        _check_size_pixel(self.size, self.pixel_mm)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def _source_and_detector_centre(self, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        beam = np.array([0.0, -1.0, 0.0]) if self.view == "pa" else np.array([0.0, 1.0, 0.0])  # source -> detector
        return centre - self.sid_mm * beam, centre + (self.sdd_mm - self.sid_mm) * beam

    def pixel_spacing_mm(self, shape, spacing_mm) -> float:
        """Detector pixel spacing (mm, detector plane) used for a volume of this shape and spacing."""
        shape, spacing = _check_volume_frame(shape, spacing_mm)
        if self.pixel_mm is not None:
            return float(self.pixel_mm)
        extent = np.array(shape) * spacing
        src, det_c = self._source_and_detector_centre(extent / 2.0)
        self._check_source_outside(extent, src)
        corners = np.array([[a, b, c] for a in (0.0, extent[0]) for b in (0.0, extent[1]) for c in (0.0, extent[2])])
        t = (det_c[1] - src[1]) / (corners[:, 1] - src[1])  # [8] magnification of each corner
        proj = src + t[:, None] * (corners - src)
        half = np.max(np.abs(proj[:, [0, 2]] - det_c[[0, 2]]))
        return float(2.0 * half / self.size)

    def _check_source_outside(self, extent: np.ndarray, src: np.ndarray) -> None:
        if 0.0 <= src[1] <= extent[1]:
            raise XPGANError(
                f"cone-beam source inside the volume: source-isocentre distance {self.sid_mm:g} mm is not more than "
                f"half the volume's anterior-posterior extent ({extent[1] / 2:g} mm); increase sid_mm")

    def rays(self, shape, spacing_mm) -> RayBundle:
        shape, spacing = _check_volume_frame(shape, spacing_mm)
        extent = np.array(shape) * spacing
        src, det_c = self._source_and_detector_centre(extent / 2.0)
        self._check_source_outside(extent, src)
        px = self.pixel_spacing_mm(shape, spacing)
        det0, det_dr, det_dc = _detector_plane(det_c, self.size, px)
        zero = np.zeros(3)
        return RayBundle(self.size, src, zero, zero.copy(), det0, det_dr, det_dc)


@dataclass(frozen=True)
class ParallelGeometry:
    """Parallel rays along the anterior-posterior axis, one per pixel.

    `pixel_mm` is measured in the isocentre plane; None fits the field of view to the volume's
    larger extent across the beam (superior-inferior or right-left).
    """

    size: int = 256                   # detector pixels per side (square)
    pixel_mm: Optional[float] = None  # pixel spacing in the isocentre plane, mm; None: fit

    kind = "parallel"

    def __post_init__(self):
        _check_size_pixel(self.size, self.pixel_mm)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    def pixel_spacing_mm(self, shape, spacing_mm) -> float:
        shape, spacing = _check_volume_frame(shape, spacing_mm)
        if self.pixel_mm is not None:
            return float(self.pixel_mm)
        extent = np.array(shape) * spacing
        return float(max(extent[0], extent[2]) / self.size)

    def rays(self, shape, spacing_mm) -> RayBundle:
        shape, spacing = _check_volume_frame(shape, spacing_mm)
        extent = np.array(shape) * spacing
        px = self.pixel_spacing_mm(shape, spacing)
        centre = extent / 2.0
        # Start planes a full depth outside the box on the anterior side; direction is posterior (+h).
        off = np.array([0.0, extent[1], 0.0])
        src0, dr, dc = _detector_plane(centre - off, self.size, px)
        det0, _, _ = _detector_plane(centre + off, self.size, px)
        return RayBundle(self.size, src0, dr, dc, det0, dr.copy(), dc.copy())


Geometry = Union[ConeGeometry, ParallelGeometry]


def geometry_from_dict(d: dict) -> Geometry:
    """Inverse of `.to_dict()`; unknown kinds or keys raise DRRArgumentError (a ValueError)."""
    if not isinstance(d, dict):
        raise DRRArgumentError(f"geometry must be a dict, got {type(d).__name__}")
    d = dict(d)
    kind = d.pop("kind", None)
    cls = {"cone": ConeGeometry, "parallel": ParallelGeometry}.get(kind)
    if cls is None:
        raise DRRArgumentError(f"unknown geometry kind {kind!r}; allowed: {', '.join(GEOMETRY_KINDS)}")
    try:
        return cls(**d)
    except TypeError as exc:
        raise DRRArgumentError(f"bad {kind} geometry fields {sorted(d)}: {exc}") from None


def make_geometry(kind: str = "cone", **kwargs) -> Geometry:
    """Build a geometry by name ("cone" | "parallel"); an unknown name raises DRRArgumentError."""
    return geometry_from_dict({"kind": kind, **kwargs})
