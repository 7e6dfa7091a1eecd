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
