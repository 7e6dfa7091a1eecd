"""Lead side markers name the side of the patient they lie on (radiographic convention)."""
import numpy as np
import pytest

from xpgan.pipeline.synth.radiograph import _GLYPHS, add_marker


@pytest.mark.parametrize("side", ["L", "R"])
def test_marker_lies_on_the_side_it_names(side):
    # display orientation: the patient's right is on the image's left
    for seed in range(20):
        img = np.zeros((96, 96), np.float32)
        add_marker(img, side, np.random.default_rng(seed))
        cols = np.flatnonzero((img > 0.9).any(axis=0))
        assert cols.size
        if side == "R":
            assert cols.max() < 96 // 2
        else:
            assert cols.min() >= 96 // 2


def test_marker_draws_its_letter():
    img = np.zeros((180, 180), np.float32)
    add_marker(img, "R", np.random.default_rng(0))
    rows = np.flatnonzero((img > 0.9).any(axis=1))
    cols = np.flatnonzero((img > 0.9).any(axis=0))
    patch = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1] > 0.9
    cell = 180 // 90
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS["R"]])
    np.testing.assert_array_equal(patch[::cell, ::cell], glyph[:, glyph.any(axis=0)][glyph.any(axis=1)])


def test_marker_refuses_unknown_side():
    with pytest.raises(ValueError, match="side"):
        add_marker(np.zeros((32, 32)), "X", np.random.default_rng(0))
