"""xpgan inspect: summaries and PNG contact sheets of CT and CXR stores."""
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import XPGANError
from xpgan.pipeline import store as st
from xpgan.pipeline.inspection import inspect_store


def ct_store(path, n=5):
    arrays = {"volume": ("int16", (6, 16, 16)), "drr": ("float32", (16, 16)), "label": ("int8", ()),
              "severity": ("int8", ()), "study_id": st.ArraySpec("str"), "spacing": ("float32", (3,))}
    g = st.create_or_open(path, kind="ct", arrays=arrays, n_items=n, identity={},
                          attrs={"geometry": {"kind": "cone", "view": "pa"}, "shape": [6, 16, 16]})
    rng = np.random.default_rng(0)
    st.write_items(g, {i: {"volume": rng.integers(-1000, 400, (6, 16, 16)), "drr": rng.random((16, 16)),
                           "label": [0, 1, 1, 1][i], "severity": [0, 1, 3, 3][i], "study_id": f"study_{i:04d}",
                           "spacing": (5.0, 1.0, 1.0)} for i in range(n - 1)})
    st.set_failures(g, path, [{"index": n - 1, "id": "bad", "path": "CT-1/bad.nii.gz", "reason": "truncated"}])
    return path


def cxr_store(path):
    arrays = {"image": ("float32", (16, 16)), "label": ("int8", ()), "patient": st.ArraySpec("str"),
              "source": st.ArraySpec("str"), "split": ("int8", ())}
    g = st.create_or_open(path, kind="cxr", arrays=arrays, n_items=8, attrs={"size": 16}, identity={})
    st.write_items(g, {i: {"image": np.full((16, 16), i / 8), "label": i % 2, "patient": f"{i // 2:016x}",
                           "source": "cohen" if i < 4 else "hospital", "split": int(i >= 6)} for i in range(8)})
    return path


def test_ct_summary_counts_and_failures(tmp_path):
    text = inspect_store(ct_store(tmp_path / "ct.zarr"))
    assert "ct store, 5 items, 4 done" in text
    assert "pos=3, neg=1" in text and "CT-0=1, CT-1=1, CT-3=2" in text
    assert "failures: 1" in text and "CT-1/bad.nii.gz: truncated" in text
    assert "view: pa" in text


def test_ct_grid_sheet_is_a_png(tmp_path):
    sheet = tmp_path / "sheet.png"
    text = inspect_store(ct_store(tmp_path / "ct.zarr"), sheet=sheet)
    assert "4 images" in text
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 200 and np.asarray(im.convert("L")).std() > 5


def test_ct_item_sheet_and_bad_item(tmp_path):
    path = ct_store(tmp_path / "ct.zarr")
    text = inspect_store(path, sheet=tmp_path / "i.png", item=2)
    assert "item 2" in text and (tmp_path / "i.png").stat().st_size > 1000
    with pytest.raises(XPGANError, match="not done"):
        inspect_store(path, item=4)
    with pytest.raises(XPGANError, match="out of range"):
        inspect_store(path, item=9)


def test_cxr_store_summary_and_sheet(tmp_path):
    text = inspect_store(cxr_store(tmp_path / "cxr.zarr"), sheet=tmp_path / "c.png")
    assert "cxr store, 8 items, 8 done" in text
    assert "cohen / train: 2 2" in text and "hospital / train: 1 1" in text and "hospital / test: 1 1" in text
    assert "patients: 3 train, 1 test, 0 on both sides" in text
    assert "00000000" not in text  # patient hashes are not printed
    assert "sheet: " in text and "(8 images)" in text
    with Image.open(tmp_path / "c.png") as im:
        assert im.format == "PNG"
        grey = np.asarray(im.convert("L"))
    # item i is a constant image i/8 drawn with vmin 0, vmax 1: the grey colormap's entry floor(256 i / 8) = 32 i,
    # so each non-black item covers a tile's worth of pixels of exactly that level (titles are dark text)
    tile_px = [int((grey == 32 * i).sum()) for i in range(1, 8)]
    assert min(tile_px) > 2000, tile_px


def test_cli_inspect_and_not_a_store(tmp_path):
    res = CliRunner().invoke(app, ["inspect", str(ct_store(tmp_path / "ct.zarr"))])
    assert res.exit_code == 0 and "ct store" in res.output
    res = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert res.exit_code == 2 and "not a Zarr store" in res.output


def test_ct_item_poses_sheet_shows_stored_rerendered_and_posed_views(tmp_path):
    path = ct_store(tmp_path / "ct.zarr")
    res = CliRunner().invoke(app, ["inspect", str(path), "--item", "1", "--poses"])
    assert res.exit_code == 0, res.output
    sheet = tmp_path / "ct.zarr.item1.poses.png"
    assert "posed views" in res.output and sheet.stat().st_size > 1000
    with Image.open(sheet) as im:
        assert im.width > 400 and np.asarray(im.convert("L")).std() > 5
    with pytest.raises(XPGANError, match="--item N"):
        inspect_store(path, poses=True)


def test_sheet_into_a_folder_lands_inside_it_under_the_store_name(tmp_path):
    store = ct_store(tmp_path / "ct.zarr")
    (tmp_path / "sheets").mkdir()
    res = CliRunner().invoke(app, ["inspect", str(store), "--sheet", str(tmp_path / "sheets")])
    assert res.exit_code == 0, res.output
    assert [p.name for p in (tmp_path / "sheets").iterdir()] == ["ct.zarr.png"]
    assert not (tmp_path / "sheets.png").exists()
    assert f"sheet: {tmp_path / 'sheets' / 'ct.zarr.png'}" in res.output


def test_sheet_that_is_not_a_png_is_refused_before_drawing(tmp_path):
    store = ct_store(tmp_path / "ct.zarr")
    before = sorted(p.name for p in tmp_path.iterdir())
    res = CliRunner().invoke(app, ["inspect", str(store), "--sheet", str(tmp_path / "sheet")])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {tmp_path / 'sheet'}: --sheet must be a .png file or an existing folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_sheet_titles_wrap_long_names_instead_of_cutting_them():
    from xpgan.pipeline.inspection import wrapped_name

    name = "covid-chestxray-dataset-ieee8023"
    lines = wrapped_name(name).split("\n")
    assert len(lines) > 1 and all(len(x) <= 18 for x in lines) and "".join(lines) == name
