"""prep stopped by Ctrl-C (SIGINT to the job's process group) or SIGTERM: it keeps every finished item (a
partial shard too), says so in one line with the command that resumes, and the resumed store is byte for
byte the store of an uninterrupted run."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from prep_helpers import noise_ct_archive, slowed_cli

from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.schema import open_store

SHAPE = (8, 24, 24)
N = 12
ARGS = ["--shape", *map(str, SHAPE), "--size", "32", "--workers", "0", "--no-progress"]
# The child runs the real CLI with each item slowed down (a sleep around the real process_ct), so that the
# signal lands while items of an unfinished shard (16 items by default here: one shard) are done.
CHILD = slowed_cli("xpgan.pipeline.ct.prep_drr", "process_ct", 0.2)


def file_digests(store):
    """sha256 of every file of a store (chunks, shards and metadata), by path relative to the store."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def interrupt(src, out, sig, after_items):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "prep", "drr", str(src), str(out), *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    for _ in range(after_items):
        assert proc.stdout.readline().startswith("item")
    t0 = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: every process of the job
    else:
        os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_prep_keeps_finished_items_and_resumes_byte_identical(tmp_path, sig):
    src = noise_ct_archive(tmp_path / "src", N, seed=5)
    out = tmp_path / "cut.zarr"
    code, stderr, seconds = interrupt(src, out, sig, after_items=5)
    assert code == 128 + sig and seconds < 10
    last = stderr.strip().splitlines()[-1]
    name = "Ctrl-C (SIGINT)" if sig == signal.SIGINT else "SIGTERM"
    kept = int(np.asarray(open_store(out)["done"][:]).sum())
    assert 4 <= kept < N  # the unfinished shard's finished items were written (the 5th may be cut short)
    assert last == (f"prep drr interrupted by {name}: {kept} of {N} items kept in {out}; resume with: "
                    f"xpgan prep drr {src} {out} {' '.join(ARGS)}")
    assert len(stderr.strip().splitlines()) == 1

    resumed = prep_drr(src, out, shape=SHAPE, geometry={"kind": "cone", "size": 32}, workers=0, progress=False)
    assert resumed.skipped == kept and resumed.done == N
    ref = tmp_path / "ref.zarr"
    prep_drr(src, ref, shape=SHAPE, geometry={"kind": "cone", "size": 32}, workers=0, progress=False)
    assert file_digests(out) == file_digests(ref)
    assert not (tmp_path / "cut.zarr.lock").exists() and not (tmp_path / "ref.zarr.lock").exists()


WORK = """
import time

def work(x):
    time.sleep(0.4)
    return {"x": x}
"""
DASK_CHILD = """
import sys
from xpgan.errors import Interrupted
from xpgan.pipeline.runner import Task, run_items
import slowwork

def write(batch):
    print("wrote", *sorted(batch), flush=True)

try:
    run_items([Task(i, i) for i in range(40)], slowwork.work, write, group_size=4, workers=2, progress=False)
except Interrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_stops_dask_workers_quietly_and_keeps_finished_items(tmp_path):
    (tmp_path / "slowwork.py").write_text(WORK)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + [p for p in sys.path if p]))
    proc = subprocess.Popen([sys.executable, "-c", DASK_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    first = proc.stdout.readline().split()
    assert first == ["wrote", "0", "1", "2", "3"]
    time.sleep(0.6)  # items of the next group finish on the two workers
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # the client and every worker process, as a terminal does
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - t0 < 15
    assert stderr.strip() == "items interrupted by Ctrl-C (SIGINT)"  # no worker tracebacks
    later = [int(i) for line in stdout.splitlines() for i in line.split()[1:]]
    assert any(len(line.split()) - 1 < 4 for line in stdout.splitlines())  # a partial group was written too
    assert later and min(later) >= 4
    assert len(later) == len(set(later)) and max(later) < 40


CXR_CHILD = slowed_cli("xpgan.pipeline.cxr.prep_cxr", "_process", 0.3)


def test_interrupted_prep_cxr_resumes_byte_identical(tmp_path):
    from PIL import Image

    from xpgan.pipeline.cxr.prep_cxr import prep_cxr

    src = tmp_path / "src"
    for k, cls in enumerate(("covid", "normal")):
        (src / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((30, 26), 20 * i + k + 40, np.uint8)).save(src / cls / f"{cls}{i}.png")
    salt = tmp_path / "salt"
    salt.write_text("s" * 32)
    out, ref = tmp_path / "cut.zarr", tmp_path / "ref.zarr"
    args = ["prep", "cxr", str(src), str(out), "--size", "32", "--workers", "0", "--no-progress",
            "--salt-file", str(salt)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", CXR_CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    for _ in range(3):
        assert proc.stdout.readline().startswith("item")
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    kept = int(np.asarray(open_store(out)["done"][:]).sum())
    assert proc.returncode == 130 and 2 <= kept < 10
    assert stderr.strip().splitlines() == [f"prep cxr interrupted by Ctrl-C (SIGINT): {kept} of 10 items kept in "
                                           f"{out}; resume with: xpgan {' '.join(args)}"]
    assert prep_cxr([src], out, size=32, workers=0, progress=False, salt_file=salt).skipped == kept
    prep_cxr([src], ref, size=32, workers=0, progress=False, salt_file=salt)
    assert file_digests(out) == file_digests(ref)
