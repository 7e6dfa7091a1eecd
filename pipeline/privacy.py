"""Patient identifiers never reach a store: only a keyed hash of them does.

The key (salt) is a per-store secret kept beside the store, in `<store>.salt` (mode 0600), not inside it,
so a store shared on its own cannot be brute-forced back to short numeric patient IDs. Pass the same salt
(`--salt-file`) to several stores to make their hashes comparable.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from xpgan.errors import InputError


def beside(store: str | os.PathLike, suffix: str) -> Path:
    """`<store><suffix>`, the file beside the RESOLVED store (symlinks and `x/../` followed), so that every path
    naming one store names the same lock, salt and failures file."""
    store = Path(os.path.realpath(store))
    return store.with_name(store.name + suffix)


def salt_path(store: str | os.PathLike) -> Path:
    """`<store>.salt`: the store's secret key for patient hashes."""
    return beside(store, ".salt")


def load_or_create_salt(store: str | os.PathLike, salt_file: str | os.PathLike | None = None) -> bytes:
    """The store's salt: from `salt_file` if given, else `<store>.salt`, created (random) if missing."""
    path = Path(salt_file) if salt_file is not None else salt_path(store)
    if path.exists():
        data = path.read_bytes().strip()
        if len(data) < 16:
            raise InputError(path, "salt file is shorter than 16 bytes")
        return data
    if salt_file is not None:
        raise InputError(path, "salt file does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


@contextlib.contextmanager
def store_salt(store: str | os.PathLike, salt_file: str | os.PathLike | None = None):
    """`load_or_create_salt` for a prep run: yields the salt. A `<store>.salt` created here is removed again
    when the block fails before the store exists (a refused run leaves nothing beside OUT); once the store
    exists its salt stays, since its patient hashes and identity depend on it."""
    created = salt_file is None and not salt_path(store).exists()
    try:
        yield load_or_create_salt(store, salt_file)
    except BaseException:
        if created and not (Path(store) / "zarr.json").exists():
            salt_path(store).unlink(missing_ok=True)
        raise


def patient_hash(patient_id: str, salt: bytes) -> str:
    """HMAC-SHA256 of the raw identifier, 16 hex digits; empty id gives the empty string."""
    patient_id = str(patient_id).strip()
    if not patient_id:
        return ""
    # surrogateescape: an id taken from a file name that is not UTF-8 hashes its original bytes
    return hmac.new(salt, patient_id.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:16]


def redact_names(text: str, path: str | os.PathLike, placeholder: str = "<file>") -> str:
    """`text` with the file's path (as given and absolute) and name replaced by `placeholder` where they stand
    as whole tokens. The stem alone is left: libraries quote paths or names, and a stem is often an ordinary
    word ("trunc" in "truncated", "alpha" in "alpha channel") that must not be mangled."""
    path = Path(path)
    if path.name not in text and repr(path.name)[1:-1] not in text:
        return text  # every form below holds the name
    parts = {str(path), os.path.abspath(path), path.name}
    parts |= {repr(p)[1:-1] for p in parts}  # as libraries quote odd names: escapes for newlines, bad bytes
    parts = {p for p in parts if p and p in text}  # most reasons name no file: no pattern to build
    for part in sorted(parts, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(part)}(?![\w-]|\.\w)", placeholder, text)
    return text


def write_seeded_salt(path: str | os.PathLike, seed: int) -> Path:
    """A salt file derived from a seed, so the same seed gives the same patient hashes (hence the same trainer
    validation carve and the same results). Only for synthetic patients (the demo, the study): real stores get
    a random secret salt (`load_or_create_salt`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hashlib.sha256(f"xpgan demo salt {seed}".encode()).hexdigest())
    return path
