"""xpgan prep drr: store layout, values, resume, failure isolation, lock, privacy (tiny phantoms)."""
import csv
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.drr import ParallelGeometry, geometry_from_dict, render_drr
from xpgan.errors import XPGANError
from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.ct.readers import read_ct
from xpgan.pipeline.ct.resize import resize_volume
from xpgan.pipeline.schema import FORMAT_VERSION, failures_csv_path, open_store
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

SHAPE = (8, 32, 32)
GEOM = {"kind": "cone", "view": "pa", "sdd_mm": 1800.0, "sid_mm": 1600.0, "size": 32, "pixel_mm": None}


def phantom(seed, shape=(12, 40, 36)):
    """The simple synthetic chest (body, lungs, spine, noise) as float32 HU, as read_ct returns it."""
    return simple_chest(shape, seed, dtype=np.float32)


def mosmed(root, n=6):
    for i in range(n):
        k = i % 5
        write_nifti(root / "studies" / f"CT-{k}" / f"study_{i:04d}.nii.gz", phantom(i), (5.0, 1.2, 1.1),
                    axcodes=("R", "A", "S") if i % 2 else ("I", "P", "L"))
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return mosmed(tmp_path_factory.mktemp("arch") / "COVID19_1110")


@pytest.fixture(scope="module")
def inline_store(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "ct.zarr"
    summary = prep_drr(archive, out, shape=SHAPE, geometry=GEOM, workers=0, progress=False, items_per_shard=4)
    return out, summary


def arrays(path):
    g = open_store(path)
    return {name: np.asarray(g[name][:]) for name in g.array_keys()}


def test_store_layout_and_attributes(inline_store):
    out, summary = inline_store
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (6, 6, 0, 0)
    g = open_store(out)
    expect = {"volume": ("int16", (6, *SHAPE)), "drr": ("float32", (6, 32, 32)), "label": ("int8", (6,)),
              "severity": ("int8", (6,)), "spacing": ("float32", (6, 3)), "done": ("bool", (6,))}
    for name, (dtype, shape) in expect.items():
        assert (str(g[name].dtype), g[name].shape) == (dtype, shape), name
    assert g["study_id"].shape == (6,) and g["volume"].shards == (4, *SHAPE)
    meta = g.attrs["xpgan"]
    assert meta["kind"] == "ct" and meta["version"] == FORMAT_VERSION and meta["shape"] == list(SHAPE)
    assert geometry_from_dict(meta["geometry"]).to_dict() == GEOM
    assert meta["physics"]["mu_water_per_mm"] == 0.02 and "formula" in meta["physics"]["image_map"]
    assert meta["resize"]["method"] and meta["package_version"] and meta["source"]["format"] == "mosmed"
    a = arrays(out)
    assert a["done"].all()
    assert [str(s) for s in a["study_id"]] == [f"study_{i:04d}" for i in range(6)]
    assert a["label"].tolist() == [0, 1, 1, 1, 1, 0] and a["severity"].tolist() == [0, 1, 2, 3, 4, 0]
    assert not failures_csv_path(out).exists()


def test_values_come_from_read_resize_render(inline_store, archive):
    out, _ = inline_store
    a = arrays(out)
    for i in (0, 3):
        ct = read_ct(archive / "studies" / f"CT-{i % 5}" / f"study_{i:04d}.nii.gz")
        vol, sp = resize_volume(ct.hu, ct.spacing, SHAPE)
        np.testing.assert_array_equal(a["volume"][i], np.clip(np.rint(vol), -32768, 32767).astype(np.int16))
        np.testing.assert_allclose(a["spacing"][i], sp, rtol=1e-6)
        np.testing.assert_allclose(a["spacing"][i] * SHAPE, np.array(ct.spacing) * ct.hu.shape, rtol=1e-5)
        drr = render_drr(a["volume"][i], a["spacing"][i].astype(np.float64), geometry_from_dict(GEOM),
                         backend="cpu")
        np.testing.assert_allclose(a["drr"][i], drr, rtol=1e-5, atol=1e-6)
        assert 0.0 <= a["drr"][i].min() and a["drr"][i].max() <= 1.0
        assert (a["drr"][i] > 0).mean() > 0.3  # the body covers much of the fitted field of view


def test_dask_cluster_gives_the_same_store(inline_store, archive, tmp_path):
    out, _ = inline_store
    summary = prep_drr(archive, tmp_path / "c.zarr", shape=SHAPE, geometry=GEOM, workers=2, processes=False,
                       progress=False, items_per_shard=4)
    assert summary.done == 6
    ref, got = arrays(out), arrays(tmp_path / "c.zarr")
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def test_rerun_skips_done_items_and_changed_options_need_overwrite(archive, tmp_path):
    out = tmp_path / "r.zarr"
    prep_drr(archive, out, shape=SHAPE, geometry=GEOM, workers=0, progress=False)
    again = prep_drr(archive, out, shape=SHAPE, geometry=GEOM, workers=0, progress=False)
    assert (again.skipped, again.done, again.failed) == (6, 6, 0)
    with pytest.raises(XPGANError, match="--overwrite"):
        prep_drr(archive, out, shape=(8, 16, 16), geometry=GEOM, workers=0, progress=False)
    fresh = prep_drr(archive, out, shape=(8, 16, 16), geometry=GEOM, workers=0, progress=False, overwrite=True)
    assert (fresh.skipped, fresh.done) == (0, 6) and open_store(out)["volume"].shape == (6, 8, 16, 16)


def bad_archive(root):
    """Two good studies and one of each failure kind."""
    import nibabel as nib

    write_nifti(root / "good_a.nii.gz", phantom(1), (5.0, 1.0, 1.0))
    write_nifti(root / "good_b.nii.gz", phantom(2), (5.0, 1.0, 1.0))
    trunc = write_nifti(root / "truncated.nii.gz", phantom(3), (5.0, 1.0, 1.0))
    data = trunc.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    nib.save(nib.Nifti1Image(np.zeros((40, 40), np.int16), np.eye(4)), str(root / "flat2d.nii.gz"))
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_zooms((0.5, 0.5, 0.5))
    hdr.set_sform(np.diag([0.5, 0.5, 0.5, 1.0]), code="scanner")
    (root / "huge.nii").write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 1000)  # header says 16 GB
    mixed = root / "mixed_series"
    write_dicom_series(mixed, phantom(4, (4, 16, 16)), (2.0, 1.0, 1.0), prefix="A", seed=1)
    write_dicom_series(mixed, phantom(5, (4, 16, 16)), (2.0, 1.0, 1.0), prefix="B", seed=2)
    (root / "empty_series").mkdir()
    return root


def test_failures_are_isolated_recorded_and_exit_nonzero(tmp_path):
    src = bad_archive(tmp_path / "src")
    out = tmp_path / "bad.zarr"
    res = CliRunner().invoke(app, ["prep", "drr", str(src), str(out), "--shape", "8", "32", "32", "--size", "32",
                                   "--workers", "0", "--no-progress"])
    assert res.exit_code == 1, res.output
    bad = ["empty_series", "flat2d.nii.gz", "huge.nii", "mixed_series", "truncated.nii.gz"]
    for name in bad:
        assert f"failed: {name}:" in res.output
    assert "memory limit" in res.output.split("failed: huge.nii:")[1].splitlines()[0]
    g = open_store(out)
    ids = [str(s) for s in g["study_id"][:]]
    done = dict(zip(range(len(ids)), g["done"][:]))
    fails = g.attrs["failures"]
    assert sorted(f["path"] for f in fails) == bad
    assert all(f["reason"] and not done[f["index"]] for f in fails)
    assert sum(done.values()) == 2 and {ids[i] for i in done if done[i]} == {"good_a", "good_b"}
    with open(failures_csv_path(out)) as fh:
        assert sorted(r["path"] for r in csv.DictReader(fh)) == bad
    assert str(tmp_path) not in str(fails)  # archive-relative paths only


def test_second_prep_on_same_store_is_refused(archive, tmp_path):
    out = tmp_path / "busy.zarr"
    code = ("import time; from xpgan.pipeline.store import StoreLock; "
            f"StoreLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(app, ["prep", "drr", str(archive), str(out), "--workers", "0", "--no-progress"])
        assert res.exit_code == 2
        assert "another process" in res.output and "is writing this store" in res.output
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_no_phi_in_store(tmp_path):
    phi = ["Doe^Jane", "PID-SECRET-4711", "19651231", "Jane"]
    write_dicom_series(tmp_path / "src" / "series_01", phantom(7, (8, 24, 24)), (3.0, 1.0, 1.0),
                       patient_name=phi[0], patient_id=phi[1], birth_date=phi[2])
    write_nifti(tmp_path / "src" / "vol_02.nii.gz", phantom(8), (5.0, 1.0, 1.0))
    (tmp_path / "src" / "m.csv").write_text(f"path,label,patient_id\nseries_01,1,{phi[1]}\nvol_02.nii.gz,0,PX-2\n")
    out = tmp_path / "p.zarr"
    s = prep_drr(tmp_path / "src" / "m.csv", out, shape=SHAPE, geometry=GEOM, workers=0, progress=False)
    assert s.done == 2
    g = open_store(out)
    patients = [str(p) for p in g["patient"][:]]
    assert all(len(p) == 16 for p in patients) and patients[0] != patients[1]
    texts = [str(dict(g.attrs))] + [str(np.asarray(g[n][:]).tolist()) for n in g.array_keys() if n != "volume"]
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    for value in phi:
        assert not any(value in t for t in texts), value
        assert not any(value.encode() in b for b in blobs), value


def test_cli_geometry_options_are_recorded(archive, tmp_path):
    out = tmp_path / "par.zarr"
    res = CliRunner().invoke(app, ["prep", "drr", str(archive), str(out), "--shape", "8", "16", "16",
                                   "--geometry", "parallel", "--size", "32", "--pixel-mm", "2.5",
                                   "--mu-water", "0.019", "--workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    g = open_store(out)
    assert geometry_from_dict(g.attrs["xpgan"]["geometry"]) == ParallelGeometry(size=32, pixel_mm=2.5)
    assert g.attrs["xpgan"]["physics"]["mu_water_per_mm"] == 0.019 and g["drr"].shape == (6, 32, 32)
    bad = CliRunner().invoke(app, ["prep", "drr", str(archive), str(out), "--geometry", "parallel", "--sdd", "900"])
    assert bad.exit_code == 2 and "cone geometry only" in bad.output
