"""HU -> mu, the image map and its attributes, mu_water scaling."""
import json

import numpy as np
import pytest

from xpgan.drr import (
    P_REF,
    ParallelGeometry,
    hu_to_mu,
    image_map_attrs,
    image_to_line_integral,
    line_integral_to_image,
    render_drr,
)


def test_hu_to_mu_closed_form():
    mu = hu_to_mu(np.array([-1200.0, -1000.0, -850.0, 0.0, 1000.0]), mu_water=0.02)
    np.testing.assert_allclose(mu, [0.0, 0.0, 0.003, 0.02, 0.04], rtol=1e-6, atol=0)
    assert mu[1] == 0.0 and mu[2] > 0  # air exactly 0, lung distinct from air


def test_image_map_is_monotone_fixed_and_in_unit_range():
    p = np.linspace(0, 50, 1001, dtype=np.float32)
    img = line_integral_to_image(p)
    assert img[0] == 0.0 and np.all(np.diff(img) >= 0) and img[-1] <= 1.0
    np.testing.assert_allclose(line_integral_to_image(np.float32(P_REF)), 1 - np.exp(-1), rtol=1e-6)
    np.testing.assert_allclose(line_integral_to_image(np.float32(2 * P_REF)), 1 - np.exp(-4), rtol=1e-6)
    np.testing.assert_allclose(image_to_line_integral(img[1:200]), p[1:200], rtol=1e-3)


def test_image_output_matches_the_documented_map_in_closed_form():
    # AP parallel rays cross four 1 mm layers along h: air, water, bone-like +1000 HU and +250 HU, so every
    # pixel (all inside the volume's footprint) has p = 0.02 * (0 + 1 + 2 + 1.25) * 1 mm = 0.085 and the image
    # is 1 - exp(-(p / 4)^2) (docs/design.md), written out here rather than through line_integral_to_image.
    hu = np.zeros((3, 4, 5), dtype=np.float32)
    hu[:, 0], hu[:, 1], hu[:, 2], hu[:, 3] = -1000.0, 0.0, 1000.0, 250.0
    g = ParallelGeometry(size=3, pixel_mm=0.5)
    p = render_drr(hu, (1.0, 1.0, 1.0), g, backend="cpu", output="line_integral", mu_water=0.02)
    img = render_drr(hu, (1.0, 1.0, 1.0), g, backend="cpu", output="image", mu_water=0.02)
    np.testing.assert_allclose(p, np.full((3, 3), 0.085), rtol=1e-6)
    np.testing.assert_allclose(img, np.full((3, 3), 1.0 - np.exp(-((0.085 / 4.0) ** 2))), rtol=1e-5)


def test_line_integral_scales_with_mu_water():
    hu = np.full((3, 4, 5), 250.0, dtype=np.float32)
    g = ParallelGeometry(size=3, pixel_mm=0.5)
    a = render_drr(hu, (1, 1, 1), g, backend="cpu", output="line_integral", mu_water=0.02)
    b = render_drr(hu, (1, 1, 1), g, backend="cpu", output="line_integral", mu_water=0.03)
    np.testing.assert_allclose(b, 1.5 * a, rtol=1e-6)
    np.testing.assert_allclose(a, 0.02 * 1.25 * 4, rtol=1e-6)


def test_image_map_attrs_are_json_and_name_parameters():
    attrs = image_map_attrs()
    assert json.loads(json.dumps(attrs)) == attrs
    assert attrs["p_ref"] == P_REF and "exp" in attrs["formula"]


@pytest.mark.parametrize("kwargs, match", [(dict(backend="gpu"), "auto, cpu, cuda"),
                                           (dict(output="png"), "image, line_integral"),
                                           (dict(mu_water=-1.0), "mu_water")])
def test_bad_render_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        render_drr(np.zeros((2, 2, 2), np.float32), (1, 1, 1), ParallelGeometry(size=2), **kwargs)


def test_non_3d_volume_is_rejected():
    with pytest.raises(ValueError, match="3 dimensions"):
        render_drr(np.zeros((4, 4), np.float32), (1, 1, 1), ParallelGeometry(size=2))


def test_cuda_backend_without_gpu_is_a_clear_error():
    from xpgan.drr import cuda_available
    from xpgan.errors import XPGANError

    if cuda_available():
        pytest.skip("a real GPU is present: backend='cuda' is valid here")
    with pytest.raises(XPGANError, match="no CUDA GPU"):
        render_drr(np.zeros((2, 2, 2), np.float32), (1, 1, 1), ParallelGeometry(size=2), backend="cuda")


def test_nan_voxels_count_as_air():
    hu = np.zeros((3, 4, 5), np.float32)
    hu[1, 2, 2] = np.nan
    ref = hu.copy()
    ref[1, 2, 2] = -1000.0
    g = ParallelGeometry(size=5, pixel_mm=0.9)
    np.testing.assert_array_equal(render_drr(hu, (1, 1, 1), g, backend="cpu", output="line_integral"),
                                  render_drr(ref, (1, 1, 1), g, backend="cpu", output="line_integral"))
