"""A dense marker at the patient's right and superior side lands in the DRR's top-left corner."""
import numpy as np
import pytest

from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr

GEOMETRIES = [ConeGeometry(view="pa", sdd_mm=400.0, sid_mm=300.0, size=32),
              ConeGeometry(view="ap", sdd_mm=400.0, sid_mm=300.0, size=32),
              ParallelGeometry(size=32)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["cone-pa", "cone-ap", "parallel"])
def test_right_superior_marker_appears_top_left(geometry):
    hu = np.full((24, 20, 28), -1000.0, dtype=np.float32)   # [d, h, w]: S->I, A->P, R->L
    hu[2:5, 8:12, 2:5] = 3000.0                              # superior (small d), patient right (small w)
    img = render_drr(hu, (2.0, 2.0, 2.0), geometry, backend="cpu")
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 32 // 4 and c < 32 // 4
    assert img[-8:, :].max() == 0.0 and img[:, -8:].max() == 0.0


def test_parallel_drr_agrees_with_mean_projection_orientation():
    # docs/design.md: volume.mean(axis=1) is already in display orientation; the DRR must agree with it
    rng = np.random.default_rng(5)
    hu = np.full((16, 12, 16), -1000.0, dtype=np.float32)
    blob = rng.integers(0, 16, size=(6, 2))
    hu[blob[:, 0], 6, blob[:, 1]] = 2000.0
    img = render_drr(hu, (1.0, 1.0, 1.0), ParallelGeometry(size=16, pixel_mm=1.0), backend="cpu")
    np.testing.assert_array_equal(img > 0, hu.mean(axis=1) > -1000.0)


def test_default_geometry_frames_a_chest_sized_volume():
    # defaults (sdd 1800 mm, sid 1600 mm, fitted field) on a 320 x 358 x 358 mm volume (d x h x w)
    hu = np.full((16, 64, 64), -1000.0, dtype=np.float32)
    hu[:, 8:56, 4:60] = 0.0
    hu[1:3, 20:40, 6:10] = 2000.0
    img = render_drr(hu, (20.0, 5.6, 5.6), ConeGeometry(size=64), backend="cpu")
    assert img.shape == (64, 64)
    r, c = np.unravel_index(np.argmax(img), img.shape)
    assert r < 16 and c < 16
    assert img[:, 0].max() == 0.0 and img[:, -1].max() == 0.0  # air beside the body stays black


def test_fitted_field_just_contains_the_projected_volume():
    # the widest extent (w, 358 mm) projects exactly onto the detector width: edge pixel centres, half a
    # pixel inside, still see the volume; the shorter d extent leaves the top and bottom rows empty
    hu = np.zeros((16, 64, 64), dtype=np.float32)
    img = render_drr(hu, (20.0, 5.6, 5.6), ConeGeometry(size=64), backend="cpu")
    assert img[32, 0] > 0 and img[32, -1] > 0
    assert img[0].max() == 0.0 and img[-1].max() == 0.0
