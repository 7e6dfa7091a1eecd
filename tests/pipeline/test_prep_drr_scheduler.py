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

from xpgan.pipeline.prep_drr import prep_drr
from xpgan.pipeline.store import open_store
from xpgan.pipeline.writers import write_nifti

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


def test_prep_on_external_scheduler_matches_inline(tmp_path):
    from distributed import Client

    src = tmp_path / "src"
    rng = np.random.default_rng(5)
    for i in range(5):
        write_nifti(src / f"scan_{i}.nii.gz", rng.normal(-400, 300, (10, 30, 30)).astype(np.float32), (4, 1, 1))
    addr = f"tcp://127.0.0.1:{free_port()}"
    dask = dask_cli()
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", addr.rsplit(":", 1)[1],
                                      "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, start_new_session=True)]
    try:
        procs.append(subprocess.Popen(dask + ["worker", addr, "--nworkers", "1", "--nthreads", "1",
                                              "--no-dashboard", "--host", "127.0.0.1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                      start_new_session=True))
        deadline = time.time() + 60
        while True:
            try:
                with Client(addr, timeout="2s") as c:
                    c.wait_for_workers(1, timeout=60)
                break
            except (OSError, TimeoutError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        s = prep_drr(src, tmp_path / "ext.zarr", shape=SHAPE, geometry=GEOM, scheduler=addr, progress=False)
        assert (s.done, s.failed) == (5, 0), s.text()
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)  # each was started in its own session: only our processes
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    prep_drr(src, tmp_path / "ref.zarr", shape=SHAPE, geometry=GEOM, workers=0, progress=False)
    got, ref = open_store(tmp_path / "ext.zarr"), open_store(tmp_path / "ref.zarr")
    for name in ref.array_keys():
        np.testing.assert_array_equal(np.asarray(got[name][:]), np.asarray(ref[name][:]), err_msg=name)
