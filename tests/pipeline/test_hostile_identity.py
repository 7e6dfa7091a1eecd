"""One identity per store: a CT store knows what each source item held (size and content sample), and its
items' chunks are bound to their rows by the digests recorded at write time."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from xpgan.errors import XPGANError
from xpgan.pipeline import fingerprint as fp_mod
from xpgan.pipeline import store as st
from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.synth.writers import write_nifti

SHAPE = (8, 24, 24)
GEOM = {"kind": "cone", "size": 24}


def _archive(root, seed, n=3):
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_nifti(root / f"study_{i}.nii.gz", rng.normal(-300, 300, (10, 30, 28)).astype(np.float32),
                    (4.0, 1.0, 1.0))
    return root


def _prep(src, out, **kw):
    return prep_drr(src, out, shape=SHAPE, geometry=GEOM, workers=0, progress=False, **kw)


def test_resume_from_another_archive_with_the_same_names_is_refused_naming_the_items(tmp_path):
    src = _archive(tmp_path / "src", seed=0)
    out = tmp_path / "ct.zarr"
    _prep(src, out)
    before = sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file())
    shutil.rmtree(src)
    _archive(src, seed=1, n=2)  # same names, other volumes...
    shutil.copy(tmp_path / "src" / "study_0.nii.gz", src / "study_2.nii.gz")  # ... of the same size
    with pytest.raises(XPGANError, match=r"3 source item\(s\) differ from those the store was made from \(same "
                                         r"name, other size or content\): study_0.nii.gz, study_1.nii.gz, "
                                         r"study_2.nii.gz; point it at the sources it was made from, or rerun "
                                         r"with --overwrite"):
        _prep(src, out)
    assert sorted(p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()) == before  # nothing kept or mixed


def test_a_copied_archive_resumes_the_store(tmp_path):
    src = _archive(tmp_path / "src", seed=0)
    out = tmp_path / "ct.zarr"
    _prep(src, out)
    os.utime(src / "study_1.nii.gz", (1, 1))  # a copy's new times do not change what the files hold
    assert _prep(src, out).skipped == 3


def test_source_fingerprint_sees_the_end_of_a_large_file_and_a_folder_of_files(tmp_path):
    big = tmp_path / "big.bin"
    data = bytearray(3 * fp_mod.FINGERPRINT_SAMPLE)
    big.write_bytes(bytes(data))
    first = fp_mod.source_fingerprint(big)
    data[-1] = 1
    big.write_bytes(bytes(data))
    assert fp_mod.source_fingerprint(big) != first
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"{i}.dcm").write_bytes(bytes([i]) * 100)
    fp = fp_mod.source_fingerprint(series)
    (series / "0.dcm").write_bytes(bytes([9]) * 100)  # the first file, same size
    assert fp_mod.source_fingerprint(series) != fp
    assert fp_mod.source_fingerprint(tmp_path / "gone.nii") == "missing"


def _swap_chunks_in_shard(shard_file, k, a, b):
    """Swap the index entries of items a and b of a shard: both chunks stay valid, each at the other's row."""
    import google_crc32c

    data = bytearray(shard_file.read_bytes())
    n = 16 * k
    index = np.frombuffer(bytes(data[-n - 4:-4]), dtype="<u8").reshape(k, 2).copy()
    index[[a, b]] = index[[b, a]]
    raw = index.tobytes()
    data[-n - 4:] = raw + np.array([google_crc32c.value(raw)], dtype="<u4").tobytes()
    shard_file.write_bytes(bytes(data))


def _files(store):
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("swap", ["within a shard", "whole shard files"])
def test_swapped_valid_chunks_are_caught_everywhere_and_redone_on_resume(tmp_path, swap):
    from xpgan.model.data import ct_store_info
    from xpgan.pipeline.inspection import check_store
    from xpgan.pipeline.schema import StoreDamageError

    src = _archive(tmp_path / "src", seed=0, n=4)
    out = tmp_path / "ct.zarr"
    _prep(src, out, items_per_shard=2)
    ref = _files(out)
    if swap == "within a shard":
        _swap_chunks_in_shard(out / "volume" / "c" / "0" / "0" / "0" / "0", 2, 0, 1)
    else:
        a, b = out / "drr" / "c" / "0" / "0" / "0", out / "drr" / "c" / "1" / "0" / "0"
        data_a = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data_a)
    for full in (False, True):
        text, damaged = check_store(out, full=full)
        assert damaged == (2 if swap == "within a shard" else 4), text
        assert "chunk is not the one written for this item" in text
    with pytest.raises(StoreDamageError, match="marked done have missing or damaged data"):
        ct_store_info(out)
    resumed = _prep(src, out)
    assert resumed.done == 4 and len(resumed.redone) >= 1
    assert _files(out) == ref


def test_verify_deep_re_renders_drrs_and_catches_one_that_is_not_its_volumes(tmp_path):
    import zarr
    from typer.testing import CliRunner

    from xpgan.cli import app

    src = _archive(tmp_path / "src", seed=0, n=3)
    out = tmp_path / "ct.zarr"
    _prep(src, out)
    runner = CliRunner()
    ok = runner.invoke(app, ["inspect", "--verify", "--deep", str(out)])
    assert ok.exit_code == 0 and "verify: 3 done items OK" in ok.output and "DRRs re-rendered" in ok.output
    g = zarr.open_group(str(out), mode="r+")
    row = {name: g[name][0] for name in ("volume", "label", "severity", "study_id", "spacing")}
    st.write_items(g, {0: {**row, "drr": g["drr"][1]}})  # written the proper way: its digest matches
    assert runner.invoke(app, ["inspect", "--verify", str(out)]).exit_code == 0
    bad = runner.invoke(app, ["inspect", "--verify", "--deep", str(out)])
    assert bad.exit_code == 1
    assert "drr/c/0/0/0: the stored DRR differs from a re-render of the stored volume" in bad.output


# ------------------------------------------------------------------------------ CXR identity, salt, creation

def _cxr_source(root, seed, n=4):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / ("covid" if i % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(folder / f"img{i}.png")
    return root


def _prep_cxr(src, out, **kw):
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr

    return prep_cxr([src], out, size=16, workers=0, progress=False, **kw)


def test_a_cxr_store_whose_source_images_were_replaced_in_place_is_refused_naming_them(tmp_path):
    src = _cxr_source(tmp_path / "src", seed=0)
    out = tmp_path / "cxr.zarr"
    _prep_cxr(src, out)
    before = _files(out)
    _cxr_source(tmp_path / "other", seed=5)
    shutil.copy(tmp_path / "other" / "covid" / "img1.png", src / "covid" / "img1.png")  # same name, other image
    with pytest.raises(XPGANError, match=r"1 source item\(s\) differ from those the store was made from .*"
                                         r"img1.png; point it at the sources it was made from"):
        _prep_cxr(src, out)
    assert _files(out) == before


def test_a_store_cut_short_while_being_created_is_made_again_by_a_rerun(tmp_path, monkeypatch):
    import zarr

    src = _cxr_source(tmp_path / "src", seed=0)
    out = tmp_path / "cxr.zarr"
    real = zarr.Group.attrs.fget

    def killed(self):  # the kill lands after the arrays, before the attributes that make the store ours
        raise KeyboardInterrupt

    monkeypatch.setattr(zarr.Group, "attrs", property(killed))
    with pytest.raises(BaseException):
        _prep_cxr(src, out)
    monkeypatch.setattr(zarr.Group, "attrs", property(real))
    assert (out / "zarr.json").is_file() and (out / "done").is_dir()
    assert _prep_cxr(src, out).done == 4


def test_a_store_moved_without_its_salt_is_refused_advising_the_salt_before_any_deletion(tmp_path):
    src = _cxr_source(tmp_path / "src", seed=0)
    out = tmp_path / "a" / "cxr.zarr"
    first = _prep_cxr(src, out)
    moved = tmp_path / "b" / "cxr.zarr"
    moved.parent.mkdir()
    shutil.move(out, moved)  # the salt stays at a/cxr.zarr.salt
    with pytest.raises(XPGANError) as err:
        _prep_cxr(src, moved)
    text = str(err.value)
    assert "its salt file" in text and "is missing" in text and "Copy the cxr.zarr.salt" in text
    assert text.index("--salt-file") < text.index("--overwrite") and "deleting its 4 finished item(s)" in text
    assert not (tmp_path / "b" / "cxr.zarr.salt").exists()  # no new key was made
    other = tmp_path / "other.salt"
    other.write_text("f" * 64)
    with pytest.raises(XPGANError, match="is not the salt this store was made with"):
        _prep_cxr(src, moved, salt_file=other)
    assert _prep_cxr(src, moved, salt_file=tmp_path / "a" / "cxr.zarr.salt").skipped == first.done == 4
    shutil.copy(tmp_path / "a" / "cxr.zarr.salt", tmp_path / "b" / "cxr.zarr.salt")
    assert _prep_cxr(src, moved).skipped == 4


# -------------------------------------------------------------------------------------- verify every array

def test_verify_catches_rewritten_labels_splits_severities_and_a_resume_redoes_them(tmp_path):
    import zarr

    from xpgan.pipeline.inspection import check_store

    src = _archive(tmp_path / "src", seed=0, n=3)
    out = tmp_path / "ct.zarr"
    _prep(src, out)
    ref = _files(out)
    g = zarr.open_group(str(out), mode="r+")
    g["label"][1] = 1 - int(g["label"][1])  # a valid chunk with another value
    g["severity"][2] = 4
    text, damaged = check_store(out, full=True)
    assert damaged == 2, text
    assert "value is not the one written for this item" in text and "label" in text and "severity" in text
    assert _prep(src, out).done == 3 and _files(out) == ref

    csrc = _cxr_source(tmp_path / "csrc", seed=1)
    cout = tmp_path / "cxr.zarr"
    _prep_cxr(csrc, cout)
    c = zarr.open_group(str(cout), mode="r+")
    c["split"][0] = 1 - int(c["split"][0])
    text, damaged = check_store(cout, full=True)
    assert damaged == 1 and "split" in text, text


def test_a_hand_edited_array_shape_in_zarr_json_is_caught_when_the_store_is_opened(tmp_path):
    import json

    from typer.testing import CliRunner

    from xpgan.cli import app
    from xpgan.model.data import ct_store_info
    from xpgan.pipeline.schema import StoreDamageError

    src = _archive(tmp_path / "src", seed=0, n=2)
    out = tmp_path / "ct.zarr"
    _prep(src, out)
    meta_file = out / "volume" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["shape"][2] = 16  # 24 -> 16: readers would crop silently
    meta_file.write_text(json.dumps(meta))
    res = CliRunner().invoke(app, ["inspect", "--verify", str(out)])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1, res.output
    assert "metadata (zarr.json: shape, dtype, chunks or codecs) of array(s) volume differs" in res.output
    with pytest.raises(StoreDamageError, match="array.s. volume differs from what the store was made with"):
        ct_store_info(out)


# ---------------------------------------------------------------------------------- one study, one record

def test_the_same_nifti_through_a_symlink_alias_is_one_study(tmp_path):
    src = _archive(tmp_path / "src", seed=0, n=2)
    os.symlink(src / "study_0.nii.gz", src / "alias.nii.gz")
    summary = _prep(src, tmp_path / "ct.zarr")
    assert summary.total == 2 and "1 same study as alias.nii.gz (study_0.nii.gz)" in summary.discovery
    (tmp_path / "m.csv").write_text("path,label\nsrc/study_0.nii.gz,1\nsrc/alias.nii.gz,0\n")
    with pytest.raises(XPGANError, match=r"study_0.nii.gz \(label 1, severity -1\) and src/alias.nii.gz \(label 0, "
                                         r"severity -1\) are the same study"):
        _prep(tmp_path / "m.csv", tmp_path / "m.zarr")


def test_a_cxr_alias_is_one_item_and_identical_content_in_two_sources_is_one_patient(tmp_path):
    import zarr

    from xpgan.pipeline.cxr.sources import discover

    a = _cxr_source(tmp_path / "A", seed=0, n=12)
    os.symlink(a / "covid" / "img1.png", tmp_path / "alias.png")
    (tmp_path / "m.csv").write_text("path,label\nA/covid/img1.png,1\nalias.png,0\n")
    found = discover([tmp_path / "m.csv"])
    assert found.items == [] and len(found.problems) == 2 and "conflicting labels" in found.problems[0][1]
    shutil.copytree(a, tmp_path / "B")  # B holds copies of A's files
    out = tmp_path / "cxr.zarr"
    summary = _prep_cxr_many([a, tmp_path / "B"], out)
    assert summary.done == 24 and any("12 image(s) have the same content as another file" in n for n in summary.notes)
    g = zarr.open_group(str(out), mode="r")
    split, patient, source = g["split"][:], [str(x) for x in g["patient"][:]], [str(x) for x in g["source"][:]]
    for i in range(12):  # item i of A and its copy (item 12 + i of B) are one patient, on one side
        assert patient[i] == patient[12 + i] and split[i] == split[12 + i] and source[i] != source[12 + i]


def _prep_cxr_many(srcs, out):
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr

    return prep_cxr(srcs, out, size=16, workers=0, progress=False, test_fraction=0.25)
