"""Benchmark `xpgan prep drr` against reading the same archive (read + gunzip only).

    python bench/prep_bench.py [--n 24] [--shape 40 512 512] [--workers 2] [--archive DIR] [--out-shape 64 256 256]

Generates (once, reused when DIR already holds it) a MosMed-like archive of N int16 .nii.gz chest phantoms,
then prints:
  - per-stage times of one process on a few volumes (read, resize, DRR, store write), and the resize time
    of skimage.transform.resize(anti_aliasing=True) for comparison;
  - read-only throughput through the same Dask runner and workers (each task reads one volume and returns
    nothing), and the end-to-end prep throughput, and their ratio (goal <= 1.5);
  - the peak RSS of each worker process during the end-to-end run.
Figures, not a test: run it on an otherwise idle machine for meaningful numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_archive(root: Path, n: int, shape) -> None:
    marker = root / f".bench_{n}_{'x'.join(map(str, shape))}"
    if marker.exists():
        return
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    try:
        from xpgan.pipeline.phantoms import write_mosmed_archive

        write_mosmed_archive(root, n, seed=0, shape=tuple(shape), slice_jitter=0)
    except ImportError:  # phantoms not available: a quick synthetic body with noise
        from xpgan.pipeline.writers import write_nifti

        rng = np.random.default_rng(0)
        d, h, w = shape
        yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
        body = (yy / 0.7) ** 2 + (xx / 0.9) ** 2 < 1
        for i in range(n):
            vol = np.where(body, 40.0, -1000.0)[None].repeat(d, 0) + rng.normal(0, 20, shape)
            write_nifti(root / "studies" / f"CT-{i % 5}" / f"study_{i:04d}.nii.gz", vol.astype(np.float32),
                        (8.0, 0.7, 0.7), axcodes=("L", "P", "S"))
    marker.write_text("ok")
    print(f"archive: {n} volumes of {tuple(shape)} written to {root} in {time.perf_counter() - t:.1f} s")


def read_only(path: str) -> dict:
    from xpgan.pipeline.io import read_ct

    ct = read_ct(path)
    return {"voxels": int(ct.hu.size)}


def warm_worker() -> None:
    """Imports, numba cache loads and the CUDA probe, so that start-up is not timed."""
    from xpgan.drr import ConeGeometry, render_drr
    from xpgan.pipeline.resize import resize_volume

    v, s = resize_volume(np.zeros((8, 16, 16), np.float32), (1, 1, 1), (4, 8, 8))
    render_drr(v.astype(np.int16), s, ConeGeometry(size=8), backend="auto")


def worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) used so far by this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_run(client, fn) -> tuple[float, float, float, object]:
    """Run fn(); returns (wall s, workers' CPU s, this process's CPU s (client, scheduler, writer), result).

    CPU seconds do not depend on what else runs on the machine (unlike wall time), so their ratio is the
    figure to compare on a shared machine.
    """
    w0, c0 = client.run(cpu_seconds), cpu_seconds()
    t = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    w1, c1 = client.run(cpu_seconds), cpu_seconds()
    return wall, sum(w1[k] - w0[k] for k in w1), c1 - c0, out


def stage_times(files, out_shape, k: int = 3) -> None:
    from xpgan.drr import ConeGeometry, render_drr
    from xpgan.pipeline import store as st
    from xpgan.pipeline.io import read_ct
    from xpgan.pipeline.resize import quantize_int16, resize_volume

    geom = ConeGeometry(size=256)
    t = {"read": [], "resize": [], "drr": [], "write": [], "skimage": []}
    tmp = Path(tempfile.mkdtemp())
    group = st.create_or_open(tmp / "v.zarr", kind="bench", arrays={"volume": ("int16", tuple(out_shape))},
                              n_items=k, attrs={}, identity={}, items_per_shard=1)
    # warm up the numba kernels outside the timings
    v0, s0 = resize_volume(np.zeros((8, 16, 16), np.float32), (1, 1, 1), (4, 8, 8))
    render_drr(v0.astype(np.int16), s0, ConeGeometry(size=8), backend="cpu")
    for i, f in enumerate(files[:k]):
        a = time.perf_counter(); ct = read_ct(f); b = time.perf_counter()
        vol, sp = resize_volume(ct.hu, ct.spacing, out_shape); c = time.perf_counter()
        v16, _ = quantize_int16(vol)
        render_drr(v16, sp, geom, backend="cpu"); d = time.perf_counter()
        st.write_items(group, {i: {"volume": v16}}); e = time.perf_counter()
        t["read"].append(b - a); t["resize"].append(c - b); t["drr"].append(d - c); t["write"].append(e - d)
        if i == 0:
            try:
                from skimage.transform import resize as sk_resize

                s = time.perf_counter()
                sk_resize(ct.hu, out_shape, order=1, anti_aliasing=True, preserve_range=True)
                t["skimage"].append(time.perf_counter() - s)
            except ImportError:
                pass
    shutil.rmtree(tmp)
    print("one process, per volume (median of %d), ms: " % k
          + ", ".join(f"{name} {1000 * np.median(v):.0f}" for name, v in t.items() if v))
    if t["skimage"]:
        print(f"resize: ours {1000 * np.median(t['resize']):.0f} ms vs skimage resize(anti_aliasing=True) "
              f"{1000 * t['skimage'][0]:.0f} ms ({t['skimage'][0] / np.median(t['resize']):.1f}x); "
              f"ours / read = {np.median(t['resize']) / np.median(t['read']):.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--shape", type=int, nargs=3, default=(40, 512, 512), metavar=("D", "H", "W"))
    ap.add_argument("--out-shape", type=int, nargs=3, default=(64, 256, 256), metavar=("D", "H", "W"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--archive", type=Path, default=Path(tempfile.gettempdir()) / "xpgan_prep_bench_archive")
    args = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    from xpgan.pipeline.discover import discover_ct
    from xpgan.pipeline.prep_drr import prep_drr
    from xpgan.pipeline.runner import Task, run_items

    make_archive(args.archive, args.n, args.shape)
    files = [it.path for it in discover_ct(args.archive).items]
    stage_times(files, tuple(args.out_shape))

    def cluster():
        from xpgan.pipeline import runner

        # the same worker environment as prep drr's own local cluster (no MALLOC_TRIM_THRESHOLD_)
        env = runner.worker_environ() if hasattr(runner, "worker_environ") else contextlib.nullcontext()
        with env:
            return LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None,
                                silence_logs=logging.ERROR)

    # Warm both clusters' workers (imports, numba cache) before timing, so start-up is not counted.
    with cluster() as lc, Client(lc) as client:
        addr = lc.scheduler_address
        client.run(warm_worker)
        t_read, w_read, c_read, res = timed_run(client, lambda: run_items(
            [Task(i, f) for i, f in enumerate(files)], read_only, lambda b: None, scheduler=addr, progress=False))
        assert not res.failed, res.failed

    out = Path(tempfile.mkdtemp()) / "bench.zarr"
    with cluster() as lc, Client(lc) as client:
        addr = lc.scheduler_address
        client.run(warm_worker)
        t_prep, w_prep, c_prep, s = timed_run(client, lambda: prep_drr(
            args.archive, out, shape=tuple(args.out_shape), scheduler=addr, progress=False, overwrite=True))
        rss = client.run(worker_peak_rss_mb)
    shutil.rmtree(out.parent)
    n = len(files)
    print(f"read+gunzip only: {n} volumes in {t_read:.2f} s = {n / t_read:.2f} volumes/s ({args.workers} workers); "
          f"CPU {1000 * w_read / n:.0f} ms/volume in workers + {1000 * c_read / n:.0f} in the client")
    print(f"prep drr end-to-end: {s.done} volumes in {t_prep:.2f} s = {n / t_prep:.2f} volumes/s "
          f"({args.workers} workers, output {tuple(args.out_shape)}, DRR 256 px, zarr write included); "
          f"CPU {1000 * w_prep / n:.0f} ms/volume in workers + {1000 * c_prep / n:.0f} in the client (writer)")
    print(f"ratio end-to-end / read-only = {t_prep / t_read:.2f} wall (goal <= 1.5), "
          f"{(w_prep + c_prep) / (w_read + c_read):.2f} in CPU time (independent of the machine's load)")
    print("peak RSS per worker, MB: " + ", ".join(f"{v:.0f}" for v in rss.values())
          + f"  (client {worker_peak_rss_mb():.0f})")
    return 0 if s.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
