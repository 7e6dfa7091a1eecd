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


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe_text(text: str) -> str:
    """`text` (a file name, a path, a message naming one) as one line of valid UTF-8, losslessly.

    Bytes of a name that are not UTF-8 (kept by Python as surrogate escapes) become `\\xNN`, control
    characters `\\n`, `\\r`, `\\t` or `\\xNN`, and a backslash `\\\\`; any other text is unchanged. So a name
    can neither split a line of a log or a failure record nor stop a UTF-8 writer, and the original bytes can
    be read back from the escapes."""
    text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte under surrogateescape
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def check_output_folder(out: str | os.PathLike, marker: str, command: str) -> None:
    """Refuse an output folder that exists but is not a folder, or holds files while lacking `marker` (the
    file `xpgan COMMAND` leaves in the folders it makes): a command never writes into an unrelated folder."""
    path = os.fspath(out)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise XPGANError(f"{path}: exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path) and not os.path.lexists(os.path.join(path, marker)):
        raise XPGANError(f"{path}: folder is not empty and was not made by `xpgan {command}`; choose another --out")


class Resumable(XPGANError):
    """A job that stopped part way and kept what it had finished: the same command resumes it. The command
    line appends how to resume; `exit_code` is the process's exit status."""

    exit_code = 2


class Interrupted(Resumable):
    """A job stopped by Ctrl-C (SIGINT) or SIGTERM after keeping what it had finished; `exit_code` is the
    shell's code for that signal (130, 143)."""

    def __init__(self, message: str, *, signum: int):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(message)


def signal_name(signum: int) -> str:
    """`Ctrl-C (SIGINT)`, `SIGTERM`: how a user knows the signal."""
    import signal

    name = signal.Signals(signum).name if signum in {s.value for s in signal.Signals} else f"signal {signum}"
    return "Ctrl-C (SIGINT)" if name == "SIGINT" else name
