"""Exact-geometry cases: blocks, misses, voxel planes, box chords, voxelised sphere and ellipsoid bounds."""
import numpy as np
import pytest

from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr

MU_W = 0.02


def uniform(shape, hu=0.0):
    return np.full(shape, hu, dtype=np.float32)


def slab_chord(a, b, lo, hi):
    """Length (mm) of the ray a + t (b - a), t >= 0, inside the box [lo, hi] (independent slab method)."""
    d = b - a
    t0, t1 = 0.0, np.inf
    for k in range(3):
        if d[k] == 0:
            if not lo[k] <= a[k] <= hi[k]:
                return 0.0
            continue
        u, v = sorted(((lo[k] - a[k]) / d[k], (hi[k] - a[k]) / d[k]))
        t0, t1 = max(t0, u), min(t1, v)
    return max(0.0, t1 - t0) * np.linalg.norm(d)


def test_axis_aligned_ray_through_uniform_block_is_mu_times_depth():
    # water (0 HU) everywhere: every parallel ray crosses the full depth of 7 voxels of 1.5 mm
    p = render_drr(uniform((4, 7, 5)), (2.0, 1.5, 3.0), ParallelGeometry(size=4, pixel_mm=1.0),
                   backend="cpu", output="line_integral", mu_water=MU_W)
    np.testing.assert_allclose(p, MU_W * 7 * 1.5, rtol=1e-6)


def test_rays_that_miss_give_zero():
    # detector 40 mm wide over a 6 mm volume: only central pixels hit
    p = render_drr(uniform((3, 3, 3), 500.0), (2.0, 2.0, 2.0), ParallelGeometry(size=10, pixel_mm=4.0),
                   backend="cpu", output="line_integral")
    assert p[0, 0] == 0.0 and p[-1, -1] == 0.0 and p[0, 5] == 0.0
    assert p[4, 4] > 0 and p[5, 5] > 0


def test_rays_along_voxel_planes_see_one_voxel_column():
    # pixel spacing = voxel spacing and an even detector: ray (r, c) lies exactly on voxel planes
    hu = uniform((4, 5, 4), 1000.0)  # mu = 2 mu_water
    p = render_drr(hu, (1.0, 2.0, 1.0), ParallelGeometry(size=4, pixel_mm=1.0), backend="cpu", output="line_integral")
    # interior rays (on interior planes) and the rays on the volume's low faces are inside; the detector has
    # pixel centres at -1.5, -0.5, 0.5, 1.5 mm from centre: never on the upper face
    np.testing.assert_allclose(p, 2 * MU_W * 5 * 2.0, rtol=1e-6)
    hu2 = uniform((2, 3, 2), 0.0)
    p2 = render_drr(hu2, (1.0, 1.0, 1.0), ParallelGeometry(size=3, pixel_mm=1.0), backend="cpu", output="line_integral")
    # centres at -1, 0, +1 mm: row/col 0 lies on the low faces (inside), row/col 2 on the upper faces (outside)
    want = np.zeros((3, 3))
    want[:2, :2] = MU_W * 3.0
    np.testing.assert_allclose(p2, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("view", ["pa", "ap"])
def test_oblique_cone_rays_through_uniform_sub_box_give_exact_chords(view):
    shape, spacing = (12, 10, 14), np.array([1.25, 2.0, 0.8])
    hu = uniform(shape, -1000.0)  # air: mu = 0
    hu[2:9, 3:8, 4:13] = 0.0      # a water box
    g = ConeGeometry(view=view, sdd_mm=45.0, sid_mm=25.0, size=16)  # wide cone: oblique rays
    p = render_drr(hu, spacing, g, backend="cpu", output="line_integral", mu_water=MU_W)
    lo, hi = np.array([2, 3, 4]) * spacing, np.array([9, 8, 13]) * spacing
    start, through = g.rays(shape, spacing).endpoints()
    want = np.array([[slab_chord(start[r, c], through[r, c], lo, hi) for c in range(16)] for r in range(16)])
    assert np.count_nonzero(want) > 30
    np.testing.assert_allclose(p, MU_W * want, rtol=1e-5, atol=1e-9)


def ellipsoid_chord(a, b, centre, axes):
    """Chord length (mm) of the infinite line through a and b with the ellipsoid (centre, semi-axes)."""
    d = (b - a) / axes
    o = (a - centre) / axes
    qa, qb, qc = d @ d, 2 * o @ d, o @ o - 1
    disc = qb * qb - 4 * qa * qc
    return 0.0 if disc <= 0 else np.sqrt(disc) / qa * np.linalg.norm(b - a)


@pytest.mark.parametrize("axes_mm", [(9.0, 9.0, 9.0), (7.0, 11.0, 9.0)], ids=["sphere", "ellipsoid"])
@pytest.mark.parametrize("geometry", [ParallelGeometry(size=24), ConeGeometry(sdd_mm=80.0, sid_mm=50.0, size=24)],
                         ids=["parallel", "cone"])
def test_voxelised_ellipsoid_chords_within_voxel_bounds(axes_mm, geometry):
    # Voxels whose centre lies inside the ellipsoid E.  With h = half the voxel diagonal and m the smallest
    # semi-axis, (1 - h/m) E is inside that voxel set and the set is inside (1 + h/m) E (E contains a ball of
    # radius m, and the set lies within h of E's boundary), so every ray's chord is bounded by theirs.
    spacing = np.array([0.5, 0.4, 0.45])
    shape = (44, 60, 48)
    axes = np.array(axes_mm)
    centre = np.array(shape) * spacing / 2
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    inside = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes)) <= 1.0
    hu = np.where(inside, 0.0, -1000.0).astype(np.float32)
    p = render_drr(hu, spacing, geometry, backend="cpu", output="line_integral", mu_water=MU_W) / MU_W
    h = 0.5 * np.linalg.norm(spacing)
    k = h / axes.min()
    start, through = geometry.rays(shape, spacing).endpoints()
    low = np.array([[ellipsoid_chord(start[r, c], through[r, c], centre, axes * (1 - k)) for c in range(24)]
                    for r in range(24)])
    high = np.array([[ellipsoid_chord(start[r, c], through[r, c], centre, axes * (1 + k)) for c in range(24)]
                     for r in range(24)])
    assert np.count_nonzero(low) > 100
    assert np.all(p >= low - 1e-4) and np.all(p <= high + 1e-4)


def test_volume_larger_than_detector_field():
    # a 2 mm-wide parallel detector in the middle of a 40 mm water volume: every ray crosses full depth
    p = render_drr(uniform((20, 8, 20)), (2.0, 1.0, 2.0), ParallelGeometry(size=4, pixel_mm=0.5),
                   backend="cpu", output="line_integral")
    np.testing.assert_allclose(p, MU_W * 8.0, rtol=1e-6)


def test_anisotropic_spacing_scales_path_length():
    hu = uniform((3, 4, 5))
    a = render_drr(hu, (1.0, 1.0, 1.0), ParallelGeometry(size=3, pixel_mm=0.5), backend="cpu", output="line_integral")
    b = render_drr(hu, (1.0, 3.5, 1.0), ParallelGeometry(size=3, pixel_mm=0.5), backend="cpu", output="line_integral")
    np.testing.assert_allclose(b, 3.5 * a, rtol=1e-6)
