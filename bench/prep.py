"""Benchmark of `xpgan prep drr` against reading the same archive (read + gunzip only).

Public API
----------
bench_prep(*, n=24, shape=(40, 512, 512), out_shape=(64, 256, 256), workers=2, archive=None, stages=3)
    -> BenchPrepResult
    Generates (once, reused when `archive` already holds it) a MosMed-like archive of `n` int16 .nii.gz chest
    phantoms, then measures
      - per-stage CPU and wall times of one process on `stages` volumes, as a worker runs them (read_ct, the
        baseline's read; read_ct_stored; resize with the HU conversion fused into its first pass; int16
        rounding; DRR; chunk encoding; store write), and skimage.transform.resize(anti_aliasing=True) once
        for comparison (when scikit-image is installed);
      - read-only throughput through the same Dask runner and local workers (each task reads one volume with
        read_ct and returns nothing), and end-to-end `prep_drr` throughput; wall and CPU seconds (workers
        and this process, the writer) of both, and their ratios (goal <= 1.5);
      - the peak RSS of each worker process during the end-to-end run.
    CPU seconds do not depend on other work on the machine the way wall time does: compare CPU ratios on a
    shared machine. Start-up (imports, Numba cache loads) is done before timing, in the workers and in this
    process: a first prep_drr on a 1-volume archive imports what the client needs (zarr, pandas for the
    registry, ...; ~0.5 s CPU, once per command, i.e. nothing per item on a real archive); its time is
    reported separately, with the ratio it would give if it were counted.
BenchPrepResult.lines() -> list[str]: the printed report.

Used by `xpgan bench prep` and `bench/prep_bench.py`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from xpgan import bounds as B
from xpgan.errors import XPGANError
from xpgan.options import option
from xpgan.pipeline.ct.prep_drr import DEFAULT_SHAPE


@dataclass(kw_only=True)
class BenchPrepConfig:
    """`bench prep`: the generated archive, the prep drr settings and the runs."""

    n: int = option(24, "Volumes in the generated MosMed-like archive.", bound=B.COUNT)
    shape: tuple[int, int, int] = option((40, 512, 512), "Archive volume size D H W, voxels (int16 .nii.gz).",
                                         bound=B.check_ct_shape, metavar="D H W")
    out_shape: tuple[int, int, int] = option(DEFAULT_SHAPE, "prep drr --shape D H W, voxels.",
                                             bound=B.check_ct_shape, metavar="D H W")
    workers: int = option(2, "Local Dask worker processes for both runs.", bound=B.WORKERS)
    stages: int = option(3, "Volumes timed stage by stage in one process (0: skip).", bound=B.INDEX)
    archive: Optional[Path] = option(None, "Where the archive is generated (reused when it is already there).",
                                     default_text="a folder in the temp dir")


def default_archive() -> Path:
    return Path(tempfile.gettempdir()) / "xpgan_prep_bench_archive"


def make_archive(root: Path, n: int, shape: Sequence[int]) -> bool:
    """A MosMed-like archive of n int16 .nii.gz phantoms (slice count fixed); False when already there."""
    root = Path(root)
    marker = root / f".bench_{n}_{'x'.join(map(str, shape))}"
    if marker.exists():
        return False
    if root.exists():
        if not any(p.name.startswith(".bench_") for p in root.iterdir()):
            raise XPGANError(f"{root}: exists and is not a benchmark archive; choose another --archive")
        shutil.rmtree(root)
    from xpgan.pipeline.synth.archives import write_mosmed_archive

    write_mosmed_archive(root, n, seed=0, shape=tuple(shape), slice_jitter=0)
    marker.write_text("ok")
    return True


def read_only(path: str) -> dict:
    from xpgan.pipeline.ct.readers import read_ct

    ct = read_ct(path)
    return {"voxels": int(ct.hu.size)}


def warm_worker() -> None:
    """Imports, Numba cache loads and the CUDA probe, so that start-up is not timed."""
    from xpgan.drr import ConeGeometry, render_drr
    from xpgan.pipeline.ct.resize import resize_volume

    for dtype in (np.float32, np.int16):
        v, s = resize_volume(np.zeros((8, 16, 16), dtype), (1, 1, 1), (4, 8, 8))
    v, s = resize_volume(np.zeros((16, 16, 8), np.int16).T[::-1], (1, 1, 1), (4, 8, 8))  # mirrored views
    render_drr(v.astype(np.int16), s, ConeGeometry(size=8), backend="auto")


def worker_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) used so far by this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _timed_run(client, fn):
    """fn() -> (wall s, workers' CPU s, this process's CPU s, fn's result)."""
    w0, c0 = client.run(cpu_seconds), cpu_seconds()
    t = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    w1, c1 = client.run(cpu_seconds), cpu_seconds()
    return wall, sum(w1[k] - w0[k] for k in w1), c1 - c0, out


@dataclass
class BenchPrepResult:
    n: int
    shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    workers: int
    stage_cpu_ms: dict[str, float] = field(default_factory=dict)  # median per volume, one process
    stage_wall_ms: dict[str, float] = field(default_factory=dict)
    skimage_ms: float | None = None  # wall, one call
    read_s: float = 0.0  # wall
    read_cpu_workers_s: float = 0.0
    read_cpu_client_s: float = 0.0
    prep_s: float = 0.0
    prep_cpu_workers_s: float = 0.0
    prep_cpu_client_s: float = 0.0
    startup_s: float = 0.0  # wall, the client's first prep_drr call (1 tiny volume), excluded from prep_s
    startup_cpu_client_s: float = 0.0
    done: int = 0
    failed: int = 0
    worker_rss_mb: list[float] = field(default_factory=list)
    client_rss_mb: float = 0.0
    load: str = ""

    @property
    def ratio(self) -> float:
        return self.prep_s / self.read_s

    @property
    def cpu_ratio(self) -> float:
        return (self.prep_cpu_workers_s + self.prep_cpu_client_s) / (self.read_cpu_workers_s + self.read_cpu_client_s)

    def lines(self) -> list[str]:
        n, w = self.n, self.workers
        out = [f"archive: {n} int16 .nii.gz volumes of {self.shape} (d, h, w); output {self.out_shape}, DRR 256 px; "
               f"machine load before: {self.load}"]
        if self.stage_cpu_ms:
            out.append("one process, per volume (median), CPU ms: "
                       + ", ".join(f"{k} {v:.0f}" for k, v in self.stage_cpu_ms.items()))
            out.append("                                 wall ms: "
                       + ", ".join(f"{k} {v:.0f}" for k, v in self.stage_wall_ms.items()))
            pipeline = sum(v for k, v in self.stage_cpu_ms.items() if k != "read_ct")
            read = self.stage_cpu_ms["read_ct"]
            out.append(f"  prep stages (all but read_ct) {pipeline:.0f} CPU ms vs read_ct {read:.0f} = "
                       f"{pipeline / read:.2f}x")
        if self.skimage_ms is not None:
            ours = self.stage_wall_ms.get("resize", float("nan"))
            out.append(f"resize: ours {ours:.0f} ms vs skimage resize(anti_aliasing=True) {self.skimage_ms:.0f} ms "
                       f"({self.skimage_ms / ours:.1f}x)")
        out.append(f"read+gunzip only: {n} volumes in {self.read_s:.2f} s = {n / self.read_s:.2f} volumes/s "
                   f"({w} workers); CPU {1000 * self.read_cpu_workers_s / n:.0f} ms/volume in workers + "
                   f"{1000 * self.read_cpu_client_s / n:.0f} in the client")
        out.append(f"prep drr end-to-end: {self.done} volumes in {self.prep_s:.2f} s = {n / self.prep_s:.2f} volumes/s "
                   f"({w} workers, zarr write included); CPU {1000 * self.prep_cpu_workers_s / n:.0f} ms/volume in "
                   f"workers + {1000 * self.prep_cpu_client_s / n:.0f} in the client (writer)")
        out.append(f"ratio end-to-end / read-only = {self.ratio:.2f} wall (goal <= 1.5), {self.cpu_ratio:.2f} in CPU "
                   "time (less sensitive to other load on the machine)")
        cpu_startup = self.startup_cpu_client_s / (self.read_cpu_workers_s + self.read_cpu_client_s)
        out.append(f"one-time client start-up (first prep_drr in the process, 1 tiny volume; excluded above): "
                   f"{self.startup_s:.2f} s wall, {self.startup_cpu_client_s:.2f} s CPU; counted in, the ratios "
                   f"would be {(self.prep_s + self.startup_s) / self.read_s:.2f} wall, "
                   f"{self.cpu_ratio + cpu_startup:.2f} CPU")
        out.append("peak RSS per worker, MB: " + ", ".join(f"{v:.0f}" for v in self.worker_rss_mb)
                   + f"  (client {self.client_rss_mb:.0f})")
        return out


def stage_times(files: Sequence[str], out_shape, k: int = 3, workers: int = 1) -> tuple[dict, dict, float | None]:
    """Median CPU and wall ms per stage over k volumes, in this process, the way a worker runs them (Numba
    threads: cores / workers; the k items are written as one shard, as the writer does; write = 1/k of it)."""
    import numba

    from xpgan.drr import ConeGeometry, render_drr
    from xpgan.pipeline import store as st
    from xpgan.pipeline.ct.readers import read_ct, read_ct_stored
    from xpgan.pipeline.ct.resize import quantize_int16, resize_volume
    from xpgan.pipeline.runner import usable_cores

    geom = ConeGeometry(size=256)
    names = ["read_ct", "read_stored", "resize", "quantize", "drr", "encode", "write"]
    cpu: dict[str, list[float]] = {s: [] for s in names}
    wall: dict[str, list[float]] = {s: [] for s in names}
    tmp = Path(tempfile.mkdtemp())
    skimage_ms = None
    threads = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads, usable_cores() // max(1, workers))))
    try:
        k = min(k, len(files))
        group = st.create_or_open(tmp / "v.zarr", kind="bench", n_items=k, attrs={}, identity={},
                                  arrays={"volume": ("int16", tuple(out_shape)), "drr": ("float32", (256, 256))},
                                  items_per_shard=k)
        encoders = st.item_encoders(group)
        warm_worker()
        batch = {}
        for i, f in enumerate(files[:k]):
            marks = [(time.process_time(), time.perf_counter())]

            def mark():
                marks.append((time.process_time(), time.perf_counter()))

            ct_float = read_ct(f)

            mark()
            del ct_float
            ct = read_ct_stored(f)
            mark()
            vol, sp = resize_volume(ct.data, ct.spacing, out_shape, scale=ct.scale, offset=ct.offset)
            mark()
            v16, _ = quantize_int16(vol)
            mark()
            drr = render_drr(v16, sp, geom, backend="cpu")
            mark()
            batch[i] = st.encode_items({"volume": v16, "drr": drr}, encoders)
            mark()
            for j, name in enumerate(names[:-1]):
                cpu[name].append(1000 * (marks[j + 1][0] - marks[j][0]))
                wall[name].append(1000 * (marks[j + 1][1] - marks[j][1]))
            if i == 0:
                with contextlib.suppress(ImportError):
                    from skimage.transform import resize as sk_resize

                    hu = read_ct(f).hu
                    t = time.perf_counter()
                    sk_resize(hu, out_shape, order=1, anti_aliasing=True, preserve_range=True)
                    skimage_ms = 1000 * (time.perf_counter() - t)
        c, t = time.process_time(), time.perf_counter()
        st.write_items(group, batch)
        cpu["write"].append(1000 * (time.process_time() - c) / k)
        wall["write"].append(1000 * (time.perf_counter() - t) / k)
    finally:
        numba.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return ({s: float(np.median(v)) for s, v in cpu.items()}, {s: float(np.median(v)) for s, v in wall.items()},
            skimage_ms)


def bench_prep(*, n: int = BenchPrepConfig.n, shape=BenchPrepConfig.shape, out_shape=DEFAULT_SHAPE,
               workers: int = BenchPrepConfig.workers, archive: str | os.PathLike | None = None,
               stages: int = BenchPrepConfig.stages) -> BenchPrepResult:
    """Run the benchmark (see module docstring)."""
    from distributed import Client, LocalCluster

    from xpgan.pipeline import runner
    from xpgan.pipeline.ct.discover import discover_ct
    from xpgan.pipeline.ct.prep_drr import prep_drr

    shape, out_shape = tuple(int(s) for s in shape), tuple(int(s) for s in out_shape)
    if n < 1 or workers < 1 or stages < 0 or len(shape) != 3 or len(out_shape) != 3 \
            or min(shape) < 2 or min(out_shape) < 2:
        raise XPGANError("bench prep needs n >= 1, workers >= 1, stages >= 0 and sizes of at least 2 voxels")
    archive = Path(archive) if archive else default_archive()
    make_archive(archive, n, shape)
    files = [it.path for it in discover_ct(archive).items]
    res = BenchPrepResult(n=len(files), shape=shape, out_shape=out_shape, workers=workers,
                          load=" ".join(f"{x:.2f}" for x in os.getloadavg()))

    def cluster():
        with runner.local_worker_config():  # the workers of prep drr's own local cluster
            return LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                                silence_logs=logging.ERROR)

    with cluster() as lc, Client(lc) as client:
        client.run(warm_worker)
        tasks = [runner.Task(i, f) for i, f in enumerate(files)]
        res.read_s, res.read_cpu_workers_s, res.read_cpu_client_s, rr = _timed_run(client, lambda: runner.run_items(
            tasks, read_only, lambda b: None, scheduler=lc.scheduler_address, progress=False))
        if rr.failed:
            raise XPGANError(f"{archive}: reading failed: {rr.failed}")

    out = Path(tempfile.mkdtemp()) / "bench.zarr"
    try:
        with cluster() as lc, Client(lc) as client:
            client.run(warm_worker)
            # the client's start-up (imports), timed apart: a first prep_drr on a 1-volume archive
            from xpgan.pipeline.synth.archives import ARCHIVE_SPACING_RANGE_MM, write_mosmed_archive

            write_mosmed_archive(out.parent / "warm", 1, seed=0, shape=(4, 16, 16), slice_jitter=0)
            c0, t0 = cpu_seconds(), time.perf_counter()
            prep_drr(out.parent / "warm", out.parent / "warm.zarr", shape=(4, 8, 8),
                     scheduler=lc.scheduler_address, progress=False, overwrite=True,
                     spacing_range_mm=ARCHIVE_SPACING_RANGE_MM)
            res.startup_s, res.startup_cpu_client_s = time.perf_counter() - t0, cpu_seconds() - c0
            res.prep_s, res.prep_cpu_workers_s, res.prep_cpu_client_s, s = _timed_run(client, lambda: prep_drr(
                archive, out, shape=out_shape, scheduler=lc.scheduler_address, progress=False, overwrite=True,
                spacing_range_mm=ARCHIVE_SPACING_RANGE_MM))
            res.worker_rss_mb = list(client.run(worker_peak_rss_mb).values())
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    res.done, res.failed = s.done, s.failed
    res.client_rss_mb = worker_peak_rss_mb()
    # After the Dask runs: a process's peak RSS is inherited by the processes it spawns (kept across exec).
    if stages:
        res.stage_cpu_ms, res.stage_wall_ms, res.skimage_ms = stage_times(files, out_shape, k=stages,
                                                                           workers=workers)
    return res


def bench_prep_from(cfg: BenchPrepConfig) -> BenchPrepResult:
    """The `bench prep` command: bench_prep with its configuration."""
    if cfg.workers < 1:
        raise XPGANError("--workers must be >= 1 (both runs use Dask)")
    return bench_prep(n=cfg.n, shape=cfg.shape, out_shape=cfg.out_shape, workers=cfg.workers, archive=cfg.archive,
                      stages=cfg.stages)
