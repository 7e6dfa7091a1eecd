"""CPU kernel against the slow NumPy Siddon reference on tiny random volumes."""
import numpy as np
import pytest

from naive_siddon import naive_render
from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr
from xpgan.drr.physics import hu_to_mu

GEOMETRIES = {
    "cone-pa": ConeGeometry(view="pa", sdd_mm=60.0, sid_mm=40.0, size=9),
    "cone-ap": ConeGeometry(view="ap", sdd_mm=60.0, sid_mm=40.0, size=9),
    "cone-pa-oblique-wide": ConeGeometry(view="pa", sdd_mm=30.0, sid_mm=15.0, size=9, pixel_mm=4.0),
    "parallel": ParallelGeometry(size=9),
    "parallel-fine": ParallelGeometry(size=11, pixel_mm=0.7),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_matches_naive_reference(name, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 8, size=3))
    spacing = rng.uniform(0.6, 2.5, size=3)  # anisotropic
    hu = rng.uniform(-1100, 1500, size=shape).astype(np.float32)
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
