"""`prep_cxr` end to end on generated archives: store layout, labels, split, PHI, failures, resume, CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import XPGANError
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.cxr.readers import load_cxr, write_dicom_cxr
from xpgan.pipeline.cxr.sources import discover
from xpgan.pipeline.schema import FORMAT_VERSION
from xpgan.pipeline.store import StoreLock, failures_csv_path

SIZE = 64
PHI = {"name_given": "Zebediah", "name_family": "Quixotic", "patient_id": "PHI-ID-55501",
       "birth_date": "19230417", "cohen_pid": "rawpid-31337"}
COHEN_HEADER = "patientid,offset,sex,age,finding,survival,view,modality,date,location,folder,filename,doi,url,notes,"


def _anatomy(h=SIZE, w=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    body = np.exp(-((xx - 0.5) ** 2 / 0.08 + (yy - 0.5) ** 2 / 0.15))
    lungs = (np.exp(-(((xx - 0.33) ** 2 + (yy - 0.45) ** 2) / 0.01))
             + np.exp(-(((xx - 0.67) ** 2 + (yy - 0.45) ** 2) / 0.01)))
    return np.clip(0.8 * body - 0.4 * lungs + 0.02 * rng.standard_normal((h, w)), 0, 1)


def _png8(path: Path, seed: int, shape=(80, 72)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((_anatomy(*shape, seed=seed) * 255).round().astype(np.uint8)).save(path)


def make_archive(root: Path) -> list[Path]:
    """Two sources: `hospital/` class folders (DICOM, PNG 8/16-bit, RGB, JPEG, bad files) and a Cohen folder."""
    h = root / "hospital"
    anat = _anatomy(seed=1)
    m2 = np.round(anat * 4000 + 1000).astype(np.uint16)
    phi = dict(patient_name=f"{PHI['name_family']}^{PHI['name_given']}", patient_id=PHI["patient_id"],
               patient_birth_date=PHI["birth_date"])
    write_dicom_cxr(h / "covid" / "m2.dcm", m2, photometric="MONOCHROME2", window=(3000, 4000), **phi)
    write_dicom_cxr(h / "covid" / "m1.dcm", (65535 - m2).astype(np.uint16), photometric="MONOCHROME1",
                    window=(65535 - 3000, 4000), **phi)
    p16 = (20000 + np.arange(SIZE * SIZE).reshape(SIZE, SIZE)).astype(np.uint16)  # adjacent 16-bit levels
    Image.fromarray(p16).save(h / "covid" / "p16.png")
    rgb = (np.stack([_anatomy(seed=2)] * 3, -1) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(h / "covid" / "rgb.png")
    Image.fromarray((_anatomy(seed=3) * 255).astype(np.uint8)).save(h / "covid" / "photo.jpg", quality=90)
    _png8(h / "covid" / f"{PHI['name_family']}_{PHI['name_given']}_chest.png", seed=4)
    _png8(h / "normal" / "wide.png", seed=5, shape=(32, 64))  # 1:2 aspect -> padded top and bottom
    for i in range(8):
        _png8(h / "normal" / f"n{i}.png", seed=10 + i)
    (h / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    write_dicom_cxr(h / "normal" / "cine.dcm", np.zeros((2, 16, 16), np.uint16), **phi)  # multi-frame: refused

    c = root / "cohen"
    lines = [COHEN_HEADER]
    n = 0
    for p in range(12):
        pid = f"{PHI['cohen_pid']}-{p}"
        negative = "No Finding" if p % 4 == 1 else "Pneumonia/Bacterial/E.Coli"
        finding = "Pneumonia/Viral/COVID-19" if p % 2 == 0 else negative
        for k in range(1 + p % 3):  # 1..3 images per patient
            name = f"c{n}.png"
            _png8(c / "images" / name, seed=100 + n)
            view = ("PA", "AP", "AP Supine")[k]
            lines.append(f"{pid},0,F,40,{finding},,{view},X-ray,2020,X,images,{name},,,note,")
            n += 1
        lines.append(f"{pid},0,F,40,{finding},,L,X-ray,2020,X,images,lat{p}.png,,,note,")  # lateral: excluded
    lines.append("ctpatient,0,M,60,Pneumonia/Viral/COVID-19,,Axial,CT,2020,X,images,ct.png,,,note,")  # excluded
    lines.append(f"{PHI['cohen_pid']}-x,0,M,60,Pneumonia/Viral/COVID-19,,PA,X-ray,2020,X,images,gone.png,,,n,")
    (c / "metadata.csv").write_text("\n".join(lines) + "\n")
    return [h, c]


N_BAD = 3  # broken.png, cine.dcm, gone.png (missing)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cxr")
    sources = make_archive(root / "archive")
    out = root / "cxr.zarr"
    summary = prep_cxr(sources, out, size=SIZE, workers=0, progress=False)
    return sources, out, summary


def _index_of(sources, name):
    items = discover(sources).items
    return [i for i, it in enumerate(items) if it.path.name == name][0]


def test_store_layout_and_attrs(built):
    sources, out, summary = built
    g = zarr.open_group(str(out), mode="r")
    n = summary.total
    assert g["image"].shape == (n, SIZE, SIZE) and g["image"].dtype == np.float32
    assert g["label"].dtype == np.int8 and g["split"].dtype == np.int8 and g["done"].dtype == bool
    assert g["patient"].shape == g["source"].shape == (n,)
    meta = g.attrs["xpgan"]
    assert meta["kind"] == "cxr" and meta["version"] == FORMAT_VERSION and meta["size"] == SIZE
    assert meta["padding"]["mode"] == "letterbox" and meta["split"]["test_fraction"] == 0.2
    done = g["done"][:]
    img = g["image"][:][done]
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert set(g["split"][:][done].tolist()) == {0, 1}
    assert sorted({str(s) for s in g["source"][:][done]}) == ["cohen", "hospital"]


def test_labels_and_images_follow_discovery(built):
    sources, out, _ = built
    items = discover(sources).items
    g = zarr.open_group(str(out), mode="r")
    done, label, image = g["done"][:], g["label"][:], g["image"]
    for i, it in enumerate(items):
        if done[i]:
            assert label[i] == it.label
            np.testing.assert_array_equal(image[i], load_cxr(it.path, SIZE))
    assert sum(label[done] == 1) > 0 and sum(label[done] == 0) > 0


def test_failures_reported_not_fatal(built):
    sources, out, summary = built
    assert summary.failed == N_BAD and summary.done == summary.total - N_BAD
    assert sorted(Path(p).name for p, _ in summary.failures) == ["broken.png", "cine.dcm", "gone.png"]
    assert any("multi-frame" in r for _, r in summary.failures)
    assert any("not found" in r for _, r in summary.failures)
    rows = failures_csv_path(out).read_text().splitlines()
    assert len(rows) == 1 + N_BAD and any("broken.png" in r for r in rows)
    g = zarr.open_group(str(out), mode="r")
    recs = g.attrs["failures"]
    assert len(recs) == N_BAD and all(r["path"] == "" for r in recs)  # no file names in the store
    assert not any(g["done"][:][[r["index"] for r in recs]])


def test_monochrome1_same_polarity_as_monochrome2(built):
    sources, out, _ = built
    g = zarr.open_group(str(out), mode="r")
    a, b = g["image"][_index_of(sources, "m1.dcm")], g["image"][_index_of(sources, "m2.dcm")]
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert np.corrcoef(b.ravel(), _anatomy(seed=1).ravel())[0, 1] > 0.99


def test_16bit_precision_kept_in_store(built):
    sources, out, _ = built
    g = zarr.open_group(str(out), mode="r")
    img = g["image"][_index_of(sources, "p16.png")]
    expected = (20000 + np.arange(SIZE * SIZE).reshape(SIZE, SIZE)) / 65535.0
    np.testing.assert_allclose(img, expected, rtol=0, atol=1e-7)
    assert len(np.unique(img)) == SIZE * SIZE


def test_aspect_kept_by_black_padding(built):
    sources, out, _ = built
    g = zarr.open_group(str(out), mode="r")
    img = g["image"][_index_of(sources, "wide.png")]  # 32 x 64 source -> rows 16..47 hold the image
    assert img[:16].max() == 0.0 and img[48:].max() == 0.0
    assert img[16:48].mean() > 0.1


def test_no_patient_crosses_split(built):
    _, out, _ = built
    g = zarr.open_group(str(out), mode="r")
    done = g["done"][:]
    patient = np.array([str(p) for p in g["patient"][:]])[done]
    split = g["split"][:][done]
    multi = [p for p in set(patient) if (patient == p).sum() > 1]
    assert len(multi) >= 4  # Cohen patients with 2-3 images
    for p in set(patient):
        assert len(set(split[patient == p].tolist())) == 1, p


def test_no_phi_anywhere_in_store(built):
    sources, out, _ = built
    needles = [v.encode() for v in PHI.values()] + [b"m2.dcm", b"broken", b"hospital/", str(sources[0]).encode()]
    needles += [v.encode("utf-16-le") for v in PHI.values()]
    blobs = []
    for f in sorted(out.rglob("*")):
        if f.is_file():
            blobs.append(f.read_bytes())  # raw (compressed chunks, JSON metadata)
    g = zarr.open_group(str(out), mode="r")
    for name in g.array_keys():  # decoded content of every array
        data = g[name][:]
        blobs.append(data.tobytes() if data.dtype.kind in "biuf" else "\n".join(map(str, data.tolist())).encode())
        blobs.append(json.dumps(dict(g[name].attrs)).encode())
    blobs.append(json.dumps(dict(g.attrs)).encode())
    for blob in blobs:
        for needle in needles:
            assert needle not in blob, needle


def test_split_deterministic_and_seeded(built, tmp_path):
    sources, out, _ = built
    salt = Path(str(out) + ".salt")
    again = prep_cxr(sources, tmp_path / "again.zarr", size=SIZE, workers=0, progress=False, salt_file=salt)
    prep_cxr(sources, tmp_path / "other.zarr", size=SIZE, workers=0, progress=False, seed=1)
    g0, g1, g2 = (zarr.open_group(str(p), mode="r") for p in (out, tmp_path / "again.zarr", tmp_path / "other.zarr"))
    np.testing.assert_array_equal(g0["split"][:], g1["split"][:])
    assert g0["patient"][:].tolist() == g1["patient"][:].tolist()  # same salt -> same hashes
    assert (g0["split"][:] != g2["split"][:]).any()
    assert g0["patient"][:].tolist() != g2["patient"][:].tolist()  # new store, new random salt
    assert again.table == built[2].table


def test_resume_fills_only_missing_items(built, tmp_path):
    sources, out, _ = built
    arch = tmp_path / "archive"
    shutil.copytree(sources[0].parent, arch)
    corrupted, moved = arch / "hospital" / "normal" / "n3.png", arch / "cohen" / "images" / "c5.png"
    good = corrupted.read_bytes()
    corrupted.write_bytes(good[:40])  # truncated: fails
    moved.rename(moved.with_suffix(".bak"))  # missing: fails
    srcs = [arch / "hospital", arch / "cohen"]
    first = prep_cxr(srcs, tmp_path / "r.zarr", size=SIZE, workers=0, progress=False)
    assert first.failed == N_BAD + 2
    corrupted.write_bytes(good)
    moved.with_suffix(".bak").rename(moved)
    second = prep_cxr(srcs, tmp_path / "r.zarr", size=SIZE, workers=0, progress=False)
    assert second.skipped == first.done and second.done == first.done + 2 and second.failed == N_BAD
    g, ref = zarr.open_group(str(tmp_path / "r.zarr"), mode="r"), zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["done"][:], ref["done"][:])
    np.testing.assert_array_equal(g["split"][:], ref["split"][:])  # split fixed before processing
    np.testing.assert_array_equal(g["label"][:], ref["label"][:])
    np.testing.assert_array_equal(g["image"][:], ref["image"][:])
    assert len(g.attrs["failures"]) == N_BAD


def test_second_writer_refused(built, tmp_path):
    sources, _, _ = built
    with StoreLock(tmp_path / "busy.zarr"):
        with pytest.raises(XPGANError, match="another process"):
            prep_cxr(sources, tmp_path / "busy.zarr", size=SIZE, workers=0, progress=False)


def test_changed_options_refused_unless_overwrite(built, tmp_path):
    sources, out, _ = built
    dst = tmp_path / "c.zarr"
    shutil.copytree(out, dst)
    shutil.copy(str(out) + ".salt", str(dst) + ".salt")
    with pytest.raises(XPGANError, match="--overwrite"):
        prep_cxr(sources, dst, size=SIZE, workers=0, progress=False, test_fraction=0.3)
    s = prep_cxr(sources, dst, size=SIZE, workers=0, progress=False, test_fraction=0.3, overwrite=True)
    assert s.skipped == 0 and s.done == s.total - N_BAD


def test_cli_with_dask_worker_exit_codes(tmp_path):
    root = tmp_path / "a"
    for i in range(6):
        _png8(root / "covid" / f"c{i}.png", seed=i)
        _png8(root / "normal" / f"n{i}.png", seed=50 + i)
    runner = CliRunner()
    res = runner.invoke(app, ["prep", "cxr", str(root), str(tmp_path / "o.zarr"), "--size", "32",
                              "--workers", "1", "--no-progress", "--test-fraction", "0.5"])
    assert res.exit_code == 0, res.output
    assert "12/12 items done" in res.output and "test" in res.output
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert g["image"].shape == (12, 32, 32) and g["done"][:].all() and g["split"][:].sum() == 6
    (root / "normal" / "bad.png").write_bytes(b"junk")
    res = runner.invoke(app, ["prep", "cxr", str(root), str(tmp_path / "o2.zarr"), "--size", "32",
                              "--workers", "0", "--no-progress"])
    assert res.exit_code == 1 and "bad.png" in res.output
    res = runner.invoke(app, ["prep", "cxr", str(tmp_path / "nothing"), str(tmp_path / "o3.zarr")])
    assert res.exit_code == 2 and "error:" in res.output and "does not exist" in res.output


KILL_SCRIPT = """
import os, signal, sys
import xpgan.pipeline.cxr.prep_cxr as pc
real = pc._process
def dying(payload):
    if payload[0].endswith(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # die mid-run, as a killed job would
    return real(payload)
pc._process = dying
pc.prep_cxr([sys.argv[1]], sys.argv[2], size=32, workers=0, progress=False)
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "a"
    for i in range(100):
        _png8(root / "covid" / f"c{i:03d}.png", seed=i, shape=(40, 36))
        _png8(root / "normal" / f"n{i:03d}.png", seed=500 + i, shape=(36, 40))
    out = tmp_path / "k.zarr"
    # items are ordered covid/c000..c099, normal/n000..n099; shards hold 64 items: dying on item 150
    # leaves shards 0 and 1 written and shard 2 in flight
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root), str(out), "n050.png"],
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    g = zarr.open_group(str(out), mode="r")
    assert g["done"][:].sum() == 128 and g["done"][:128].all()
    resumed = prep_cxr([root], out, size=32, workers=0, progress=False)  # the OS released the lock
    assert resumed.skipped == 128 and resumed.done == 200 and resumed.failed == 0
    ref = prep_cxr([root], tmp_path / "ref.zarr", size=32, workers=0, progress=False,
                   salt_file=Path(str(out) + ".salt"))
    assert ref.done == 200
    g, r = zarr.open_group(str(out), mode="r"), zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    for name in ("image", "label", "split", "done"):
        np.testing.assert_array_equal(g[name][:], r[name][:])
    for name in ("patient", "source"):
        assert g[name][:].tolist() == r[name][:].tolist()


def test_cli_options_positive_views_source_names(tmp_path):
    h = tmp_path / "h"
    for i in range(3):
        _png8(h / "pneumonia" / f"p{i}.png", seed=i)
        _png8(h / "normal" / f"n{i}.png", seed=10 + i)
    c = tmp_path / "c"
    lines = [COHEN_HEADER]
    for i, view in enumerate(["PA", "AP", "PA", "AP Supine"]):
        _png8(c / "images" / f"x{i}.png", seed=20 + i)
        lines.append(f"q{i},0,F,40,Pneumonia/Viral/COVID-19,,{view},X-ray,2020,X,images,x{i}.png,,,n,")
    (c / "metadata.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["prep", "cxr", str(h), str(c / "metadata.csv"), str(tmp_path / "o.zarr"),
                                   "--size", "32", "--workers", "0", "--positive", "pneumonia", "--views", "PA",
                                   "--source-name", "H", "--source-name", "C", "--no-progress"])
    assert res.exit_code == 0, res.output
    g = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert [str(s) for s in g["source"][:]] == ["H"] * 6 + ["C"] * 2  # AP and AP Supine rows left out
    assert g["label"][:].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]  # normal/ then pneumonia/ (sorted), Cohen COVID
    assert "view not selected: 2" in res.output
