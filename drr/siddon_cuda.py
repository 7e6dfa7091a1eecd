"""CUDA backend: one thread per ray, the same `ray_integral` source as the CPU kernel.

Per-call cost.  No host array with a 0 stride reaches the device (tests/drr:
test_cuda_path_uploads_no_zero_strides): `cuda.to_device(vol[None])` would upload an array with a 0
stride on its new axis, and numba-cuda's `copy_to_device` walks such an array voxel by voxel in Python
(`iter_contiguous_extent`: 13.9 s per 64x256x256 volume measured without a GPU, 0.1 ms with ordinary
strides).  Volumes go into device buffers this module allocates, and small tables are fresh C-ordered
copies (a 0 stride is also typed layout 'A', a second specialisation of a kernel).  Each kernel compiles
once per process and volume dtype; `kernel_overload_counts()` tells how many specialisations and
compilations each holds.
Volumes go up once per call on one stream: small ones through two reused pinned staging buffers (chunks
copied by a few threads, overlapped with the DMA); large ones by whichever of staged / registered
(cuMemHostRegister of the caller's memory, one DMA) / pageable was fastest on this machine when each
was tried once (`_State.upload`).  Large results come back in one DMA into pooled pinned buffers that
are reused only once the caller has dropped every reference (`_State.download`); the small ray tables stay on
the device while the geometry does not change (`_RayCache`); device buffers are reused between
calls of the same sizes.  Torch CUDA tensors are
used in place (`__cuda_array_interface__`) on torch's current stream: `render_hu_torch`.

Volumes go to the device as they are (int16 HU halves the transfer, float32 otherwise); a first
kernel builds the h-prefix sums there (one thread per (volume, slice, w) column: coalesced along w),
then one thread per ray, many volumes or many views per launch (grid z = item).  Threads of a warp
take neighbouring detector columns, i.e. neighbouring w, so their reads share cache lines.

Tests: under NUMBA_ENABLE_CUDASIM=1 for results, and tests/drr/test_siddon_cuda.py compiles the real
kernels to PTX for an H100 (cc 9.0) with NVVM from the `nvidia-nvvm` wheel, no GPU needed.
"""
from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict

import numpy as np
from numba import cuda

from xpgan.drr.physics import MU_WATER_PER_MM
from xpgan.drr.siddon_cpu import kernel_volume, prefix_column, prefix_dtype_and_offset, ray_integral

_ray_integral_dev = cuda.jit(device=True)(ray_integral)
_prefix_column_dev = cuda.jit(device=True)(prefix_column)

BLOCK = (32, 4, 1)  # (columns, rows, items): a warp walks one detector row segment along w
MAX_GRID_Z = 65535


@cuda.jit
def _prefix_kernel(vol, offset, out):
    # vol [V, d, h, w] int16 | float32; out [V, d, h+1, w] int32 | float64 (siddon_cpu.prefix_column)
    k, i, v = cuda.grid(3)
    if k < vol.shape[3] and i < vol.shape[1] and v < vol.shape[0]:
        _prefix_column_dev(vol, offset, out, v, i, k, vol.shape[2])


@cuda.jit
def _render_kernel(psum, nd, nh, nw, vol_index, spacing, rays, scale, out):
    # psum: flat prefix sums [V*d*(h+1)*w]; nd, nh, nw int64 (volume d, h, w); vol_index [B] int64;
    # spacing [B, 3] f64 mm; rays [B, 6, 3] f64 (RayBundle.as_array); out [B, S, S] float32
    c, r, b = cuda.grid(3)
    size = out.shape[1]
    if c >= size or r >= size or b >= out.shape[0]:
        return
    base = vol_index[b] * (nd * (nh + 1) * nw)
    ax = rays[b, 0, 0] + r * rays[b, 1, 0] + c * rays[b, 2, 0]
    ay = rays[b, 0, 1] + r * rays[b, 1, 1] + c * rays[b, 2, 1]
    az = rays[b, 0, 2] + r * rays[b, 1, 2] + c * rays[b, 2, 2]
    bx = rays[b, 3, 0] + r * rays[b, 4, 0] + c * rays[b, 5, 0]
    by = rays[b, 3, 1] + r * rays[b, 4, 1] + c * rays[b, 5, 1]
    bz = rays[b, 3, 2] + r * rays[b, 4, 2] + c * rays[b, 5, 2]
    out[b, r, c] = scale * _ray_integral_dev(psum, base, nd, nh, nw, spacing[b, 0], spacing[b, 1], spacing[b, 2],
                                             ax, ay, az, bx, by, bz)


def real_gpu_available() -> bool:
    """A real CUDA device (the simulator does not count)."""
    from numba import config

    if config.ENABLE_CUDASIM:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install is "no GPU" for backend="auto"
        return False


def kernel_overload_counts() -> dict:
    """Per kernel: specialisations held and compilations done so far in this process (-1 in the simulator).
    After a first call with int16 (or float32) volumes both stay at 1 (or 2) whatever the later calls."""
    from numba import config

    out = {}
    for name, k in (("prefix", _prefix_kernel), ("render", _render_kernel)):
        sim = config.ENABLE_CUDASIM or not hasattr(k, "overloads")
        out[name] = -1 if sim else len(k.overloads)
        out[name + "_compiles"] = -1 if sim else int(sum(getattr(k, "_cache_misses", {}).values()))
    return out


def kernel_signatures() -> dict:
    """Per kernel: the argument types of each specialisation compiled in this process (empty in the simulator)."""
    return {name: [", ".join(str(t) for t in sig) for sig in getattr(k, "overloads", {})]
            for name, k in (("prefix", _prefix_kernel), ("render", _render_kernel))}


def _c_array(a, dtype) -> np.ndarray:
    """A new C-ordered array with the strides of its shape (no 0 stride, even on a length-1 axis)."""
    return np.array(a, dtype=dtype, order="C", copy=True)


# ------------------------------------------------------------------------------ per-process state
class _RayCache:
    """Device copies of (vol_index, spacing, rays), keyed on what they were computed from (LRU)."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self.items: OrderedDict = OrderedDict()
        self.misses = 0

    def get(self, key, vol_index, spacing, rays, stream):
        hit = self.items.get(key) if key is not None else None
        if hit is not None:
            self.items.move_to_end(key)
            return hit
        self.misses += 1
        # fresh C-ordered copies: np.ascontiguousarray keeps the 0 stride of a broadcast [1, 3] spacing, which
        # numba types as layout 'A' (another specialisation of the kernel)
        arrays = tuple(cuda.to_device(_c_array(a, dt), stream=stream)
                       for a, dt in ((vol_index, np.int64), (spacing, np.float64), (rays, np.float64)))
        if key is not None:
            self.items[key] = arrays
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)
        return arrays


class _State:
    """One stream, two pinned staging buffers, a pool of pinned result buffers, reused device buffers and the
    ray cache of a device."""

    STAGE_BYTES = 32 << 20
    COPY_THREADS = max(1, min(8, os.cpu_count() or 1))
    REGISTER_CHUNK_BYTES = 256 << 20
    DIRECT_MIN_BYTES = 64 << 20     # uploads this big try each strategy once, then keep the fastest (UPLOADS)
    POOL_MIN_BYTES = 4 << 20        # results this big come back in pooled pinned buffers (one DMA, no staging)
    POOL_MAX_BYTES = 1 << 30
    POOL_MAX_BUFFERS = 4

    def __init__(self):
        self.stream = cuda.stream()
        self.stage = [cuda.pinned_array(self.STAGE_BYTES, dtype=np.uint8) for _ in range(2)]
        self.stage_done = [None, None]
        self.buffers: dict = {}
        self.rays = _RayCache()
        self._pool = None
        self.out_pool: list = []    # pinned uint8 buffers; free when nothing but this list refers to one
        self.upload_times: dict = {}   # size class -> {strategy: best seconds seen}
        self.last_upload = None      # (strategy, seconds) of the latest large upload

    def buffer(self, name: str, shape, dtype):
        """A device array kept between calls while its shape and dtype stay the same."""
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        arr = self.buffers.get(name)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            self.buffers.pop(name, None)
            arr = cuda.device_array(shape, dtype=dtype, stream=self.stream)
            self.buffers[name] = arr
        return arr

    def _copy(self, dst: np.ndarray, src: np.ndarray) -> None:
        n = src.shape[0]
        if self.COPY_THREADS == 1 or n * src.itemsize < (4 << 20):
            np.copyto(dst, src)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.COPY_THREADS, thread_name_prefix="xpgan-h2d")
        b = np.linspace(0, n, self.COPY_THREADS + 1).astype(np.int64)
        list(self._pool.map(lambda i: np.copyto(dst[b[i]:b[i + 1]], src[b[i]:b[i + 1]]), range(self.COPY_THREADS)))

    # ------------------------------------------------------------------------------ host -> device
    def upload(self, host: np.ndarray):
        """C-contiguous host array -> the reused device buffer "vol" of its shape.

        Strategies (UPLOADS): "staged" (chunks copied by a few threads into two pinned staging buffers, each
        copy overlapping the DMA of the chunk before), "register" (the caller's memory page-locked for the call
        (cuMemHostRegister): one DMA, no host copy) and "pageable" (one cuMemcpy from pageable memory; the
        driver stages it).  Which is fastest depends on the machine (host memory bandwidth, cores, pinning
        cost), so uploads of DIRECT_MIN_BYTES or more try each once per size class and then keep the fastest;
        XPGAN_H2D=<strategy> forces one.  All give the same bytes on the device."""
        dev = self.buffer("vol", host.shape, host.dtype)
        forced = os.environ.get("XPGAN_H2D", "")
        if forced and forced not in UPLOADS:
            raise ValueError(f"XPGAN_H2D must be one of {', '.join(UPLOADS)}, got {forced!r}")
        if not forced and host.nbytes < self.DIRECT_MIN_BYTES:
            self._upload_staged(host, dev)
            return dev
        size_class = int(host.nbytes).bit_length()
        seen = self.upload_times.setdefault(size_class, {})
        how = forced or next((u for u in UPLOADS if u not in seen), None) or min(seen, key=seen.get)
        t = time.perf_counter()
        try:
            getattr(self, "_upload_" + how)(host, dev)
            self.stream.synchronize()
        except Exception:  # e.g. memory already registered elsewhere: never again for this size, staged now
            if forced or how == "staged":
                raise
            self.stream.synchronize()
            seen[how] = np.inf
            self._upload_staged(host, dev)
            self.stream.synchronize()
            how += "-failed-staged"
        sec = time.perf_counter() - t
        if how in seen or how in UPLOADS:
            seen[how] = min(sec, seen.get(how, np.inf))
        self.last_upload = (how, sec)
        return dev

    def _upload_staged(self, host: np.ndarray, dev) -> None:
        src = host.reshape(-1)
        dst = dev.reshape(dev.size)
        step = self.STAGE_BYTES // host.itemsize
        for k, lo in enumerate(range(0, src.shape[0], step)):
            hi = min(src.shape[0], lo + step)
            slot = k % 2
            if self.stage_done[slot] is not None:
                self.stage_done[slot].synchronize()   # its previous DMA has finished
            stage = self.stage[slot].view(host.dtype)[:hi - lo]
            self._copy(stage, src[lo:hi])
            dst[lo:hi].copy_to_device(stage, stream=self.stream)
            ev = cuda.event()
            ev.record(self.stream)
            self.stage_done[slot] = ev

    # both direct strategies copy flat views: a host array with a 0 stride (a `vol[None]` axis) would make
    # numba-cuda walk it element by element (module docstring)
    def _upload_register(self, host: np.ndarray, dev) -> None:
        """Page-lock the caller's memory chunk by chunk (cuMemHostRegister via cuda.pinned; chunk bounds on
        REGISTER_CHUNK_BYTES-aligned addresses, so no two chunks share a page), each chunk's DMA queued as soon
        as it is locked: locking chunk k+1 overlaps the DMA of chunk k.  All are unlocked after the stream has
        finished (also when a lock fails)."""
        import contextlib

        flat = host.reshape(-1)
        dflat = dev.reshape(dev.size)
        addr, step = int(flat.ctypes.data), self.REGISTER_CHUNK_BYTES
        bounds = [0]
        b = (addr // step + 1) * step - addr           # first chunk-aligned address, as a byte offset
        while b < flat.nbytes:
            bounds.append(b // flat.itemsize)
            b += step
        bounds.append(flat.size)
        with contextlib.ExitStack() as locks:
            try:
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    locks.enter_context(cuda.pinned(flat[lo:hi]))   # unlocked as the stack unwinds
                    dflat[lo:hi].copy_to_device(flat[lo:hi], stream=self.stream)
            finally:
                self.stream.synchronize()   # no DMA may still read a page when it is unlocked

    def _upload_pageable(self, host: np.ndarray, dev) -> None:
        dev.reshape(dev.size).copy_to_device(host.reshape(-1), stream=self.stream)

    # ------------------------------------------------------------------------------ device -> host
    def download(self, dev) -> np.ndarray:
        """Device array -> a host array.  Large results land in a pooled pinned buffer in one DMA (no staging
        copy, no page faults of a fresh array): the caller gets a view of it, and the buffer is reused only
        once nothing refers to it any more (its reference count), so results are never overwritten.  Otherwise
        (small, or the pool busy) a new array through the staging buffers."""
        nbytes = dev.size * dev.dtype.itemsize
        buf = self._pooled(nbytes) if nbytes >= self.POOL_MIN_BYTES else None
        if buf is None:
            return self._download_staged(dev)
        flat = buf[:nbytes].view(dev.dtype)
        dev.reshape(dev.size).copy_to_host(flat, stream=self.stream)
        self.stream.synchronize()
        return flat.reshape(dev.shape)

    def _pooled(self, nbytes: int):
        """A free pinned buffer of at least nbytes (smallest first); a new one when the pool has room (free
        buffers are dropped to make it); None when every buffer is in use."""
        free = [i for i in range(len(self.out_pool)) if sys.getrefcount(self.out_pool[i]) <= 2]
        fits = sorted((self.out_pool[i].nbytes, i) for i in free if self.out_pool[i].nbytes >= nbytes)
        if fits:
            return self.out_pool[fits[0][1]]
        if nbytes > self.POOL_MAX_BYTES:
            return None
        for i in sorted(free, reverse=True):   # drop free buffers that are too small while the pool is full
            total = sum(b.nbytes for b in self.out_pool)
            if len(self.out_pool) < self.POOL_MAX_BUFFERS and total + nbytes <= self.POOL_MAX_BYTES:
                break
            del self.out_pool[i]
        total = sum(b.nbytes for b in self.out_pool)
        if len(self.out_pool) >= self.POOL_MAX_BUFFERS or total + nbytes > self.POOL_MAX_BYTES:
            return None
        self.out_pool.append(cuda.pinned_array(nbytes, dtype=np.uint8))
        return self.out_pool[-1]

    def _download_staged(self, dev) -> np.ndarray:
        """Through the pinned staging buffers: the DMA of chunk k overlaps the copy of chunk k-1 out of its
        staging buffer (by a few threads, which also share the first-touch page faults of the new array)."""
        host = np.empty(dev.shape, dev.dtype)
        dst = host.reshape(-1)
        src = dev.reshape(dev.size)
        step = self.STAGE_BYTES // host.itemsize
        pending = None

        def drain(p):
            slot, lo, hi, ev = p
            ev.synchronize()
            self._copy(dst[lo:hi], self.stage[slot].view(host.dtype)[:hi - lo])

        for k, lo in enumerate(range(0, dst.shape[0], step)):
            hi = min(dst.shape[0], lo + step)
            slot = k % 2
            src[lo:hi].copy_to_host(self.stage[slot].view(host.dtype)[:hi - lo], stream=self.stream)
            ev = cuda.event()
            ev.record(self.stream)
            if pending is not None:
                drain(pending)   # frees the other staging buffer for chunk k+1
            pending = (slot, lo, hi, ev)
        if pending is not None:
            drain(pending)
        return host


UPLOADS = ("staged", "register", "pageable")
_STATES: dict = {}


def _state() -> _State:
    """This process's state for the current device (created at the first call)."""
    try:
        dev_id = cuda.get_current_device().id
    except Exception:  # the simulator's device has no id on some versions
        dev_id = 0
    st = _STATES.get(dev_id)
    if st is None:
        st = _STATES[dev_id] = _State()
    return st


# ----------------------------------------------------------------------------------------- kernels
def prefix_sums_device(vol_dev, offset: float = 1000.0, *, out=None, stream=0):
    """Device prefix sums [V, d, h+1, w] of max(0, vol + offset) along h (vol_dev [V, d, h, w] on the GPU,
    C-contiguous: other layouts would compile another specialisation of the kernel)."""
    if hasattr(vol_dev, "is_c_contiguous") and not vol_dev.is_c_contiguous():
        raise TypeError("prefix_sums_device needs a C-contiguous [V, d, h, w] device array")
    nv, nd, nh, nw = vol_dev.shape
    dtype, off = prefix_dtype_and_offset(vol_dev.dtype, nh, offset)
    if out is None:
        out = cuda.device_array((nv, nd, nh + 1, nw), dtype=dtype, stream=stream)
    threads = 64
    _prefix_kernel[((nw + threads - 1) // threads, nd, nv), (threads, 1, 1), stream](vol_dev, off, out)
    return out


def _launch_render(psum_dev, vol_index_dev, spacing_dev, rays_dev, scale: float, out_dev, stream) -> None:
    nb, size = out_dev.shape[0], out_dev.shape[1]
    _, nd, nh1, nw = psum_dev.shape
    flat = psum_dev.reshape(psum_dev.size)
    for lo in range(0, nb, MAX_GRID_Z):  # grid z (one item per block layer) is limited to 65535
        hi = min(nb, lo + MAX_GRID_Z)
        grid = ((size + BLOCK[0] - 1) // BLOCK[0], (size + BLOCK[1] - 1) // BLOCK[1], hi - lo)
        _render_kernel[grid, BLOCK, stream](flat, int(nd), int(nh1 - 1), int(nw), vol_index_dev[lo:hi],
                                            spacing_dev[lo:hi], rays_dev[lo:hi], float(scale), out_dev[lo:hi])


def render_device(psum_dev, vol_index, spacing, rays, size: int, *, scale: float = MU_WATER_PER_MM / 1000.0,
                  out_dev=None, stream=0):
    """Launch the ray kernel on device prefix sums (`prefix_sums_device`): device float32 [B, size, size].

    vol_index [B] int64, spacing [B, 3] and rays [B, 6, 3] float64: host arrays (copied) or device arrays.
    p = scale * sum(length_mm * value); with offset 1000 on HU, scale = mu_water / 1000.
    """
    nb = int(vol_index.shape[0])
    if out_dev is None:
        out_dev = cuda.device_array((nb, size, size), dtype=np.float32, stream=stream)

    def dev(a, dtype):
        return cuda.to_device(_c_array(a, dtype), stream=stream) if isinstance(a, np.ndarray) else a

    _launch_render(psum_dev, dev(vol_index, np.int64), dev(spacing, np.float64), dev(rays, np.float64), scale,
                   out_dev, stream)
    return out_dev


def render_hu_cuda(volumes_hu: np.ndarray, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray,
                   size: int, mu_water: float, *, key=None) -> np.ndarray:
    """Host HU volumes [V, d, h, w] -> host float32 line integrals [B, size, size].

    `key` (hashable) names what vol_index, spacing and rays were computed from: equal keys reuse the
    device copies of an earlier call.  One pass of the volumes to the device per call.
    """
    hu = kernel_volume(volumes_hu)
    nb = len(vol_index)
    if nb == 0:
        return np.zeros((0, size, size), np.float32)
    st = _state()
    vol_dev = st.upload(hu)
    nv, nd, nh, nw = hu.shape
    pdtype, _ = prefix_dtype_and_offset(hu.dtype, nh, 1000.0)
    psum = prefix_sums_device(vol_dev, 1000.0, out=st.buffer("psum", (nv, nd, nh + 1, nw), pdtype), stream=st.stream)
    vi, sp, ry = st.rays.get(key, vol_index, spacing, rays, st.stream)
    out_dev = st.buffer("out", (nb, size, size), np.float32)
    _launch_render(psum, vi, sp, ry, mu_water / 1000.0, out_dev, st.stream)
    return st.download(out_dev)


def render_hu_torch(volumes, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray, size: int,
                    mu_water: float, *, key=None):
    """Torch CUDA HU volumes [V, d, h, w] (used in place when int16/float32 and contiguous) -> a torch
    float32 CUDA tensor [B, size, size] of line integrals on the same device, queued on torch's current
    stream (no host round trip, no synchronisation)."""
    import torch

    device = volumes.device
    if volumes.dtype not in (torch.int16, torch.float32):
        volumes = volumes.float()
    volumes = volumes.detach().contiguous()
    nv, nd, nh, nw = (int(s) for s in volumes.shape)
    nb = len(vol_index)
    out_t = torch.empty((nb, size, size), dtype=torch.float32, device=device)
    if nb == 0:
        return out_t
    with cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]:
        st = _state()
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        vol_dev = cuda.as_cuda_array(volumes.view(-1), sync=False).reshape((nv, nd, nh, nw))
        pdtype, _ = prefix_dtype_and_offset(vol_dev.dtype, nh, 1000.0)
        psum_t = torch.empty((nv, nd, nh + 1, nw), dtype=getattr(torch, pdtype.name), device=device)
        psum = prefix_sums_device(vol_dev, 1000.0, out=cuda.as_cuda_array(psum_t, sync=False), stream=stream)
        misses = st.rays.misses
        vi, sp, ry = st.rays.get(key, vol_index, spacing, rays, st.stream)
        if st.rays.misses != misses:
            st.stream.synchronize()   # new ray tables are on the device before torch's stream reads them
        _launch_render(psum, vi, sp, ry, mu_water / 1000.0, cuda.as_cuda_array(out_t, sync=False), stream)
    return out_t
