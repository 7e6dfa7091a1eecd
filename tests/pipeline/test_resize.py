"""resize_volume: separable antialiased linear resampling (closed forms + a slow reference)."""
import numpy as np
import pytest

from xpgan.pipeline.ct.resize import axis_taps, resample_axis, resize_volume


def naive_resample_1d(x: np.ndarray, n_out: int) -> np.ndarray:
    """Obviously-correct reference: for each output sample, a triangle of half-width max(1, n_in/n_out)
    centred at (o + 0.5) * n_in / n_out - 0.5, over the samples inside the signal, normalised."""
    n_in = x.size
    scale = n_in / n_out
    half = max(1.0, scale)
    out = np.zeros(n_out)
    for o in range(n_out):
        c = (o + 0.5) * scale - 0.5
        num = den = 0.0
        for i in range(n_in):
            w = max(0.0, 1.0 - abs(i - c) / half)
            num += w * x[i]
            den += w
        out[o] = num / den if den > 0 else x[int(np.clip(round(c), 0, n_in - 1))]
    return out


def naive_resize(vol: np.ndarray, shape) -> np.ndarray:
    out = vol.astype(np.float64)
    for axis, n in enumerate(shape):
        out = np.apply_along_axis(naive_resample_1d, axis, out, n)
    return out


@pytest.mark.parametrize("out_shape", [(4, 9, 6), (11, 5, 16), (7, 7, 7)])
def test_matches_slow_reference(out_shape):
    vol = np.random.default_rng(0).normal(size=(7, 13, 10)).astype(np.float32) * 100
    got, _ = resize_volume(vol, (1.0, 1.0, 1.0), out_shape)
    np.testing.assert_allclose(got, naive_resize(vol, out_shape), rtol=1e-5, atol=1e-3)


def test_constant_stays_constant():
    vol = np.full((9, 20, 30), -734.0, np.float32)
    for shape in [(4, 7, 11), (20, 40, 64), (9, 20, 30)]:
        got, _ = resize_volume(vol, (2.0, 0.7, 0.7), shape)
        np.testing.assert_allclose(got, -734.0, rtol=0, atol=1e-3)


@pytest.mark.parametrize("n_in,n_out", [(64, 32), (60, 24), (20, 50)])
def test_linear_ramp_exact_away_from_edges(n_in, n_out):
    x = np.arange(n_in, dtype=np.float32) * 3.0 - 10.0
    got = resample_axis(x, 0, n_out)
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    half = max(1.0, n_in / n_out)
    inner = (centres - half >= 0) & (centres + half <= n_in - 1)
    assert inner.sum() > n_out // 2
    # Exact for integer kernel widths; a sampled tent of non-integer width shifts by < 0.02 samples.
    tol = 1e-3 if float(half).is_integer() else 3.0 * 0.02
    np.testing.assert_allclose(got[inner], 3.0 * centres[inner] - 10.0, rtol=0, atol=tol)


@pytest.mark.parametrize("n_in,n_out", [(64, 32), (75, 30)])
def test_antialiasing_removes_nyquist_pattern(n_in, n_out):
    # A +-100 HU pattern at the input Nyquist frequency must not alias into the output.
    x = np.where(np.arange(n_in) % 2 == 0, 100.0, -100.0).astype(np.float32)
    vol = np.broadcast_to(x, (4, 4, n_in)).copy()
    got, _ = resize_volume(vol, (1.0, 1.0, 1.0), (4, 4, n_out))
    inner = got[..., 2:-2]
    assert np.abs(inner).max() < 10.0  # naive decimation would give +-100
    assert np.abs(x[:: n_in // n_out][: n_out]).max() == 100.0


def test_spacing_keeps_physical_extent():
    vol = np.zeros((40, 100, 90), np.float32)
    _, sp = resize_volume(vol, (5.0, 0.8, 0.75), (64, 32, 30))
    np.testing.assert_allclose(np.array(sp) * (64, 32, 30), np.array((5.0, 0.8, 0.75)) * (40, 100, 90))


def test_close_to_skimage_on_smooth_volume():
    skt = pytest.importorskip("skimage.transform")
    d, h, w = np.meshgrid(np.arange(20), np.arange(64), np.arange(64), indexing="ij")
    vol = (800 * np.exp(-((d - 9.5) ** 2 / 40 + (h - 30) ** 2 / 300 + (w - 34) ** 2 / 200)) - 900).astype(np.float32)
    got, _ = resize_volume(vol, (1.0, 1.0, 1.0), (10, 32, 32))
    ref = skt.resize(vol.astype(np.float64), (10, 32, 32), order=1, anti_aliasing=True, preserve_range=True)
    assert np.abs(got - ref).max() < 0.03 * 800


def test_taps_are_normalised_and_in_range():
    for n_in, n_out in [(512, 256), (40, 64), (1, 5), (5, 1), (333, 64)]:
        idx, w = axis_taps(n_in, n_out)
        assert idx.min() >= 0 and idx.max() < n_in
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_input_is_not_modified_and_output_is_float32():
    vol = np.random.default_rng(1).integers(-1000, 1000, size=(6, 8, 8)).astype(np.int16)
    before = vol.copy()
    got, _ = resize_volume(vol, (1, 1, 1), (6, 8, 8))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(vol, before)
    np.testing.assert_array_equal(got, before.astype(np.float32))


@pytest.mark.parametrize("vol,spacing,shape", [
    (np.zeros((4, 4)), (1, 1, 1), (2, 2, 2)),
    (np.zeros((4, 4, 4)), (1, 0, 1), (2, 2, 2)),
    (np.zeros((4, 4, 4)), (1, 1, 1), (2, 0, 2)),
    (np.zeros((4, 4, 4)), (1, 1, 1), (2, 2)),
])
def test_bad_arguments_raise(vol, spacing, shape):
    with pytest.raises(ValueError):
        resize_volume(vol, spacing, shape)


def test_quantize_int16_rounds_half_to_even_clips_and_counts_nonfinite():
    from xpgan.pipeline.ct.resize import quantize_int16

    x = np.array([[0.5, 1.5, -2.5, 40000.0], [-40000.0, np.nan, np.inf, 12.49]], np.float32)
    q, bad = quantize_int16(x)
    assert q.dtype == np.int16 and bad == 2
    assert q.tolist() == [[0, 2, -2, 32767], [-32768, 0, 0, 12]]
    y = np.random.default_rng(2).normal(0, 2000, size=(5, 7, 9)).astype(np.float32)
    np.testing.assert_array_equal(quantize_int16(y)[0], np.clip(np.rint(y), -32768, 32767).astype(np.int16))
