"""CPU kernel against the slow NumPy Siddon reference on tiny random volumes."""
import numpy as np
import pytest
from naive_siddon import naive_ray, naive_render

from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr
from xpgan.drr.physics import hu_to_mu

GEOMETRIES = {
    "cone-pa": ConeGeometry(view="pa", sdd_mm=60.0, sid_mm=40.0, size=9),
    "cone-ap": ConeGeometry(view="ap", sdd_mm=60.0, sid_mm=40.0, size=9),
    "cone-pa-oblique-wide": ConeGeometry(view="pa", sdd_mm=30.0, sid_mm=15.0, size=9, pixel_mm=4.0),
    "parallel": ParallelGeometry(size=9),
    "parallel-fine": ParallelGeometry(size=11, pixel_mm=0.7),
    # posed: rays oblique to all three axes, and yaw 90 (rays exactly in h planes: the kernel's other path)
    "cone-pa-posed": ConeGeometry(view="pa", sdd_mm=60.0, sid_mm=40.0, size=9, yaw_deg=23.0, pitch_deg=-17.0,
                                  roll_deg=31.0, offset_mm=(0.4, -0.6, 0.3)),
    # the central column's rays get an ulp-level dy from rounding (the kernel treats them as in an h plane);
    # the offset keeps them off the volume's central h plane, where in-plane rays are ambiguous
    "cone-ap-lateral": ConeGeometry(view="ap", sdd_mm=60.0, sid_mm=40.0, size=9, yaw_deg=90.0,
                                    offset_mm=(0.0, 0.13, 0.0)),
    "parallel-posed": ParallelGeometry(size=9, yaw_deg=-35.0, pitch_deg=12.0, roll_deg=-50.0, offset_mm=(0.5, 0, 0)),
    "parallel-lateral": ParallelGeometry(size=9, pixel_mm=0.8, yaw_deg=90.0),
    "parallel-axial": ParallelGeometry(size=9, pixel_mm=0.8, pitch_deg=-90.0, roll_deg=90.0),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("seed, dtype", [(0, np.float32), (1, np.int16)])
def test_cpu_matches_naive_reference(name, seed, dtype):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 8, size=3))
    spacing = rng.uniform(0.6, 2.5, size=3)  # anisotropic
    hu = rng.uniform(-1100, 1500, size=shape).astype(dtype)  # int16: the exact integer prefix-sum path
    g = GEOMETRIES[name]
    got = render_drr(hu, spacing, g, backend="cpu", output="line_integral")
    want = naive_render(hu_to_mu(hu), spacing, g.rays(shape, spacing))
    assert np.count_nonzero(want) > 10  # the detector sees the volume
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_int16_and_float64_volumes_give_float32_results():
    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 2000, size=(4, 5, 6)).astype(np.int16)
    g = ParallelGeometry(size=6)
    a = render_drr(hu, (1, 1, 1), g, backend="cpu", output="line_integral")
    b = render_drr(hu.astype(np.float64), (1, 1, 1), g, backend="cpu", output="line_integral")
    assert a.dtype == np.float32 and a.shape == (6, 6)
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.slow
def test_rays_not_crossing_h_planes_match_reference():
    # geometries always cross h; the kernel must still handle rays with no h crossings (no runs)
    from xpgan.drr.siddon_cpu import render_rays_cpu

    rng = np.random.default_rng(4)
    hu = rng.uniform(-1000, 1000, size=(5, 4, 6)).astype(np.float32)
    spacing = np.array([1.5, 1.0, 0.8])
    for start, through in [((-1.0, 1.3, 2.0), (8.0, 1.3, 2.5)),   # along d, oblique in w
                           ((3.0, 2.2, -1.0), (3.0, 2.2, 9.0)),   # along w
                           ((0.0, 0.7, 0.0), (7.5, 0.7, 4.8))]:   # along a d-w diagonal
        rays = np.zeros((1, 6, 3))
        rays[0, 0], rays[0, 3] = start, through
        got = render_rays_cpu(hu[None], np.zeros(1), spacing[None], rays, 1, offset=1000.0, scale=0.02 / 1000)[0, 0, 0]
        want = naive_ray(hu_to_mu(hu), spacing, np.array(start), np.array(through))
        assert want > 0
        np.testing.assert_allclose(got, want, rtol=1e-5)
