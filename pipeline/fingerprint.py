"""What a store was made from: fingerprints of its source items, so a resume from other data is refused.

Public API
----------
FINGERPRINT_SAMPLE: bytes hashed at the start and at the end of a source file (1 MiB).
source_fingerprint(path) -> str; source_fingerprints(paths) -> list[str]
    What a source item holds, cheaply: a file's size and a SHA-256 of its first and last MiB; a folder (a
    DICOM series): every file's relative name and size, and those samples of its first and last file.
changed_sources(path, fingerprints, names)
    XPGANError naming the source items whose fingerprints differ from those an existing store recorded in
    its identity (CT stores).
changed_done_items(path, fingerprints, names)
    The same for the done items of an existing store, from their digest rows (CXR stores: schema.INPUT).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from xpgan.errors import XPGANError, safe_text
from xpgan.pipeline import schema
from xpgan.pipeline.sniff import not_regular_reason

FINGERPRINT_SAMPLE = 2**20  # bytes hashed at the start and at the end of a source file


def _sample_digest(path: Path, size: int, h) -> None:
    with open(path, "rb") as fh:
        h.update(fh.read(FINGERPRINT_SAMPLE))
        if size > FINGERPRINT_SAMPLE:
            fh.seek(max(FINGERPRINT_SAMPLE, size - FINGERPRINT_SAMPLE))
            h.update(fh.read(FINGERPRINT_SAMPLE))


def source_fingerprint(path: str | os.PathLike) -> str:
    """What a source item holds, cheaply (16 hex digits): for a file, its size and a SHA-256 of its first and
    last MiB; for a folder (a DICOM series), the relative name and size of every file in it and the first and
    last MiB of its first and last file in name order. Another archive whose files have the same names, or a
    file replaced, changes it; the modification time does not count (a copied archive keeps its identity).
    "missing" / "unreadable" / "not-regular" (a FIFO or a device, never opened) when the item cannot be read
    (its prep then fails and says why)."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: os.fsencode(p))
            for p in files:
                h.update(os.fsencode(p.relative_to(path)) + b"\0" + str(p.stat().st_size).encode() + b"\0")
            for p in dict.fromkeys(files[:1] + files[-1:]):
                _sample_digest(p, p.stat().st_size, h)
        elif not_regular_reason(path) is not None:
            return "not-regular"  # a FIFO or a device is never opened (it could block or never end)
        else:
            size = path.stat().st_size
            h.update(str(size).encode() + b"\0")
            _sample_digest(path, size, h)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return h.hexdigest()[:16]


def source_fingerprints(paths: Sequence[str | os.PathLike], threads: int = 8) -> list[str]:
    """source_fingerprint of each path, read by a few threads (the reads are small and independent)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = list(paths)
    step = max(1, -(-len(paths) // max(1, threads)))
    chunks = [paths[i:i + step] for i in range(0, len(paths), step)]  # one task per thread, not per path
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return [fp for chunk in pool.map(lambda c: [source_fingerprint(p) for p in c], chunks) for fp in chunk]


def changed_sources(path: str | os.PathLike, fingerprints: Sequence[str], names: Sequence[str],
                    key: str = "sources") -> None:
    """Refuse, naming them, source items whose content differs from what an existing store at `path` was made
    from (its identity's `key`: one fingerprint per item, in item order). Nothing to check when there is no
    such store or it lists other items (the identity check then refuses it as a whole)."""
    if not (Path(path) / "zarr.json").is_file():
        return
    try:
        old = schema.open_group(Path(path), "r").attrs.get(schema.META, {}).get(schema.IDENTITY, {}).get(key)
    except XPGANError:
        return  # damaged metadata: create_or_open reports it
    if not isinstance(old, list) or len(old) != len(fingerprints):
        return
    _refuse(path, [safe_text(names[i]) for i, (a, b) in enumerate(zip(old, fingerprints)) if a != b])


def changed_done_items(path: str | os.PathLike, fingerprints: Sequence[str], names: Sequence[str]) -> None:
    """Refuse, naming them, done items of an existing store whose source file's fingerprint differs from the
    one recorded in their digest row when they were written (schema.INPUT): files replaced in place. Nothing
    to check when there is no such store or it has other items (the identity check refuses it as a whole)."""
    import numpy as np

    if not (Path(path) / "zarr.json").is_file():
        return
    try:
        group = schema.open_group(Path(path), "r")
        done = np.asarray(group["done"][...], dtype=bool)
        rows = np.asarray(group[schema.DIGEST][...])
    except Exception:  # no digest rows, or damaged: create_or_open and the resume repair report it
        return
    if done.size != len(fingerprints):
        return
    changed = []
    for i in np.flatnonzero(done).tolist():
        was = schema.parse_digest(rows[i]).get(schema.INPUT)
        if was is not None and was != fingerprints[i]:
            changed.append(safe_text(names[i]))
    _refuse(path, changed)


def _refuse(path, changed: list[str]) -> None:
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise XPGANError(f"{path}: {len(changed)} source item(s) differ from those the store was made from (same "
                         f"name, other size or content): {shown}; point it at the sources it was made from, or "
                         "rerun with --overwrite to start again (this deletes its finished items)")
