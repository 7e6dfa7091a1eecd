"""One answer to "is this file DICOM?", shared by the CT readers, CT discovery and CXR discovery/reading.

- `has_dicom_magic(path)`: the content test. A DICOM Part 10 file has "DICM" at byte 128; a preamble-less
  dataset (some old exports) starts with a group 0008 element (bytes 08 00 xx 00). Raises OSError when the
  file cannot be opened or read, so callers decide whether an unreadable file is a failure or not.
- `dicom_like_name(name)`: the name test, for files whose content cannot be trusted (unreadable, damaged
  header): a DICOM suffix (.dcm, .dicom, .dic, .ima), no suffix (DICOM CD layouts: `IMG0001`), or a numeric
  suffix (`IM.0001`, UID-named files `1.2.840....5`), except a few names that exports put beside the images
  (DICOMDIR, README, LICENSE, LOCKFILE, VERSION).
- `is_dicom_file(path)`: a DICOM suffix or the magic (False when unreadable): what the CXR reader uses to
  pick the DICOM decoder over Pillow.
- `is_nifti_name(name)`: a `.nii` or `.nii.gz` name (any case): NIfTI files are known by their name only.
- `not_regular_reason(path)`: why a path that is neither a regular file nor a folder (a FIFO, a device such
  as a link to /dev/zero, a socket) is not read: every reader and the fingerprint step ask it first, so such
  an input fails alone, with that reason, instead of blocking or streaming forever.
- `walk_once(top)`: the folder walk of CT and CXR discovery: symlinked folders followed, each real folder
  walked once, loops pruned and reported.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Iterator

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
NOT_IMAGE_NAMES = frozenset({"DICOMDIR", "README", "LICENSE", "LOCKFILE", "VERSION"})


def not_regular_reason(path: str | os.PathLike) -> str | None:
    """Why `path` (links followed) is not read: a FIFO, a device, a socket; None for a regular file, a folder,
    or a path that does not exist (its reader says so)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "special")
    return f"{kind}, not a regular file: not read"


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """DICM at byte 128, or a raw dataset starting with group 0008. Raises OSError if unreadable (also for a
    FIFO or a device, which is never opened)."""
    reason = not_regular_reason(path)
    if reason is not None:
        raise OSError(errno.EINVAL, reason, str(path))
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] == b"\x08\x00" and head[3:4] == b"\x00"


def dicom_like_name(name: str) -> bool:
    """Whether a file of this name in a series folder is probably meant to be a DICOM image."""
    if name.startswith(".") or name.upper() in NOT_IMAGE_NAMES:
        return False
    suffix = Path(name).suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix == "" or suffix[1:].isdigit()


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A DICOM suffix, or the DICOM magic (False when the file cannot be read)."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        return has_dicom_magic(path)
    except OSError:
        return False


def is_nifti_name(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def walk_once(top: str | os.PathLike, *, skip: Callable[[str], str | None] = lambda name: None,
              onerror: Callable[[OSError], None] | None = None
              ) -> Iterator[tuple[str, list[str], list[str], list[tuple[str, str]]]]:
    """os.walk(top, followlinks=True), sub-folders in name order, each real folder walked once.

    Yields (root, dirs, files, pruned): `pruned` lists (name, reason) of the sub-folders of `root` left out:
    `skip(name)`'s reason when it gives one (hidden, *.zarr...), "symlink loop" for a link to `root` or a
    folder above it, "same folder as REL" for a second way to a folder already walked (REL relative to
    `top`). A caller may prune `dirs` further in place, as with os.walk."""
    walked = {os.path.realpath(top): "."}
    for root, dirs, files in os.walk(top, onerror=onerror, followlinks=True):
        here = os.path.realpath(root)
        keep, pruned = [], []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(root, d))
            reason = skip(d)
            if reason is None and (real == here or here.startswith(real.rstrip(os.sep) + os.sep)):
                reason = "symlink loop"
            if reason is None and real in walked:
                reason = f"same folder as {walked[real]}"
            if reason is None:
                walked[real] = os.path.relpath(os.path.join(root, d), top).replace(os.sep, "/")
                keep.append(d)
            else:
                pruned.append((d, reason))
        dirs[:] = keep
        yield root, dirs, files, pruned
