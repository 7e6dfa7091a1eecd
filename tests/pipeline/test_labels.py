"""Labels that must not vanish, and errors that name the right tool and leave nothing behind.

- The usual spellings of the positive class (covid_19/, SARS-CoV-2/, COVID19 ...) are positive, in class
  folders and manifests; prep cxr's summary warns when the store has no positive item.
- A manifest whose every label is bad gives the first rows' reasons and the count.
- prep drr: a CT folder archive says its labels are unknown; a chest X-ray collection is refused naming prep
  cxr, before any store is made; a fresh store in which nothing could be stored is removed; a resumed store
  made with other options names both values; what lies beside studies/ in a MosMed tree is listed.
- drr render on a store names inspect; inspect on a store prep is writing says so.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import InputError, XPGANError
from xpgan.pipeline.cxr.readers import write_dicom_cxr
from xpgan.pipeline.cxr.sources import POSITIVE_CLASSES, class_key, discover
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_nifti

runner = CliRunner()
CXR = ["--size", "32", "--workers", "0", "--no-progress", "--test-fraction", "0.5"]
CT = ["--shape", "8", "16", "16", "--size", "32", "--backend", "cpu", "--workers", "0", "--no-progress"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _png(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (40, 40), dtype=np.uint8)
    Image.fromarray(img).save(path)


def _class_folders(root, names, per_class=2):
    for k, name in enumerate(names):
        for i in range(per_class):
            _png(root / name / f"{name}_{i}.png", seed=10 * k + i)
    return root


@pytest.mark.parametrize("name", ["covid", "COVID", "covid19", "covid-19", "covid_19", "Covid 19", "COVID-19",
                                  "sars-cov-2", "SARS_CoV_2", "sarscov2", "2019-nCoV", "covid_positive"])
def test_the_usual_spellings_of_the_positive_class_are_positive(tmp_path, name):
    found = discover([_class_folders(tmp_path, [name, "normal"])])
    labels = {it.path.parent.name: it.label for it in found.items}
    assert labels == {name: 1, "normal": 0}


@pytest.mark.parametrize("name", ["normal", "non-covid", "covid-negative", "pneumonia", "no_finding"])
def test_other_class_names_are_negative(name):
    assert class_key(name) not in {class_key(p) for p in POSITIVE_CLASSES}


def test_manifest_labels_take_the_same_spellings(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    (tmp_path / "m.csv").write_text("path,label\n0.png,COVID_19\n1.png,SARS-CoV-2\n2.png,normal\n")
    found = discover([tmp_path / "m.csv"])
    assert [it.label for it in found.items] == [1, 1, 0]


def test_prep_cxr_warns_when_the_store_has_no_positive_item(tmp_path):
    src = _class_folders(tmp_path / "src", ["covid_pneumonia", "normal"])
    res = run("prep", "cxr", src, tmp_path / "c.zarr", *CXR)
    assert res.exit_code == 0, res.output
    warning = [ln for ln in res.output.splitlines() if ln.startswith("warning:")]
    assert warning == [f"warning: {tmp_path / 'c.zarr'} has no positive (COVID-19) item, so a classifier cannot "
                       "learn from it; the classes found: covid_pneumonia (negative), normal (negative); name the "
                       "positive class folder or manifest label with --positive NAME (recognised without it: "
                       "covid, covid-19, sars-cov-2, 2019-ncov, covid-positive; case, '-', '_', '.' and spaces "
                       "ignored, so covid_19 and SARS_CoV_2 match), then prep cxr again"]
    res = run("prep", "cxr", src, tmp_path / "d.zarr", *CXR, "--positive", "covid pneumonia")
    assert res.exit_code == 0 and "warning:" not in res.output


def test_a_manifest_whose_every_label_is_bad_says_why_and_how_many(tmp_path):
    for i in range(5):
        _png(tmp_path / f"{i}.png", seed=i)
    rows = ["yes", "no", "1.5", "positive", "yes"]
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{i}.png,{v}\n" for i, v in enumerate(rows)))
    res = run("prep", "cxr", tmp_path / "m.csv", tmp_path / "c.zarr", *CXR)
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith("error: no usable images in the sources: 5 rows/files refused (first 3): "
                                 "m.csv line 2: label 'yes' is not 0, 1 or a class name (positive classes: ")
    assert "m.csv line 3: label 'no' is not" in res.output and "m.csv line 4: label '1.5' is not" in res.output
    assert "line 5" not in res.output and not (tmp_path / "c.zarr").exists()


def test_prep_drr_on_a_folder_archive_says_the_labels_are_unknown(tmp_path):
    for i in range(2):
        write_nifti(tmp_path / "src" / f"s{i}.nii.gz", simple_chest((8, 24, 24), seed=i), (4.0, 2.0, 2.0))
    res = run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", *CT)
    assert res.exit_code == 0, res.output
    assert ("note: every study's label is unknown (a folder of NIfTI files or DICOM series has none): train "
            "--mode drr needs labels, --mode xpgan trains G and D without them; give the labels with a manifest "
            "CSV path,label") in res.output


def test_prep_drr_refuses_a_chest_xray_collection_naming_prep_cxr(tmp_path):
    cohen = tmp_path / "cohen"
    _png(cohen / "images" / "a.png")
    (cohen / "metadata.csv").write_text("patientid,finding,view,modality,folder,filename\n1,COVID-19,PA,X-ray,"
                                        "images,a.png\n")
    res = run("prep", "drr", cohen, tmp_path / "ct.zarr", *CT)
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith(f"error: {cohen}: it holds a metadata.csv and 1 PNG/JPEG images, not a CT "
                                 f"archive; xpgan prep cxr reads chest X-rays: xpgan prep cxr {cohen} OUT.zarr")
    dicoms = tmp_path / "dx"
    for i in range(2):
        write_dicom_cxr(dicoms / f"p{i}" / "IM0001.dcm", np.full((40, 40), 100 * i, np.uint16), modality="DX")
    res = run("prep", "drr", dicoms, tmp_path / "ct.zarr", *CT)
    assert res.exit_code == 2
    assert "its DICOM files are radiographs (modality DX), not a CT archive; xpgan prep cxr" in res.output
    assert not (tmp_path / "ct.zarr").exists()


def test_a_fresh_store_in_which_nothing_could_be_stored_is_not_kept(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.nii.gz").write_bytes(b"not a nifti file at all")
    res = run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", *CT)
    assert res.exit_code == 1
    assert f"no item could be stored, so {tmp_path / 'ct.zarr'} was not kept" in res.output
    assert not (tmp_path / "ct.zarr").exists() and (tmp_path / "ct.zarr.failures.csv").is_file()


@pytest.mark.slow
def test_an_unreachable_scheduler_leaves_no_store(tmp_path):
    write_nifti(tmp_path / "src" / "s.nii.gz", simple_chest((8, 24, 24), seed=0), (4.0, 2.0, 2.0))
    res = run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", *CT[:8], "--no-progress",
              "--scheduler", "tcp://127.0.0.1:9")
    assert res.exit_code == 2 and "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in res.output
    assert not (tmp_path / "ct.zarr").exists()


def test_a_resumed_store_made_with_other_options_names_both_values(tmp_path):
    write_nifti(tmp_path / "src" / "CT-1" / "s.nii.gz", simple_chest((8, 24, 24), seed=0), (4.0, 2.0, 2.0))
    assert run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", *CT).exit_code == 0
    res = run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", "--shape", "8", "24", "24", "--size", "64",
              *CT[6:])
    assert res.exit_code == 2
    assert ("was made from different inputs or options (geometry.size: the store has 32, this run 64; shape: the "
            "store has [8, 16, 16], this run [8, 24, 24]); rerun with --overwrite") in res.output


def test_mosmed_discovery_lists_what_lies_beside_studies(tmp_path):
    write_nifti(tmp_path / "studies" / "CT-0" / "study_0001.nii.gz", simple_chest((8, 24, 24), seed=0),
                (4.0, 2.0, 2.0))
    (tmp_path / "dicom" / "study_0001").mkdir(parents=True)
    (tmp_path / "dataset_registry.csv").write_text("study_file,category\n")
    from xpgan.pipeline.ct.discover import discover_ct

    line = discover_ct(tmp_path).summary()
    assert line == ("discovery: found 1 (1 NIfTI file(s), 0 folder(s)), skipped 1: 1 beside studies/ (a MosMed "
                    "tree is read from studies/CT-0..CT-4 only) (dicom/)")


def test_drr_render_on_a_store_names_inspect(tmp_path):
    for i in range(2):
        write_nifti(tmp_path / "src" / f"s{i}.nii.gz", simple_chest((8, 24, 24), seed=i), (4.0, 2.0, 2.0))
    assert run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", *CT).exit_code == 0
    res = run("drr", "render", tmp_path / "ct.zarr", tmp_path / "o.png", "--backend", "cpu")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith(f"error: {tmp_path / 'ct.zarr'}: a Zarr store (what xpgan prep writes), not a CT "
                                 f"volume: `xpgan inspect {tmp_path / 'ct.zarr'} --item N` draws")


def test_inspect_on_a_store_prep_is_writing_says_so(tmp_path):
    from xpgan.pipeline import store as st

    for i in range(2):
        write_nifti(tmp_path / "src" / f"s{i}.nii.gz", simple_chest((8, 24, 24), seed=i), (4.0, 2.0, 2.0))
    assert run("prep", "drr", tmp_path / "src", tmp_path / "ct.zarr", *CT).exit_code == 0
    with st.StoreLock(tmp_path / "ct.zarr"):
        res = run("inspect", tmp_path / "ct.zarr")
    first = res.output.splitlines()[0]
    assert "is writing it now: wait for it to finish" in first and "rerun it to resume" not in first


def test_errors_are_input_errors():
    assert issubclass(InputError, XPGANError)
