import numpy as np

from xpgan.pipeline.picture import GAP, labelled_grid, short_label


def _tiles(n_rows, n_cols, size=16):
    return [[np.full((size, size), (r * n_cols + c + 1) / (n_rows * n_cols + 1)) for c in range(n_cols)]
            for r in range(n_rows)]


def _find(sheet, tile):
    """Top-left corners where `tile` (uint8) sits exactly in `sheet`."""
    h, w = tile.shape
    return [(y, x) for y in range(sheet.shape[0] - h + 1) for x in range(sheet.shape[1] - w + 1)
            if np.array_equal(sheet[y:y + h, x:x + w], tile)]


def test_tiles_are_pasted_unchanged_in_their_rows_and_columns():
    rows = _tiles(2, 3)
    sheet = labelled_grid(rows, col_titles=["a", "b", "c"], row_labels=["study_1", "study_2"])
    corners = [_find(sheet, (np.rint(t * 255)).astype(np.uint8))[0] for row in rows for t in row]
    ys, xs = sorted({y for y, _ in corners}), sorted({x for _, x in corners})
    assert len(ys) == 2 and len(xs) == 3
    assert xs[1] - xs[0] == 16 + GAP and ys[1] - ys[0] == 16 + GAP
    assert ys[0] > 0 and xs[0] > 0   # room for the titles above and the labels on the left


def test_titles_and_labels_are_drawn_in_their_bands():
    rows = _tiles(2, 2)
    plain = labelled_grid(rows)
    titled = labelled_grid(rows, col_titles=["stored DRR", "G_ema(CT)"], row_labels=["study_0001", "study_0002"])
    assert plain.shape == (2 * 16 + GAP, 2 * 16 + GAP)
    top = titled.shape[0] - plain.shape[0]
    left = titled.shape[1] - plain.shape[1]
    assert (titled[:top, left:] < 128).any()                 # title text
    assert (titled[top:, :left] < 128).any()                 # label text
    other = labelled_grid(rows, col_titles=["stored DRR", "G_ema(CT)"], row_labels=["study_0001", "study_0009"])
    assert not np.array_equal(titled, other)                 # the labels are what is drawn


def test_captions_sit_above_each_tile():
    rows = _tiles(1, 3)
    plain = labelled_grid(rows)
    captioned = labelled_grid(rows, captions=[["yaw -10", "yaw 0", "yaw 10"]])
    band = captioned.shape[0] - plain.shape[0]
    assert band > 0 and (captioned[:band] < 128).any()


def test_long_labels_keep_their_end():
    assert short_label("x" * 40 + "_0007", 12) == "...xxxx_0007"
    assert short_label("study_1", 12) == "study_1"


def test_a_row_label_of_several_lines_gets_a_row_tall_enough():
    rows = _tiles(2, 2)
    one = labelled_grid(rows, row_labels=["study_0001", "study_0002"])
    two = labelled_grid(rows, row_labels=["study_0001\nCOVID-19 CT-3", "study_0002\nnegative CT-0"])
    assert two.shape[0] > one.shape[0] and two.shape[1] >= one.shape[1]
    corners = [_find(two, (np.rint(t * 255)).astype(np.uint8))[0] for row in rows for t in row]
    assert len({x for _, x in corners}) == 2   # the tiles still sit in their columns, unchanged
