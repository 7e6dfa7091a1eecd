"""xpgan.pipeline.ct.discover: MosMed trees, folders, manifests; deterministic ids and labels."""
import numpy as np
import pytest

from xpgan.errors import InputError, XPGANError
from xpgan.pipeline.ct.discover import discover_ct
from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

VOL = np.zeros((4, 6, 6), np.float32)


def test_mosmed_tree_labels_severity_ids(tmp_path):
    for k, n in [(3, 7), (0, 12), (1, 3), (0, 2), (4, 40)]:
        write_nifti(tmp_path / "COVID19_1110" / "studies" / f"CT-{k}" / f"study_{n:04d}.nii.gz", VOL, (1, 1, 1))
    (tmp_path / "COVID19_1110" / "dataset_registry.csv").write_text(
        "study_file,category\nstudies/CT-3/study_0007.nii.gz,CT-2\n")
    d = discover_ct(tmp_path / "COVID19_1110")
    assert d.format == "mosmed"
    got = [(it.study_id, it.label, it.severity) for it in d.items]
    assert got == [("study_0002", 0, 0), ("study_0003", 1, 1), ("study_0007", 1, 3), ("study_0012", 0, 0),
                   ("study_0040", 1, 4)]
    assert d.items[2].rel == "studies/CT-3/study_0007.nii.gz"
    assert any("registry disagrees" in note for note in d.notes)
    assert [it.study_id for it in discover_ct(tmp_path / "COVID19_1110" / "studies").items] == [g[0] for g in got]


def test_folder_of_nifti_and_dicom_series_and_empty_folder(tmp_path):
    write_nifti(tmp_path / "b" / "scan2.nii.gz", VOL, (1, 1, 1))
    write_nifti(tmp_path / "a.nii", VOL, (1, 1, 1))
    write_dicom_series(tmp_path / "patients" / "series_x", VOL, (1, 1, 1))
    (tmp_path / "missing_series").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "old.zarr").mkdir()
    d = discover_ct(tmp_path)
    assert d.format == "folder"
    assert [it.study_id for it in d.items] == ["a", "b/scan2", "missing_series", "patients/series_x"]
    assert all(it.label == -1 and it.severity == -1 for it in d.items)
    assert [it.study_id for it in discover_ct(tmp_path).items] == [it.study_id for it in d.items]


def test_manifest_paths_relative_to_csv(tmp_path):
    write_nifti(tmp_path / "data" / "x.nii.gz", VOL, (1, 1, 1))
    write_nifti(tmp_path / "data" / "y.nii.gz", VOL, (1, 1, 1))
    (tmp_path / "data" / "m.csv").write_text("path,label,patient_id,study_id\ny.nii.gz,1,P7,\nx.nii.gz,0,P8,s-x\n")
    d = discover_ct(tmp_path / "data" / "m.csv")
    assert d.format == "manifest"
    assert [(it.study_id, it.label, it.patient_id) for it in d.items] == [("y", 1, "P7"), ("s-x", 0, "P8")]
    assert d.items[0].path == str(tmp_path / "data" / "y.nii.gz")


@pytest.mark.parametrize("body,match", [("path,label\na.nii,7\n", "label 7"),
                                        ("path,label,study_id\na.nii,1,s\nb.nii,0,s\n", "repeats"),
                                        ("file,label\na.nii,1\n", "columns")])
def test_bad_manifest_is_a_user_error(tmp_path, body, match):
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(XPGANError, match=match):
        discover_ct(tmp_path / "m.csv")


def test_nothing_found_is_an_input_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(InputError, match="no CT studies"):
        discover_ct(tmp_path)
