"""CPU backend: Numba-parallel Siddon kernel over (item, detector row).

The private kernel `_render_kernel` sits behind `render_rays_cpu`, which checks dtypes, contiguity
and shapes.  Within a detector row the columns advance along w, so neighbouring rays read
neighbouring cache lines; the HU volume is read as it is (int16 or float32) and converted to
attenuation per voxel visit, which is cheaper than a separate conversion pass over the volume.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from xpgan.drr.siddon_core import ray_integral

# Contraction to FMA only: no nnan/ninf (the kernel relies on inf for axes a ray does not cross).
_FASTMATH = {"contract", "nsz"}
KERNEL_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))

# Inlined at the Numba IR level: a call per ray would also incref/decref the volume (an atomic
# shared by both threads' cores), which costs more than the call itself.
_ray_integral = njit(inline="always", fastmath=_FASTMATH, error_model="numpy")(ray_integral)


@njit(parallel=True, cache=True, fastmath=_FASTMATH, error_model="numpy")
def _render_kernel(vol, offset, vol_index, spacing, rays, scale, out):
    # vol [V, d, h, w] int16 | float32; vol_index [B] int64; spacing [B, 3] float64 mm;
    # rays [B, 6, 3] float64 (RayBundle.as_array); out [B, S, S] float32 = scale * sum(len * max(0, vol + offset))
    nb = out.shape[0]
    size = out.shape[1]
    nd = vol.shape[1]
    nh = vol.shape[2]
    nw = vol.shape[3]
    flat = vol.reshape(-1)
    nvox = nd * nh * nw
    for job in prange(nb * size):
        b = job // size
        r = job - b * size
        base = vol_index[b] * nvox
        sd = spacing[b, 0]
        sh = spacing[b, 1]
        sw = spacing[b, 2]
        ax0 = rays[b, 0, 0] + r * rays[b, 1, 0]
        ay0 = rays[b, 0, 1] + r * rays[b, 1, 1]
        az0 = rays[b, 0, 2] + r * rays[b, 1, 2]
        bx0 = rays[b, 3, 0] + r * rays[b, 4, 0]
        by0 = rays[b, 3, 1] + r * rays[b, 4, 1]
        bz0 = rays[b, 3, 2] + r * rays[b, 4, 2]
        for c in range(size):
            ax = ax0 + c * rays[b, 2, 0]
            ay = ay0 + c * rays[b, 2, 1]
            az = az0 + c * rays[b, 2, 2]
            bx = bx0 + c * rays[b, 5, 0]
            by = by0 + c * rays[b, 5, 1]
            bz = bz0 + c * rays[b, 5, 2]
            out[b, r, c] = scale * _ray_integral(flat, offset, base, nd, nh, nw, sd, sh, sw, ax, ay, az, bx, by, bz)


def kernel_volume(volumes: np.ndarray) -> np.ndarray:
    """The volumes as a C-contiguous array of a kernel dtype: int16 and float32 as they are, else float32."""
    vol = np.asarray(volumes)
    if vol.dtype.kind not in "fiu":
        raise TypeError(f"volume must be a real numeric array, got dtype {vol.dtype}")
    if vol.dtype not in KERNEL_DTYPES:
        vol = vol.astype(np.float32)
    return np.ascontiguousarray(vol)


def render_rays_cpu(vol: np.ndarray, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray,
                    size: int, *, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """scale * sum(length_mm * max(0, vol + offset)) along each item's rays: float32 [B, size, size].

    vol [V, d, h, w] int16 or float32, C-contiguous; vol_index [B] ints in [0, V); spacing [B, 3] mm > 0;
    rays [B, 6, 3] (RayBundle.as_array of each item).  For HU: offset 1000, scale mu_water / 1000.
    """
    if vol.dtype not in KERNEL_DTYPES or vol.ndim != 4 or not vol.flags.c_contiguous:
        raise TypeError("vol must be a C-contiguous int16 or float32 [V, d, h, w] array")
    vol_index = np.ascontiguousarray(vol_index, dtype=np.int64)
    spacing = np.ascontiguousarray(spacing, dtype=np.float64)
    rays = np.ascontiguousarray(rays, dtype=np.float64)
    nb = vol_index.shape[0]
    if vol_index.ndim != 1 or (nb and (vol_index.min() < 0 or vol_index.max() >= vol.shape[0])):
        raise ValueError("vol_index must be a 1-D array of indices into vol")
    if spacing.shape != (nb, 3) or rays.shape != (nb, 6, 3):
        raise ValueError(f"spacing must be [B, 3] and rays [B, 6, 3] with B={nb}")
    out = np.empty((nb, size, size), dtype=np.float32)
    if nb:
        # an integral offset on an integer volume keeps the per-voxel sums in exact integer arithmetic
        off = int(offset) if vol.dtype.kind == "i" and float(offset).is_integer() else float(offset)
        _render_kernel(vol, off, vol_index, spacing, rays, float(scale), out)
    return out
