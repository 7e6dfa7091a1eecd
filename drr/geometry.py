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

Poses (both kinds).  The unposed view above is rigidly rotated and shifted as a whole (source,
detector plane and detector axes together, like a C-arm gantry) about the isocentre
`volume centre + offset_mm`, by R = R_yaw @ R_pitch @ R_roll (intrinsic order: yaw, then pitch, then roll):
- `yaw_deg` turns about the superior-inferior axis (d).  Positive yaw turns the anterior direction (-h)
  towards patient left (+w): in a PA view the detector moves to the patient's left-anterior side, an
  LAO projection (in AP the source moves there: the same beam line, named RPO).  Yaw 90 on PA is a
  left lateral view.  In the image a structure a mm posterior of the isocentre moves by about
  a*sin(yaw) mm (times the magnification) towards the image's right (patient left); anterior
  structures move the other way.  R_yaw maps (d, h, w) = (0, -1, 0) to (0, -cos, sin).
- `pitch_deg` turns about the right-left axis (w): the cranio-caudal tilt.  Positive pitch turns the
  anterior direction towards superior (-d): in PA the detector tilts cranially, in AP the source does.
  In the image posterior structures move up (superior) and anterior ones down, by about a*sin(pitch).
  R_pitch maps (0, -1, 0) to (-sin, -cos, 0).
- `roll_deg` turns about the beam's central axis (h before yaw and pitch): positive roll rotates the
  image content clockwise as displayed (rows down, columns right) about the detector centre.
  R_roll maps (1, 0, 0) to (cos, 0, sin).
- `offset_mm` (d, h, w) moves the isocentre, the point imaged at the detector centre; the content moves
  the other way (a +w offset moves the volume towards the image's left).
Source-isocentre and source-detector distances are kept.  A posed view has the pixel spacing of the
same geometry unposed (a fitted field is fitted to the unposed view), so a pose never rescales the
image.  The zero pose takes the unposed code path: its rays are bit for bit those of the plain view.
Multiples of 90 degrees use exact sines and cosines, so yaw 90 gives rays exactly in h planes (which
the kernels handle as such) rather than at 1e-17 from them.

Rays are described compactly by a `RayBundle`: ray (r, c) starts at src0 + r*src_dr + c*src_dc and
passes through det0 + r*det_dr + c*det_dc.  The renderers integrate along the whole ray from its
start point onwards (clipped to the volume's box), so the detector plane only sets directions and
may lie inside the CT's field of view without cutting the volume.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, Optional, Union, get_args

import numpy as np

from xpgan.errors import DRRArgumentError, XPGANError

GeometryKind = Literal["cone", "parallel"]  # the CLI options --geometry / --view take these types
View = Literal["pa", "ap"]
GEOMETRY_KINDS: tuple[str, ...] = get_args(GeometryKind)
VIEWS: tuple[str, ...] = get_args(View)
POSE_FIELDS = ("yaw_deg", "pitch_deg", "roll_deg", "offset_mm")
ZERO_OFFSET = (0.0, 0.0, 0.0)


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


def cos_sin_deg(angle_deg: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact (0, +-1) at multiples of 90 degrees."""
    a = float(angle_deg) % 360.0
    exact = {0.0: (1.0, 0.0), 90.0: (0.0, 1.0), 180.0: (-1.0, 0.0), 270.0: (0.0, -1.0)}
    if a in exact:
        return exact[a]
    rad = np.deg2rad(a)
    return float(np.cos(rad)), float(np.sin(rad))


def pose_rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """R = R_yaw @ R_pitch @ R_roll, float64 [3, 3] acting on (d, h, w) column vectors (module docstring)."""
    cy, sy = cos_sin_deg(yaw_deg)
    cp, sp = cos_sin_deg(pitch_deg)
    cr, sr = cos_sin_deg(roll_deg)
    r_yaw = np.array([[1.0, 0.0, 0.0], [0.0, cy, sy], [0.0, -sy, cy]])      # about d: -h turns to +w
    r_pitch = np.array([[cp, sp, 0.0], [-sp, cp, 0.0], [0.0, 0.0, 1.0]])    # about w: -h turns to -d
    r_roll = np.array([[cr, 0.0, -sr], [0.0, 1.0, 0.0], [sr, 0.0, cr]])     # about h: +d turns to +w
    return r_yaw @ r_pitch @ r_roll


def _check_angle(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise DRRArgumentError(f"{name} must be a finite angle in degrees, got {value!r}")
    return float(value)


class _Posed:
    """Pose fields shared by both geometries: checks, rotation, `with_pose`, compact `to_dict`."""

    def _check_pose(self) -> None:
        for name in POSE_FIELDS[:3]:
            object.__setattr__(self, name, _check_angle(name, getattr(self, name)))
        try:
            off = tuple(float(v) for v in np.asarray(self.offset_mm, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            off = ()
        if len(off) != 3 or not all(np.isfinite(off)):
            raise DRRArgumentError(f"offset_mm must be 3 finite mm values (d, h, w), got {self.offset_mm!r}")
        object.__setattr__(self, "offset_mm", off)

    @property
    def is_posed(self) -> bool:
        """False for the zero pose (which renders exactly like the plain view)."""
        return bool(self.yaw_deg or self.pitch_deg or self.roll_deg or any(self.offset_mm))

    def rotation(self) -> np.ndarray:
        """The pose's rotation R, float64 [3, 3] on (d, h, w) vectors (module docstring)."""
        return pose_rotation(self.yaw_deg, self.pitch_deg, self.roll_deg)

    def with_pose(self, **pose):
        """A copy with some pose fields replaced (yaw_deg, pitch_deg, roll_deg, offset_mm); others kept."""
        unknown = sorted(set(pose) - set(POSE_FIELDS))
        if unknown:
            raise DRRArgumentError(f"unknown pose fields {unknown}; allowed: {', '.join(POSE_FIELDS)}")
        return replace(self, **pose)

    def to_dict(self) -> dict:
        """JSON-ready dict; zero pose fields are left out, so an unposed view's dict is what it always was."""
        d = {"kind": self.kind, **asdict(self)}
        for name in POSE_FIELDS[:3]:
            if not d[name]:
                del d[name]
        if any(d["offset_mm"]):
            d["offset_mm"] = list(d["offset_mm"])
        else:
            del d["offset_mm"]
        return d

    def _posed(self, bundle: RayBundle, centre: np.ndarray) -> RayBundle:
        """The unposed bundle (built about `centre`) turned by R about the isocentre centre + offset."""
        rot = self.rotation()
        iso = centre + np.asarray(self.offset_mm)

        def point(p):
            return iso + rot @ (p - centre)

        return RayBundle(bundle.size, point(bundle.src0), rot @ bundle.src_dr, rot @ bundle.src_dc,
                         point(bundle.det0), rot @ bundle.det_dr, rot @ bundle.det_dc)


@dataclass(frozen=True)
class ConeGeometry(_Posed):
    """Point source and flat detector, both on the anterior-posterior axis through the volume centre.

    PA (default): source behind the patient (posterior, +h), detector in front (anterior).
    AP: the reverse.  `pixel_mm` is measured in the detector plane; None fits the field of view to
    the volume's projected extent (the outermost projected box corner lands on the detector edge).
    Pose fields (yaw, pitch, roll, offset): module docstring.
    """

    view: str = "pa"         # "pa" | "ap": beam direction, posterior->anterior or the reverse
    sdd_mm: float = 1800.0   # source-to-detector distance, mm (a standard chest PA distance)
    sid_mm: float = 1600.0   # source-to-isocentre (volume centre) distance, mm
    size: int = 256          # detector pixels per side (square)
    pixel_mm: Optional[float] = None  # detector pixel spacing in the detector plane, mm; None: fit
    yaw_deg: float = 0.0     # turn about superior-inferior, degrees; + = LAO (PA detector to patient left)
    pitch_deg: float = 0.0   # cranio-caudal tilt about right-left, degrees; + = PA detector cranial
    roll_deg: float = 0.0    # turn about the beam axis, degrees; + = image content clockwise
    offset_mm: tuple = ZERO_OFFSET  # isocentre shift from the volume centre, mm (d, h, w)

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
        self._check_pose()

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
        bundle = RayBundle(self.size, src, zero, zero.copy(), det0, det_dr, det_dc)
        if not self.is_posed:
            return bundle
        bundle = self._posed(bundle, extent / 2.0)
        if np.all((bundle.src0 >= 0.0) & (bundle.src0 <= extent)):
            raise XPGANError(
                f"cone-beam source inside the volume: the posed source (yaw {self.yaw_deg:g}, pitch "
                f"{self.pitch_deg:g} deg, offset {self.offset_mm} mm, {self.sid_mm:g} mm from the isocentre) "
                f"lies in the volume's box {tuple(float(e) for e in extent.round(1))} mm; increase sid_mm")
        return bundle


@dataclass(frozen=True)
class ParallelGeometry(_Posed):
    """Parallel rays along the anterior-posterior axis, one per pixel.

    `pixel_mm` is measured in the isocentre plane; None fits the field of view to the volume's
    larger extent across the beam (superior-inferior or right-left).  The unposed beam runs anterior to
    posterior (+h), so yaw 90 sends it from patient left to right.  Pose fields: module docstring.
    """

    size: int = 256                   # detector pixels per side (square)
    pixel_mm: Optional[float] = None  # pixel spacing in the isocentre plane, mm; None: fit
    yaw_deg: float = 0.0     # turn about superior-inferior, degrees; + = anterior turns to patient left
    pitch_deg: float = 0.0   # cranio-caudal tilt about right-left, degrees; + = anterior turns superior
    roll_deg: float = 0.0    # turn about the beam axis, degrees; + = image content clockwise
    offset_mm: tuple = ZERO_OFFSET  # isocentre shift from the volume centre, mm (d, h, w)

    kind = "parallel"

    def __post_init__(self):
        _check_size_pixel(self.size, self.pixel_mm)
        self._check_pose()

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
        # Posed: a box diagonal plus the offset from the isocentre, outside the box whatever the direction.
        depth = float(np.linalg.norm(extent) + np.linalg.norm(self.offset_mm)) if self.is_posed else extent[1]
        off = np.array([0.0, depth, 0.0])
        src0, dr, dc = _detector_plane(centre - off, self.size, px)
        det0, _, _ = _detector_plane(centre + off, self.size, px)
        bundle = RayBundle(self.size, src0, dr, dc, det0, dr.copy(), dc.copy())
        return self._posed(bundle, centre) if self.is_posed else bundle


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


def pose_grid(geometry: Geometry, *, yaw_deg=(0.0,), pitch_deg=(0.0,), roll_deg=(0.0,), offset_mm=None) -> list:
    """Posed copies of `geometry`, one per (yaw, pitch, roll) combination, yaw varying slowest.

    Each angle is a number or a sequence of numbers (degrees); offset_mm (d, h, w) applies to every view,
    None keeps the geometry's own.  Pass the list to render_drr_views / render_drr_batch: one launch.
    """
    def values(x, name):
        vals = [x] if np.isscalar(x) else list(x)
        if not vals:
            raise DRRArgumentError(f"{name} needs at least one value")
        return vals

    extra = {} if offset_mm is None else {"offset_mm": offset_mm}
    return [geometry.with_pose(yaw_deg=y, pitch_deg=p, roll_deg=r, **extra)
            for y in values(yaw_deg, "yaw_deg") for p in values(pitch_deg, "pitch_deg")
            for r in values(roll_deg, "roll_deg")]
