"""Geometry: pixel positions, fitted fields of view, dict round trips and argument errors."""
import numpy as np
import pytest

from xpgan.drr import ConeGeometry, DRRArgumentError, ParallelGeometry, geometry_from_dict, make_geometry
from xpgan.errors import XPGANError

SHAPE = (10, 12, 14)
SPACING = (2.0, 1.5, 1.0)
CENTRE = np.array(SHAPE) * np.array(SPACING) / 2


def test_cone_pa_pixel_centres_follow_design_formula():
    g = ConeGeometry(view="pa", sdd_mm=500.0, sid_mm=400.0, size=5, pixel_mm=3.0)
    start, through = g.rays(SHAPE, SPACING).endpoints()
    r, c = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    up = (2 - r) * 3.0     # along superior (-d)
    right = (2 - c) * 3.0  # along patient right (-w)
    np.testing.assert_allclose(through[..., 0], CENTRE[0] - up)
    np.testing.assert_allclose(through[..., 2], CENTRE[2] - right)
    # detector anterior (small h), source posterior (large h)
    np.testing.assert_allclose(through[..., 1], CENTRE[1] - 100.0)
    np.testing.assert_allclose(start, np.broadcast_to(CENTRE + [0, 400.0, 0], start.shape))


def test_cone_ap_puts_source_anterior_and_keeps_display_orientation():
    pa = ConeGeometry(view="pa", sdd_mm=500.0, sid_mm=400.0, size=4, pixel_mm=2.0).rays(SHAPE, SPACING)
    ap = ConeGeometry(view="ap", sdd_mm=500.0, sid_mm=400.0, size=4, pixel_mm=2.0).rays(SHAPE, SPACING)
    np.testing.assert_allclose(ap.src0, CENTRE - [0, 400.0, 0])
    np.testing.assert_allclose(ap.det0[[0, 2]], pa.det0[[0, 2]])
    np.testing.assert_allclose(ap.det0[1], CENTRE[1] + 100.0)


def test_parallel_rays_run_along_anterior_posterior():
    start, through = ParallelGeometry(size=3, pixel_mm=1.5).rays(SHAPE, SPACING).endpoints()
    d = through - start
    assert np.all(d[..., 1] > 0)
    np.testing.assert_allclose(d[..., [0, 2]], 0.0)
    np.testing.assert_allclose(start[1, 1, [0, 2]], CENTRE[[0, 2]])
    np.testing.assert_allclose(start[0, 0, [0, 2]], CENTRE[[0, 2]] - 1.5)


def test_cone_fitted_fov_matches_projected_extent():
    g = ConeGeometry(sdd_mm=300.0, sid_mm=200.0, size=8)
    px = g.pixel_spacing_mm(SHAPE, SPACING)
    # the nearest face to the source (h = extent) magnifies most:
    # half-width (largest of d, w) * sdd / (sid - half depth)
    half_depth = SHAPE[1] * SPACING[1] / 2
    half_across = max(SHAPE[0] * SPACING[0], SHAPE[2] * SPACING[2]) / 2
    assert px == pytest.approx(2 * half_across * 300.0 / (200.0 - half_depth) / 8)


def test_parallel_fitted_fov_covers_larger_extent():
    assert ParallelGeometry(size=10).pixel_spacing_mm(SHAPE, SPACING) == pytest.approx(20.0 / 10)


@pytest.mark.parametrize("g", [ConeGeometry(view="ap", sdd_mm=1000.0, sid_mm=700.0, size=64, pixel_mm=0.5),
                               ParallelGeometry(size=32, pixel_mm=None)])
def test_to_dict_round_trip(g):
    d = g.to_dict()
    assert d["kind"] == g.kind
    assert geometry_from_dict(d) == g


def test_unknown_geometry_kind_names_allowed():
    with pytest.raises(ValueError, match="cone, parallel"):
        make_geometry("fan")


def test_unknown_view_names_allowed():
    with pytest.raises(ValueError, match="pa, ap"):
        ConeGeometry(view="lateral")


@pytest.mark.parametrize("kwargs", [dict(size=0), dict(pixel_mm=-1.0), dict(sdd_mm=100.0, sid_mm=200.0),
                                    dict(sid_mm=0.0, sdd_mm=10.0)])
def test_bad_cone_arguments_raise(kwargs):
    with pytest.raises(DRRArgumentError):
        ConeGeometry(**kwargs)


def test_source_inside_volume_is_a_clear_error():
    g = ConeGeometry(sdd_mm=100.0, sid_mm=8.0, size=4)
    with pytest.raises(XPGANError, match="source inside the volume"):
        g.rays(SHAPE, SPACING)  # half depth is 9 mm


def test_bad_spacing_raises():
    with pytest.raises(DRRArgumentError, match="spacing"):
        ParallelGeometry(size=4).rays(SHAPE, (1.0, 0.0, 1.0))
