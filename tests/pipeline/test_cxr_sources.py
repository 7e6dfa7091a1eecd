"""Discovery of CXR sources: class folders, manifest CSV, Cohen-style metadata.csv (with its quirks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xpgan.errors import InputError
from xpgan.pipeline.cxr.sources import discover

COHEN_HEADER = ("patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,went_icu,view,modality,"
                "date,location,folder,filename,doi,url,license,clinical_notes,other_notes")


def _png(path: Path, seed=0, shape=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _cohen(root: Path, rows, header_trailing_comma=True):
    """rows: (patientid, finding, view, modality, filename, make_file)"""
    lines = [COHEN_HEADER + ("," if header_trailing_comma else "")]
    for pid, finding, view, modality, filename, make in rows:
        lines.append(f"{pid},0,M,50,{finding},Y,,,,{view},{modality},2020,Somewhere,images,{filename},,,,notes,,")
        if make:
            _png(root / "images" / filename, seed=len(lines))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root / "metadata.csv"


COHEN_ROWS = [
    ("p1", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "a.png", True),
    ("p1", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "b.png", True),
    ("p2", "Pneumonia/Bacterial/Streptococcus", "AP", "X-ray", "c.png", True),
    ("p3", "No Finding", "PA", "X-ray", "d.png", True),
    ("p3", "No Finding", "L", "X-ray", "e.png", True),  # lateral: excluded
    ("p4", "Pneumonia/Viral/COVID-19", "Axial", "CT", "f.png", True),  # CT: excluded
    ("p5", "todo", "PA", "X-ray", "g.png", True),  # unlabelled: excluded
    ("p6", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "missing.png", False),  # missing file: still an item
]


@pytest.mark.parametrize("header_comma", [True, False])
def test_cohen_labels_views_modality_and_quirks(tmp_path, header_comma):
    csv_path = _cohen(tmp_path / "covid-chestxray-dataset", COHEN_ROWS, header_trailing_comma=header_comma)
    found = discover([csv_path])
    names = [it.path.name for it in found.items]
    assert names == ["a.png", "b.png", "c.png", "d.png", "missing.png"]
    assert [it.label for it in found.items] == [1, 1, 0, 0, 1]
    assert found.items[0].patient_key == found.items[1].patient_key  # same patient p1
    assert {it.source for it in found.items} == {"covid-chestxray-dataset"}
    assert found.excluded == {"view not selected": 1, "modality not X-ray": 1, "finding unlabelled": 1}
    assert found.problems == []


def test_cohen_folder_and_views_option(tmp_path):
    _cohen(tmp_path / "cohen", COHEN_ROWS)
    found = discover([tmp_path / "cohen"], views=["pa"])  # the folder holding metadata.csv; case-insensitive
    assert [it.path.name for it in found.items] == ["a.png", "d.png", "missing.png"]


def test_class_folders_positive_mapping(tmp_path):
    root = tmp_path / "hospital"
    _png(root / "COVID" / "x1.png")
    _png(root / "normal" / "x2.png")
    _png(root / "pneumonia" / "sub" / "x3.png")  # nested files are found
    _png(root / "normal" / ".hidden.png")
    _png(root / "loose.png")  # not in a class folder
    (root / "normal" / "notes.txt").write_text("not an image")
    found = discover([root])
    assert [(it.path.name, it.label) for it in found.items] == [("x1.png", 1), ("x2.png", 0), ("x3.png", 0)]
    assert found.excluded == {"image outside a class folder": 1, "not a PNG/JPEG/DICOM file (.txt)": 1}
    assert len({it.patient_key for it in found.items}) == 3  # patient = file stem
    found = discover([root], positive=["pneumonia"])
    assert [it.label for it in found.items] == [0, 0, 1]


def test_manifest_paths_labels_patients(tmp_path):
    _png(tmp_path / "site" / "img" / "a.png")
    _png(tmp_path / "site" / "img" / "b.png")
    _png(tmp_path / "site" / "img" / "c.png")
    (tmp_path / "site" / "list.csv").write_text(
        "path,label,patient_id\nimg/a.png,1,P7\nimg/b.png,0,P7\nimg/c.png,covid,\nimg/d.png,2,P9\nimg/e.png,,P9\n")
    found = discover([tmp_path / "site" / "list.csv"])
    assert [(it.path.name, it.label) for it in found.items] == [("a.png", 1), ("b.png", 0), ("c.png", 1)]
    assert found.items[0].patient_key == found.items[1].patient_key == "site/P7"
    assert found.items[2].patient_key == "site/c"  # no patient id: the file stem
    assert found.items[0].path == tmp_path / "site" / "img" / "a.png"
    assert [Path(p).name for p, _ in found.problems] == ["d.png", "e.png"]  # label 2 and no label


def test_source_names_and_namespacing(tmp_path):
    _png(tmp_path / "a" / "covid" / "1.png")
    _png(tmp_path / "b" / "covid" / "1.png")
    found = discover([tmp_path / "a", tmp_path / "b"])
    assert [it.source for it in found.items] == ["a", "b"]
    assert found.items[0].patient_key != found.items[1].patient_key  # same stem, different sources
    found = discover([tmp_path / "a", tmp_path / "b"], source_names=["S1", "S2"])
    assert [it.source for it in found.items] == ["S1", "S2"]
    with pytest.raises(InputError, match="one per SRC"):
        discover([tmp_path / "a", tmp_path / "b"], source_names=["S1"])


def test_duplicate_paths_kept_once(tmp_path):
    _png(tmp_path / "a" / "covid" / "1.png")
    (tmp_path / "m.csv").write_text("path,label\na/covid/1.png,1\n")
    found = discover([tmp_path / "a", tmp_path / "m.csv"])
    assert len(found.items) == 1 and found.excluded == {"duplicate path": 1}


def test_unusable_sources_raise(tmp_path):
    _png(tmp_path / "one.png")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    for src, match in ((tmp_path / "one.png", "no label"), (tmp_path / "other.csv", "neither"),
                       (tmp_path / "empty", "no images"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(InputError, match=match):
            discover([src])
