"""DRR throughput benchmark (used by `xpgan bench drr`): prints figures, asserts nothing.

Compile time is measured separately (first call minus a steady call); then the best of `repeats`
timed rounds is reported, since other processes share the machine.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from xpgan import bounds as B
from xpgan.drr.geometry import ConeGeometry, Geometry, GeometryKind, ParallelGeometry
from xpgan.drr.render import Backend
from xpgan.options import option
from xpgan.pipeline.synth.simple import simple_chest

VolumeDtype = Literal["int16", "float32"]  # int16: as in a CT store; float32: as read_ct returns


@dataclass(kw_only=True)
class BenchDrrConfig:
    """`bench drr`: the volume, the detector, the ray caster and how many timed calls."""

    depth: int = option(64, "Volume slices (superior-inferior), voxels.", bound=B.CT_AXIS)
    height: int = option(256, "Volume rows (anterior-posterior), voxels.", bound=B.CT_AXIS)
    width: int = option(256, "Volume columns (right-left), voxels.", bound=B.CT_AXIS)
    size: int = option(ConeGeometry.size, "Detector size, pixels per side.", bound=B.DETECTOR_SIZE)
    geometry: GeometryKind = option("cone", "cone (PA) or parallel.")
    backend: Backend = option("cpu", "Ray caster.")
    batch: int = option(1, "DRRs per call (render_drr_batch when > 1).", bound=B.BATCH)
    repeats: int = option(20, "Timed calls after warm-up; the best is reported.", bound=B.REPEATS)
    dtype: VolumeDtype = option("int16", "HU voxel type: int16 (CT store) or float32 (read_ct).")


@dataclass
class DRRBenchResult:
    backend: str
    volume_shape: tuple   # (d, h, w)
    dtype: str            # voxel type of the HU volume
    spacing_mm: tuple     # (sd, sh, sw)
    detector: int         # pixels per side
    geometry: str
    batch: int            # DRRs per call
    threads: int          # CPU threads (cpu backend) or 0
    compile_s: float      # first call minus a steady call, s
    best_call_s: float    # best wall time of one call (batch DRRs), s
    median_call_s: float  # median wall time of one call, s
    drrs_per_s: float
    steps_per_drr: int    # ray-voxel steps (voxels crossed) per DRR
    steps_per_s: float
    ns_per_step_core: float  # threads / steps_per_s (cpu), or 1/steps_per_s (cuda), in ns
    cpu_ns_per_step: float | None = None  # process CPU time per step (all threads), ns: insensitive to other load
    kernel_only_drrs_per_s: float | None = None  # cuda: volumes already on the GPU
    load_avg_1min: float | None = None

    def lines(self) -> list[str]:
        d, h, w = self.volume_shape
        out = [
            f"backend {self.backend}, {self.geometry} geometry, chest-like {self.dtype} volume {d}x{h}x{w} "
            f"(d x h x w) at "
            f"{'x'.join(f'{s:g}' for s in self.spacing_mm)} mm, "
            f"detector {self.detector}x{self.detector}, batch {self.batch}, threads {self.threads or '-'}",
            f"JIT/compile time: {self.compile_s:.2f} s (excluded below)",
            f"best call: {self.best_call_s * 1e3:.2f} ms -> {self.drrs_per_s:.1f} DRRs/s "
            f"(median call {self.median_call_s * 1e3:.2f} ms -> {self.batch / self.median_call_s:.1f} DRRs/s)",
            f"ray-voxel steps: {self.steps_per_drr / 1e6:.2f} M per DRR -> {self.steps_per_s / 1e6:.0f} M steps/s, "
            f"{self.ns_per_step_core:.2f} ns per step "
            + ("per core (wall time)" if self.backend == "cpu" else "(whole GPU)"),
        ]
        if self.cpu_ns_per_step is not None:
            rate = max(1, self.threads) * 1e9 / (self.cpu_ns_per_step * max(1, self.steps_per_drr))
            out.append(f"CPU time (all threads, best call): {self.cpu_ns_per_step:.2f} ns per step "
                       f"-> {rate:.1f} DRRs/s "
                       f"if each of the {self.threads} threads had a core to itself")
        if self.kernel_only_drrs_per_s is not None:
            out.append(f"kernel only (volume resident on GPU): {self.kernel_only_drrs_per_s:.0f} DRRs/s")
        if self.load_avg_1min is not None:
            out.append(f"machine load average (1 min) before the run: {self.load_avg_1min:.2f}")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def count_steps(shape, spacing_mm, geometry: Geometry) -> int:
    """Voxels crossed by all rays of one DRR (each crossed voxel is one step of the kernel's loop)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    start, through = geometry.rays(shape, spacing).endpoints()
    a = start.reshape(-1, 3)
    dvec = through.reshape(-1, 3) - a
    ext = np.array(shape) * spacing
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = np.where(dvec != 0, (0 - a) / dvec, -np.inf)
        t1 = np.where(dvec != 0, (ext - a) / dvec, np.inf)
    tmin = np.maximum(0.0, np.minimum(t0, t1).max(axis=1))
    tmax = np.maximum(t0, t1).min(axis=1)
    inside = np.where(dvec != 0, True, (a >= 0) & (a < ext)).all(axis=1)  # rays parallel to a slab must lie in it
    hit = (tmin < tmax) & inside
    p_in = a[hit] + tmin[hit, None] * dvec[hit]
    p_out = a[hit] + tmax[hit, None] * dvec[hit]
    i_in = np.clip(np.floor(p_in / spacing), 0, np.array(shape) - 1)
    i_out = np.clip(np.floor(p_out / spacing), 0, np.array(shape) - 1)
    return int((np.abs(i_out - i_in).sum(axis=1) + 1).sum())


def bench_drr(*, shape=(BenchDrrConfig.depth, BenchDrrConfig.height, BenchDrrConfig.width),
              spacing_mm=(5.0, 1.4, 1.4), size: int = BenchDrrConfig.size, geometry: str = BenchDrrConfig.geometry,
              backend: str = BenchDrrConfig.backend, batch: int = BenchDrrConfig.batch,
              repeats: int = BenchDrrConfig.repeats, dtype: str = BenchDrrConfig.dtype) -> DRRBenchResult:
    """Time render_drr (batch 1) or render_drr_batch (batch > 1) on a chest-like volume."""
    from xpgan.drr.render import render_drr, render_drr_batch, resolve_backend

    backend = resolve_backend(backend)
    geom = ConeGeometry(size=size) if geometry == "cone" else ParallelGeometry(size=size)
    vol = simple_chest(shape).astype(dtype)  # int16 as in the CT store; float32 as read_ct returns
    vols = np.broadcast_to(vol, (batch,) + vol.shape)

    def call():
        if batch == 1:
            return render_drr(vol, spacing_mm, geom, backend=backend, output="line_integral")
        return render_drr_batch(vols, spacing_mm, geom, backend=backend, output="line_integral")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    times, cpu_times = [], []
    for _ in range(max(1, repeats)):
        t, c = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    best = min(times)
    steps = count_steps(shape, spacing_mm, geom)
    rate = batch / best
    if backend == "cpu":
        import numba

        threads = numba.get_num_threads()
        ns = threads / (steps * rate) * 1e9
        cpu_ns = min(cpu_times) / (batch * steps) * 1e9
        kernel_rate = None
    else:
        threads = 0
        ns = 1e9 / (steps * rate)
        cpu_ns = None
        kernel_rate = cuda_kernel_only_rate(vol, spacing_mm, geom, batch, repeats)
    return DRRBenchResult(backend=backend, volume_shape=tuple(shape), dtype=str(np.dtype(dtype)),
                          spacing_mm=tuple(float(s) for s in spacing_mm), detector=size, geometry=geometry,
                          batch=batch, threads=threads, compile_s=max(0.0, first - best), best_call_s=best,
                          median_call_s=float(np.median(times)), drrs_per_s=rate, steps_per_drr=steps,
                          steps_per_s=steps * rate, ns_per_step_core=ns, cpu_ns_per_step=cpu_ns,
                          kernel_only_drrs_per_s=kernel_rate, load_avg_1min=load)


def cuda_kernel_only_rate(vol, spacing_mm, geom, batch, repeats) -> float:
    """DRRs/s of the ray kernel alone: prefix sums, ray tables and the output already on the GPU."""
    from numba import cuda

    from xpgan.drr.siddon_cuda import prefix_sums_device, render_device

    vol_dev = cuda.to_device(np.ascontiguousarray(vol).reshape((1,) + vol.shape))
    psum = prefix_sums_device(vol_dev, 1000.0)
    rays = cuda.to_device(np.repeat(geom.rays(vol.shape, spacing_mm).as_array()[None], batch, axis=0))
    spacing = cuda.to_device(np.repeat(np.asarray(spacing_mm, np.float64)[None], batch, axis=0))
    vol_index = cuda.to_device(np.zeros(batch, np.int64))
    out = render_device(psum, vol_index, spacing, rays, geom.size)
    cuda.synchronize()
    best = np.inf
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        render_device(psum, vol_index, spacing, rays, geom.size, out_dev=out)
        cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return batch / best


def bench_drr_from(cfg: BenchDrrConfig) -> DRRBenchResult:
    """The `bench drr` command: bench_drr with its configuration."""
    return bench_drr(shape=(cfg.depth, cfg.height, cfg.width), size=cfg.size, geometry=cfg.geometry,
                     backend=cfg.backend, batch=cfg.batch, repeats=cfg.repeats, dtype=cfg.dtype)
