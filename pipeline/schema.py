"""The store format: one owner for array names, dtypes, shapes, attribute keys, codes and the format version.

Everything that writes or reads an xpgan Zarr store (prep drr, prep cxr, inspect, the model's datasets, the
tests' fixtures) takes its names from here and opens stores with `open_store`. docs/design.md describes
the same format for people; tests/pipeline/test_schema.py checks its tables against `FIELDS`.

Format versions
---------------
1  the first release: chunks compressed (Blosc LZ4 inside shards, zstd elsewhere), no chunk checksums
   (only the shard index carried a crc32c). Still read; not resumed (prep asks for --overwrite).
2  every chunk ends in a crc32c checksum (Zarr v3 `crc32c` codec, the last codec of each array's chain;
   inside shards, of the inner chunks' chain), so damaged bytes fail loudly when read.
3  array `digest`: each item's row records the checksums its chunks in the sharded arrays (images,
   volumes) were written with, so a chunk moved to another item (each chunk still valid) is caught.
A store without a version attribute is version 1. A newer or unknown version is refused.

Public API
----------
FORMAT_VERSION, READABLE_VERSIONS, KINDS; DIGEST (the per-item chunk digest array, format 3), format_digest(crcs),
parse_digest(text); attribute keys META ("xpgan"), FAILURES, KIND, VERSION, IDENTITY,
COMPLETE, ITEMS_PER_SHARD; codes LABEL_*, SPLIT_*, SEVERITY_*; LABEL_NAMES, SPLIT_NAMES.
Field(name, dtype, dims, fill, meaning, optional) and FIELDS[kind]: the arrays of each store kind.
ArraySpec(dtype, item_shape, fill_value): one per-item array as the writer creates it.
item_arrays(kind, sizes, optional=()) -> {name: ArraySpec} (without `done`, which the writer adds).
chunk_codecs(sharded) -> the bytes-to-bytes codecs of a new array (compression, then crc32c).
image_map(p), IMAGE_MAP_NAME, P_REF, MAP_POWER, image_map_attrs(): the stored DRR map (drr.physics).
lock_path, failures_csv_path, salt_path: files beside a store (beside the resolved store path).
open_store(path, kind=None) -> zarr.Group, read-only; InputError / StoreDamageError (one line) when the path
    is not an xpgan store of that kind, its format version is newer or unknown, a `zarr.json` is damaged, or
    a required array is missing or has the wrong dtype.
store_version(meta) -> int.
value_crc(dtype, value): an item's value of a small array in its `digest` row; array_metadata_digests(path,
    names) / check_array_metadata(path, meta): each array's zarr.json as made (attribute ARRAY_METADATA).
identity_digest(path) -> str | None: what a store was made from, in 16 hex digits (a moved store keeps it).
ct_render_setup(group, path, purpose, size=None) -> (Geometry, mu_water): how a CT store's DRRs were rendered
    (attributes xpgan.geometry and xpgan.physics.mu_water_per_mm), to render more views the same way.
StoreDamageError: damaged or missing store data (one line, names the store and what is wrong).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from xpgan.drr.physics import IMAGE_MAP_NAME, MAP_POWER, P_REF, image_map_attrs
from xpgan.drr.physics import line_integral_to_image as image_map
from xpgan.errors import InputError, XPGANError
from xpgan.pipeline.privacy import beside, salt_path

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
KINDS = ("ct", "cxr")

# group attributes
META = "xpgan"          # the metadata dict (kind, version, identity, complete, items_per_shard, kind-specific)
FAILURES = "failures"   # list of {index, id, path, reason}
# keys of the metadata dict
KIND, VERSION, IDENTITY, COMPLETE, ITEMS_PER_SHARD = "kind", "version", "identity", "complete", "items_per_shard"
FAILURE_COUNT = "failure_count"  # failed items of the last prep run (the attribute "failures" holds the first)
ARRAY_METADATA = "array_metadata"  # {array: digest of its zarr.json as made} (array_metadata_digests)

LABEL_POSITIVE, LABEL_NEGATIVE, LABEL_UNKNOWN = 1, 0, -1
LABEL_NAMES = {LABEL_POSITIVE: "COVID-19 positive", LABEL_NEGATIVE: "negative", LABEL_UNKNOWN: "unknown"}
SPLIT_TRAIN, SPLIT_TEST, SPLIT_NONE = 0, 1, -1
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_TEST: "test"}
SEVERITY_UNKNOWN = -1
SEVERITY_GRADES = (0, 1, 2, 3, 4)  # MosMed CT-0..CT-4

# keys of a CT store's metadata dict that describe how its DRRs were rendered
GEOMETRY, PHYSICS, MU_WATER = "geometry", "physics", "mu_water_per_mm"

REPREP = "prep the store again (the same command with --overwrite)"

__all__ = ["ArraySpec", "COMPLETE", "FAILURES", "FIELDS", "FORMAT_VERSION", "Field", "IDENTITY", "IMAGE_MAP_NAME",
           "ITEMS_PER_SHARD", "KIND", "KINDS", "LABEL_NAMES", "LABEL_NEGATIVE", "LABEL_POSITIVE", "LABEL_UNKNOWN",
           "MAP_POWER", "META", "P_REF", "READABLE_VERSIONS", "SEVERITY_GRADES", "SEVERITY_UNKNOWN", "SPLIT_NAMES",
           "SPLIT_NONE", "SPLIT_TEST", "SPLIT_TRAIN", "StoreDamageError", "VERSION", "chunk_codecs",
           "failures_csv_path", "image_map", "image_map_attrs", "item_arrays", "lock_path", "open_store",
           "salt_path", "store_version", "read", "chunk_file", "open_group", "open_array", "array_names", "first_line",
           "check_version", "ct_render_setup", "GEOMETRY", "PHYSICS", "MU_WATER", "DIGEST", "format_digest",
           "parse_digest", "identity_digest", "value_crc", "array_metadata_digests", "check_array_metadata",
           "ARRAY_METADATA"]


class StoreDamageError(XPGANError):
    """A store whose data or metadata is missing or damaged; the message is one line naming the store.

    Takes the message alone, so that torch's DataLoader can re-raise it from a worker; it then passes the
    worker's formatted traceback, from which the original one-line message is recovered."""

    def __init__(self, message: str):
        message = str(message)
        if "Traceback (most recent call last)" in message:
            last = message.rstrip().splitlines()[-1]
            head, sep, tail = last.partition(": ")
            message = tail if sep and head.endswith(type(self).__name__) else last
        super().__init__(message)


@dataclass(frozen=True)
class Field:
    """One array of a store kind, as docs/design.md lists it."""
    name: str
    dtype: str                 # NumPy dtype name, or "str" (Zarr v3 variable-length UTF-8)
    dims: tuple[str, ...]      # item dimensions after N: numbers, or size names (D, H, W: volume; S: image)
    fill: Any                  # value of items not written (failed or not yet processed)
    meaning: str
    optional: bool = False     # present only in some stores (see meaning)


DIGEST = "digest"
# Written by the store writer with every item, like `done`; absent in format 1 and 2 stores.
DIGEST_FIELD = Field(DIGEST, "str", (), "", "`name=crc` for each array (sorted by name, space-separated): the "
                     "crc32c (8 hex digits) its chunk of item i (sharded arrays) or its value (small arrays) was "
                     "written with; `input=` the fingerprint of the source file it was made from (CXR stores)",
                     optional=True)
INPUT = "input"  # key of a digest row: the source fingerprint (pipeline.fingerprint) of the item's file

FIELDS: dict[str, tuple[Field, ...]] = {
    "ct": (
        Field("volume", "int16", ("D", "H", "W"), 0, "resized volume in HU, `[d, h, w]` = (I, P, L)"),
        Field("drr", "float32", ("S", "S"), 0.0, "DRR image `1 − exp(−(p/4)²)` in [0, 1], display orientation"),
        Field("label", "int8", (), LABEL_UNKNOWN, "1 COVID-19 positive, 0 negative, -1 unknown"),
        Field("severity", "int8", (), SEVERITY_UNKNOWN, "MosMed CT-0..CT-4 grade, -1 unknown"),
        Field("study_id", "str", (), "", "stable id of the study within its archive"),
        Field("spacing", "float32", (3,), 0.0, "mm per voxel of the resized volume, `(sd, sh, sw)`"),
        Field("patient", "str", (), "", "salted HMAC of the patient id; only when a manifest gives ids",
              optional=True),
        DIGEST_FIELD,
        Field("done", "bool", (), False, "set after every other array of item i is written"),
    ),
    "cxr": (
        Field("image", "float32", ("S", "S"), 0.0, "letterboxed image in [0, 1]"),
        Field("label", "int8", (), LABEL_UNKNOWN, "1 COVID-19 positive, 0 negative, -1 not written"),
        Field("patient", "str", (), "", "salted HMAC of `<source>/<patient id>`"),
        Field("source", "str", (), "", "name of the source the image came from"),
        Field("split", "int8", (), SPLIT_NONE, "0 train, 1 test (patient-grouped), -1 not written"),
        Field("bits", "int8", (), -1, "bit depth the stored values were scaled by (PNG/JPEG: value / (2**bits - 1); "
              "DICOM: BitsStored), 0 float image (its own min..max), -1 not written; absent in stores made "
              "before it was added", optional=True),
        DIGEST_FIELD,
        Field("done", "bool", (), False, "set after every other array of item i is written"),
    ),
}


@dataclass(frozen=True)
class ArraySpec:
    """One per-item array as the writer creates it: shape (N,) + item_shape."""
    dtype: str  # numpy dtype string, or "str" for variable-length UTF-8
    item_shape: tuple[int, ...] = ()
    fill_value: Any = None

    @property
    def is_str(self) -> bool:
        return self.dtype == "str"

    @property
    def sharded(self) -> bool:
        return len(self.item_shape) >= 2 and not self.is_str

    @property
    def item_bytes(self) -> int:
        itemsize = 64 if self.is_str else np.dtype(self.dtype).itemsize
        return itemsize * int(np.prod(self.item_shape, dtype=np.int64))


def item_arrays(kind: str, sizes: Mapping[str, int], optional: Iterable[str] = ()) -> dict[str, ArraySpec]:
    """The ArraySpecs of a `kind` store (without `done`): `sizes` gives the size names of Field.dims
    (D, H, W, S); `optional` names the optional arrays to include."""
    want = set(optional)
    unknown = want - {f.name for f in FIELDS[kind] if f.optional}
    if unknown:
        raise ValueError(f"{kind} stores have no optional array(s) {sorted(unknown)}")
    out = {}
    for f in FIELDS[kind]:
        if f.name == "done" or (f.optional and f.name not in want):
            continue
        shape = tuple(int(sizes[d]) if isinstance(d, str) else int(d) for d in f.dims)
        out[f.name] = ArraySpec(f.dtype, shape, None if f.dtype == "str" else f.fill)
    return out


def format_digest(crcs: Mapping[str, str]) -> str:
    """An item's `digest` row from {array name: crc32c as 8 hex digits}."""
    return " ".join(f"{name}={crcs[name]}" for name in sorted(crcs))


def value_crc(dtype, value) -> str:
    """The crc32c (8 hex digits) of one item's value of an unsharded array (label, split, severity, ids,
    spacing) as stored: text as UTF-8, numbers as little-endian bytes of the array's dtype. Recorded in the
    item's `digest` row beside its chunks' checksums, so a value rewritten after prep is caught."""
    import google_crc32c

    if np.dtype(dtype).kind in "UTO":
        data = str(value).encode("utf-8", "surrogateescape")
    else:
        data = np.ascontiguousarray(value, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return f"{google_crc32c.value(data):08x}"


def array_metadata_digests(path: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """{array: 16 hex digits} of each array's zarr.json (shape, dtype, chunks, codecs, fill value; its
    attributes left out), as written when the store was made: recorded in the "xpgan" attributes
    (ARRAY_METADATA), so a hand-edited shape or codec is caught when the store is opened."""
    import hashlib
    import json

    out = {}
    for name in names:
        meta = json.loads((Path(path) / name / "zarr.json").read_text())
        meta.pop("attributes", None)
        out[name] = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return out


def check_array_metadata(path: Path, meta: Mapping[str, Any]) -> None:
    """StoreDamageError naming the arrays whose zarr.json differs from the one the store was made with."""
    recorded = meta.get(ARRAY_METADATA)
    if not isinstance(recorded, dict):
        return  # made before the record existed
    try:
        now = array_metadata_digests(path, recorded)
    except (OSError, ValueError) as exc:
        raise StoreDamageError(f"{path}: array metadata unreadable ({first_line(exc)}); {REPREP}") from None
    edited = sorted(n for n in recorded if now.get(n) != recorded[n])
    if edited:
        raise StoreDamageError(f"{path}: the metadata (zarr.json: shape, dtype, chunks or codecs) of array(s) "
                               f"{', '.join(edited)} differs from what the store was made with (edited?); "
                               f"{REPREP}")


def parse_digest(text: str) -> dict[str, str]:
    """{array name: crc32c hex} of a `digest` row ("" for an item written without one: {})."""
    return dict(part.split("=", 1) for part in str(text).split() if "=" in part)


def chunk_codecs(sharded: bool) -> list:
    """Bytes-to-bytes codecs of a new array: compression, then a crc32c of the compressed chunk.

    Images and volumes (sharded, one item per inner chunk) use Blosc LZ4 with byte shuffle: ~5x faster to
    write and ~6x faster to read than zarr's default zstd on CT volumes, at a somewhat lower ratio. Small
    per-item arrays keep zarr's default zstd."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    first = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle") if sharded else ZstdCodec(level=0, checksum=False)
    return [first, Crc32cCodec()]


def lock_path(path: str | os.PathLike) -> Path:
    """`<store>.lock`: the one-writer lock file beside the store (beside the resolved store: see salt_path)."""
    return beside(path, ".lock")


def failures_csv_path(path: str | os.PathLike) -> Path:
    """`<store>.failures.csv`: failure records with file paths, for the operator."""
    return beside(path, ".failures.csv")


def store_version(meta: Mapping[str, Any]) -> int:
    """The format version a store's metadata declares (no attribute: version 1)."""
    v = meta.get(VERSION, 1)
    return v if isinstance(v, int) and not isinstance(v, bool) else -1


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for one-line errors."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def damaged_metadata(file: Path, exc: BaseException, hint: str = "") -> StoreDamageError:
    """The one-line error for a `zarr.json` that cannot be read."""
    return StoreDamageError(f"{file}: damaged store metadata ({first_line(exc)})" + (f"; {hint}" if hint else ""))


def open_group(path: Path, mode: str = "r", hint: str = ""):
    """zarr.open_group of a Zarr v3 store; a damaged zarr.json is a one-line StoreDamageError."""
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=3)
    except Exception as exc:  # zarr raises JSONDecodeError, KeyError, ValueError... for damaged metadata
        raise damaged_metadata(path / "zarr.json", exc, hint) from None


def open_array(group, path: Path, name: str, hint: str = ""):
    """group[name]; KeyError if there is no such array; a damaged array zarr.json is a one-line
    StoreDamageError."""
    try:
        return group[name]
    except KeyError:
        raise
    except Exception as exc:
        raise damaged_metadata(Path(path) / name / "zarr.json", exc, hint) from None


def array_names(group, path: Path, hint: str = "") -> list[str]:
    """Sorted names of the group's arrays; a damaged member zarr.json is a one-line StoreDamageError."""
    try:
        return sorted(group.array_keys())
    except Exception as exc:  # listing parses every member's metadata
        bad = sorted(p.parent.name for p in Path(path).glob("*/zarr.json"))
        for name in bad:
            open_array(group, path, name, hint)
        raise damaged_metadata(Path(path), exc, hint) from None


def read(group_or_array, path, name: str, selection: Any = Ellipsis, item: int | None = None):
    """`array[selection]` as a NumPy array; a chunk that cannot be read (checksum mismatch, damaged
    compression) is a one-line StoreDamageError naming the store, the array, the item and its chunk file."""
    arr = group_or_array if not hasattr(group_or_array, "array_keys") else open_array(group_or_array, path, name)
    try:
        return np.asarray(arr[selection])
    except Exception as exc:
        reason = "checksum mismatch" if "checksum" in str(exc).lower() else first_line(exc)
        index = item if item is not None else (selection if isinstance(selection, int) else None)
        where = "" if index is None else f" item {index} (file {Path(path) / chunk_file(arr, index)})"
        raise StoreDamageError(f"{path}: array {name!r}{where}: damaged data ({reason}); run "
                               f"`xpgan inspect --verify {path}`, then rerun prep on it to redo the item(s)") from None


def chunk_file(arr, index: int) -> str:
    """The file, relative to the store, holding item `index` of an array (its shard, or its chunk)."""
    block = int(arr.shards[0]) if getattr(arr, "shards", None) else int(arr.chunks[0])
    return f"{arr.path}/{arr.metadata.encode_chunk_key((index // block,) + (0,) * (arr.ndim - 1))}"


def _dtype_ok(arr, dtype: str) -> bool:
    if dtype == "str":
        return np.dtype(arr.dtype).kind in "UTO"
    return np.dtype(arr.dtype) == np.dtype(dtype)


def check_version(path: Path, meta: Mapping[str, Any]) -> int:
    """The store's format version; InputError when this xpgan cannot read it."""
    v = store_version(meta)
    if v in READABLE_VERSIONS:
        return v
    if v > FORMAT_VERSION:
        raise InputError(path, f"written in store format version {v}, newer than this xpgan reads "
                               f"(versions {READABLE_VERSIONS[0]}-{FORMAT_VERSION}); upgrade xpgan")
    raise InputError(path, f"unknown store format version {meta.get(VERSION)!r} (this xpgan reads versions "
                           f"{READABLE_VERSIONS[0]}-{FORMAT_VERSION})")


def open_store(path: str | os.PathLike, kind: str | None = None):
    """Open an xpgan store read-only and check its format (see module docstring); returns the zarr.Group."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such store")
    if not (p / "zarr.json").is_file():
        raise InputError(p, "not a Zarr store (no zarr.json)")
    group = open_group(p, "r", REPREP)
    meta = group.attrs.get(META)
    found = meta.get(KIND) if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or (kind is not None and found != kind):
        what = f"an xpgan {kind} store" if kind else "an xpgan store"
        raise InputError(p, f"not {what} (attribute {META}.{KIND} is {found!r})")
    check_version(p, meta)
    fields = FIELDS.get(found, (Field("done", "bool", (), False, ""),))
    missing = []
    for f in fields:
        try:
            arr = open_array(group, p, f.name, REPREP)
        except KeyError:
            if not f.optional:
                missing.append(f.name)
            continue
        if not _dtype_ok(arr, f.dtype):
            raise InputError(p, f"array {f.name!r} has dtype {arr.dtype}, expected {f.dtype}")
    if missing:
        raise InputError(p, f"{found} store lacks array(s) {', '.join(missing)}")
    array_names(group, p, REPREP)  # every other array's metadata must be readable too
    check_array_metadata(p, meta)
    return group


def identity_digest(path: str | os.PathLike) -> str | None:
    """16 hex digits naming what a store was made from (its kind and identity attribute: the same for a copy or
    a moved store, another for a store prepped again from other data or options); None when there is no
    readable store at `path`."""
    import hashlib
    import json

    try:
        meta = open_group(Path(path), "r").attrs.get(META, {})
    except Exception:  # no store, or damaged metadata: the readers report it
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get(IDENTITY), dict):
        return None
    text = json.dumps({"kind": meta.get(KIND), "identity": meta[IDENTITY]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ct_render_setup(group, path: str | os.PathLike, purpose: str, size: int | None = None):
    """(Geometry, mu_water in 1/mm) a CT store's DRRs were rendered with; `size` overrides the detector size.

    Refuses, in one line naming the store and `purpose`, a store that records no geometry."""
    from xpgan.drr.geometry import geometry_from_dict
    from xpgan.drr.physics import MU_WATER_PER_MM

    meta = dict(group.attrs[META])
    if not isinstance(meta.get(GEOMETRY), dict):
        raise XPGANError(f"{path}: the store records no DRR geometry (attribute {META}.{GEOMETRY}); {purpose} "
                         "(stores made by xpgan prep drr have it)")
    geometry = geometry_from_dict({**meta[GEOMETRY], **({"size": int(size)} if size is not None else {})})
    mu_water = meta.get(PHYSICS, {}).get(MU_WATER, meta.get(MU_WATER, MU_WATER_PER_MM))
    return geometry, float(mu_water)
