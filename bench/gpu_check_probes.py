"""Probes of `xpgan bench gpu` (gpu_check.py): a cProfile digest, the replay of a stride-0 per-call path,
and this machine's host<->device transfer rates."""
from __future__ import annotations

import time


def profile_top(fn, n: int = 12) -> list[str]:
    """cProfile of one call: the n entries with the largest cumulative time, one line each."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(n)
    return [ln.strip() for ln in buf.getvalue().splitlines() if ln.strip() and ln.strip()[0].isdigit()][:n]


def old_path_replay(vol, geom, spacing, broadcast: bool = True) -> dict:
    """A stride-0 argument handling, on fresh lazy dispatchers of the same kernels: the volume uploaded as
    cuda.to_device(vol[None]) (0 stride on the new axis: numba-cuda's array_core walks it voxel by voxel, and
    types it layout 'A') and the spacing as np.broadcast_to(sp, (1, 3)) (0 stride too).
    Per call: seconds of each phase, and the dispatchers' specialisations and compilations; a cProfile of one
    more call when the second was slow.  broadcast=False is the control: the same calls with ordinary strides."""
    import numpy as np
    from numba import config, cuda

    from xpgan.drr import siddon_cuda

    prefix = cuda.jit(siddon_cuda._prefix_kernel.py_func)
    render = cuda.jit(siddon_cuda._render_kernel.py_func)
    rays = geom.rays(vol.shape, spacing).as_array()[None]
    sp = np.broadcast_to(np.asarray(spacing, np.float64), (1, 3))
    host_vol = np.ascontiguousarray(vol)[None] if broadcast else np.ascontiguousarray(vol).reshape((1,) + vol.shape)
    if not broadcast:
        sp = np.array(sp, order="C", copy=True)

    def counts():
        if config.ENABLE_CUDASIM:
            return None
        return {"prefix": [len(prefix.overloads), int(sum(prefix._cache_misses.values()))],
                "render": [len(render.overloads), int(sum(render._cache_misses.values()))]}

    def call(rec):
        t = time.perf_counter()
        dev = cuda.to_device(host_vol)
        cuda.synchronize()
        t1 = time.perf_counter()
        psum = cuda.device_array((1, vol.shape[0], vol.shape[1] + 1, vol.shape[2]), dtype=np.int32)
        prefix[((vol.shape[2] + 63) // 64, vol.shape[0], 1), (64, 1, 1)](dev, 1000, psum)
        cuda.synchronize()
        t2 = time.perf_counter()
        out = cuda.device_array((1, geom.size, geom.size), dtype=np.float32)
        grid = ((geom.size + 31) // 32, (geom.size + 3) // 4, 1)
        render[grid, (32, 4, 1)](psum.reshape(psum.size), vol.shape[0], vol.shape[1], vol.shape[2],
                                 cuda.to_device(np.zeros(1, np.int64)), cuda.to_device(sp),
                                 cuda.to_device(np.ascontiguousarray(rays)), 2e-5, out)
        host = out.copy_to_host()
        t3 = time.perf_counter()
        if rec is not None:
            rec.append({"upload_s": t1 - t, "prefix_s": t2 - t1, "render_s": t3 - t2, "counts": counts(),
                        "vol_type": str(getattr(dev, "_numba_type_", "?")),
                        "spacing_type": str(getattr(cuda.to_device(sp), "_numba_type_", "?"))})
        return host

    calls: list = []
    for _ in range(2):
        call(calls)
    out = {"calls": calls, "volume_shape": list(vol.shape),
           "host_strides": {"volume": list(host_vol.strides), "spacing": list(sp.strides)}}
    second = calls[1]
    if second["upload_s"] + second["prefix_s"] + second["render_s"] > 0.5:
        out["profile_of_a_later_call"] = profile_top(lambda: call(None))
    return out


def transfer_probe(vols) -> dict:
    """Host<->device rates of this machine, GB/s (best of 3): pinned and pageable DMA, cuMemHostRegister of the
    whole batch, host memcpy into pinned memory with 1..16 threads, first touch of a fresh result array."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from numba import cuda

    def best(fn, n=3):
        t_best = np.inf
        for _ in range(n):
            t = time.perf_counter()
            fn()
            cuda.synchronize()
            t_best = min(t_best, time.perf_counter() - t)
        return t_best

    flat = vols.reshape(-1)
    part = flat[: min(flat.size, 128 << 20)]            # <= 256 MB of int16
    gb = part.nbytes / 1e9
    pinned = cuda.pinned_array(part.shape, part.dtype)
    np.copyto(pinned, part)
    dev = cuda.device_array(part.shape, part.dtype)
    out = {"bytes": int(part.nbytes),
           "h2d_pinned_gbps": gb / best(lambda: dev.copy_to_device(pinned)),
           "h2d_pageable_gbps": gb / best(lambda: dev.copy_to_device(part)),
           "d2h_pinned_gbps": gb / best(lambda: dev.copy_to_host(pinned)),
           "d2h_fresh_pageable_gbps": gb / best(lambda: dev.copy_to_host())}

    def register():
        with cuda.pinned(vols):
            pass
    out["register_whole_batch_s"] = best(register, 2)
    out["register_whole_batch_gb"] = vols.nbytes / 1e9
    for n in (1, 4, 8, 16):
        with ThreadPoolExecutor(n) as pool:
            b = np.linspace(0, part.size, n + 1).astype(np.int64)
            out[f"memcpy_to_pinned_{n}threads_gbps"] = gb / best(
                lambda: list(pool.map(lambda i: np.copyto(pinned[b[i]:b[i + 1]], part[b[i]:b[i + 1]]), range(n))))
    out["first_touch_fresh_gbps"] = gb / best(lambda: np.empty_like(part).fill(0))
    return out
