"""Catching SIGINT and SIGTERM while a job runs, shared by prep (pipeline/runner.py) and train
(model/train.py): a context manager that installs its `_handler` for both signals in the main thread and
puts the previous handlers back on exit (elsewhere it installs nothing: only the main thread may)."""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalCatcher:
    """Subclasses define `_handler(signum, frame)`."""

    def __init__(self):
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        raise NotImplementedError

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
