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
