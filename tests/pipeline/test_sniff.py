"""xpgan.pipeline.sniff: the one DICOM/NIfTI sniffer and the symlink-safe walk of both discoveries."""
import os

import pytest

from xpgan.pipeline.sniff import dicom_like_name, has_dicom_magic, is_dicom_file, is_nifti_name, walk_once


def test_dicom_magic_preamble_and_raw_dataset(tmp_path):
    (tmp_path / "p10").write_bytes(b"\0" * 128 + b"DICM" + b"\2\0")
    (tmp_path / "raw").write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100")
    (tmp_path / "text.dcm").write_text("not dicom at all, but long enough " * 10)
    (tmp_path / "short").write_bytes(b"DICM")
    assert has_dicom_magic(tmp_path / "p10") and has_dicom_magic(tmp_path / "raw")
    assert not has_dicom_magic(tmp_path / "text.dcm") and not has_dicom_magic(tmp_path / "short")
    assert is_dicom_file(tmp_path / "text.dcm") and not is_dicom_file(tmp_path / "short")  # suffix or magic
    with pytest.raises(OSError):
        has_dicom_magic(tmp_path / "missing")
    assert not is_dicom_file(tmp_path / "missing")


@pytest.mark.parametrize("name,like", [("IM0001.dcm", True), ("IMG0001", True), ("IM.0001", True),
                                       ("1.2.840.113619.2.55.3.7", True), ("x.IMA", True), ("DICOMDIR", False),
                                       ("README", False), ("readme.txt", False), ("thumb.jpg", False),
                                       (".hidden.dcm", False)])
def test_dicom_like_names(name, like):
    assert dicom_like_name(name) is like


def test_nifti_names():
    assert is_nifti_name("a.nii") and is_nifti_name("B.NII.GZ") and not is_nifti_name("a.nii.bak")


def test_walk_once_follows_links_once_and_reports_loops(tmp_path):
    for d in ("a/x", "b", ".git", "old.zarr"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "a" / "up").symlink_to("..", target_is_directory=True)  # loop
    (tmp_path / "a" / "self").symlink_to(".", target_is_directory=True)  # loop
    (tmp_path / "b" / "again").symlink_to(tmp_path / "a" / "x", target_is_directory=True)  # a second way
    (tmp_path / "c").symlink_to(tmp_path / "b", target_is_directory=True)  # walked later: b already walked
    def skip(name):
        return "hidden" if name.startswith(".") else ("Zarr" if name.endswith(".zarr") else None)

    walked, pruned = [], []
    for root, _, _, out in walk_once(tmp_path, skip=skip):
        rel = os.path.relpath(root, tmp_path)
        walked.append(rel)
        pruned += [(f"{rel}/{d}", reason) for d, reason in out]
    assert walked == [".", "a", "a/x", "b"]
    assert sorted(pruned) == [("./.git", "hidden"), ("./c", "same folder as b"), ("./old.zarr", "Zarr"),
                              ("a/self", "symlink loop"), ("a/up", "symlink loop"), ("b/again", "same folder as a/x")]


def test_discovery_lists_a_second_way_to_a_series_once(tmp_path):
    import numpy as np

    from xpgan.pipeline.ct.discover import discover_ct
    from xpgan.pipeline.synth.writers import write_dicom_series

    write_dicom_series(tmp_path / "a" / "series", np.zeros((3, 4, 4), np.float32), (1.0, 1.0, 1.0))
    (tmp_path / "b").symlink_to(tmp_path / "a", target_is_directory=True)
    disc = discover_ct(tmp_path)
    assert [it.rel for it in disc.items] == ["a/series"]
    assert disc.skipped == [("b", "same folder as a")] and disc.skipped_counts() == {"same folder": 1}
    assert disc.summary() == "discovery: found 1 (0 NIfTI file(s), 1 folder(s)), skipped 1: 1 same folder as a (b)"
