"""prep drr on an existing Dask cluster: `dask scheduler` + `dask worker` started as separate processes."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.schema import open_store
from xpgan.pipeline.synth.writers import write_nifti

SHAPE = (8, 24, 24)
GEOM = {"kind": "cone", "size": 24}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_cli():
    exe = Path(sys.executable).with_name("dask")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dask")
    if not found:
        pytest.skip("the `dask` command is not installed")
    return [found]


class ExternalCluster:
    """`dask scheduler` + one `dask worker`, each a separate process in its own session, on 127.0.0.1."""

    def __init__(self, worker_env=None):
        self.addr = f"tcp://127.0.0.1:{free_port()}"
        self.env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
        self.worker_env = dict(self.env, **(worker_env or {}))
        self.procs = []

    def __enter__(self):
        from distributed import Client

        dask = dask_cli()
        self.procs.append(subprocess.Popen(
            dask + ["scheduler", "--host", "127.0.0.1", "--port", self.addr.rsplit(":", 1)[1], "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env, start_new_session=True))
        try:
            self.procs.append(subprocess.Popen(
                dask + ["worker", self.addr, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                        "--host", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.worker_env,
                start_new_session=True))
            deadline = time.time() + 60
            while True:
                try:
                    with Client(self.addr, timeout="2s") as c:
                        c.wait_for_workers(1, timeout=60)
                    break
                except (OSError, TimeoutError):
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
        except BaseException:
            self.__exit__()
            raise
        return self.addr

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            os.killpg(p.pid, signal.SIGTERM)  # each was started in its own session: only our processes
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def write_scans(src, n):
    rng = np.random.default_rng(5)
    for i in range(n):
        write_nifti(src / f"scan_{i}.nii.gz", rng.normal(-400, 300, (10, 30, 30)).astype(np.float32), (4, 1, 1))


@pytest.mark.slow
def test_prep_on_external_scheduler_matches_inline(tmp_path):
    src = tmp_path / "src"
    write_scans(src, 5)
    with ExternalCluster() as addr:
        s = prep_drr(src, tmp_path / "ext.zarr", shape=SHAPE, geometry=GEOM, scheduler=addr, progress=False)
        assert (s.done, s.failed) == (5, 0), s.text()
    prep_drr(src, tmp_path / "ref.zarr", shape=SHAPE, geometry=GEOM, workers=0, progress=False)
    got, ref = open_store(tmp_path / "ext.zarr"), open_store(tmp_path / "ref.zarr")
    for name in ref.array_keys():
        np.testing.assert_array_equal(np.asarray(got[name][:]), np.asarray(ref[name][:]), err_msg=name)


BLOCK_XPGAN = """
import sys


class _NoXpgan:
    def find_spec(self, name, path=None, target=None):
        if name == "xpgan" or name.startswith("xpgan."):
            raise ModuleNotFoundError("No module named 'xpgan'")
        return None


sys.meta_path.insert(0, _NoXpgan())
"""


@pytest.mark.slow
def test_external_workers_without_xpgan_are_refused_with_a_clear_error(tmp_path):
    from xpgan.errors import XPGANError

    src = tmp_path / "src"
    write_scans(src, 2)
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_XPGAN)  # a worker environment without xpgan installed
    with ExternalCluster(worker_env={"PYTHONPATH": str(block)}) as addr:
        t0 = time.time()
        with pytest.raises(XPGANError, match="cannot run xpgan.*install xpgan"):
            prep_drr(src, tmp_path / "ext.zarr", shape=SHAPE, geometry=GEOM, scheduler=addr, progress=False)
        assert time.time() - t0 < 60
