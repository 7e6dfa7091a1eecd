"""Deterministic synthetic chest CT phantoms (the anatomy); the archives are written by synth/archives.py.

`chest_phantom(seed, ...)` draws one patient's anatomy from a seeded numpy Generator and paints it into a
volume in the canonical orientation of docs/design.md: `[d, h, w]` = (superior->inferior,
anterior->posterior, patient right->left), spacing `(sd, sh, sw)` mm. Everything is placed in mm, so the
same seed gives the same anatomy at any resolution.

Tissues (HU): air outside -1000, subcutaneous fat ~-100, muscle / mediastinum / abdomen ~+40 (liver +60),
lungs ~-850 (denser posteriorly) with branching vessels, heart +40 offset to the patient's left, trachea and
main bronchi (air), bone +250 (cancellous) to +1100 (cortical): spine, ribs, sternum, clavicles, scapulae,
and a CT table under the patient. COVID-19-like findings for severity 1..4 (MosMed CT-1..CT-4): peripheral,
bilateral, lower- and posterior-predominant ground-glass opacities (-700..-300 HU, soft edges) and, from
CT-2, consolidation cores (-100..+30 HU); the anatomy of a seed does not depend on the severity and the
lesions of grade k+1 contain those of grade k, so involvement grows with severity for one patient.

The phantom is a pure array function; synth/radiograph.py simulates radiographs of it and synth/archives.py
writes the MosMed-like and Cohen-like archives (`write_mosmed_archive`, `write_cxr_archive`).

Public API
----------
chest_phantom(seed, *, shape=(40, 512, 512), severity=0, pattern="covid", noise_hu=12.0, z_margin_mm=0.0)
    -> Phantom(hu float32 [d, h, w], labels uint8 [d, h, w], spacing (sd, sh, sw) mm, severity, seed)
    Phantom.lung_involvement() -> fraction of the lungs covered by GGO/consolidation labels.
    Labels: AIR, FAT, SOFT, LUNG, VESSEL, HEART, BONE, AIRWAY, GGO, CONSOLIDATION, TABLE (TISSUE_NAMES).
The phantom is deterministic in its arguments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Phantom", "chest_phantom", "TISSUE_NAMES"]

# Tissue labels of `Phantom.labels`.
AIR, FAT, SOFT, LUNG, VESSEL, HEART, BONE, AIRWAY, GGO, CONSOLIDATION, TABLE = range(11)
TISSUE_NAMES = {
    AIR: "air", FAT: "fat", SOFT: "soft tissue", LUNG: "lung", VESSEL: "vessel", HEART: "heart",
    BONE: "bone", AIRWAY: "airway", GGO: "ground-glass opacity", CONSOLIDATION: "consolidation",
    TABLE: "table",
}

HU_AIR = -1000.0
HU_FAT = -100.0
HU_SOFT = 40.0
HU_LIVER = 60.0
HU_LUNG = -850.0
HU_BLOOD = 40.0
HU_CANCELLOUS = 400.0
HU_CORTICAL = 1100.0
HU_CARTILAGE = 140.0
HU_TABLE = 150.0

SEVERITY_LESIONS = (0, 4, 9, 15, 24)         # lesions per grade CT-0..CT-4
SEVERITY_RADIUS_SCALE = (0.0, 0.95, 1.25, 1.5, 1.8)
SEVERITY_CONSOLIDATION = (0.0, 0.0, 0.35, 0.5, 0.62)  # core size relative to the lesion


@dataclass(frozen=True)
class Phantom:
    hu: np.ndarray                      # float32 [d, h, w], canonical (I, P, L)
    labels: np.ndarray                  # uint8 [d, h, w], tissue codes (AIR, FAT, ...)
    spacing: tuple[float, float, float]  # (sd, sh, sw), mm
    severity: int                       # 0..4 (MosMed CT-0..CT-4)
    seed: int

    def lung_involvement(self) -> float:
        """Fraction of the lung (lung + lesion labels) covered by GGO or consolidation."""
        lung = np.isin(self.labels, (LUNG, GGO, CONSOLIDATION, VESSEL))
        les = np.isin(self.labels, (GGO, CONSOLIDATION))
        return float(les.sum() / max(1, lung.sum()))


@dataclass
class _Anatomy:
    """One patient's dimensions, mm; x patient right->left, y anterior->posterior, z superior->inferior."""
    coverage: float        # scan length along z
    fov: float             # in-plane field of view
    ax: float              # body semi-axis along x
    ay: float              # body semi-axis along y
    bx: float              # body centre offset (table position)
    by: float
    rot: float             # in-plane rotation, radians
    fat: float             # subcutaneous fat thickness
    muscle: float
    cav_x: float           # thoracic cavity semi-axes (inside the ribs)
    cav_y: float
    yc: float              # cavity centre y (body frame)
    z_apex: float          # lung apices
    z_cp: float            # lateral costophrenic angles
    dome_l: float          # left hemidiaphragm dome height above z_cp
    dome_r: float
    mw: float              # upper mediastinum half-width
    heart_axes: tuple[float, float, float]  # long (in-plane), short (in-plane), vertical
    heart_c: tuple[float, float, float]     # x, y, z
    heart_angle: float     # long axis angle from +x towards anterior, radians
    rib_pitch: float
    rib_drop: float
    z_rib1: float
    vb: tuple[float, float]  # vertebral body semi-axes (x, y)
    table_gap: float
    extras: dict = field(default_factory=dict)


def draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    s = rng.uniform(0.88, 1.12)
    ax = 158.0 * s * rng.uniform(0.94, 1.06)
    ay = 110.0 * s * rng.uniform(0.92, 1.08)
    fat = rng.uniform(7.0, 22.0) * s
    muscle = rng.uniform(8.0, 13.0)
    cav_x = ax - fat - muscle - 14.0
    cav_y = ay - 0.8 * fat - 0.8 * muscle - 10.0
    coverage = rng.uniform(295.0, 345.0)
    z_apex = coverage * rng.uniform(0.05, 0.09)
    z_cp = z_apex + (coverage - z_apex) * rng.uniform(0.82, 0.88)
    dome_l = rng.uniform(45.0, 60.0)
    dome_r = dome_l + rng.uniform(10.0, 20.0)
    ha = (rng.uniform(64.0, 74.0) * s, rng.uniform(46.0, 54.0) * s, rng.uniform(50.0, 58.0) * s)
    heart_bottom = z_cp - dome_l + rng.uniform(5.0, 15.0)
    heart_c = (0.24 * cav_x + rng.uniform(-6.0, 6.0), -0.22 * cav_y, heart_bottom - ha[2])
    return _Anatomy(
        coverage=coverage,
        fov=max(rng.uniform(340.0, 400.0), 2.0 * ax + 50.0),
        ax=ax, ay=ay,
        bx=float(np.clip(rng.normal(0.0, 7.0), -15.0, 15.0)),
        by=float(np.clip(rng.normal(-8.0, 5.0), -20.0, 4.0)),
        rot=float(np.deg2rad(np.clip(rng.normal(0.0, 2.0), -5.0, 5.0))),
        fat=fat, muscle=muscle, cav_x=cav_x, cav_y=cav_y, yc=6.0,
        z_apex=z_apex, z_cp=z_cp, dome_l=dome_l, dome_r=dome_r,
        mw=rng.uniform(22.0, 28.0) * s,
        heart_axes=ha, heart_c=heart_c, heart_angle=np.deg2rad(rng.uniform(32.0, 48.0)),
        rib_pitch=(z_cp - z_apex) / rng.uniform(9.6, 10.4),
        rib_drop=rng.uniform(85.0, 110.0),
        z_rib1=z_apex + rng.uniform(8.0, 14.0),
        vb=(17.0 * s, 14.5 * s),
        table_gap=rng.uniform(3.0, 12.0),
    )


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _Canvas:
    """The volume being painted plus its physical grids (mm, body frame)."""

    def __init__(self, shape, spacing, an: _Anatomy, z0: float = 0.0):
        d, h, w = shape
        sd, sh, sw = spacing
        self.shape, self.spacing, self.z0 = shape, spacing, z0
        self.z = ((np.arange(d) + 0.5) * sd - z0).astype(np.float32)       # [d], mm below the scan start
        ys = ((np.arange(h) - (h - 1) / 2.0) * sh).astype(np.float32)      # [h]
        xs = ((np.arange(w) - (w - 1) / 2.0) * sw).astype(np.float32)      # [w]
        # Body frame: rotated about the body centre so all anatomy is drawn upright.
        c, s = math.cos(an.rot), math.sin(an.rot)
        X = xs[None, :] - an.bx
        Y = ys[:, None] - an.by
        self.x = (c * X + s * Y).astype(np.float32)                        # [h, w]
        self.y = (-s * X + c * Y).astype(np.float32)                       # [h, w]
        self.ys, self.xs = ys, xs
        self.hu = np.full(shape, HU_AIR, dtype=np.float32)
        self.lab = np.zeros(shape, dtype=np.uint8)
        self.an = an

    def to_voxel(self, x, y, z):
        """Body-frame mm -> fractional voxel index (i, j, k)."""
        an = self.an
        c, s = math.cos(an.rot), math.sin(an.rot)
        X = c * x - s * y + an.bx
        Y = s * x + c * y + an.by
        d, h, w = self.shape
        sd, sh, sw = self.spacing
        return (z + self.z0) / sd - 0.5, Y / sh + (h - 1) / 2.0, X / sw + (w - 1) / 2.0

    def bbox(self, lo, hi):
        """Voxel slices covering the body-frame box [lo, hi] (mm, (x, y, z)); None if empty."""
        corners = []
        for x in (lo[0], hi[0]):
            for y in (lo[1], hi[1]):
                corners.append(self.to_voxel(x, y, 0.0)[1:])
        corners = np.array(corners)
        sd = self.spacing[0]
        i0, i1 = (lo[2] + self.z0) / sd - 0.5, (hi[2] + self.z0) / sd - 0.5
        out = []
        for a, b, n in ((i0, i1, self.shape[0]), (corners[:, 0].min(), corners[:, 0].max(), self.shape[1]),
                        (corners[:, 1].min(), corners[:, 1].max(), self.shape[2])):
            a, b = max(0, int(math.floor(a))), min(n, int(math.ceil(b)) + 1)
            if b <= a:
                return None
            out.append(slice(a, b))
        return tuple(out)


def _segment_occupancy(cv: _Canvas, segs, buf: np.ndarray, soft_mm: float) -> None:
    """Max-accumulate into buf the soft occupancy of tapered tubes (p0, p1, r0, r1) in mm."""
    for p0, p1, r0, r1 in segs:
        p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
        rmax = max(r0, r1) + soft_mm
        box = cv.bbox(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
        if box is None:
            continue
        zi, yi, xi = box
        z = cv.z[zi][:, None, None]
        x = cv.x[yi, xi][None]
        y = cv.y[yi, xi][None]
        v = p1 - p0
        L2 = float(v @ v) or 1e-6
        t = ((x - p0[0]) * v[0] + (y - p0[1]) * v[1] + (z - p0[2]) * v[2]) / L2
        t = np.clip(t, 0.0, 1.0)
        dx = x - (p0[0] + t * v[0])
        dy = y - (p0[1] + t * v[1])
        dz = z - (p0[2] + t * v[2])
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        r = r0 + (r1 - r0) * t
        occ = np.clip(0.5 + (r - dist) / soft_mm, 0.0, 1.0)
        np.maximum(buf[box], occ, out=buf[box])


def _vessel_tree(rng: np.random.Generator, root, direction, radius, length, generations):
    """Segments of a random bifurcating tree, thinner and shorter at each generation."""
    segs = []
    stack = [(np.asarray(root, float), np.asarray(direction, float), radius, length, 0)]
    while stack:
        p, dvec, r, L, g = stack.pop()
        dvec = dvec / np.linalg.norm(dvec)
        q = p + dvec * L
        r_end = r * 0.82
        segs.append((p, q, r, r_end))
        if g >= generations:
            continue
        perp = np.cross(dvec, rng.normal(size=3))
        perp /= np.linalg.norm(perp) + 1e-9
        for sign in (1.0, -1.0):
            ang = np.deg2rad(rng.uniform(22.0, 40.0))
            child = np.cos(ang) * dvec + sign * np.sin(ang) * perp
            stack.append((q, child, r_end * 0.86, L * rng.uniform(0.72, 0.86), g + 1))
    return segs


def _paint_body(cv: _Canvas) -> dict:
    an = cv.an
    z3 = cv.z[:, None, None]
    t = (cv.z - an.z_apex) / max(1.0, an.z_cp - an.z_apex)
    g = 0.72 + 0.28 * _smoothstep(t / 0.35)                                  # cavity taper at the apices
    ax_z = (an.ax * (0.9 + 0.1 * _smoothstep((t + 0.1) / 0.4))).astype(np.float32)[:, None, None]
    ay_z = (an.ay * (0.97 + 0.05 * _smoothstep((t - 0.6) / 0.4))).astype(np.float32)[:, None, None]
    x, y = cv.x[None], cv.y[None]
    rb2 = (x / ax_z) ** 2 + (y / ay_z) ** 2
    body = rb2 < 1.0
    inner2 = (x / (ax_z - an.fat)) ** 2 + (y / (ay_z - 0.8 * an.fat)) ** 2
    cv.hu[body] = HU_SOFT
    cv.lab[body] = SOFT
    fat = body & (inner2 >= 1.0)
    cv.hu[fat] = HU_FAT
    cv.lab[fat] = FAT
    # CT table: a curved carbon-fibre plate under the patient's back.
    y_tab = an.ay * 1.0 + an.table_gap + 0.0004 * cv.x ** 2
    plate = (cv.y > y_tab) & (cv.y < y_tab + 7.0) & (np.abs(cv.x) < 0.5 * an.fov * 0.9)
    cv.hu[:, plate] = HU_TABLE
    cv.lab[:, plate] = TABLE

    cx_z = (an.cav_x * g).astype(np.float32)[:, None, None]
    cy_z = (an.cav_y * (0.85 + 0.15 * g)).astype(np.float32)[:, None, None]
    rc2 = (x / cx_z) ** 2 + ((y - an.yc) / cy_z) ** 2                       # [d, h, w] cavity radius^2
    return {"rc2": rc2, "g": g, "body": body, "z3": z3}


def _thorax_outline(cv: _Canvas) -> dict:
    """Per-column (h, w) limits of the lungs: side, apex and diaphragm heights, the mediastinum and spine
    excluded, and the y of the vertebral body centres."""
    an = cv.an
    x, y = cv.x, cv.y                      # [h, w]
    side = np.where(x < 0, -1.0, 1.0).astype(np.float32)                    # -1 right lung, +1 left lung
    # Lung apices: domes around a point in each upper thorax.
    xap = 0.45 * an.cav_x * side
    yap = an.yc + 0.15 * an.cav_y
    z_top = an.z_apex + 95.0 * ((x - xap) ** 2 + (y - yap) ** 2) / (0.62 * an.cav_x) ** 2
    # Diaphragm: one dome per side, the right higher (liver); posterior recesses deeper.
    dome = np.where(side < 0, an.dome_r, an.dome_l)
    rd2 = ((x - 0.45 * an.cav_x * side) / (0.62 * an.cav_x)) ** 2 + ((y - an.yc) / (0.85 * an.cav_y)) ** 2
    z_bot = an.z_cp + 18.0 * (y - an.yc) / an.cav_y - dome * np.clip(1.0 - rd2, 0.0, 1.0) ** 0.7
    # Mediastinum: a central column from sternum to spine; spine block posteriorly.
    y_vb = an.yc + 0.55 * an.cav_y + an.vb[1]
    medi = (np.abs(x) < an.mw) & (y < y_vb)
    spine_block = (np.abs(x) < an.vb[0] + 14.0) & (y > y_vb - an.vb[1] - 6.0)
    plane_ok = ~(medi | spine_block)                                        # [h, w]
    return {"side": side, "z_top": z_top, "z_bot": z_bot, "y_vb": y_vb, "plane_ok": plane_ok}


def _heart_mask(cv: _Canvas, z3: np.ndarray) -> np.ndarray:
    """The heart: a rotated ellipsoid, long axis towards the patient's left and anterior ([d, h, w] bool)."""
    an = cv.an
    x, y = cv.x, cv.y
    hx, hy, hz = an.heart_c
    a1, a2, a3 = an.heart_axes
    ca, sa = math.cos(an.heart_angle), math.sin(an.heart_angle)
    u = (x - hx) * ca - (y - hy) * sa
    v = (x - hx) * sa + (y - hy) * ca
    hq2_plane = (u / a1) ** 2 + (v / a2) ** 2                               # [h, w]
    hq2 = hq2_plane[None] + ((z3 - hz) / a3) ** 2                           # [d, h, w]
    return hq2 < 1.0


def _paint_abdomen(cv: _Canvas, geo: dict, z_bot: np.ndarray) -> None:
    """Abdomen under the diaphragm: liver on the right, gas in the stomach fundus on the left."""
    an = cv.an
    x, y = cv.x, cv.y
    z3 = geo["z3"]
    below = (geo["rc2"] < 1.0) & (z3 >= z_bot[None])
    liver = below & (x < 0.35 * an.cav_x)[None]
    cv.hu[liver] = HU_LIVER
    cv.lab[liver] = SOFT
    gx, gy = 0.45 * an.cav_x, an.yc - 0.15 * an.cav_y
    gz = an.z_cp - an.dome_l + 22.0
    gas = below & ((((x - gx) / 28.0) ** 2 + ((y - gy) / 24.0) ** 2)[None] + ((z3 - gz) / 16.0) ** 2 < 1.0)
    cv.hu[gas] = HU_AIR
    cv.lab[gas] = AIRWAY


def _carina_z(an: _Anatomy) -> float:
    """Height of the tracheal carina (and of the pulmonary hila), mm."""
    return an.z_apex + 0.32 * (an.z_cp - an.z_apex)


def _paint_pulmonary_vessels(cv: _Canvas, rng: np.random.Generator, soft: float) -> None:
    """Pulmonary vessels: random trees from each hilum, blended into the lungs (and their findings)."""
    an = cv.an
    vbuf = np.zeros(cv.shape, np.float32)
    segs = []
    z_car = _carina_z(an)
    for sgn in (-1.0, 1.0):
        root = (sgn * (an.mw + 6.0 + (8.0 if sgn > 0 else 0.0)), an.yc - 0.1 * an.cav_y,
                z_car + (30.0 if sgn < 0 else 18.0))
        for d_ in ((0.45, 0.05, -0.9), (1.0, 0.15, 0.05), (0.5, 0.45, 0.8), (0.45, -0.55, 0.55)):
            direction = (sgn * d_[0], d_[1], d_[2])
            segs += _vessel_tree(rng, root, direction, radius=6.5, length=32.0, generations=4)
    _segment_occupancy(cv, segs, vbuf, soft)
    in_lung = (cv.lab == LUNG) | (cv.lab == GGO) | (cv.lab == CONSOLIDATION)
    sel = in_lung & (vbuf > 0)
    occ = vbuf[sel]
    cv.hu[sel] += (HU_BLOOD - cv.hu[sel]) * occ
    vmask = sel.copy()
    vmask[sel] = occ > 0.5
    cv.lab[vmask] = VESSEL


def _paint_great_vessels(cv: _Canvas, y_vb: float, soft: float) -> None:
    """Ascending aorta, arch, descending aorta (left of the spine) and superior vena cava."""
    an = cv.an
    hx, hy, hz = an.heart_c
    a3 = an.heart_axes[2]
    z_arch = an.z_apex + 0.2 * (an.z_cp - an.z_apex)
    ra = 13.0
    y_desc = y_vb - an.vb[1] - 4.0
    segs = [
        ((hx - 15.0, hy + 5.0, hz - 0.5 * a3), (8.0, an.yc - 0.35 * an.cav_y, z_arch + 10.0), ra, ra),
        ((8.0, an.yc - 0.35 * an.cav_y, z_arch + 10.0), (an.mw + 6.0, an.yc + 0.1 * an.cav_y, z_arch), ra, ra),
        ((an.mw + 6.0, an.yc + 0.1 * an.cav_y, z_arch), (20.0, y_desc, z_arch + 25.0), ra, ra * 0.95),
        ((20.0, y_desc, z_arch + 25.0), (12.0, y_desc, an.z_cp + 10.0), ra * 0.95, ra * 0.85),
        ((-an.mw - 2.0, an.yc - 0.2 * an.cav_y, 0.0), (-an.mw - 2.0, hy + 5.0, hz - 0.4 * a3), 10.0, 11.0),
    ]
    gbuf = np.zeros(cv.shape, np.float32)
    _segment_occupancy(cv, segs, gbuf, soft)
    sel = gbuf > 0.5
    cv.hu[sel] = HU_BLOOD
    cv.lab[sel] = SOFT


def _paint_airways(cv: _Canvas, geo: dict, soft: float) -> None:
    """Airways: the trachea down to the carina, then the main bronchi (air core, soft walls)."""
    an = cv.an
    z_car = _carina_z(an)
    y_tr = an.yc - 0.05 * an.cav_y
    segs = [
        ((0.0, y_tr - 8.0, -250.0), (0.0, y_tr, z_car), 9.0, 8.5),
        ((0.0, y_tr, z_car), (-an.mw - 12.0, y_tr + 5.0, z_car + 28.0), 7.0, 5.5),
        ((0.0, y_tr, z_car), (an.mw + 16.0, y_tr + 5.0, z_car + 40.0), 6.5, 5.0),
    ]
    abuf = np.zeros(cv.shape, np.float32)
    _segment_occupancy(cv, segs, abuf, soft)
    sel = (abuf > 0) & geo["body"]
    occ = abuf[sel]
    cv.hu[sel] += (HU_AIR - cv.hu[sel]) * occ
    amask = sel.copy()
    amask[sel] = occ > 0.5
    cv.lab[amask] = AIRWAY


def _paint_chest(cv: _Canvas, geo: dict, lesion_rng: np.random.Generator, severity: int, pattern: str,
                 anat_rng: np.random.Generator) -> None:
    """Everything inside the body wall: abdomen, lungs with their findings and vessels, heart, great
    vessels, airways, then the bones (later layers paint over earlier ones)."""
    z3 = geo["z3"]
    outline = _thorax_outline(cv)
    z_top, z_bot = outline["z_top"], outline["z_bot"]
    heart = _heart_mask(cv, z3)
    lung = ((geo["rc2"] < 0.97 ** 2) & outline["plane_ok"][None] & (z3 > z_top[None]) & (z3 < z_bot[None])
            & ~heart)
    _paint_abdomen(cv, geo, z_bot)

    # Lung parenchyma, denser in the dependent (posterior) part.
    an = cv.an
    lung_hu = (HU_LUNG + 45.0 * (cv.y - an.yc) / an.cav_y).astype(np.float32)  # [h, w]
    cv.hu[lung] = np.broadcast_to(lung_hu[None], cv.shape)[lung]
    cv.lab[lung] = LUNG

    # Findings first, vessels over them (vessels stay visible inside ground glass).
    if severity > 0:
        _paint_lesions(cv, lung, lesion_rng, severity, pattern, outline["side"])
    sd, sh, sw = cv.spacing
    soft = max(sh, sw) * 0.9
    _paint_pulmonary_vessels(cv, anat_rng, soft)
    cv.hu[heart] = HU_BLOOD
    cv.lab[heart] = HEART
    _paint_great_vessels(cv, outline["y_vb"], soft)
    _paint_airways(cv, geo, soft)
    _paint_bones(cv, geo, outline["y_vb"])


def _paint_lesions(cv: _Canvas, lung: np.ndarray, rng: np.random.Generator, severity: int, pattern: str,
                   side: np.ndarray) -> None:
    """Ground-glass blobs with consolidation cores; lesion k of grade s+1 contains lesion k of grade s."""
    an = cv.an
    # Candidate centres: peripheral lung voxels (subsampled), weighted to lower and posterior zones.
    step = (1, max(1, cv.shape[1] // 64), max(1, cv.shape[2] // 64))
    sub = lung[:: step[0], :: step[1], :: step[2]]
    idx = np.argwhere(sub)
    if len(idx) == 0:
        return
    zc = cv.z[idx[:, 0] * step[0]]
    yc = cv.y[idx[:, 1] * step[1], idx[:, 2] * step[2]]
    xc = cv.x[idx[:, 1] * step[1], idx[:, 2] * step[2]]
    periph = np.sqrt((xc / an.cav_x) ** 2 + ((yc - an.yc) / an.cav_y) ** 2)
    tz = (zc - an.z_apex) / (an.z_cp - an.z_apex)
    weight = np.clip(periph - 0.45, 0.02, None) ** 2 * (0.4 + tz) * (1.3 + (yc - an.yc) / an.cav_y)
    weight = np.clip(weight, 1e-6, None)
    n_max = SEVERITY_LESIONS[-1]
    lesions = []
    for k in range(n_max):
        # Bilateral: alternate the side; bacterial pneumonia (a negative finding) stays on one side.
        want = (-1.0 if k % 2 == 0 else 1.0) if pattern == "covid" else -1.0
        wk = weight * (np.sign(xc) == want)
        if wk.sum() <= 0:
            wk = weight
        j = rng.choice(len(idx), p=wk / wk.sum())
        base_r = rng.uniform(22.0, 42.0)
        lesions.append(dict(c=(xc[j], yc[j], zc[j]), r=base_r, rz=base_r * rng.uniform(0.8, 1.3),
                            ry=base_r * rng.uniform(0.75, 1.15), target=rng.uniform(-700.0, -300.0),
                            cons=rng.uniform(-100.0, 30.0), phase=rng.uniform(0, 2 * np.pi, 3),
                            freq=rng.uniform(0.08, 0.2, 3), has_core=rng.uniform() < 0.7))
    if pattern == "bacterial":
        lesions = lesions[:2]
        for les in lesions:
            les["target"], les["has_core"] = -350.0, True
    n = min(len(lesions), SEVERITY_LESIONS[severity] if pattern == "covid" else 2)
    scale = SEVERITY_RADIUS_SCALE[severity]
    core_frac = SEVERITY_CONSOLIDATION[severity] if pattern == "covid" else 0.55

    inc_g = np.zeros(cv.shape, np.float32)   # HU added to the lung (max over lesions)
    w_g = np.zeros(cv.shape, np.float32)     # ground-glass weight
    w_c = np.zeros(cv.shape, np.float32)     # consolidation-core weight
    base = cv.hu
    for les in lesions[:n]:
        r, ry, rz = les["r"] * scale, les["ry"] * scale, les["rz"] * scale
        cx, cy, cz = les["c"]
        box = cv.bbox((cx - r * 1.1, cy - ry * 1.1, cz - rz * 1.1), (cx + r * 1.1, cy + ry * 1.1, cz + rz * 1.1))
        if box is None:
            continue
        zi, yi, xi = box
        # Lesions are blobs: axis-aligned in the image frame, so every term below is separable.
        _, jc, kc = cv.to_voxel(cx, cy, cz)
        X0 = (kc - (cv.shape[2] - 1) / 2.0) * cv.spacing[2]
        Y0 = (jc - (cv.shape[1] - 1) / 2.0) * cv.spacing[1]
        xs, ys, zs = cv.xs[xi], cv.ys[yi], cv.z[zi]
        q = np.sqrt((((zs - cz) / rz) ** 2)[:, None, None] + (((ys - Y0) / ry) ** 2)[None, :, None]
                    + (((xs - X0) / r) ** 2)[None, None, :])
        ph, fr = les["phase"], les["freq"]
        tex = (np.sin(fr[2] * zs + ph[2])[:, None, None]
               * (np.sin(fr[1] * ys + ph[1])[:, None] * np.sin(fr[0] * xs + ph[0])[None, :])[None])
        w = _smoothstep((1.0 - q) * np.float32(1 / 0.35))
        w *= 0.88 + 0.12 * tex
        np.maximum(w_g[box], w, out=w_g[box])
        inc = w * (les["target"] - HU_LUNG)
        if core_frac > 0 and les["has_core"]:
            wc = _smoothstep((core_frac - q) / (0.25 * core_frac))
            np.maximum(w_c[box], wc, out=w_c[box])
            inc += wc * (les["cons"] - les["target"])
        # Overlapping lesions: the densest wins (no stacking beyond consolidation).
        np.maximum(inc_g[box], inc, out=inc_g[box])
    sel = lung & (w_g > 0)
    base[sel] = base[sel] + inc_g[sel]
    lab = cv.lab
    lab[sel & (w_g > 0.5)] = GGO
    lab[sel & (w_c > 0.5)] = CONSOLIDATION


def _paint_spine(cv: _Canvas, y_vb: float) -> None:
    """Vertebral bodies (cortical rim, cancellous core) separated by discs, posterior arch, spinous and
    transverse processes."""
    an = cv.an
    x, y = cv.x, cv.y
    z = cv.z
    d = cv.shape[0]
    hu2, lab2 = cv.hu.reshape(d, -1), cv.lab.reshape(d, -1)                # [d, h*w] views
    ex, ey = an.vb
    q = np.sqrt((x / ex) ** 2 + ((y - y_vb) / ey) ** 2)                    # [h, w]
    disc_phase = ((z - an.z_apex + 40.0) / 26.0) % 1.0                      # [d]
    vb_core = np.flatnonzero(q < 0.82)
    vb_rim = np.flatnonzero((q >= 0.82) & (q < 1.0))
    vb_all = np.concatenate([vb_core, vb_rim])
    y_can = y_vb + ey + 9.0
    qc = np.sqrt(x ** 2 + (y - y_can) ** 2)
    arch = (qc > 8.0) & (qc < 14.0) & (y > y_vb + ey - 2.0)
    spinous = (np.abs(x) < 3.5) & (y > y_can + 10.0) & (y < y_can + 38.0)
    transverse = (np.abs(y - y_can) < 4.0) & (np.abs(x) < 34.0) & (np.abs(x) > 10.0)
    post_a = np.flatnonzero(arch | spinous)
    post_b = np.flatnonzero(arch | spinous | transverse)
    for i in range(d):
        if disc_phase[i] > 0.82:
            hu2[i, vb_all] = 90.0
            lab2[i, vb_all] = SOFT
        else:
            hu2[i, vb_core] = HU_CANCELLOUS
            hu2[i, vb_rim] = 750.0
            lab2[i, vb_all] = BONE
        post = post_b if disc_phase[i] < 0.45 else post_a
        hu2[i, post] = 650.0
        lab2[i, post] = BONE


def _paint_ribs_and_scapulae(cv: _Canvas, geo: dict) -> None:
    """Ribs (with costal cartilage in front) and scapulae, in the shell of voxels around the cavity."""
    an = cv.an
    x, y = cv.x, cv.y
    rc2 = geo["rc2"]
    shell = np.flatnonzero((rc2 > 0.9) & (rc2 < 1.6) & geo["body"])
    zi, hw = np.divmod(shell, x.size)
    rc = np.sqrt(rc2.reshape(-1)[shell])
    xs, ys = x.reshape(-1)[hw], y.reshape(-1)[hw]
    zs = cv.z[zi]
    g = geo["g"][zi]
    phi = np.arctan2(np.abs(xs) / an.cav_x, (ys - an.yc) / an.cav_y)       # 0 posterior, pi anterior
    hu1, lab1 = cv.hu.reshape(-1), cv.lab.reshape(-1)

    # Ribs: bands just outside the cavity descending steadily from the spine round to the front (posterior
    # arcs fall laterally, anterior arcs fall medially on a frontal view), cortex brighter than the marrow.
    a = (zs - an.z_rib1 - an.rib_drop * phi / np.pi) / an.rib_pitch
    k = np.rint(a)
    dz = (a - k) * an.rib_pitch
    r_mean = 0.5 * (an.cav_x + an.cav_y)
    dr = (rc - (1.0 + 8.0 / r_mean)) * r_mean * g
    qr = (dz / 7.0) ** 2 + (dr / 5.5) ** 2
    rib = (k >= 0) & (k < 12) & (qr < 1.0)
    phi_end = 0.72 * np.pi
    bony = rib & (phi < phi_end)
    cart = rib & (phi >= phi_end) & (phi < 0.93 * np.pi) & (k < 7)
    hu1[shell[cart]] = HU_CARTILAGE
    lab1[shell[cart]] = SOFT
    hu1[shell[bony]] = np.where(qr[bony] > 0.6, HU_CORTICAL, 450.0)
    lab1[shell[bony]] = BONE

    # Scapulae: thin triangular plates behind the upper ribs.
    tz = (zs - an.z_apex) / (0.5 * (an.z_cp - an.z_apex))
    phi_max = (0.42 - 0.22 * np.clip(tz, 0, 1)) * np.pi
    scap = (rc > 1.17) & (rc < 1.22) & (phi > 0.16 * np.pi) & (phi < phi_max) & (tz > -0.05) & (tz < 1.0)
    hu1[shell[scap]] = 600.0
    lab1[shell[scap]] = BONE


def _sternum_y(an: _Anatomy) -> float:
    """y of the sternum's midline plate, mm."""
    return an.yc - an.cav_y - 8.0


def _paint_sternum(cv: _Canvas) -> None:
    """Sternum: an anterior midline plate (cortex around a cancellous core) from below the apices to the
    diaphragm."""
    an = cv.an
    x, y = cv.x, cv.y
    z = cv.z
    d = cv.shape[0]
    hu2, lab2 = cv.hu.reshape(d, -1), cv.lab.reshape(d, -1)                # [d, h*w] views
    y_st = _sternum_y(an)
    st = (np.abs(x) < 14.0) & (np.abs(y - y_st) < 6.0)
    st_core = (np.abs(x) < 11.0) & (np.abs(y - y_st) < 3.5)
    zr = (z > an.z_apex + 12.0) & (z < an.z_cp - an.dome_l + 15.0)
    st, st_core = np.flatnonzero(st), np.flatnonzero(st_core)
    for i in np.flatnonzero(zr):
        hu2[i, st] = 900.0
        lab2[i, st] = BONE
        hu2[i, st_core] = 420.0


def _paint_clavicles(cv: _Canvas, geo: dict) -> None:
    """Clavicles: tubes from the sternal notch out to the shoulders, above the lung apices."""
    an = cv.an
    y_st = _sternum_y(an)
    sd, sh, sw = cv.spacing
    cbuf = np.zeros(cv.shape, np.float32)
    segs = []
    for sgn in (-1.0, 1.0):
        p0 = (sgn * 16.0, y_st - 4.0, an.z_apex + 14.0)
        p1 = (sgn * (an.cav_x + 30.0), an.yc - 0.15 * an.cav_y, an.z_apex - 4.0)
        segs.append((p0, p1, 8.0, 7.0))
    _segment_occupancy(cv, segs, cbuf, max(sh, sw))
    clav = (cbuf > 0.5) & geo["body"]
    cv.hu[clav] = 800.0
    cv.lab[clav] = BONE


def _paint_bones(cv: _Canvas, geo: dict, y_vb: float) -> None:
    """The skeleton, in painting order: spine, ribs and scapulae, sternum, clavicles."""
    _paint_spine(cv, y_vb)
    _paint_ribs_and_scapulae(cv, geo)
    _paint_sternum(cv)
    _paint_clavicles(cv, geo)


def chest_phantom(
    seed: int,
    *,
    shape: Sequence[int] = (40, 512, 512),  # (d, h, w) voxels
    severity: int = 0,                      # 0 negative, 1..4 COVID-19 grade (MosMed CT-1..CT-4)
    pattern: str = "covid",                 # "covid" (bilateral peripheral) or "bacterial" (unilateral lobar)
    noise_hu: float = 12.0,                 # Gaussian image noise, HU standard deviation
    z_margin_mm: float = 0.0,               # extra body (neck, abdomen) scanned above and below the chest, mm
) -> Phantom:
    """One synthetic chest CT, deterministic in (seed, shape, severity, pattern)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be three sizes >= 4, got {shape}")
    if severity not in (0, 1, 2, 3, 4):
        raise ValueError(f"severity must be 0..4, got {severity}")
    if pattern not in ("covid", "bacterial"):
        raise ValueError(f"pattern must be 'covid' or 'bacterial', got {pattern!r}")
    if severity == 0 and pattern == "bacterial":
        severity = 2
    seed = int(seed)
    anat_rng = np.random.default_rng([seed, 0])
    an = draw_anatomy(anat_rng)
    d, h, w = shape
    spacing = (round((an.coverage + 2.0 * z_margin_mm) / d, 3), round(an.fov / h, 4), round(an.fov / w, 4))
    # (keep in step with _phantom_spacing)
    cv = _Canvas(shape, spacing, an, z0=float(z_margin_mm))
    geo = _paint_body(cv)
    _paint_chest(cv, geo, np.random.default_rng([seed, 1]), severity, pattern, anat_rng)
    if noise_hu > 0:
        noise = np.random.default_rng([seed, 2, severity]).standard_normal(shape, dtype=np.float32)
        cv.hu += noise * np.float32(noise_hu)
    np.clip(cv.hu, -1024.0, 3071.0, out=cv.hu)
    return Phantom(hu=cv.hu, labels=cv.lab, spacing=spacing, severity=severity, seed=seed)
