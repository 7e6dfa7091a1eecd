"""CUDA backend: one thread per ray, the same `ray_integral` source as the CPU kernel.

Volumes go to the device as they are (int16 HU halves the transfer, float32 otherwise); a first
kernel builds the h-prefix sums there (one thread per (volume, slice, w) column: coalesced along w),
then one thread per ray, many volumes or many views per launch (grid z = item).  Threads of a warp
take neighbouring detector columns, i.e. neighbouring w, so their reads share cache lines.

Tests: under NUMBA_ENABLE_CUDASIM=1 for results, and `compile_ptx_sm90()` compiles the real kernel
to PTX for an H100 (cc 9.0) with NVVM from the `nvidia-nvvm` wheel, no GPU needed.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, float64, int16, int32, int64

from xpgan.drr.siddon_cpu import prefix_column, prefix_dtype_and_offset, ray_integral

_ray_integral_dev = cuda.jit(device=True)(ray_integral)
_prefix_column_dev = cuda.jit(device=True)(prefix_column)

BLOCK = (32, 4, 1)  # (columns, rows, items): a warp walks one detector row segment along w
KERNEL_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))
MAX_GRID_Z = 65535


@cuda.jit
def _prefix_kernel(vol, offset, out):
    # vol [V, d, h, w] int16 | float32; out [V, d, h+1, w] int32 | float64 (siddon_cpu.prefix_column)
    k, i, v = cuda.grid(3)
    if k < vol.shape[3] and i < vol.shape[1] and v < vol.shape[0]:
        _prefix_column_dev(vol, offset, out, v, i, k, vol.shape[2])


@cuda.jit
def _render_kernel(psum, shape, vol_index, spacing, rays, scale, out):
    # psum: flat prefix sums [V*d*(h+1)*w]; shape [3] int64 (d, h, w); vol_index [B] int64;
    # spacing [B, 3] f64 mm; rays [B, 6, 3] f64 (RayBundle.as_array); out [B, S, S] float32
    c, r, b = cuda.grid(3)
    size = out.shape[1]
    if c >= size or r >= size or b >= out.shape[0]:
        return
    nd = shape[0]
    nh = shape[1]
    nw = shape[2]
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


def prefix_sums_device(vol_dev, offset: float = 1000.0):
    """Device prefix sums [V, d, h+1, w] of max(0, vol + offset) along h (vol_dev [V, d, h, w] on the GPU)."""
    nv, nd, nh, nw = vol_dev.shape
    dtype, off = prefix_dtype_and_offset(vol_dev.dtype, nh, offset)
    out = cuda.device_array((nv, nd, nh + 1, nw), dtype=dtype)
    threads = 64
    _prefix_kernel[((nw + threads - 1) // threads, nd, nv), (threads, 1, 1)](vol_dev, off, out)
    return out


def render_device(psum_dev, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray, size: int, *,
                  scale: float = 0.02 / 1000.0, out_dev=None):
    """Launch the ray kernel on device prefix sums (`prefix_sums_device`): device float32 [B, size, size].

    p = scale * sum(length_mm * value); with offset 1000 on HU, scale = mu_water / 1000.
    """
    nb = int(vol_index.shape[0])
    nv, nd, nh1, nw = psum_dev.shape
    shape = np.array([nd, nh1 - 1, nw], dtype=np.int64)
    if out_dev is None:
        out_dev = cuda.device_array((nb, size, size), dtype=np.float32)
    flat = psum_dev.reshape(psum_dev.size)
    shape_dev = cuda.to_device(shape)
    for lo in range(0, nb, MAX_GRID_Z):  # grid z (one item per block layer) is limited to 65535
        hi = min(nb, lo + MAX_GRID_Z)
        grid = ((size + BLOCK[0] - 1) // BLOCK[0], (size + BLOCK[1] - 1) // BLOCK[1], hi - lo)
        _render_kernel[grid, BLOCK](flat, shape_dev,
                                    cuda.to_device(np.ascontiguousarray(vol_index[lo:hi], dtype=np.int64)),
                                    cuda.to_device(np.ascontiguousarray(spacing[lo:hi], dtype=np.float64)),
                                    cuda.to_device(np.ascontiguousarray(rays[lo:hi], dtype=np.float64)), float(scale),
                                    out_dev[lo:hi])
    return out_dev


def render_hu_cuda(volumes_hu: np.ndarray, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray,
                   size: int, mu_water: float) -> np.ndarray:
    """Host HU volumes [V, d, h, w] -> host float32 line integrals [B, size, size]."""
    hu = np.asarray(volumes_hu)
    if hu.dtype.kind not in "fiu":
        raise TypeError(f"volumes must be real numbers, got dtype {hu.dtype}")
    if hu.dtype not in KERNEL_DTYPES:
        hu = hu.astype(np.float32)
    if len(vol_index) == 0:
        return np.zeros((0, size, size), np.float32)
    psum = prefix_sums_device(cuda.to_device(np.ascontiguousarray(hu)), 1000.0)
    return render_device(psum, vol_index, spacing, rays, size, scale=mu_water / 1000.0).copy_to_host()


class _FakeDevice:
    compute_capability = (9, 0)


def compile_ptx_sm90() -> dict:
    """Compile the real kernels to PTX for compute capability 9.0 (H100), int16 and float32 volumes.

    Returns {name: ptx}.  Works without a GPU (NVVM comes from the nvidia-nvvm wheel); type errors
    raise here.  numba-cuda compiles device functions for "the current device", which needs a
    driver; without a GPU that lookup is pointed at a stand-in cc 9.0 device during the compile.
    """
    import contextlib
    from unittest import mock

    from numba.cuda import dispatcher as cuda_dispatcher

    patch = (contextlib.nullcontext() if real_gpu_available()
             else mock.patch.object(cuda_dispatcher, "get_current_device", lambda: _FakeDevice()))
    ptx = {}
    with patch:
        for name, ptype in (("int16", int32), ("float32", float64)):
            sig = (ptype[::1], int64[::1], int64[::1], float64[:, ::1], float64[:, :, ::1], float64, float32[:, :, ::1])
            ptx["render_" + name], _ = cuda.compile_ptx(_render_kernel.py_func, sig, cc=(9, 0))
        for name, vtype, otype, ptype in (("int16", int16, int64, int32), ("float32", float32, float64, float64)):
            sig = (vtype[:, :, :, ::1], otype, ptype[:, :, :, ::1])
            ptx["prefix_" + name], _ = cuda.compile_ptx(_prefix_kernel.py_func, sig, cc=(9, 0))
    return ptx
