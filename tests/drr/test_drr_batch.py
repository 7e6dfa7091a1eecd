"""Batched rendering equals one-at-a-time rendering."""
import numpy as np

from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr, render_drr_batch, render_drr_views


def test_batch_of_volumes_matches_single_renders():
    rng = np.random.default_rng(7)
    vols = rng.uniform(-1000, 1000, size=(3, 6, 7, 8)).astype(np.float32)
    spacings = rng.uniform(0.5, 2.0, size=(3, 3))
    g = ConeGeometry(sdd_mm=90.0, sid_mm=60.0, size=10)  # fitted FOV differs per spacing
    out = render_drr_batch(vols, spacings, g, backend="cpu", output="line_integral")
    assert out.shape == (3, 10, 10) and out.dtype == np.float32
    for i in range(3):
        one = render_drr(vols[i], spacings[i], g, backend="cpu", output="line_integral")
        np.testing.assert_array_equal(out[i], one)


def test_views_of_one_volume_match_single_renders():
    rng = np.random.default_rng(8)
    vol = rng.uniform(-1000, 1000, size=(6, 7, 8)).astype(np.float32)
    gs = [ConeGeometry(view="pa", sdd_mm=90.0, sid_mm=60.0, size=9),
          ConeGeometry(view="ap", sdd_mm=90.0, sid_mm=60.0, size=9), ParallelGeometry(size=9)]
    out = render_drr_views(vol, (1.0, 1.2, 0.9), gs, backend="cpu")
    for i, g in enumerate(gs):
        np.testing.assert_array_equal(out[i], render_drr(vol, (1.0, 1.2, 0.9), g, backend="cpu"))
