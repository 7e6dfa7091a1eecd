"""Zarr v3 item stores: creation/resume, a one-writer lock, per-item done flags and failure records.

Generic: nothing here knows about CT or CXR. A store is a Zarr v3 group holding N item slots; every array
has the item axis first, plus a bool `done` array. Group attributes: `xpgan` (the kind-specific metadata
dict, must contain "kind") and `failures` (list of failure records, see below).

Public API (used by prep drr and prep cxr)
------------------------------------------
ArraySpec(dtype, item_shape=(), fill_value=None)
    One per-item array. dtype: a NumPy dtype string ("int16", "float32", "bool", ...) or "str" for a
    variable-length UTF-8 string array.
create_or_open(path, *, kind, arrays, n_items, attrs, identity, overwrite=False, items_per_shard=None)
    -> zarr.Group
    Creates the store (or reopens it to resume; a store cut short while being created, with no item
    written, is made again). `arrays` maps name -> ArraySpec (or (dtype, item_shape));
    `done` and `digest` are added. `attrs` is written as group attribute "xpgan" (with "kind" set). `identity` is a
    JSON-able dict (options, item list digest...) that must match to resume; a mismatch raises XPGANError
    telling the user to pass --overwrite. `overwrite=True` deletes an existing store first (only if it is a
    Zarr store or an empty folder). Call it while holding StoreLock.
    Layout: arrays whose items have 2+ dimensions (images, volumes) get chunks of one item inside shards of
    `items_per_shard` items (default: ~128 MiB of the largest such array), compressed with Blosc LZ4 +
    byte shuffle (fast to write and to read back in training); arrays of scalars or short vectors (label,
    spacing, ids, done) are one unsharded chunk (zarr's default zstd). Every chunk ends in a crc32c
    (schema.chunk_codecs; format version schema.FORMAT_VERSION, written to the "xpgan" attributes). A
    store of an older format is not resumed (--overwrite re-preps it); damaged metadata is a one-line error.
items_per_shard(group) -> int
    The shard size along the item axis (write whole shards at once from a single writer).
item_encoders(group) -> {name: ItemEncoder}; encode_items(result, encoders) -> result
    Workers may encode their items of sharded arrays (Blosc, as zarr would) with the store's encoders; the
    writer then assembles new shard files from those bytes without re-encoding (existing shards, e.g. on
    resume, keep the chunk bytes of their done items: a shard filled over several runs is the file one run
    writes). ItemEncoder and EncodedItem are small and picklable.
write_items(group, results)
    results: {index: {array name: value}}; values of sharded arrays may be EncodedItem. Writes every
    array of those items, then their `digest` rows (the crc32c of each of their chunks in the sharded arrays
    and of their values in the small ones, schema.format_digest / value_crc; verify checks that every chunk
    and value is the one its item was written with), then sets
    their done flags (done is written last, so done[i] implies every
    other array of item i is on disk). NOT safe to call from two processes or threads at once: concurrent
    writes into one Zarr shard lose data (zarr-python #3514, #3682). The runner calls it from the client
    process only. A new shard of EncodedItems is written whole to a temp file and renamed.
done_mask(group) -> bool [N]
set_failures(group, path, failures, *, paths_in_store=True, csv_only=()) / get_failures(group, path=None)
    failures: list of dicts with keys index, id, path, reason. The first FAILURES_IN_STORE are stored in group
    attribute "failures" (their count in the "xpgan" attribute failure_count, failure_count(group)), and all
    are streamed to `<store>.failures.csv` beside the store (removed when there are none), so a store of a
    million failed rows stays small; get_failures with the path reads them all back from the CSV. Text fields are
    stored as errors.safe_text (one line of UTF-8; non-UTF-8 bytes and control characters escaped), as are
    the str values write_items stores.
    paths_in_store=False: the store's records get path "" (the CSV keeps the paths); csv_only: rows for
    problems without an item slot, written to the CSV only.
StoreLock(path)
    Context manager: an exclusive fcntl.flock on `<store>.lock` beside the resolved store (one lock for every
    spelling of the path, symlinks included). The OS drops it when the process dies (even on SIGKILL), so no
    stale lock survives; a second writer gets XPGANError. The lock file is removed on release (a SIGKILLed
    writer leaves it, empty of meaning: the next writer reuses it).
interrupted(exc, what, path, done, total) -> errors.Interrupted: the one line of a prep run stopped by a signal.
disk_full_is_resumable(path): context manager turning ENOSPC/EDQUOT into one errors.Resumable line naming the
    store, the items kept and how to resume.
lock_holder(path) -> None (lock free) | pid text ("" if unknown): is a writer holding the store now?
set_complete(group, complete)
    Whether the last prep run went through every item (each is done or has a failure record).
lock_path, failures_csv_path, ArraySpec: from xpgan.pipeline.schema (re-exported; open_store is read from there).

Failed or not-yet-processed items keep done=False and their arrays' fill values; readers must select rows
with `done`.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from xpgan.errors import Interrupted, Resumable, XPGANError, os_error_line, safe_text, signal_name
from xpgan.pipeline import schema
from xpgan.pipeline.schema import ArraySpec, failures_csv_path, lock_path, open_store

SHARD_TARGET_BYTES = 128 * 2**20
FAILURE_FIELDS = ("index", "id", "path", "reason")


def _spec(v) -> ArraySpec:
    if isinstance(v, ArraySpec):
        return v
    dtype, item_shape = v
    return ArraySpec(str(dtype), tuple(int(s) for s in item_shape))


class StoreLock:
    """Exclusive one-writer lock on a store (flock on `<store>.lock` beside the resolved store path, so a
    symlink or `x/../` spelling of the same store takes the same lock); released by the OS if we die. The lock
    file is removed on release; a writer that locked a file removed meanwhile tries again on the new one."""

    def __init__(self, path: str | os.PathLike):
        self.store = Path(path)
        self.path = lock_path(path)
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = ""
                try:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                except OSError:
                    pass
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    who = f" (pid {holder})" if holder else ""
                    raise XPGANError(
                        f"{self.store}: another process{who} is writing this store (lock {self.path} is held); "
                        "wait for it to finish or stop it, then rerun") from None
                raise XPGANError(f"{self.path}: cannot lock the store: {exc.strerror}") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # a finishing writer removed the file between our open and flock: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                self.path.unlink(missing_ok=True)  # while still held: nobody can lock this file any more
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_holder(path: str | os.PathLike) -> str | None:
    """None when no process holds the store's write lock, else the holder's pid as text ("" if unknown).

    Probes with a shared flock, dropped at once (a prep starting in that instant is told the store is busy)."""
    import fcntl

    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return None  # no lock file: never written by prep, or not readable
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return os.pread(fd, 64, 0).decode(errors="replace").strip()
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _is_zarr_store(path: Path) -> bool:
    return (path / "zarr.json").is_file()


def _remove_store(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        raise XPGANError(f"{path}: exists and is not a Zarr store; refusing to overwrite it")
    if path.is_dir():
        if not _is_zarr_store(path) and any(path.iterdir()):
            raise XPGANError(f"{path}: is a non-empty folder that is not a Zarr store; refusing to overwrite it")
        shutil.rmtree(path)
    failures_csv_path(path).unlink(missing_ok=True)


def discard_empty(path: str | os.PathLike) -> None:
    """Remove a store that its creating run stored nothing in, so no empty store is left behind (the failures
    CSV beside it stays: it says why)."""
    path = Path(path)
    if _is_zarr_store(path) and not path.is_symlink():
        shutil.rmtree(path)


def digest(obj) -> str:
    """SHA-256 of a JSON-able object (sorted keys): a short fingerprint for identities."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def default_items_per_shard(specs: Mapping[str, ArraySpec], n_items: int) -> int:
    big = [s.item_bytes for s in specs.values() if s.sharded]
    if not big:
        return max(1, n_items)
    return int(max(1, min(n_items, SHARD_TARGET_BYTES // max(big))))


def create_or_open(path: str | os.PathLike, *, kind: str, arrays: Mapping[str, Any], n_items: int,
                   attrs: Mapping[str, Any], identity: Mapping[str, Any], overwrite: bool = False,
                   items_per_shard: int | None = None):
    """Create a store of `n_items` slots, or reopen a matching one to resume (see module docstring)."""
    import zarr

    path = Path(path)
    if n_items < 1:
        raise XPGANError(f"{path}: nothing to store (0 items)")
    specs = {name: _spec(v) for name, v in arrays.items()}
    if "done" in specs or schema.DIGEST in specs:
        raise ValueError(f"'done' and '{schema.DIGEST}' are added by create_or_open; do not pass them")
    specs[schema.DIGEST] = ArraySpec("str", ())
    specs["done"] = ArraySpec("bool", (), False)
    ident = json.loads(json.dumps(dict(identity), default=str))
    if overwrite:
        _remove_store(path)
    if path.exists():
        if not _is_zarr_store(path):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            else:
                raise XPGANError(f"{path}: exists and is not a Zarr store; choose another output path")
        elif _creation_interrupted(path, specs):
            shutil.rmtree(path)  # killed while being created: no item was written yet, so nothing is lost
        else:
            return _reopen(path, kind=kind, specs=specs, n_items=n_items, identity=ident)
    k = int(items_per_shard) if items_per_shard else default_items_per_shard(specs, n_items)
    k = max(1, min(k, n_items))
    tmp_attrs = dict(attrs)
    tmp_attrs[schema.KIND] = kind
    tmp_attrs[schema.VERSION] = schema.FORMAT_VERSION
    tmp_attrs[schema.ITEMS_PER_SHARD] = k
    tmp_attrs[schema.IDENTITY] = ident
    tmp_attrs[schema.COMPLETE] = False
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name, s in specs.items():
        shape = (n_items,) + s.item_shape
        if s.is_str:
            group.create_array(name, shape=shape, dtype=str, chunks=shape, fill_value="",
                               compressors=schema.chunk_codecs(False))
        elif s.sharded:
            group.create_array(name, shape=shape, dtype=s.dtype, chunks=(1,) + s.item_shape,
                               shards=(k,) + s.item_shape, fill_value=s.fill_value,
                               compressors=schema.chunk_codecs(True))
        else:
            group.create_array(name, shape=shape, dtype=s.dtype, chunks=shape, fill_value=s.fill_value,
                               compressors=schema.chunk_codecs(False))
    from zarr.storage import LocalStore

    if isinstance(group.store, LocalStore):
        tmp_attrs[schema.ARRAY_METADATA] = schema.array_metadata_digests(path, specs)
    # Written last: a store whose attributes lack "xpgan" was interrupted while being created.
    group.attrs.update({schema.META: tmp_attrs, schema.FAILURES: []})
    return group


def _creation_interrupted(path: Path, specs: Mapping[str, ArraySpec]) -> bool:
    """A store of ours whose creation was cut short: no "xpgan" attribute yet (written last), only arrays this
    writer makes, and no item done. Anything else without the attribute is another program's store."""
    try:
        group = schema.open_group(path, "r")
        if isinstance(group.attrs.get(schema.META), dict):
            return False
        names = set(group.array_keys())
        if not names <= set(specs):
            return False
        return "done" not in names or not np.asarray(group["done"][...], dtype=bool).any()
    except Exception:  # the group's zarr.json cut short by the kill: ours if only our arrays, none done
        if not {p.name for p in path.iterdir()} <= set(specs) | {"zarr.json"}:
            return False
        try:
            import zarr

            done = zarr.open_array(str(path / "done"), mode="r", zarr_format=3)
            return not np.asarray(done[...], dtype=bool).any()
        except Exception:  # no readable done flags: keep it (damaged metadata is reported on reopening)
            return not (path / "done").exists() and not any((path / n).exists() for n in specs if n != "done")


IDENTITY_WORDS = {"items": "the discovered items (files, labels, order)",
                  "sources": "the contents of the source files"}  # identity entries too long to print


def identity_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """What differs between a store's identity and this run's, with both values where they are short:
    `shape: the store has [32, 64, 64], this run [64, 256, 256]; geometry.size: the store has 64, this run 256`."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        name = f"{prefix}{k}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            parts.append(identity_differences(a, b, name + "."))
            continue
        shown = [json.dumps(v, default=str) for v in (a, b)]
        if k in IDENTITY_WORDS or max(len(s) for s in shown) > 60:
            parts.append(f"{name}: {IDENTITY_WORDS.get(k, 'differs')}")
        else:
            parts.append(f"{name}: the store has {shown[0]}, this run {shown[1]}")
    return "; ".join(parts)


def _reopen(path: Path, *, kind: str, specs: Mapping[str, ArraySpec], n_items: int, identity: dict):

    hint = "rerun with --overwrite to start again (this deletes it)"
    group = schema.open_group(path, "r+", hint)
    meta = group.attrs.get(schema.META)
    if not isinstance(meta, dict):
        raise XPGANError(f"{path}: is a Zarr store of another program (no {schema.META!r} attribute); choose "
                         "another output path")
    if meta.get(schema.KIND) != kind:
        raise XPGANError(f"{path}: holds a {meta.get(schema.KIND)!r} store, not {kind!r}; {hint}")
    version = schema.check_version(path, meta)
    if version != schema.FORMAT_VERSION:
        raise XPGANError(f"{path}: was written in store format version {version} (no chunk checksums), which "
                         f"this xpgan reads but does not resume; rerun with --overwrite to prep it again in "
                         f"format {schema.FORMAT_VERSION} (this deletes it)")
    old = meta.get(schema.IDENTITY, {})
    if old != identity:
        raise XPGANError(f"{path}: was made from different inputs or options ({identity_differences(old, identity)}); "
                         f"{hint}")
    for name, s in specs.items():
        try:
            arr = schema.open_array(group, path, name, hint)
        except KeyError:
            raise XPGANError(f"{path}: array {name!r} is missing; {hint}") from None
        if tuple(arr.shape) != (n_items,) + s.item_shape:
            raise XPGANError(f"{path}: array {name!r} has shape {arr.shape}; {hint}")
    return group


def items_per_shard(group) -> int:
    return int(group.attrs[schema.META].get(schema.ITEMS_PER_SHARD, 1))


def done_mask(group) -> np.ndarray:
    return np.asarray(group["done"][:], dtype=bool)


@dataclass(frozen=True, eq=False)
class EncodedItem:
    """One item of a sharded array, already encoded as its Zarr chunk (made on a worker by ItemEncoder).

    The bytes are held as a uint8 array, which pickle protocol 5 (Dask) ships out of band, unlike `bytes`."""
    data: np.ndarray  # uint8 [nbytes]


_MAX_U64 = 2**64 - 1
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass(frozen=True)
class ItemEncoder:
    """Encodes one item of a sharded array exactly as the array's inner Zarr codecs do (bytes, little
    endian -> Blosc -> crc32c appended, the last step absent in format-1 stores), so that workers compress
    and checksum in parallel and the single writer only assembles shards."""
    dtype: str
    item_shape: tuple[int, ...]
    cname: str
    clevel: int
    shuffle: int
    blocksize: int
    typesize: int
    crc32c: bool = True

    def _codec(self):
        from numcodecs import Blosc

        return Blosc(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle, blocksize=self.blocksize,
                     typesize=self.typesize)

    def __call__(self, value) -> EncodedItem:
        a = np.ascontiguousarray(value, dtype=np.dtype(self.dtype).newbyteorder("<"))
        if a.shape != self.item_shape:
            raise ValueError(f"item of shape {a.shape}, expected {self.item_shape}")
        packed = np.frombuffer(self._codec().encode(a.reshape(-1).view(np.uint8)), dtype=np.uint8)
        if not self.crc32c:
            return EncodedItem(packed)
        import google_crc32c

        out = np.empty(packed.size + 4, dtype=np.uint8)
        out[:-4] = packed
        out[-4:] = np.array([google_crc32c.value(packed)], dtype="<u4").view(np.uint8)
        return EncodedItem(out)

    def decode(self, item: EncodedItem) -> np.ndarray:
        raw = self._codec().decode(item.data[:-4] if self.crc32c else item.data)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.item_shape)


def item_encoders(group) -> dict[str, ItemEncoder]:
    """ItemEncoders for the sharded arrays whose layout is the one create_or_open makes (one item per chunk,
    bytes + Blosc (+ crc32c) inside, index at the end with crc32c) in a local store; other arrays are left out (their
    items are written through zarr as arrays)."""
    from zarr.storage import LocalStore

    if not isinstance(group.store, LocalStore):
        return {}
    out = {name: _item_encoder(arr) for name, arr in group.arrays()}
    return {name: enc for name, enc in out.items() if enc is not None}


def _item_encoder(arr) -> ItemEncoder | None:
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ShardingCodecIndexLocation

    if getattr(arr, "shards", None) is None:
        return None
    codecs = getattr(arr.metadata, "codecs", ())
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    inner, index = tuple(sc.codecs), tuple(sc.index_codecs)
    crc = len(inner) == 3 and isinstance(inner[2], Crc32cCodec)
    if (tuple(sc.chunk_shape) != (1,) + tuple(arr.shape[1:]) or len(inner) != 2 + crc
            or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], BloscCodec)
            or len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
            or sc.index_location != ShardingCodecIndexLocation.end or np.dtype(arr.dtype).byteorder == ">"
            or index[0].endian is None or index[0].endian.value != "little"
            or (inner[0].endian is not None and inner[0].endian.value != "little")):
        return None
    b = inner[1]
    return ItemEncoder(dtype=np.dtype(arr.dtype).str, item_shape=tuple(arr.shape[1:]), cname=b.cname.value,
                       clevel=int(b.clevel), shuffle=_SHUFFLE[b.shuffle.value], blocksize=int(b.blocksize),
                       typesize=int(b.typesize), crc32c=crc)


def encode_items(result: Mapping[str, Any], encoders: Mapping[str, ItemEncoder]) -> dict[str, Any]:
    """A worker's result with its sharded arrays encoded (EncodedItem); write_items takes either form."""
    return {k: (encoders[k](v) if k in encoders else v) for k, v in result.items()}


def _shard_file(group, arr, shard: int) -> Path:
    key = arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))
    return Path(group.store.root) / arr.path / key


def _write_encoded_shard(path: Path, k: int, first: int, chunks: Mapping[int, EncodedItem]) -> None:
    """A shard file from encoded chunks (zarr v3 sharding_indexed: the chunks, then the index of k
    (offset, nbytes) uint64 little-endian pairs, missing chunks 2**64-1, then its crc32c), written whole
    (to a temp file, renamed; the temp file is removed if the write fails, e.g. on a full disk)."""
    import google_crc32c

    index = np.full((k, 2), _MAX_U64, dtype="<u8")
    parts, offset = [], 0
    for j in range(k):
        c = chunks.get(first + j)
        if c is None:
            continue  # failed or beyond the array: read back as the fill value
        index[j] = (offset, c.data.nbytes)
        parts.append(c.data)
        offset += c.data.nbytes
    index_bytes = index.tobytes()
    parts += [index_bytes, np.array([google_crc32c.value(index_bytes)], dtype="<u4").tobytes()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.writelines(parts)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_encoded_shard(path: Path, k: int, first: int, keep) -> dict[int, EncodedItem]:
    """The encoded chunks of an existing shard file written by `_write_encoded_shard` whose items pass
    `keep(index)`, byte for byte (no re-encoding, so a shard completed later equals one written in one go)."""
    import google_crc32c

    data = np.fromfile(path, dtype=np.uint8)
    n_index = 16 * k + 4
    if data.size < n_index:
        raise XPGANError(f"{path}: shard file truncated; rerun prep to redo its items")
    index_bytes = data[data.size - n_index:data.size - 4].tobytes()
    if np.array([google_crc32c.value(index_bytes)], dtype="<u4").tobytes() != data[data.size - 4:].tobytes():
        raise XPGANError(f"{path}: shard index damaged; rerun prep to redo its items")
    table = np.frombuffer(index_bytes, dtype="<u8").reshape(k, 2)
    out = {}
    for j in range(k):
        off, n = (int(v) for v in table[j])
        if off != _MAX_U64 and keep(first + j):
            out[first + j] = EncodedItem(data[off:off + n].copy())
    return out


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Contiguous [start, stop) runs of sorted unique indices."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def write_items(group, results: Mapping[int, Mapping[str, Any]], inputs: Mapping[int, str] | None = None) -> None:
    """Write every array of the given items, then their done flags (single writer only). `inputs`: each
    item's source fingerprint, recorded in its digest row (schema.INPUT)."""
    if not results:
        return
    indices = sorted(int(i) for i in results)
    arrays = dict(group.arrays())  # opened once: each group[name] reads metadata from the store
    done = arrays["done"]
    flags = np.asarray(done[...], dtype=bool)
    crcs: dict[int, dict[str, str]] = {i: {} for i in indices}
    sharded = [name for name, arr in arrays.items() if getattr(arr, "shards", None) is not None]
    small: dict[str, Any] = {}
    for name, arr in arrays.items():
        if name in ("done", schema.DIGEST):
            continue
        if name not in results[indices[0]]:
            raise KeyError(f"result for item {indices[0]} lacks array {name!r}")
        if name in sharded:
            for i, crc in _write_sharded(group, arr, name, {i: results[i][name] for i in indices}, flags).items():
                crcs[i][name] = crc
        else:
            _write_small(arr, {i: results[i][name] for i in indices})
            small[name] = arr.dtype
    if schema.DIGEST in arrays:  # the chunks' checksums and small values, bound to the item's row (before done)
        rows = {}
        for i, c in crcs.items():
            values = {n: schema.value_crc(dt, _stored(results[i][n])) for n, dt in small.items()}
            if inputs is not None and i in inputs:
                values[schema.INPUT] = inputs[i]
            rows[i] = schema.format_digest({**values, **(c if len(c) == len(sharded) else {})})
        _write_small(arrays[schema.DIGEST], rows)
    flags[indices] = True
    done[...] = flags


def _stored(value):
    """A small array's value as _write_small stores it (text as errors.safe_text)."""
    return safe_text(value) if isinstance(value, str) else value


def _write_small(arr, values: Mapping[int, Any]) -> None:
    """Items of an unsharded array: its one small chunk read, patched and written back whole (cheaper than a
    chunk rewrite per item). Written even when it holds only fill values (e.g. every label unknown), so a
    missing chunk means damage. Text is stored as errors.safe_text."""
    arr = arr.with_config({"write_empty_chunks": True})
    whole = arr[...]
    for i, value in values.items():
        whole[i] = _stored(value)
    arr[...] = whole


def _write_sharded(group, arr, name: str, values: Mapping[int, Any], done_flags: np.ndarray) -> dict[int, str]:
    """Items of one sharded array. In a local store of the writer's layout every shard is assembled from
    encoded chunks (workers' EncodedItems, or encoded here), keeping the chunks of done items already in the
    shard byte for byte: a shard filled over several runs is the same file as one written in one go.
    Returns each written item's chunk crc32c (8 hex digits; {} when written through zarr)."""
    from zarr.storage import LocalStore

    k = int(arr.shards[0])
    indices = sorted(values)
    encoder = _item_encoder(arr) if isinstance(group.store, LocalStore) else None
    if encoder is None:
        if any(isinstance(v, EncodedItem) for v in values.values()):
            raise ValueError(f"array {name!r} has no item encoder; pass arrays, not EncodedItem")
        # Skip zarr's per-chunk "all fill value?" scan (half of its write CPU): our items are never empty.
        arr = arr.with_config({"write_empty_chunks": True})
        for a, b in _runs(indices):
            arr[a:b] = np.stack([np.asarray(values[i]) for i in range(a, b)]).astype(arr.dtype, copy=False)
        return {}
    crcs: dict[int, str] = {}
    for shard in sorted({i // k for i in indices}):
        members = {i: (values[i] if isinstance(values[i], EncodedItem) else encoder(values[i]))
                   for i in indices if i // k == shard}
        path = _shard_file(group, arr, shard)
        chunks = {}
        if path.exists():
            chunks = _read_encoded_shard(path, k, shard * k,
                                         lambda i: i < done_flags.size and done_flags[i] and i not in members)
        chunks.update(members)
        _write_encoded_shard(path, k, shard * k, chunks)
        if encoder.crc32c:
            crcs.update({i: chunk_crc(c.data) for i, c in members.items()})
    return crcs


def chunk_crc(chunk) -> str:
    """The crc32c a stored chunk (format 2+) ends with, as the 8 hex digits of a `digest` row."""
    return bytes(np.asarray(chunk[-4:], dtype=np.uint8)).hex()


FAILURES_IN_STORE = 1000  # failure records kept in the store's attributes; the CSV beside it holds them all


def failure_count(group) -> int:
    """How many items the last prep run left failed (the attributes hold the first FAILURES_IN_STORE)."""
    return int(group.attrs.get(schema.META, {}).get(schema.FAILURE_COUNT, len(group.attrs.get(schema.FAILURES, []))))


def get_failures(group, path: str | os.PathLike | None = None) -> list[dict]:
    """The failure records of a store: those in its attributes, or with `path`, when the attributes hold only
    the first ones, every item's record from the CSV beside the store (read as a stream)."""
    stored = [dict(f) for f in group.attrs.get(schema.FAILURES, [])]
    if path is None or failure_count(group) <= len(stored) or not failures_csv_path(path).is_file():
        return stored
    with open(failures_csv_path(path), newline="", encoding="utf-8") as fh:
        return [{**row, "index": int(row["index"])} for row in csv.DictReader(fh) if row.get("index", "") != ""]


def set_failures(group, path: str | os.PathLike, failures: list[Mapping[str, Any]], *,
                 paths_in_store: bool = True, csv_only: Sequence[Mapping[str, Any]] = ()) -> None:
    """Record failures in the store attributes and in `<store>.failures.csv` (removed when empty).

    `paths_in_store=False` keeps file paths out of the store (its records get path ""), e.g. when file
    names may identify a person; the CSV beside the store, for the operator, still names them.
    `csv_only`: extra rows for problems that have no item slot (e.g. a manifest row naming a missing file),
    written to the CSV after the item rows (missing keys become "").
    """
    failures = sorted(failures, key=lambda f: int(f["index"]))
    kept = [_failure_row(f) for f in failures[:FAILURES_IN_STORE]]
    meta = dict(group.attrs[schema.META])
    meta[schema.FAILURE_COUNT] = len(failures)
    group.attrs.update({schema.META: meta,
                        schema.FAILURES: kept if paths_in_store else [{**r, "path": ""} for r in kept]})
    csv_path = failures_csv_path(path)
    if not failures and not csv_only:
        csv_path.unlink(missing_ok=True)
        return
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=FAILURE_FIELDS)
            w.writeheader()
            w.writerows(_failure_row(f) for f in failures)   # streamed: a million rows never sit in one list
            w.writerows(_failure_row(f) for f in csv_only)
        os.replace(tmp, csv_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _failure_row(f: Mapping[str, Any]) -> dict:
    """A failure record with its text fields as one line of UTF-8 each (errors.safe_text: file names that are
    not UTF-8 or hold a newline are escaped, losslessly)."""
    row = {k: f.get(k, "") for k in FAILURE_FIELDS}
    return {k: (safe_text(v) if isinstance(v, str) else v) for k, v in row.items()}


def set_complete(group, complete: bool) -> None:
    """Mark whether the last run went through every item (each is done or has a failure record)."""
    meta = dict(group.attrs[schema.META])
    meta[schema.COMPLETE] = bool(complete)
    group.attrs[schema.META] = meta


def interrupted(exc: Interrupted, what: str, path: str | os.PathLike, done: int, total: int) -> Interrupted:
    """The one line a prep run stopped by a signal ends with: what was kept, and where."""
    out = Interrupted(f"{what} interrupted by {signal_name(exc.signum)}: {done} of {total} items kept in {path}",
                      signum=exc.signum)
    return out


@contextlib.contextmanager
def disk_full_is_resumable(path: str | os.PathLike):
    """A full disk (ENOSPC, or a quota: EDQUOT) while prep writes the store: one line naming the store, the
    items kept and how to go on, instead of the bare OS message. Shard files and the failures CSV are
    written to temp files that a failed write removes, so every item marked done stays valid."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        kept = ""
        try:
            done = np.asarray(open_store(path)["done"][...], dtype=bool)
            kept = f"{int(done.sum())} of {done.size} items are kept; "
        except Exception:  # the store was not created yet, or cannot be read: say nothing about it
            pass
        raise Resumable(f"{path}: the disk is full ({os_error_line(exc)}); {kept}free some space, then run the "
                        "same command again to resume") from None
