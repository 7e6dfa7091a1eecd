"""Hostile files that would make a reader use more memory than their header declares or a file may use.

Each test writes its own hostile file: a .nii.gz whose gzip stream holds a valid NIfTI and then tens of MB
of zeros, PNG and DICOM headers that declare huge images in a few bytes.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import InputError
from xpgan.pipeline.ct.readers import GZIP_MARGIN_BYTES, gunzip_capped, read_ct
from xpgan.pipeline.cxr.readers import (
    DECODE_BUDGET_BYTES,
    check_deflated_size,
    decode_peak_bytes,
    read_cxr,
    write_dicom_cxr,
)
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_nifti

SPACING = (2.0, 1.0, 1.0)
BOMB_EXTRA = 24 << 20  # zeros after the NIfTI data in the gzip stream: far beyond GZIP_MARGIN_BYTES


def _good_nifti(path: Path, seed: int = 0) -> Path:
    return write_nifti(path, simple_chest((8, 16, 16), seed, dtype=np.float32), SPACING)


def _gzip_bomb(path: Path, good: Path, extra: int) -> Path:
    """`good`'s NIfTI bytes followed by `extra` zero bytes, as one gzip member (what a crafted file holds)."""
    raw = gzip.decompress(good.read_bytes())
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with open(path, "wb") as fh:
        fh.write(c.compress(raw))
        for _ in range(extra >> 20):
            fh.write(c.compress(zeros))
        fh.write(c.compress(bytes(extra & ((1 << 20) - 1))))
        fh.write(c.flush())
    return path


def test_gzip_bomb_is_refused_from_the_header_size(tmp_path):
    bomb = _gzip_bomb(tmp_path / "bomb.nii.gz", _good_nifti(tmp_path / "good.nii.gz"), BOMB_EXTRA)
    assert bomb.stat().st_size < 100_000  # a small file that inflates to tens of MB
    with pytest.raises(InputError, match="decompressed size exceeds what the header declares"):
        read_ct(bomb)


def test_trailing_bytes_within_the_margin_are_read(tmp_path):
    good = _good_nifti(tmp_path / "good.nii.gz")
    padded = _gzip_bomb(tmp_path / "padded.nii.gz", good, 1000)
    np.testing.assert_array_equal(read_ct(padded).hu, read_ct(good).hu)


def test_capped_stream_stops_at_the_cap(tmp_path):
    path = tmp_path / "z.gz"
    path.write_bytes(gzip.compress(bytes(5000)))
    assert gunzip_capped(path, 5000).size == 5000
    assert gunzip_capped(path, 4000, margin=1000).size == 4000  # exactly need + margin: accepted
    with pytest.raises(InputError, match="exceeds what the header declares"):
        gunzip_capped(path, 4000, margin=999)
    with pytest.raises(EOFError):
        gunzip_capped(path, 6000)


def test_concatenated_gzip_members_are_followed(tmp_path):
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(b"a" * 300) + gzip.compress(b"b" * 200))
    assert bytes(gunzip_capped(path, 500)) == b"a" * 300 + b"b" * 200
    assert GZIP_MARGIN_BYTES < BOMB_EXTRA


def test_prep_drr_fails_the_bomb_and_keeps_the_good_study(tmp_path):
    src = tmp_path / "src"
    _good_nifti(src / "good.nii.gz")
    _gzip_bomb(src / "bomb.nii.gz", _good_nifti(tmp_path / "other.nii.gz", seed=1), BOMB_EXTRA)
    res = CliRunner().invoke(app, ["prep", "drr", str(src), str(tmp_path / "ct.zarr"), "--shape", "8", "16", "16",
                                   "--size", "32", "--backend", "cpu", "--workers", "0", "--no-progress"])
    assert res.exit_code == 1, res.output
    assert "1/2 items done" in res.output
    assert "bomb.nii.gz: decompressed size exceeds what the header declares" in res.output


def _png_header_only(path: Path, width: int, height: int, colour_type: int = 2) -> Path:
    """A PNG whose IHDR declares width x height (8-bit, RGB by default) with a few bytes of image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))
    return path


def test_png_that_would_decode_past_the_budget_is_refused_before_decoding(tmp_path):
    png = _png_header_only(tmp_path / "huge.png", 9400, 9400)
    assert png.stat().st_size < 200
    assert decode_peak_bytes(9400, 9400, 3, 1) > DECODE_BUDGET_BYTES
    with pytest.raises(InputError, match="per-file budget"):
        read_cxr(png)


def test_dicom_that_would_decode_past_the_budget_is_refused_before_decoding(tmp_path):
    path = write_dicom_cxr(tmp_path / "huge.dcm", np.zeros((4, 4), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 14000  # the pixel data stays 32 bytes: decoding would fail, the budget comes first
    ds.save_as(path)
    with pytest.raises(InputError, match="14000x14000 image .* over the .* per-file budget"):
        read_cxr(path)


def _deflated(tmp_path: Path) -> tuple[Path, Path]:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    stored = (np.arange(24 * 20).reshape(24, 20) * 7).astype(np.uint16)
    plain = write_dicom_cxr(tmp_path / "plain.dcm", stored, window=(1500, 3000))
    ds = pydicom.dcmread(plain)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    return plain, tmp_path / "deflated.dcm"


def test_deflated_dicom_radiograph_is_read(tmp_path):
    plain, deflated = _deflated(tmp_path)
    np.testing.assert_array_equal(read_cxr(deflated), read_cxr(plain))


def test_deflated_dicom_is_inflated_only_up_to_the_budget(tmp_path):
    _, deflated = _deflated(tmp_path)
    check_deflated_size(deflated, budget=2000)  # 24 x 20 x 2 bytes of pixels and the header fit
    with pytest.raises(InputError, match="deflated DICOM data inflates to more than the"):
        check_deflated_size(deflated, budget=500)


def test_images_within_the_budget_are_read(tmp_path):
    Image.fromarray(np.full((300, 200, 3), 128, np.uint8)).save(tmp_path / "ok.png")
    assert read_cxr(tmp_path / "ok.png").shape == (300, 200)


def test_a_large_manifest_of_missing_files_keeps_the_store_small_and_streams_its_failures(tmp_path):
    import csv

    import zarr

    from xpgan.pipeline.cxr.prep_cxr import prep_cxr
    from xpgan.pipeline.inspection import summarize_store
    from xpgan.pipeline.schema import open_store
    from xpgan.pipeline.store import FAILURES_IN_STORE

    n = 20_000
    Image.fromarray(np.full((20, 24), 90, np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "m.csv").write_text("path,label\nok.png,1\n" + "".join(f"gone/{i}.png,{i % 2}\n" for i in range(n)))
    summary = prep_cxr([tmp_path / "m.csv"], tmp_path / "c.zarr", size=16, workers=0, progress=False)
    assert summary.done == 1 and summary.failed == n
    assert len(summary.text().splitlines()) < 30 and f"and {n - 20} more (see the failures CSV)" in summary.text()
    assert (tmp_path / "c.zarr" / "zarr.json").stat().st_size < 500_000
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert len(g.attrs["failures"]) == FAILURES_IN_STORE and g.attrs["xpgan"]["failure_count"] == n
    with open(tmp_path / "c.zarr.failures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n and rows[-1]["reason"] == "file not found"
    text = summarize_store(open_store(tmp_path / "c.zarr"), str(tmp_path / "c.zarr"))
    assert f"failures: {n} (the first {FAILURES_IN_STORE} here; all in " in text
    again = prep_cxr([tmp_path / "m.csv"], tmp_path / "c.zarr", size=16, workers=0, progress=False)
    assert again.skipped == 1 and again.failed == n
