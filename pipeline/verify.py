"""Is a store's data really there? Chunk checks for prep resume, `inspect --verify` and the model's readers.

Every item marked done must have a readable chunk in every array. Two depths:
- cheap (readers at open, plain `inspect`): each shard file of a done item exists and its index (which
  carries a crc32c) is intact and lists the item's chunk inside the file; each small chunk file exists and
  its checksum matches (small arrays are read anyway); in format 3 the checksum each chunk ends with (4
  bytes read) is the one the item's `digest` row recorded at write time, so a chunk swapped with another
  item's (each still valid) is caught, and so is each value of the small arrays (labels, splits,
  severities, ids, spacing) rewritten after prep; the arrays' metadata (shape, dtype, chunks, codecs) is
  checked against the record made with the store when it is opened (schema.check_array_metadata);
- full (`inspect --verify`, prep on resume): additionally every done item's chunk is checked against its
  crc32c (format 2) or decoded (format 1, which has no chunk checksums). The crc32c runs on the stored
  (compressed) bytes, without decompressing: the cost is reading the store's files once.
A finished run (`complete`) also leaves every item done or failed: an item that is neither lost its done flag.

Public API
----------
Problem(array, file, reason, items, whole_file)
    `file`: relative to the store; `items`: the done items it affects; `whole_file`: the file is unusable
    (missing, truncated, damaged index or damaged small chunk) and is removed before a resume rewrites it.
scan(group, path, *, full=False) -> Scan(problems, n_items, n_done, version)
check_done_data(group, path)   StoreDamageError (one line) unless scan() finds nothing.
check_ready(group, path, *, allow_incomplete=False)
    XPGANError (one line, with the count of done items) when the store's write lock is held or its last
    prep run did not finish, unless allow_incomplete.
repair_for_resume(group, path) -> list[Problem]
    Prep, holding the lock: full scan of the done items; unusable files (and, whatever items they hold,
    shard or small-chunk files the run will merge new items into that zarr could not read) are removed and
    the affected items' done flags cleared, so the run re-does them. Returns what it found (for the summary).
describe(problems, limit) -> str
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from xpgan.errors import XPGANError
from xpgan.pipeline import schema

_MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class Problem:
    array: str
    file: str              # relative to the store ("" for problems not tied to one file)
    reason: str
    items: tuple[int, ...]
    whole_file: bool = False

    def line(self, max_items: int = 8) -> str:
        shown = ", ".join(str(i) for i in self.items[:max_items])
        more = f" and {len(self.items) - max_items} more" if len(self.items) > max_items else ""
        items = f" (item{'s' if len(self.items) != 1 else ''} {shown}{more})" if self.items else ""
        return f"{self.file or self.array}: {self.reason}{items}"


@dataclass
class Scan:
    problems: list[Problem] = field(default_factory=list)
    n_items: int = 0
    n_done: int = 0
    version: int = schema.FORMAT_VERSION

    @property
    def damaged_items(self) -> list[int]:
        return sorted({i for p in self.problems for i in p.items})


def describe(problems: list[Problem], limit: int = 3) -> str:
    text = "; ".join(p.line() for p in problems[:limit])
    return text + (f"; and {len(problems) - limit} more problem(s)" if len(problems) > limit else "")


def _crc(data) -> bytes:
    """crc32c of bytes or a read-only uint8 array (slices of np.frombuffer(bytes): no copy)."""
    import google_crc32c

    return np.array([google_crc32c.value(data)], dtype="<u4").tobytes()


def _root(group) -> Path | None:
    from zarr.storage import LocalStore

    return Path(group.store.root) if isinstance(group.store, LocalStore) else None


def _sharded_layout(arr):
    """(items per shard, index bytes, index at start, inner chunks end in crc32c) for arrays sharded one
    item per inner chunk with shards spanning whole items (the layout the writer makes); else None."""
    from zarr.codecs import Crc32cCodec, ShardingCodec, ShardingCodecIndexLocation

    codecs = getattr(arr.metadata, "codecs", ())
    if getattr(arr, "shards", None) is None or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    if tuple(sc.chunk_shape) != (1,) + tuple(arr.shape[1:]) or tuple(arr.shards[1:]) != tuple(arr.shape[1:]):
        return None
    k = int(arr.shards[0])
    index_crc = any(isinstance(c, Crc32cCodec) for c in sc.index_codecs)
    return (k, 16 * k + (4 if index_crc else 0), sc.index_location == ShardingCodecIndexLocation.start,
            index_crc, isinstance(sc.codecs[-1], Crc32cCodec))


def _decodes(arr, sel) -> str | None:
    try:
        arr[sel]
        return None
    except Exception as exc:  # any decoding failure of damaged bytes
        return f"cannot be decoded ({schema.first_line(exc)})"


def _scan_sharded(arr, root: Path, idx: np.ndarray, full: Callable[[int], bool], out: list[Problem],
                  need: bool = True, digests: dict[int, dict[str, str]] | None = None) -> None:
    """Shards holding items `idx`; need=False: only check that existing shard files are usable (a new item
    will be merged into them), not that the items' chunks are there. `digests` (format 3): each item's
    chunk checksums as written; a chunk ending in another checksum belongs to another item (or was
    rewritten), even when its own checksum is valid."""
    k, index_nbytes, at_start, index_crc, inner_crc = _sharded_layout(arr)
    for shard in np.unique(idx // k).tolist():
        members = idx[idx // k == shard].tolist() if need else []
        rel = schema.chunk_file(arr, shard * k)
        path = root / rel

        def bad(reason, items=members, whole=True):
            out.append(Problem(arr.path, rel, reason, tuple(items), whole))

        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if need:
                bad("shard file missing")
            continue
        if size < index_nbytes:
            bad(f"shard file truncated ({size} bytes)")
            continue
        with open(path, "rb") as fh:
            fh.seek(0 if at_start else size - index_nbytes)
            index = fh.read(index_nbytes)
            if index_crc and _crc(index[:-4]) != index[-4:]:
                bad("shard index damaged (checksum mismatch)")
                continue
            if not need:
                continue
            table = np.frombuffer(index[:16 * k], dtype="<u8").reshape(k, 2)
            lo, hi = (index_nbytes, size) if at_start else (0, size - index_nbytes)
            check = full(shard)
            data = None
            if check and inner_crc:
                fh.seek(0)
                data = np.frombuffer(fh.read(), dtype=np.uint8)
            missing, past, damaged, moved = [], [], [], []
            for i in members:
                off, n = (int(v) for v in table[i - shard * k])
                if off == _MAX_U64:
                    missing.append(i)
                elif off < lo or off + n > hi or n < 4:
                    past.append(i)
                elif data is not None and _crc(data[off:off + n - 4]) != data[off + n - 4:off + n].tobytes():
                    damaged.append(i)
                elif check and not inner_crc:
                    reason = _decodes(arr, i)
                    if reason:
                        out.append(Problem(arr.path, rel, reason, (i,)))
                elif inner_crc and digests and arr.path in digests.get(i, {}):
                    if data is not None:
                        stored = data[off + n - 4:off + n].tobytes()
                    else:
                        fh.seek(off + n - 4)
                        stored = fh.read(4)
                    if stored.hex() != digests[i][arr.path]:
                        moved.append(i)
        if missing:
            bad("chunk missing from the shard", missing, False)
        if past:
            bad("chunk lies outside the shard's data (truncated?)", past, False)
        if damaged:
            bad("chunk damaged (checksum mismatch)", damaged, False)
        if moved:
            bad("chunk is not the one written for this item (its checksum differs from the item's digest: "
                "chunks swapped or replaced)", moved, False)


def _scan_chunked(arr, root: Path, idx: np.ndarray, full: bool, out: list[Problem], need: bool = True,
                  version: int = schema.FORMAT_VERSION) -> None:
    """Chunks holding items `idx` of an unsharded array (small: read whole); need=False: only check that
    existing chunk files are readable. Format 1 writers skipped chunks holding only fill values, so there a
    missing chunk is not damage."""
    from itertools import product

    from zarr.codecs import Crc32cCodec

    crc = isinstance(arr.metadata.codecs[-1], Crc32cCodec)
    c0 = int(arr.chunks[0])
    rest = [range(-(-int(s) // int(c))) for s, c in zip(arr.shape[1:], arr.chunks[1:])]
    for row in np.unique(idx // c0).tolist():
        members = tuple(idx[idx // c0 == row].tolist()) if need else ()
        for coords in product([row], *rest):
            rel = f"{arr.path}/{arr.metadata.encode_chunk_key(coords)}"
            path = root / rel
            reason = None
            if not path.is_file():
                reason = "chunk file missing" if need and version >= 2 else None
            elif crc:
                data = path.read_bytes()
                if len(data) < 4 or _crc(data[:-4]) != data[-4:]:
                    reason = "chunk damaged (checksum mismatch)"
            elif full or not need:
                reason = _decodes(arr, slice(row * c0, (row + 1) * c0))
            if reason:
                out.append(Problem(arr.path, rel, reason, members, True))


def _digests(group, path, names: list[str], idx: np.ndarray) -> dict[int, dict[str, str]]:
    """The `digest` rows of items `idx` (format 3; {} for older stores or when the rows cannot be read, which
    the scan of the digest array itself reports)."""
    if schema.DIGEST not in names or not idx.size:
        return {}
    try:
        rows = np.asarray(schema.open_array(group, path, schema.DIGEST)[...])
    except Exception:  # a damaged digest chunk: reported by _scan_chunked
        return {}
    return {int(i): schema.parse_digest(rows[i]) for i in idx.tolist()}


def _scan_arrays(group, path, root: Path, idx: np.ndarray, full, out: list[Problem], need: bool = True) -> None:
    version = schema.store_version(group.attrs.get(schema.META, {}))
    want = full if callable(full) else (lambda _name, _shard, v=bool(full): v)
    names = schema.array_names(group, path)
    digests = _digests(group, path, names, idx) if need else {}
    for name in names:
        arr = schema.open_array(group, path, name)
        if _sharded_layout(arr) is not None:
            _scan_sharded(arr, root, idx, lambda s, n=name: want(n, s), out, need, digests)
        elif getattr(arr, "shards", None) is None:
            before = len(out)
            _scan_chunked(arr, root, idx, bool(full) and not callable(full), out, need, version)
            if digests and len(out) == before and name not in ("done", schema.DIGEST):
                _scan_values(arr, path, name, idx, digests, out)


def _scan_values(arr, path, name: str, idx: np.ndarray, digests: dict[int, dict[str, str]],
                 out: list[Problem]) -> None:
    """Items whose value in a small array (label, split, severity, ids, spacing) is not the one their
    `digest` row recorded when they were written (rewritten after prep)."""
    values = np.asarray(arr[...])
    changed = [i for i in idx.tolist() if name in digests.get(i, {})
               and schema.value_crc(arr.dtype, values[i]) != digests[i][name]]
    if changed:
        out.append(Problem(name, schema.chunk_file(arr, changed[0]), "value is not the one written for this item "
                           "(its digest differs: rewritten after prep?)", tuple(changed)))


def _read_done(group, path) -> tuple[np.ndarray | None, Problem | None]:
    arr = schema.open_array(group, path, "done")
    try:
        return np.asarray(arr[...], dtype=bool), None
    except Exception as exc:  # the done flags themselves cannot be read
        rel = f"done/{arr.metadata.encode_chunk_key((0,) * arr.ndim)}"
        return None, Problem("done", rel, f"done flags damaged ({schema.first_line(exc)})",
                             tuple(range(int(arr.shape[0]))), True)


def scan(group, path, *, full: bool | Callable[[str, int], bool] = False) -> Scan:
    """Check the chunks of every done item (see module docstring). `full`: True, False, or a function
    (array name, shard) -> bool choosing the shards whose chunk checksums are read."""
    meta = group.attrs.get(schema.META, {})
    result = Scan(version=schema.store_version(meta), n_items=int(group["done"].shape[0]))
    done, problem = _read_done(group, path)
    if problem is not None:
        result.problems.append(problem)
        return result
    result.n_done = int(done.sum())
    root = _root(group)
    idx = np.flatnonzero(done)
    if root is not None and idx.size:
        _scan_arrays(group, path, root, idx, full, result.problems)
    lost = _lost_done_flags(group, done, path)
    if lost is not None:
        result.problems.append(lost)
    return result


def _lost_done_flags(group, done: np.ndarray, path) -> Problem | None:
    """Items neither done nor failed in a store whose last prep run finished."""
    if not group.attrs.get(schema.META, {}).get(schema.COMPLETE):
        return None
    from xpgan.pipeline.store import get_failures

    failed = {int(f.get("index", -1)) for f in get_failures(group, path)}
    lost = [i for i in np.flatnonzero(~done).tolist() if i not in failed]
    if not lost:
        return None
    return Problem("done", "", "neither done nor failed although the last prep run finished (done flags lost?)",
                   tuple(lost))


def check_done_data(group, path) -> None:
    """StoreDamageError (one line) when a done item's data is missing or damaged (cheap scan)."""
    found = scan(group, path)
    if found.problems:
        n = len(found.damaged_items)
        raise schema.StoreDamageError(
            f"{path}: {n} item(s) marked done have missing or damaged data ({describe(found.problems, 2)}); "
            f"run `xpgan inspect --verify {path}` for the list, then rerun prep on it to redo them")


def check_ready(group, path, *, allow_incomplete: bool = False) -> None:
    """XPGANError unless the store is finished and not being written (or allow_incomplete)."""
    from xpgan.pipeline.store import lock_holder

    if allow_incomplete:
        return
    meta = group.attrs.get(schema.META, {})
    done = np.asarray(schema.read(group, path, "done", ...), dtype=bool)
    count = f"{int(done.sum())} of {done.size} items done"
    holder = lock_holder(path)
    if holder is not None:
        who = f" (pid {holder})" if holder else ""
        raise XPGANError(f"{path}: a prep run{who} is writing this store now ({count}); wait for it to "
                         "finish, or pass --allow-incomplete to use the items done so far")
    if meta.get(schema.COMPLETE, False):
        return
    if schema.store_version(meta) < 2:
        # format 1 prep cxr cleared `complete` when items failed: there, every item done or failed is finished
        failed = {int(f.get("index", -1)) for f in group.attrs.get(schema.FAILURES, [])}
        if all(d or i in failed for i, d in enumerate(done.tolist())):
            return
        raise XPGANError(f"{path}: incomplete store, its last prep run did not finish ({count}); prep it "
                         "again with --overwrite (format 1 stores are not resumed), or pass --allow-incomplete "
                         "to use the done items")
    raise XPGANError(f"{path}: incomplete store, its last prep run did not finish ({count}); rerun the same "
                     "prep command to finish it, or pass --allow-incomplete to use the done items")


def repair_for_resume(group, path) -> list[Problem]:
    """Find done items whose data is missing or damaged and clear their done flags (see module docstring)."""
    root = _root(group)
    if root is None:
        return []
    done, problem = _read_done(group, path)
    problems = [] if problem is None else [problem]
    if done is None:
        (root / problem.file).unlink(missing_ok=True)
        done = np.zeros(len(problem.items), dtype=bool)
    else:
        lost = _lost_done_flags(group, done, path)
        problems += [lost] if lost is not None else []
    idx = np.flatnonzero(done)
    if idx.size:
        _scan_arrays(group, path, root, idx, True, problems)
    bad = sorted({i for p in problems for i in p.items})
    done[bad] = False
    # files the run will merge new items into must be readable, whatever items they hold
    extra: list[Problem] = []
    _scan_arrays(group, path, root, np.flatnonzero(~done), False, extra, need=False)
    seen = {p.file for p in problems}
    problems += [p for p in extra if p.file not in seen]
    for p in problems:
        if p.whole_file and p.file:
            (root / p.file).unlink(missing_ok=True)
    if any(p.file for p in problems):
        group["done"][...] = done
    return problems


__all__ = ["Problem", "Scan", "check_done_data", "check_ready", "describe", "repair_for_resume", "scan"]
