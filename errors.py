"""Errors that the command line reports as one line, without a traceback."""
from __future__ import annotations

import os


class XPGANError(Exception):
    """Base class: a problem the user can act on (bad input, bad option, busy store)."""


class InputError(XPGANError):
    """A file or folder that cannot be used; the message names it and says why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def library_reason(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """A library's exception as a one-line reason for users (no exception class names)."""
    import gzip
    import zlib

    msg = " ".join(str(exc).split())
    if path is not None:
        msg = msg.replace(str(path), os.path.basename(path))
    if isinstance(exc, MemoryError):
        return "not enough memory to read it"
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return f"damaged gzip compression ({msg or 'invalid data'})"
    if isinstance(exc, EOFError):
        return f"the file ends early, truncated? ({msg})" if msg else "the file ends early, truncated?"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if type(exc).__name__ == "HeaderDataError":  # nibabel's, named here so that errors imports no library
        return f"not a valid NIfTI header: {msg}"
    return msg or "unreadable (no details from the reading library)"


def as_input_errors(fn):
    """Decorate a reader `fn(path, ...)`: any error other than an XPGANError (the libraries' many types on
    bad files) becomes InputError(path, "cannot read it: <library_reason>"), one line for users."""
    import functools

    @functools.wraps(fn)
    def wrapper(path, *args, **kwargs):
        try:
            return fn(path, *args, **kwargs)
        except XPGANError:
            raise
        except Exception as e:  # noqa: BLE001 - nibabel, pydicom, Pillow, numpy and zlib raise many types
            raise InputError(path, f"cannot read it: {library_reason(e, path)}") from None
    return wrapper


class DRRArgumentError(XPGANError, ValueError):
    """A bad DRR argument (name, range, shape).  Both a ValueError and a one-line CLI error."""


def os_error_line(exc: OSError) -> str:
    """An OSError as one line naming the file: `PATH: Permission denied`."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    if exc.filename is None:
        return reason
    names = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{names}: {reason}"


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Raise InputError unless `path` (a file or folder, existing or to be created) can be written.

    Checked before any work: the first existing folder on the way must be a folder this process may write
    in (os.access, so a process with privileges that bypass permissions passes; the write itself then
    still reports a one-line error through the CLI)."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError(path, f"no permission to write in this {what} folder")
        return
    if os.path.isfile(target):
        if not os.access(target, os.W_OK):
            raise InputError(path, f"no permission to overwrite this {what} file")
        return
    if os.path.lexists(target):
        raise InputError(path, f"the {what} path exists and is neither a file nor a folder")
    parent = os.path.dirname(target)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(path, f"cannot create the {what}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot create the {what}: no permission to write in {parent}")
