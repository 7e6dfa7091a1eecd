"""Bad-input corpus for `xpgan prep cxr` (DICOM modality and redaction, bit depths, tiny images).

Each case: the exit code, a one-line message naming the file and the reason, the good items landed with the
right labels and values, and nothing stored for a bad one (done False, fill values).
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import zarr
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.pipeline.cxr.readers import write_dicom_cxr
from xpgan.pipeline.cxr.sources import COHEN_COLUMNS

SIZE = 32
OPTS = ["--size", str(SIZE), "--workers", "0", "--no-progress", "--test-fraction", "0.25"]


def _gradient(shape=(40, 32), vmax=255, dtype=np.uint8):
    return np.linspace(0, vmax, shape[0] * shape[1]).reshape(shape).round().astype(dtype)


def build_class_folders(root):
    """Good and bad files in covid/ and normal/; returns {file name: label} of the good ones."""
    good = {}
    for cls, label in (("covid", 1), ("normal", 0)):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.roll(_gradient(), 7 * k + label, axis=1)).save(root / cls / f"{cls}{k}.png")
            good[f"{cls}{k}.png"] = label
    Image.fromarray(_gradient(vmax=4095, dtype=np.uint16)).save(root / "covid" / "p12.png")  # 12-bit in 16-bit
    good["p12.png"] = 1
    write_dicom_cxr(root / "normal" / "d12.dcm", _gradient(vmax=4095, dtype=np.uint16), bits_stored=12)
    good["d12.dcm"] = 0
    rgba = np.dstack([_gradient()] * 3 + [np.full((40, 32), 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "normal" / "opaque.png")
    good["opaque.png"] = 0
    rgba[:10, :, 3] = 0  # a transparent band
    Image.fromarray(rgba, mode="RGBA").save(root / "normal" / "alpha.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "covid" / "tiny.png")
    data = (root / "covid" / "covid0.png").read_bytes()
    (root / "covid" / "trunc.png").write_bytes(data[: len(data) * 2 // 3])
    Image.fromarray(_gradient()).save(root / "covid" / "dup.png")  # one stem, two labels
    Image.fromarray(_gradient()).save(root / "normal" / "dup.png")
    return good


BAD = {  # path under the source -> what its failure line says after the path
    "normal/alpha.png": "25.0% of the image is transparent or translucent",
    "covid/tiny.png": "image too small: 1x1 pixels (the minimum is 2x2)",
    "covid/trunc.png": "truncated",
    "covid/dup.png": "the same file name is in class folder(s) normal with another label",
    "normal/dup.png": "the same file name is in class folder(s) covid with another label",
}


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxrbad")
    src = root / "hospital"
    good = build_class_folders(src)
    out = root / "cxr.zarr"
    res = CliRunner().invoke(app, ["prep", "cxr", str(src), str(out), *OPTS])
    return src, out, res, good


def test_exit_code_and_one_failure_line_per_bad_file(prepped):
    src, _, res, good = prepped
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"{len(good)}/{len(good) + len(BAD) - 2} items done" in res.output  # the two dup.png are not items
    for rel, reason in BAD.items():
        lines = [ln for ln in res.output.splitlines() if ln.strip().startswith(f"failed: {src / rel}: ")]
        assert len(lines) == 1 and reason in lines[0], (rel, res.output)


def test_good_items_landed_and_nothing_wrong_stored(prepped):
    src, out, _, good = prepped
    g = zarr.open_group(str(out), mode="r")
    done = g["done"][:]
    assert int(done.sum()) == len(good) == len(done) - 3  # alpha, tiny, trunc fail; the dup pair never became items
    assert sorted(g["label"][:][done].tolist()) == sorted(good.values())
    image, bits = g["image"][:], g["bits"][:]
    assert not image[~done].any() and (bits[~done] == -1).all() and (g["label"][:][~done] == -1).all()
    assert sorted(bits[done].tolist()) == sorted([8] * (len(good) - 2) + [12, 12])  # p12.png and d12.dcm


def test_12bit_png_uses_its_real_depth(prepped):
    src, out, _, _ = prepped
    g = zarr.open_group(str(out), mode="r")
    done, bits, image = g["done"][:], g["bits"][:], g["image"][:]
    png12 = [i for i in np.flatnonzero(done) if bits[i] == 12 and image[i].max() > 0]
    assert png12 and all(image[i].max() > 0.9 for i in png12)  # 4095 / 4095, not 4095 / 65535 = 0.06
    assert "bits" in g.attrs["xpgan"] and "png_16bit_depth" in g.attrs["xpgan"]["intensity"]


def test_failure_reasons_redact_whole_names_only(prepped):
    src, out, _, _ = prepped
    g = zarr.open_group(str(out), mode="r")
    reasons = [f["reason"] for f in g.attrs["failures"]]
    assert any("truncated" in r for r in reasons), reasons
    assert any("(alpha below its maximum)" in r for r in reasons), reasons  # the stem of alpha.png is a word too
    assert not any("<file>ated" in r or "trunc.png" in r or str(src) in r for r in reasons), reasons
    rows = list(csv.DictReader(open(f"{out}.failures.csv")))
    assert {r["path"] for r in rows} == {str(src / rel) for rel in BAD}


# ---- item 1: a folder holding metadata.csv is a Cohen source or refused, never class folders
def write_cohen(folder, *, sep=",", drop=None):
    cols = [c for c in ("patientid", "offset", "sex", "finding", "view", "modality", "folder", "filename")
            if c != drop]
    rows = [("p1", "COVID-19", "PA", "X-ray", "a.png"), ("p2", "Pneumonia/Bacterial", "AP", "X-ray", "b.png"),
            ("p3", "COVID-19", "L", "X-ray", "c.png"), ("p4", "todo", "PA", "X-ray", "d.png"),
            ("p5", "No Finding", "PA", "CT", "e.png")]
    (folder / "images").mkdir(parents=True)
    lines = [sep.join(cols)]
    for pid, finding, view, modality, name in rows:
        values = {"patientid": pid, "offset": "", "sex": "M", "finding": finding, "view": view,
                  "modality": modality, "folder": "images", "filename": name}
        lines.append(sep.join(values[c] for c in cols))
        Image.fromarray(_gradient()).save(folder / "images" / name)
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")


def test_cohen_folder_is_read_as_cohen(tmp_path):
    write_cohen(tmp_path / "cohen")
    res = CliRunner().invoke(app, ["prep", "cxr", str(tmp_path / "cohen"), str(tmp_path / "o.zarr"), *OPTS])
    assert res.exit_code == 0, res.output
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert g["done"][:].all() and sorted(g["label"][:].tolist()) == [0, 1]  # PA COVID + AP pneumonia only
    assert g.attrs["xpgan"]["sources"][0]["kinds"] == ["cohen_metadata"]


@pytest.mark.parametrize("sep,drop,reason", [(";", None, "fields are separated by ';', not ','"),
                                             ("\t", None, "fields are separated by tabs or spaces, not ','")]
                         + [(",", c, f"missing column(s) {c} (found: ") for c in COHEN_COLUMNS])
def test_malformed_cohen_folder_is_refused_with_the_reason(tmp_path, sep, drop, reason):
    write_cohen(tmp_path / "cohen", sep=sep, drop=drop)
    res = CliRunner().invoke(app, ["prep", "cxr", str(tmp_path / "cohen"), str(tmp_path / "o.zarr"), *OPTS])
    text = res.output.strip()
    assert res.exit_code == 2 and len(text.splitlines()) == 1, text
    assert text.startswith(f"error: {tmp_path / 'cohen' / 'metadata.csv'}: not a Cohen-style metadata.csv: ")
    assert reason in text, text
    assert not (tmp_path / "o.zarr").exists()  # nothing stored, nothing relabelled as class "images"
    # the CSV given directly is refused with the same reason
    res = CliRunner().invoke(app, ["prep", "cxr", str(tmp_path / "cohen" / "metadata.csv"),
                                   str(tmp_path / "o.zarr"), *OPTS])
    assert res.exit_code == 2 and reason in res.output and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("text,path,expected", [
    ("image file is truncated", "/d/trunc.png", "image file is truncated"),
    ("cannot identify image file '/d/trunc.png'", "/d/trunc.png", "cannot identify image file '<file>'"),
    ("trunc.png: bad (trunc.png)", "/d/trunc.png", "<file>: bad (<file>)"),
    ("trunc.pngs and xtrunc.png stay", "/d/trunc.png", "trunc.pngs and xtrunc.png stay"),
    ("read /d/John_Smith.dcm failed", "/d/John_Smith.dcm", "read <file> failed"),
])
def test_redact_names_whole_tokens(text, path, expected):
    from xpgan.pipeline.privacy import redact_names

    assert redact_names(text, path) == expected


def test_symlinked_folders_inside_class_folders_are_followed_once(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    Image.fromarray(_gradient()).save(tmp_path / "elsewhere" / "far.png")
    (tmp_path / "src" / "normal").mkdir(parents=True)
    Image.fromarray(_gradient()).save(tmp_path / "src" / "normal" / "near.png")
    (tmp_path / "src" / "normal" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "src" / "normal" / "loop").symlink_to("..", target_is_directory=True)  # would reach covid/
    (tmp_path / "src" / "covid").mkdir()
    Image.fromarray(_gradient()).save(tmp_path / "src" / "covid" / "pos.png")
    res = CliRunner().invoke(app, ["prep", "cxr", str(tmp_path / "src"), str(tmp_path / "o.zarr"), *OPTS])
    assert res.exit_code == 0 and "3/3 items done" in res.output, res.output
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert sorted(g["label"][:].tolist()) == [0, 0, 1]
