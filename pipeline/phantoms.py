"""Deterministic synthetic chest CT phantoms and the demo archives built from them.

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

The archive writers (`write_mosmed_archive`, `write_cxr_archive`) are at the edges; the phantom and the
radiograph simulation (`simulate_radiograph`) are pure array functions.

Public API
----------
chest_phantom(seed, *, shape=(40, 512, 512), severity=0, pattern="covid", noise_hu=12.0, z_margin_mm=0.0)
    -> Phantom(hu float32 [d, h, w], labels uint8 [d, h, w], spacing (sd, sh, sw) mm, severity, seed)
    Phantom.lung_involvement() -> fraction of the lungs covered by GGO/consolidation labels.
    Labels: AIR, FAT, SOFT, LUNG, VESSEL, HEART, BONE, AIRWAY, GGO, CONSOLIDATION, TABLE (TISSUE_NAMES).
write_mosmed_archive(out_dir, n_studies, *, seed=0, shape=(40, 512, 512), slice_jitter=4,
                     axcodes=("L", "P", "S"), as_dicom=False, categories=None, noise_hu=12.0, workers=1)
    -> list[StudyRecord(study_id, category, path, dicom_dir, seed, shape, spacing)]
simulate_radiograph(p, rng, *, exposure, photons, scatter, gamma, blur_px, unsharp) -> float32 [H, W] in [0, 1]
write_cxr_archive(out_dir, n_images, *, seed=0, positive_fraction=0.18, size=320, phantom_shape=(72, 128, 128),
                  z_margin_mm=35.0, dicom_fraction=0.15, n_lateral=None, n_ct_rows=None, n_missing=0, workers=1)
    -> list[CXRRecord(patientid, filename, view, modality, finding, label, fmt, seed)]
Everything is deterministic in its arguments (the worker count included).
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Phantom", "StudyRecord", "CXRRecord", "chest_phantom", "write_mosmed_archive", "write_cxr_archive",
           "simulate_radiograph", "TISSUE_NAMES", "COHEN_HEADER"]

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


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
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


def _paint_chest(cv: _Canvas, geo: dict, lesion_rng: np.random.Generator, severity: int, pattern: str,
                 anat_rng: np.random.Generator) -> None:
    an = cv.an
    x, y = cv.x, cv.y                      # [h, w]
    z3 = geo["z3"]
    rc2 = geo["rc2"]
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

    # Heart: rotated ellipsoid, long axis towards the patient's left and anterior.
    hx, hy, hz = an.heart_c
    a1, a2, a3 = an.heart_axes
    ca, sa = math.cos(an.heart_angle), math.sin(an.heart_angle)
    u = (x - hx) * ca - (y - hy) * sa
    v = (x - hx) * sa + (y - hy) * ca
    hq2_plane = (u / a1) ** 2 + (v / a2) ** 2                               # [h, w]
    hq2 = hq2_plane[None] + ((z3 - hz) / a3) ** 2                           # [d, h, w]
    heart = hq2 < 1.0

    lung = (rc2 < 0.97 ** 2) & plane_ok[None] & (z3 > z_top[None]) & (z3 < z_bot[None]) & ~heart
    below = (rc2 < 1.0) & (z3 >= z_bot[None])
    # Abdomen under the diaphragm: liver on the right, gas in the stomach fundus on the left.
    liver = below & (x < 0.35 * an.cav_x)[None]
    cv.hu[liver] = HU_LIVER
    cv.lab[liver] = SOFT
    gx, gy = 0.45 * an.cav_x, an.yc - 0.15 * an.cav_y
    gz = an.z_cp - an.dome_l + 22.0
    gas = below & ((((x - gx) / 28.0) ** 2 + ((y - gy) / 24.0) ** 2)[None] + ((z3 - gz) / 16.0) ** 2 < 1.0)
    cv.hu[gas] = HU_AIR
    cv.lab[gas] = AIRWAY

    # Lung parenchyma, denser in the dependent (posterior) part.
    lung_hu = (HU_LUNG + 45.0 * (y - an.yc) / an.cav_y).astype(np.float32)  # [h, w]
    cv.hu[lung] = np.broadcast_to(lung_hu[None], cv.shape)[lung]
    cv.lab[lung] = LUNG

    # Findings first, vessels over them (vessels stay visible inside ground glass).
    if severity > 0:
        _paint_lesions(cv, lung, lesion_rng, severity, pattern, side)

    # Pulmonary vessels: trees from each hilum, clipped to the lungs.
    sd, sh, sw = cv.spacing
    soft = max(sh, sw) * 0.9
    vbuf = np.zeros(cv.shape, np.float32)
    segs = []
    z_car = an.z_apex + 0.32 * (an.z_cp - an.z_apex)
    for sgn in (-1.0, 1.0):
        root = (sgn * (an.mw + 6.0 + (8.0 if sgn > 0 else 0.0)), an.yc - 0.1 * an.cav_y,
                z_car + (30.0 if sgn < 0 else 18.0))
        for d_ in ((0.45, 0.05, -0.9), (1.0, 0.15, 0.05), (0.5, 0.45, 0.8), (0.45, -0.55, 0.55)):
            direction = (sgn * d_[0], d_[1], d_[2])
            segs += _vessel_tree(anat_rng, root, direction, radius=6.5, length=32.0, generations=4)
    _segment_occupancy(cv, segs, vbuf, soft)
    in_lung = (cv.lab == LUNG) | (cv.lab == GGO) | (cv.lab == CONSOLIDATION)
    sel = in_lung & (vbuf > 0)
    occ = vbuf[sel]
    cv.hu[sel] += (HU_BLOOD - cv.hu[sel]) * occ
    vmask = sel.copy()
    vmask[sel] = occ > 0.5
    cv.lab[vmask] = VESSEL

    cv.hu[heart] = HU_BLOOD
    cv.lab[heart] = HEART

    # Great vessels: ascending aorta, arch, descending aorta (left of the spine), superior vena cava.
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

    # Airways: trachea down to the carina, then the main bronchi (air core).
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

    _paint_bones(cv, geo, y_vb)


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


def _paint_bones(cv: _Canvas, geo: dict, y_vb: float) -> None:
    an = cv.an
    x, y = cv.x, cv.y
    z = cv.z
    d = cv.shape[0]
    hu, lab = cv.hu, cv.lab

    # Spine: vertebral bodies (cortical rim, cancellous core) separated by discs, posterior arch, spinous process.
    hu2, lab2 = hu.reshape(d, -1), lab.reshape(d, -1)                      # [d, h*w] views
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

    # Ribs and scapulae live in a shell around the cavity: work on those voxels only.
    rc2 = geo["rc2"]
    shell = np.flatnonzero((rc2 > 0.9) & (rc2 < 1.6) & geo["body"])
    zi, hw = np.divmod(shell, x.size)
    rc = np.sqrt(rc2.reshape(-1)[shell])
    xs, ys = x.reshape(-1)[hw], y.reshape(-1)[hw]
    zs = z[zi]
    g = geo["g"][zi]
    phi = np.arctan2(np.abs(xs) / an.cav_x, (ys - an.yc) / an.cav_y)       # 0 posterior, pi anterior
    hu1, lab1 = hu.reshape(-1), lab.reshape(-1)

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

    # Sternum: anterior midline plate.
    y_st = an.yc - an.cav_y - 8.0
    st = (np.abs(x) < 14.0) & (np.abs(y - y_st) < 6.0)
    st_core = (np.abs(x) < 11.0) & (np.abs(y - y_st) < 3.5)
    zr = (z > an.z_apex + 12.0) & (z < an.z_cp - an.dome_l + 15.0)
    st, st_core = np.flatnonzero(st), np.flatnonzero(st_core)
    for i in np.flatnonzero(zr):
        hu2[i, st] = 900.0
        lab2[i, st] = BONE
        hu2[i, st_core] = 420.0

    # Clavicles: tubes from the sternal notch out to the shoulders, above the lung apices.
    sd, sh, sw = cv.spacing
    cbuf = np.zeros(cv.shape, np.float32)
    segs = []
    for sgn in (-1.0, 1.0):
        p0 = (sgn * 16.0, y_st - 4.0, an.z_apex + 14.0)
        p1 = (sgn * (an.cav_x + 30.0), an.yc - 0.15 * an.cav_y, an.z_apex - 4.0)
        segs.append((p0, p1, 8.0, 7.0))
    _segment_occupancy(cv, segs, cbuf, max(sh, sw))
    clav = (cbuf > 0.5) & geo["body"]
    hu[clav] = 800.0
    lab[clav] = BONE


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
    an = _draw_anatomy(anat_rng)
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


# --------------------------------------------------------------------------------------------------------
# MosMed-like CT archive
# --------------------------------------------------------------------------------------------------------

MOSMED_WEIGHTS = (0.30, 0.34, 0.16, 0.12, 0.08)  # CT-0..CT-4 (MosMed itself: 254, 684, 125, 45, 2 of 1110)


@dataclass(frozen=True)
class StudyRecord:
    study_id: str       # "study_0001"
    category: int       # MosMed grade 0..4 (0 negative)
    path: Path          # the .nii.gz file
    dicom_dir: Path | None  # the DICOM series folder when written
    seed: int           # chest_phantom seed of this patient
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _categories(n: int, rng: np.random.Generator) -> list[int]:
    """Grades for n studies: every grade present when n >= 5, the rest drawn with MOSMED_WEIGHTS."""
    cats = list(range(5)) if n >= 5 else []
    cats += list(rng.choice(5, size=n - len(cats), p=np.asarray(MOSMED_WEIGHTS) / sum(MOSMED_WEIGHTS)))
    return sorted(int(c) for c in cats)


def _phantom_spacing(seed: int, shape) -> tuple[float, float, float]:
    """The spacing chest_phantom(seed, shape=shape) will have (it depends on the anatomy draw only)."""
    an = _draw_anatomy(np.random.default_rng([int(seed), 0]))
    d, h, w = shape
    return (round(an.coverage / d, 3), round(an.fov / h, 4), round(an.fov / w, 4))


def _write_study(job: dict) -> None:
    from xpgan.pipeline.writers import write_dicom_series, write_nifti

    ph = chest_phantom(job["seed"], shape=job["shape"], severity=job["severity"], noise_hu=job["noise_hu"])
    hu16 = np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16)
    write_nifti(job["path"], hu16, ph.spacing, axcodes=job["axcodes"], extra_affine_shift=job["origin"])
    if job["dicom_dir"]:
        write_dicom_series(job["dicom_dir"], hu16, ph.spacing, orientation="axial",
                           patient_name=job["patient_name"], patient_id=job["patient_id"],
                           birth_date=job["birth_date"], seed=job["seed"])


def write_mosmed_archive(
    out_dir: str | os.PathLike,
    n_studies: int,
    *,
    seed: int = 0,
    shape: Sequence[int] = (40, 512, 512),  # (d, h, w) voxels of a typical study
    slice_jitter: int = 4,                  # slice count varies by up to +-this many per study
    axcodes: Sequence[str] = ("L", "P", "S"),  # on-disk orientation (MosMed files are not canonical)
    as_dicom: bool = False,                 # also write each study as a DICOM series under `dicom/`
    categories: Sequence[int] | None = None,  # grades per study; None: drawn (every grade when n >= 5)
    noise_hu: float = 12.0,                 # CT image noise, HU
    workers: int = 1,                       # processes writing studies (the result does not depend on it)
) -> list[StudyRecord]:
    """A MosMedData-like tree: `studies/CT-k/study_NNNN.nii.gz` (int16 HU) and `dataset_registry.csv`.

    Studies are numbered in grade order like the real archive; `dataset_registry.csv` has columns
    `study_id, category, study_file` (study_file relative to out_dir, category `CT-k`). With `as_dicom`,
    `dicom/study_NNNN/IMxxxx.dcm` hold the same volumes as DICOM series with made-up patient names, IDs and
    birth dates (which no store may ever contain). Deterministic in (seed, n_studies, shape, ...).
    """
    out = Path(out_dir)
    n_studies = int(n_studies)
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1, got {n_studies}")
    rng = np.random.default_rng([int(seed), 101])
    cats = _categories(n_studies, rng) if categories is None else [int(c) for c in categories]
    if len(cats) != n_studies or any(c not in range(5) for c in cats):
        raise ValueError("categories must hold one grade 0..4 per study")
    d0, h, w = (int(s) for s in shape)
    records: list[StudyRecord] = []
    rows = []
    jobs = []
    for i, cat in enumerate(cats):
        sid = f"study_{i + 1:04d}"
        p_seed = int(seed) * 100_003 + i
        d = max(4, d0 + int(rng.integers(-slice_jitter, slice_jitter + 1))) if slice_jitter else d0
        origin = (float(rng.uniform(-200, -150)), float(rng.uniform(-180, -120)), float(rng.uniform(-400, -300)))
        path = out / "studies" / f"CT-{cat}" / f"{sid}.nii.gz"
        ddir = out / "dicom" / sid if as_dicom else None
        first, last = _FAKE_NAMES[i % len(_FAKE_NAMES)]
        jobs.append(dict(seed=p_seed, shape=(d, h, w), severity=cat, noise_hu=noise_hu, path=str(path),
                         axcodes=tuple(axcodes), origin=origin, dicom_dir=str(ddir) if ddir else None,
                         patient_name=f"{last}^{first}", patient_id=f"MRN{7_000_000 + 37 * i + int(seed)}",
                         birth_date=f"19{40 + (i * 7) % 50:02d}{1 + i % 12:02d}{1 + (i * 5) % 28:02d}"))
        records.append(StudyRecord(sid, cat, path, ddir, p_seed, (d, h, w), _phantom_spacing(p_seed, (d, h, w))))
        rows.append({"study_id": sid, "category": f"CT-{cat}",
                     "study_file": path.relative_to(out).as_posix()})
    _run_groups(_write_study, jobs, workers)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "dataset_registry.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["study_id", "category", "study_file"])
        wr.writeheader()
        wr.writerows(rows)
    return records


# --------------------------------------------------------------------------------------------------------
# Radiograph simulation and the Cohen-style CXR archive
# --------------------------------------------------------------------------------------------------------

_FAKE_NAMES = [("Jane", "Doe"), ("John", "Smith"), ("Maria", "Garcia"), ("Wei", "Zhang"), ("Olga", "Ivanova"),
               ("Ahmed", "Hassan"), ("Emma", "Muller"), ("Luca", "Rossi"), ("Yuki", "Tanaka"), ("Ana", "Silva")]
_LOCATIONS = ["Wuhan, China", "Milan, Italy", "Madrid, Spain", "Toronto, Canada", "Seoul, South Korea",
              "Sydney, Australia", "Tehran, Iran", "New York, USA"]
COHEN_HEADER = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "intubated",
                "intubation_present", "went_icu", "in_icu", "needed_supplemental_O2", "extubated",
                "temperature", "pO2_saturation", "leukocyte_count", "neutrophil_count", "lymphocyte_count",
                "view", "modality", "date", "location", "folder", "filename", "doi", "url", "license",
                "clinical_notes", "other_notes"]

# 5x7 bitmaps of the lead side markers.
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def _gauss_blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return img
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma_px, mode="nearest")


def simulate_radiograph(
    p: np.ndarray,              # [H, W] line integrals of mu (dimensionless), display orientation
    rng: np.random.Generator,
    *,
    exposure: float = 1.0,      # relative dose (scales photon counts and shifts the film curve)
    photons: float = 4000.0,    # photons per pixel in air at exposure 1
    scatter: float = 0.5,       # scatter-to-primary ratio (broad Gaussian halo)
    gamma: float = 3.0,         # film contrast: slope of the H&D curve per decade of exposure
    blur_px: float = 1.0,       # detector/focal-spot blur, pixels (Gaussian sigma)
    unsharp: float = 0.3,       # edge enhancement of the processing (unsharp-mask gain)
) -> np.ndarray:
    """A radiograph as a person sees it, in [0, 1] (bright = attenuating), from line integrals.

    A different detector response than the DRRs' fixed `1 - exp(-p / p_ref)`: primary exp(-p) plus scatter,
    Poisson quantum noise, blur, a sigmoid film (H&D) curve of log exposure anchored on the lung fields
    (`exposure` moves the anchor), then unsharp-mask edge enhancement.
    """
    p = np.asarray(p, dtype=np.float64)
    prim = np.exp(-np.maximum(p, 0.0))
    sig_s = 0.08 * max(p.shape)
    intensity = prim + scatter * _gauss_blur(prim, sig_s) * (prim.mean() / max(1e-9, _gauss_blur(prim, sig_s).mean()))
    counts = rng.poisson(np.maximum(intensity, 0.0) * photons * exposure) + 0.5
    intensity = _gauss_blur(counts / (photons * exposure), blur_px)
    log_e = np.log10(intensity)
    # Anchor: the film's mid-density sits between the lung fields and the mediastinum of this image.
    body = p > 0.5
    ref = np.percentile(log_e[body], 40) if body.any() else np.median(log_e)
    ref += 0.15 * np.log10(exposure)
    img = 1.0 / (1.0 + np.exp(gamma * np.log(10.0) * (log_e - ref)))  # low exposure -> bright
    if unsharp:
        img = img + unsharp * (img - _gauss_blur(img, 0.03 * max(p.shape)))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _add_marker(img: np.ndarray, letter: str, rng: np.random.Generator) -> None:
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]])
    cell = max(2, img.shape[0] // 90)
    g = np.kron(glyph, np.ones((cell, cell), bool))
    r0 = int(rng.integers(img.shape[0] // 30, img.shape[0] // 8))
    left = rng.uniform() < 0.5
    c0 = int(img.shape[1] // 20) if left else img.shape[1] - img.shape[1] // 20 - g.shape[1]
    img[r0:r0 + g.shape[0], c0:c0 + g.shape[1]][g] = 0.97


def _collimate(img: np.ndarray, rng: np.random.Generator) -> None:
    """Shutter edges: a band on some sides left unexposed (white) or masked black by the processing."""
    h, w = img.shape
    value = 0.96 if rng.uniform() < 0.5 else 0.02
    for side in range(4):
        if rng.uniform() < 0.6:
            n = int(rng.integers(max(1, h // 40), max(2, h // 12)))
            if side == 0:
                img[:n] = value
            elif side == 1:
                img[-n:] = value
            elif side == 2:
                img[:, :n] = value
            else:
                img[:, -n:] = value


def _line_integrals(ph: Phantom, view: str, size: int, *, mu_water: float = 0.02) -> np.ndarray:
    """[size, size] line integrals of a frontal (cone) or lateral (parallel) projection of the phantom."""
    mu = np.float32(mu_water) * np.maximum(np.float32(0.0), 1.0 + ph.hu / np.float32(1000.0))
    sd, sh, sw = ph.spacing
    if view != "L":
        try:
            from xpgan.drr import ConeGeometry, render_drr

            # Radiography distances differ from the DRR defaults: 1.5 m PA, a 1 m portable AP.
            geo = ConeGeometry(view="pa" if view == "PA" else "ap", sdd_mm=1500.0 if view == "PA" else 1000.0,
                               sid_mm=1300.0 if view == "PA" else 800.0, size=size)
            return np.asarray(render_drr(ph.hu, ph.spacing, geo, backend="cpu", output="line_integral",
                                         mu_water=mu_water), dtype=np.float32)
        except ImportError:
            pass
        p = mu.sum(axis=1) * sh                                            # [d, w]
        ext = (ph.hu.shape[0] * sd, ph.hu.shape[2] * sw)
    else:
        p = mu.sum(axis=2) * sw                                            # [d, h]: anterior on the left
        ext = (ph.hu.shape[0] * sd, ph.hu.shape[1] * sh)
    # Square pixels over a square field fitted to the larger extent, centred.
    from scipy.ndimage import map_coordinates

    fov = max(ext)
    c = (np.arange(size) + 0.5) / size * fov - fov / 2.0
    rr = (c + ext[0] / 2.0) / (ext[0] / p.shape[0]) - 0.5
    cc = (c + ext[1] / 2.0) / (ext[1] / p.shape[1]) - 0.5
    R, C = np.meshgrid(rr, cc, indexing="ij")
    return map_coordinates(p, [R, C], order=1, mode="constant", cval=0.0).astype(np.float32)


@dataclass(frozen=True)
class CXRRecord:
    patientid: str
    filename: str
    view: str
    modality: str
    finding: str
    label: int          # 1 where finding contains COVID-19
    fmt: str            # "png8" | "png16" | "dicom_m2" | "dicom_m1" | "missing"
    seed: int


def _write_cxr_dicom(path: Path, img: np.ndarray, *, monochrome1: bool, view: str, patient: tuple[str, str],
                     patient_id: str, birth_date: str, seed: int) -> None:
    from xpgan.pipeline.cxr_io import write_dicom_cxr

    stored = np.rint(img * 4095.0).astype(np.uint16)  # 12-bit detector values
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    write_dicom_cxr(
        path, stored, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2", window=(2048, 4096),
        rescale=(1, 0), bits_stored=12, patient_name=f"{patient[1]}^{patient[0]}", patient_id=patient_id,
        patient_birth_date=birth_date, modality="DX", uid_entropy=[str(seed), patient_id, path.name],
        extra={"PatientSex": "F" if seed % 2 else "M", "InstitutionName": "Synthetic General Hospital",
               "ReferringPhysicianName": "Who^Doctor", "StudyDate": "20200315",
               "ViewPosition": "AP" if view.startswith("AP") else view})  # CS: no "AP Supine"


def _run_groups(fn, groups: list, workers: int) -> None:
    """fn(group) for every group, in `workers` spawned processes when > 1 (results are files)."""
    workers = max(1, min(int(workers), len(groups)))
    if workers == 1:
        for g in groups:
            fn(g)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        for _ in ex.map(fn, groups):
            pass


def _render_cxr_jobs(group: list[dict]) -> None:
    """Render and save the images of one patient (one phantom, several views/exposures)."""
    from PIL import Image

    spec = group[0]["spec"]
    ph = chest_phantom(spec["seed"], shape=spec["shape"], severity=spec["severity"], pattern=spec["pattern"],
                       noise_hu=0.0, z_margin_mm=spec["z_margin_mm"])
    for jb in group:
        path = Path(jb["path"])
        if jb["kind"] == "ct_slice":
            sl = ph.hu[ph.hu.shape[0] // 2]
            Image.fromarray((np.clip((sl + 1000.0) / 1400.0, 0, 1) * 255).astype(np.uint8)).save(path)
            continue
        img_rng = np.random.default_rng(list(jb["img_seed"]))
        rows_px, cols_px = jb["rows"], jb["cols"]
        side = max(rows_px, cols_px)
        p = _line_integrals(ph, jb["view"], side)
        img = simulate_radiograph(
            p, img_rng, exposure=float(np.exp(img_rng.normal(0.0, 0.35))),
            photons=float(img_rng.uniform(1500.0, 12000.0)), scatter=float(img_rng.uniform(0.2, 0.9)),
            gamma=float(img_rng.uniform(1.0, 1.6)), blur_px=float(img_rng.uniform(0.6, 1.6)),
            unsharp=float(img_rng.uniform(0.0, 0.4)))
        r0, c0 = (side - rows_px) // 2, (side - cols_px) // 2
        img = img[r0:r0 + rows_px, c0:c0 + cols_px].copy()
        if img_rng.uniform() < 0.6:
            _add_marker(img, "L" if img_rng.uniform() < 0.7 else "R", img_rng)
        if img_rng.uniform() < 0.3:
            _collimate(img, img_rng)
        fmt = jb["fmt"]
        if fmt == "png8":
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(path)
        elif fmt == "png16":
            Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(path)
        else:
            _write_cxr_dicom(path, img, monochrome1=(fmt == "dicom_m1"), view=jb["view"], **jb["dicom"])


def write_cxr_archive(
    out_dir: str | os.PathLike,
    n_images: int,
    *,
    seed: int = 0,
    positive_fraction: float = 0.18,     # share of frontal images whose finding is COVID-19
    size: int = 320,                     # radiograph rows (columns vary a little around it), pixels
    phantom_shape: Sequence[int] = (72, 128, 128),  # CT phantom projected for each patient, voxels
    z_margin_mm: float = 35.0,           # body above and below the chest in the projected phantom, mm
    dicom_fraction: float = 0.15,        # share of frontal images saved as DICOM (a few MONOCHROME1)
    n_lateral: int | None = None,        # extra lateral (L) rows, to be filtered out; None: n_images // 20
    n_ct_rows: int | None = None,        # extra modality "CT" rows (an axial slice image); None: 1 if n >= 20
    n_missing: int = 0,                  # rows whose image file is not written (reported, not fatal)
    workers: int = 1,                    # processes rendering images (the result does not depend on it)
    positive_grades: Sequence[int] = (2, 3, 3, 4),  # COVID-19 patients' grade, drawn uniformly from these
) -> list[CXRRecord]:
    """A Cohen-style chest X-ray collection: `metadata.csv` + `images/` (PNG 8/16-bit and DICOM).

    Patients are phantoms with seeds disjoint from `write_mosmed_archive`'s (offset 10**9), projected with
    radiography distances and put through `simulate_radiograph` with per-image exposure, contrast, blur,
    noise, scatter, occasional lead side markers and collimator edges. About `positive_fraction` of the
    frontal images are COVID-19 (`Pneumonia/Viral/COVID-19`, grade drawn from `positive_grades`); negatives
    are `No Finding` and a few `Pneumonia/Bacterial/Streptococcus` (one-sided consolidation). Some patients
    have 2..3 images (days apart, PA/AP/AP Supine). The CSV keeps the collection's quirks: a trailing comma on every line (an
    unnamed last column), mixed date formats, free-text columns. DICOM files carry made-up names, IDs and
    birth dates; some file names embed a made-up name.
    """
    out = Path(out_dir)
    n_images = int(n_images)
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    if not positive_grades or any(int(g) not in range(1, 5) for g in positive_grades):
        raise ValueError(f"positive_grades must be grades 1..4, got {positive_grades}")
    rng = np.random.default_rng([int(seed), 202])
    n_lateral = max(1, n_images // 20) if n_lateral is None else int(n_lateral)
    n_ct_rows = (1 if n_images >= 20 else 0) if n_ct_rows is None else int(n_ct_rows)
    n_pos = int(round(positive_fraction * n_images))
    if positive_fraction > 0 and n_pos == 0 and n_images >= 4:
        n_pos = 1

    # Frontal images grouped into patients of 1..3 images; positives first, then negatives.
    frontal: list[tuple[int, int]] = []  # (patient index, label)
    patients: list[int] = []             # label per patient
    for label, count in ((1, n_pos), (0, n_images - n_pos)):
        left = count
        while left > 0:
            k = min(left, int(rng.choice([1, 1, 1, 2, 2, 3])))
            patients.append(label)
            frontal += [(len(patients) - 1, label)] * k
            left -= k
    order = rng.permutation(len(frontal))
    frontal = [frontal[i] for i in order]

    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    records: list[CXRRecord] = []
    rows: list[list[str]] = []
    pat_info = {}
    n_dicom = int(round(dicom_fraction * n_images))
    fmt_plan = ["dicom_m1" if j % 4 == 3 else "dicom_m2" for j in range(n_dicom)]
    fmt_plan += ["png16" if j % 3 == 2 else "png8" for j in range(n_images - n_dicom)]
    fmt_plan = [fmt_plan[i] for i in rng.permutation(len(fmt_plan))]
    missing = set(rng.choice(n_images, size=min(n_missing, n_images), replace=False).tolist()) if n_missing else set()
    visits: dict[int, int] = {}

    def patient_meta(pi: int) -> dict:
        if pi not in pat_info:
            label = patients[pi]
            pattern = "covid" if label else ("bacterial" if rng.uniform() < 0.12 else "none")
            pat_info[pi] = dict(
                pid=str(1000 + pi * 3 + int(rng.integers(0, 3))),
                sex=str(rng.choice(["M", "F"])), age=int(rng.integers(22, 88)),
                severity=int(rng.choice(list(positive_grades))) if label else (2 if pattern == "bacterial" else 0),
                pattern=pattern, name=_FAKE_NAMES[pi % len(_FAKE_NAMES)],
                location=str(rng.choice(_LOCATIONS)),
                day0=_dt.date(2020, 1, 20) + _dt.timedelta(days=int(rng.integers(0, 120))))
        return pat_info[pi]

    jobs: dict[int, list[dict]] = {}   # patient index -> images to render from that patient's phantom

    def job(pi: int, **kw) -> None:
        info = patient_meta(pi)
        spec = dict(seed=10 ** 9 + int(seed) * 100_003 + pi, shape=tuple(int(v) for v in phantom_shape),
                    severity=info["severity"], pattern="bacterial" if info["pattern"] == "bacterial" else "covid",
                    z_margin_mm=float(z_margin_mm))
        kw.setdefault("dicom", None)
        jobs.setdefault(pi, []).append(dict(spec=spec, **kw))

    def dicom_meta(info: dict, pseed: int) -> dict:
        return dict(patient=info["name"], patient_id=f"PID{info['pid']}",
                    birth_date=f"{2020 - info['age']}0{1 + pseed % 9}1{pseed % 9}", seed=pseed)

    def row(info: dict, offset: int, finding: str, view: str, modality: str, fname: str) -> list[str]:
        date = info["day0"] + _dt.timedelta(days=offset)
        date_s = date.strftime("%B %d, %Y") if int(info["pid"]) % 2 else date.isoformat()
        covid = "COVID-19" in finding
        vals = {
            "patientid": info["pid"], "offset": str(offset) if offset or covid else "", "sex": info["sex"],
            "age": str(info["age"]), "finding": finding, "RT_PCR_positive": "Y" if covid else "",
            "survival": "Y" if rng.uniform() < 0.8 else "", "intubated": "", "intubation_present": "",
            "went_icu": "N", "in_icu": "N", "needed_supplemental_O2": "", "extubated": "",
            "temperature": f"{rng.uniform(36.4, 39.5):.1f}" if covid else "", "pO2_saturation": "",
            "leukocyte_count": "", "neutrophil_count": "", "lymphocyte_count": "", "view": view,
            "modality": modality, "date": date_s, "location": info["location"], "folder": "images",
            "filename": fname, "doi": "10.0000/synthetic.phantom", "url": "https://example.org/synthetic",
            "license": "CC BY 4.0",
            "clinical_notes": "Synthetic patient, \"phantom\" study; fever, cough" if covid else "Synthetic patient",
            "other_notes": "",
        }
        return [vals[c] for c in COHEN_HEADER]

    def finding_of(info: dict) -> str:
        if info["severity"] and info["pattern"] == "covid":
            return "Pneumonia/Viral/COVID-19"
        if info["pattern"] == "bacterial":
            return "Pneumonia/Bacterial/Streptococcus"
        return "No Finding"

    for j, (pi, label) in enumerate(frontal):
        info = patient_meta(pi)
        visit = visits.get(pi, 0)
        visits[pi] = visit + 1
        view = str(rng.choice(["PA", "PA", "AP", "AP Supine"])) if visit == 0 else str(rng.choice(["AP", "AP Supine", "PA"]))
        fmt = fmt_plan[j]
        ext = ".dcm" if fmt.startswith("dicom") else ".png"
        if j % 11 == 5:  # a few files are named after the (made-up) patient, as some collections do
            fname = f"{info['name'][1].lower()}_{info['name'][0].lower()}_{j:04d}{ext}"
        else:
            fname = f"cxr_{j:04d}_{int(rng.integers(0, 16 ** 6)):06x}{ext}"
        rows_px = size
        cols_px = int(round(size * np.random.default_rng([int(seed), 505, j]).uniform(0.82, 1.05) / 2)) * 2
        pseed = 10 ** 9 + int(seed) * 100_003 + pi
        if j in missing:
            fmt = "missing"
        else:
            job(pi, kind="xray", view=view, img_seed=(int(seed), 303, j), rows=rows_px, cols=cols_px, fmt=fmt,
                path=str(img_dir / fname), dicom=dicom_meta(info, pseed) if fmt.startswith("dicom") else None)
        records.append(CXRRecord(info["pid"], fname, view, "X-ray", finding_of(info), label, fmt, pseed))
        rows.append(row(info, 3 * visit, finding_of(info), view, "X-ray", fname))

    # Rows that prep must leave out: lateral views and a CT slice.
    pis = sorted(pat_info)
    for j in range(n_lateral):
        pi = pis[int(rng.integers(0, len(pis)))]
        info = patient_meta(pi)
        fname = f"lateral_{j:03d}.png"
        job(pi, kind="xray", view="L", img_seed=(int(seed), 404, j), rows=size, cols=size, fmt="png8",
            path=str(img_dir / fname))
        records.append(CXRRecord(info["pid"], fname, "L", "X-ray", finding_of(info), patients[pi], "png8", 0))
        rows.append(row(info, 0, finding_of(info), "L", "X-ray", fname))
    for j in range(n_ct_rows):
        pi = pis[int(rng.integers(0, len(pis)))]
        info = patient_meta(pi)
        fname = f"ct_axial_{j:03d}.png"
        job(pi, kind="ct_slice", path=str(img_dir / fname))
        records.append(CXRRecord(info["pid"], fname, "Axial", "CT", finding_of(info), patients[pi], "png8", 0))
        rows.append(row(info, 0, finding_of(info), "Axial", "CT", fname))

    _run_groups(_render_cxr_jobs, [jobs[k] for k in sorted(jobs)], workers)
    with open(out / "metadata.csv", "w", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        # The collection's header and rows end with a comma: pandas sees an extra "Unnamed" column.
        fh.write(",".join(COHEN_HEADER) + ",\n")
        for r in rows:
            wr.writerow(r + [""])
    return records
