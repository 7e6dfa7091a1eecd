"""CUDA backend: one thread per ray, the same `ray_integral` source as the CPU kernel.

Volumes go to the device as they are (int16 HU halves the transfer) and are converted to float32 mu
there, once per call; many volumes or many views per launch (grid z = item).  Threads of a warp
take neighbouring detector columns, i.e. neighbouring w, so their voxel reads share cache lines.

Tests: under NUMBA_ENABLE_CUDASIM=1 for results, and `compile_ptx_sm90()` compiles the real kernels
to PTX for an H100 (cc 9.0) with NVVM from the `nvidia-nvvm` wheel, no GPU needed.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, float64, int16, int64

from xpgan.drr.siddon_core import ray_integral

_ray_integral_dev = cuda.jit(device=True)(ray_integral)

BLOCK = (32, 4, 1)  # (columns, rows, items): a warp walks one detector row segment along w


@cuda.jit
def _hu_to_mu_kernel(hu, mu_water, out):
    # hu, out: flat [n]; out float32 mu (1/mm)
    i = cuda.grid(1)
    if i < out.shape[0]:
        out[i] = max(float32(0.0), (float32(hu[i]) + float32(1000.0)) * float32(mu_water / 1000.0))


@cuda.jit
def _render_kernel(vol, shape, vol_index, spacing, rays, scale, out):
    # vol: flat float32 [V*d*h*w]; shape [3] int64 (d, h, w); vol_index [B] int64; spacing [B, 3] f64 mm;
    # rays [B, 6, 3] f64 (RayBundle.as_array); out [B, S, S] float32
    c, r, b = cuda.grid(3)
    size = out.shape[1]
    if c >= size or r >= size or b >= out.shape[0]:
        return
    nd = shape[0]
    nh = shape[1]
    nw = shape[2]
    base = vol_index[b] * (nd * nh * nw)
    ax = rays[b, 0, 0] + r * rays[b, 1, 0] + c * rays[b, 2, 0]
    ay = rays[b, 0, 1] + r * rays[b, 1, 1] + c * rays[b, 2, 1]
    az = rays[b, 0, 2] + r * rays[b, 1, 2] + c * rays[b, 2, 2]
    bx = rays[b, 3, 0] + r * rays[b, 4, 0] + c * rays[b, 5, 0]
    by = rays[b, 3, 1] + r * rays[b, 4, 1] + c * rays[b, 5, 1]
    bz = rays[b, 3, 2] + r * rays[b, 4, 2] + c * rays[b, 5, 2]
    out[b, r, c] = scale * _ray_integral_dev(vol, base, nd, nh, nw, spacing[b, 0], spacing[b, 1], spacing[b, 2],
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


def hu_to_mu_device(hu_dev, mu_water: float):
    """float32 mu device array (same shape) from a device array of HU."""
    flat = hu_dev.reshape(hu_dev.size)
    out = cuda.device_array(hu_dev.size, dtype=np.float32)
    threads = 256
    _hu_to_mu_kernel[(hu_dev.size + threads - 1) // threads, threads](flat, float(mu_water), out)
    return out.reshape(hu_dev.shape)


def render_mu_device(mu_dev, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray, size: int,
                     scale: float = 1.0, out_dev=None):
    """Launch the ray kernel on a device-resident float32 mu [V, d, h, w]: device float32 [B, size, size]."""
    nb = int(vol_index.shape[0])
    shape = np.asarray(mu_dev.shape[1:], dtype=np.int64)
    if out_dev is None:
        out_dev = cuda.device_array((nb, size, size), dtype=np.float32)
    grid = ((size + BLOCK[0] - 1) // BLOCK[0], (size + BLOCK[1] - 1) // BLOCK[1], nb)
    _render_kernel[grid, BLOCK](mu_dev.reshape(mu_dev.size), cuda.to_device(shape),
                                cuda.to_device(np.ascontiguousarray(vol_index, dtype=np.int64)),
                                cuda.to_device(np.ascontiguousarray(spacing, dtype=np.float64)),
                                cuda.to_device(np.ascontiguousarray(rays, dtype=np.float64)), float(scale), out_dev)
    return out_dev


def render_hu_cuda(volumes_hu: np.ndarray, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray,
                   size: int, mu_water: float) -> np.ndarray:
    """Host HU volumes [V, d, h, w] -> host float32 line integrals [B, size, size]."""
    hu = np.ascontiguousarray(volumes_hu)
    if hu.dtype.kind not in "fiu":
        raise TypeError(f"volumes must be real numbers, got dtype {hu.dtype}")
    if hu.dtype not in (np.int16, np.float32):
        hu = hu.astype(np.float32)
    if len(vol_index) == 0:
        return np.zeros((0, size, size), np.float32)
    mu_dev = hu_to_mu_device(cuda.to_device(hu), mu_water)
    out = render_mu_device(mu_dev, vol_index, spacing, rays, size)
    return out.copy_to_host()


_SIG_RENDER = (float32[::1], int64[::1], int64[::1], float64[:, ::1], float64[:, :, ::1], float64, float32[:, :, ::1])


class _FakeDevice:
    compute_capability = (9, 0)


def compile_ptx_sm90() -> dict:
    """Compile the real kernels to PTX for compute capability 9.0 (H100); returns {name: ptx}.

    Works without a GPU (NVVM comes from the nvidia-nvvm wheel); type errors raise here.
    numba-cuda compiles device functions for "the current device", which needs a driver; without
    a GPU the lookup is pointed at a stand-in cc 9.0 device for the duration of the compile.
    """
    import contextlib
    from unittest import mock

    from numba.cuda import dispatcher as cuda_dispatcher

    patch = (contextlib.nullcontext() if real_gpu_available()
             else mock.patch.object(cuda_dispatcher, "get_current_device", lambda: _FakeDevice()))
    ptx = {}
    with patch:
        ptx["render"], _ = cuda.compile_ptx(_render_kernel.py_func, _SIG_RENDER, cc=(9, 0))
        for name, dtype in (("hu_to_mu_int16", int16), ("hu_to_mu_float32", float32)):
            ptx[name], _ = cuda.compile_ptx(_hu_to_mu_kernel.py_func, (dtype[::1], float64, float32[::1]), cc=(9, 0))
    return ptx
