"""Shared fixtures of the pipeline tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

# markers.py (the marker phantom) is a helper module next to the tests (collected with --import-mode=importlib)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def run_cli_unprivileged():
    """run(*args) -> CompletedProcess of `python -m xpgan.cli ARGS` in a process that file permissions apply
    to: as root (which reads and writes everything), without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    (setpriv); the test is skipped when that is not possible."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, sys.executable, "-m", "xpgan.cli", *map(str, args)], capture_output=True,
                              text=True, env=env, timeout=300)

    return run
