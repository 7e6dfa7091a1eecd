"""Exact radiological paths (Siddon's method, Jacobs' incremental form): shared ray code and CPU kernels.

`ray_integral` and `prefix_column` are plain Python on scalars and flat arrays, so the same source
is compiled by `numba.njit` here and by `numba.cuda.jit` in siddon_cuda.py: both backends share one
definition of every rounding-sensitive step.  They live in this file, next to the cached CPU
kernels, because Numba's on-disk cache is invalidated only by edits to the kernel's own file.

Conventions (see geometry.py for the frame): the ray is a + t*(b - a), t >= 0, clipped to the box
[0, nd*sd] x [0, nh*sh] x [0, nw*sw]; voxel i along an axis covers [i*s, (i+1)*s), so a ray lying
exactly on an interior voxel plane is charged to the voxel on the plane's upper side, and one on the
box's upper face misses.  The result is the sum over crossed voxels of (length in mm) * value, with
value = max(0, HU + 1000); the caller multiplies by mu_water / 1000 to get p = integral of mu dl.

Method.  `prefix_column` builds prefix sums along h (the anterior-posterior axis, which chest rays
cross at nearly every voxel): P[v, i, j, k] = sum over j' < j of value[v, i, j', k], shape
[V, d, h+1, w], exact int32 sums for int16 HU.  A ray crosses a sequence of (d, w) columns; Jacobs'
incremental parameters visit only the crossings of d and w planes (about 1 in 15 voxel boundaries
for a PA chest view).  Inside one column the exact Siddon sum over the h voxels it crosses, partial
end voxels included, is F(u_out) - F(u_in) times the path length per unit of h, where
F(u) = P[j] + frac(u) (P[j+1] - P[j]) (u = h coordinate in voxels, j = floor(u)) is the integral of
the piecewise-constant column.  F is continuous, so the side of an h plane that u rounds to does
not matter.  The work per ray is proportional to its d and w crossings, not to the voxels crossed.
Exits through d or w faces are detected by integer crossing counts, so no value outside the volume
is read whatever the rounding.  A ray lying in an h plane (posed views at yaw or pitch 90 degrees)
is summed voxel by voxel over its columns instead; so is a ray within 1e-7 rad of one (an ulp-level
dy from rounding), whose F differences would be all rounding error once divided by dy.

CPU kernels: `_prefix_kernel` (parallel over slices; rows of w are contiguous, so it vectorises) and
`_render_kernel`, one ray per pixel, parallel over (item, detector row); within a row the columns
advance along w, so neighbouring rays read the same cache lines.  `render_rays_cpu` is the checked
public wrapper.
"""
from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import njit, prange

# Numba's OpenMP threading layer keeps idle threads spinning between parallel regions by default.  With
# two parallel regions per DRR and other processes on the cores, spinning threads steal time from the
# working ones (measured on the 2-core dev machine at load ~6: 22 ms -> 17 ms per 256x256 DRR, and
# 12 ms -> 3.4 ms for a tiny detector).  Passive waiting only adds two thread wake-ups per DRR.  Only
# a default: an OMP_WAIT_POLICY set by the user wins, and it must be set before libgomp loads (numba loads
# its threading layer at the first parallel launch, after this import).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def prefix_column(vol, offset, out, v, i, k, nh):
    """out[v, i, j, k] = sum_{j' < j} max(0, vol[v, i, j', k] + offset) for j = 0..nh (one h column)."""
    out[v, i, 0, k] = 0
    zero = out[v, i, 0, k]  # 0 in the prefix dtype: integer sums stay integer
    acc = zero
    for j in range(nh):
        x = vol[v, i, j, k] + offset
        acc += x if x > zero else zero  # max(0, x), with NaN (unknown HU) counted as air
        out[v, i, j + 1, k] = acc


def ray_integral(psum, base, nd, nh, nw, sd, sh, sw, ax, ay, az, bx, by, bz):
    """sum of (path length, mm) * value over the voxels crossed by the ray a -> b -> beyond.

    psum: flat prefix sums [V*d*(h+1)*w] (see `prefix_column`); base: offset of this volume in psum.
    """
    dx = bx - ax
    dy = by - ay
    dz = bz - az
    if dy != 0.0 and dy * dy <= 1e-14 * (dx * dx + dz * dz):
        dy = 0.0  # nearly in an h plane: the in-plane path below (the h drift is < 1e-7 of the length)
    inf = math.inf
    ex = nd * sd
    ey = nh * sh
    ez = nw * sw
    tmin = 0.0
    tmax = inf
    # Entry and exit parameters: intersection of the three slabs.  An axis the ray does not move
    # along only decides hit or miss (half-open, like the voxels).
    if dx != 0.0:
        t0 = -ax / dx
        t1 = (ex - ax) / dx
        tmin = max(tmin, min(t0, t1))
        tmax = min(tmax, max(t0, t1))
    elif not (0.0 <= ax < ex):
        return 0.0
    if dy != 0.0:
        t0 = -ay / dy
        t1 = (ey - ay) / dy
        tmin = max(tmin, min(t0, t1))
        tmax = min(tmax, max(t0, t1))
    elif not (0.0 <= ay < ey):
        return 0.0
    if dz != 0.0:
        t0 = -az / dz
        t1 = (ez - az) / dz
        tmin = max(tmin, min(t0, t1))
        tmax = min(tmax, max(t0, t1))
    elif not (0.0 <= az < ez):
        return 0.0
    if not (tmin < tmax) or (dx == 0.0 and dy == 0.0 and dz == 0.0):
        return 0.0

    # Entry voxel from the entry point, clamped: the entry face itself rounds to either side.
    ix = min(max(int(math.floor((ax + tmin * dx) / sd)), 0), nd - 1)
    iz = min(max(int(math.floor((az + tmin * dz) / sw)), 0), nw - 1)

    # The ray crosses a sequence of (d, w) columns; only the crossings of d and w planes are visited
    # (Jacobs' incremental parameters ta, tb).  Within a column the integral over h is a difference
    # of F(u) = P[j] + frac(u) * (P[j+1] - P[j]), the piecewise-linear prefix integral at u = y / sh
    # (voxel units, j = floor(u)); F is continuous, so which side of an h plane u rounds to is immaterial.
    row = nw               # prefix index step per h voxel
    plane = (nh + 1) * nw  # prefix index step per d voxel
    if dx > 0.0:
        ta = ((ix + 1) * sd - ax) / dx
        dta = sd / dx
        sa = plane
        la = nd - 1 - ix   # crossings left before the one that leaves the box
    elif dx < 0.0:
        ta = (ix * sd - ax) / dx
        dta = -sd / dx
        sa = -plane
        la = ix
    else:
        ta = inf
        dta = inf
        sa = 0
        la = 0
    if dz > 0.0:
        tb = ((iz + 1) * sw - az) / dz
        dtb = sw / dz
        sb = 1
        lb = nw - 1 - iz
    elif dz < 0.0:
        tb = (iz * sw - az) / dz
        dtb = -sw / dz
        sb = -1
        lb = iz
    else:
        tb = inf
        dtb = inf
        sb = 0
        lb = 0

    col = base + ix * plane + iz  # prefix index of the current column's h face 0
    inv_sh = 1.0 / sh
    fnh = float(nh)
    length = math.sqrt(dx * dx + dy * dy + dz * dz)
    acc = 0.0
    if dy != 0.0:
        u = min(max((ay + tmin * dy) * inv_sh, 0.0), fnh)
        j = min(int(u), nh - 1)
        frac = u - j
        p0 = col + j * row
        lo = psum[np.uint64(p0)]
        f_prev = lo + frac * (psum[np.uint64(p0 + row)] - lo)
        while True:
            te = min(ta, tb)
            last = te >= tmax  # leaves through an h face (or no d/w plane is left)
            te = min(te, tmax)
            u = min(max((ay + te * dy) * inv_sh, 0.0), fnh)
            j = min(int(u), nh - 1)
            frac = u - j
            p0 = col + j * row
            lo = psum[np.uint64(p0)]
            acc += lo + frac * (psum[np.uint64(p0 + row)] - lo) - f_prev
            if last:
                break
            # which minor axis: selects rather than branches (the choice is data-dependent)
            use_a = ta <= tb
            if (la if use_a else lb) == 0:
                break
            la = la - 1 if use_a else la
            lb = lb if use_a else lb - 1
            ta = ta + dta if use_a else ta
            tb = tb if use_a else tb + dtb
            col += sa if use_a else sb
            p0 = col + j * row
            lo = psum[np.uint64(p0)]
            f_prev = lo + frac * (psum[np.uint64(p0 + row)] - lo)
        # acc = integral over u (voxel units) of value, signed like dy; length per mm of y = |d| / |dy|
        return abs(acc) * sh * length / abs(dy)
    # A ray in an h plane stays in one h voxel j: plain Siddon over the (d, w) columns.
    j = min(max(int(math.floor(ay * inv_sh)), 0), nh - 1)
    t = tmin
    while True:
        te = min(min(ta, tb), tmax)
        acc += (te - t) * (psum[np.uint64(col + (j + 1) * row)] - psum[np.uint64(col + j * row)])
        if te >= tmax:
            break
        use_a = ta <= tb
        if (la if use_a else lb) == 0:
            break
        la = la - 1 if use_a else la
        lb = lb if use_a else lb - 1
        ta = ta + dta if use_a else ta
        tb = tb if use_a else tb + dtb
        col += sa if use_a else sb
        t = te
    return acc * length


# ---------------------------------------------------------------------------------------- CPU kernels


# Contraction to FMA only: no nnan/ninf (the kernel relies on inf and NaN for axes a ray does not cross).
_FASTMATH = {"contract", "nsz"}
KERNEL_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))
RENDER_CHUNK_ROWS = 8     # detector rows per scheduling chunk
PREFIX_CHUNK_SLICES = 4   # volume slices per scheduling chunk

# Inlined at the Numba IR level: a call per ray would also incref/decref the array (an atomic
# shared by both threads' cores), which costs more than the call itself.
_ray_integral = njit(inline="always", fastmath=_FASTMATH, error_model="numpy")(ray_integral)


@njit(parallel=True, cache=True, fastmath=_FASTMATH, error_model="numpy")
def _prefix_kernel(vol, offset, out):
    # vol [V, d, h, w] int16 | float32; out [V, d, h+1, w] int32 | float64:
    # out[v, i, j, k] = sum_{j' < j} max(0, vol[v, i, j', k] + offset)
    nv, nd, nh, nw = vol.shape
    zero = out.dtype.type(0)
    for job in prange(nv * nd):
        v = job // nd
        i = job - v * nd
        for k in range(nw):
            out[v, i, 0, k] = zero
        for j in range(nh):
            for k in range(nw):
                x = vol[v, i, j, k] + offset
                out[v, i, j + 1, k] = out[v, i, j, k] + (x if x > zero else zero)  # NaN counts as air


@njit(parallel=True, cache=True, fastmath=_FASTMATH, error_model="numpy")
def _render_kernel(psum, vol_index, spacing, rays, scale, out):
    # psum [V, d, h+1, w] (from _prefix_kernel); vol_index [B] int64; spacing [B, 3] float64 mm;
    # rays [B, 6, 3] float64 (RayBundle.as_array); out [B, S, S] float32 = scale * sum(length * value)
    nb = out.shape[0]
    size = out.shape[1]
    nd = psum.shape[1]
    nh = psum.shape[2] - 1
    nw = psum.shape[3]
    flat = psum.reshape(-1)
    stride = nd * (nh + 1) * nw
    for job in prange(nb * size):
        b = job // size
        r = job - b * size
        base = vol_index[b] * stride
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
            out[b, r, c] = scale * _ray_integral(flat, base, nd, nh, nw, sd, sh, sw, ax, ay, az, bx, by, bz)


def kernel_volume(volumes: np.ndarray) -> np.ndarray:
    """The volumes as a C-contiguous array of a kernel dtype: int16 and float32 as they are, else float32."""
    vol = np.asarray(volumes)
    if vol.dtype.kind not in "fiu":
        raise TypeError(f"volume must be a real numeric array, got dtype {vol.dtype}")
    if vol.dtype not in KERNEL_DTYPES:
        vol = vol.astype(np.float32)
    return np.ascontiguousarray(vol)


def prefix_dtype_and_offset(dtype, nh: int, offset: float):
    """Prefix-sum dtype and the offset's type: exact int32 sums for int16 HU with an integral offset
    (when they cannot overflow), float64 otherwise."""
    if np.dtype(dtype) == np.int16 and float(offset).is_integer() and nh * (32767 + abs(offset)) < 2**31:
        return np.dtype(np.int32), int(offset)
    return np.dtype(np.float64), float(offset)


def prefix_sums_cpu(vol: np.ndarray, offset: float) -> np.ndarray:
    """[V, d, h+1, w] prefix sums along h of max(0, vol + offset) (vol [V, d, h, w] int16 | float32)."""
    if vol.dtype not in KERNEL_DTYPES or vol.ndim != 4 or not vol.flags.c_contiguous:
        raise TypeError("vol must be a C-contiguous int16 or float32 [V, d, h, w] array")
    nv, nd, nh, nw = vol.shape
    dtype, off = prefix_dtype_and_offset(vol.dtype, nh, offset)
    out = np.empty((nv, nd, nh + 1, nw), dtype=dtype)
    with numba.parallel_chunksize(PREFIX_CHUNK_SLICES):
        _prefix_kernel(vol, off, out)
    return out


def render_rays_cpu(vol: np.ndarray, vol_index: np.ndarray, spacing: np.ndarray, rays: np.ndarray,
                    size: int, *, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """scale * sum(length_mm * max(0, vol + offset)) along each item's rays: float32 [B, size, size].

    vol [V, d, h, w] int16 or float32, C-contiguous; vol_index [B] ints in [0, V); spacing [B, 3] mm > 0;
    rays [B, 6, 3] (RayBundle.as_array of each item).  For HU: offset 1000, scale mu_water / 1000.
    """
    vol_index = np.ascontiguousarray(vol_index, dtype=np.int64)
    spacing = np.ascontiguousarray(spacing, dtype=np.float64)
    rays = np.ascontiguousarray(rays, dtype=np.float64)
    nb = vol_index.shape[0]
    if vol_index.ndim != 1 or (nb and (vol_index.min() < 0 or vol_index.max() >= vol.shape[0])):
        raise ValueError("vol_index must be a 1-D array of indices into vol")
    if spacing.shape != (nb, 3) or rays.shape != (nb, 6, 3):
        raise ValueError(f"spacing must be [B, 3] and rays [B, 6, 3] with B={nb}")
    psum = prefix_sums_cpu(vol, offset)
    out = np.empty((nb, size, size), dtype=np.float32)
    if nb:
        # dynamic scheduling in chunks of detector rows: when another process delays one thread, the
        # others take its remaining rows instead of waiting for it at the end of a static split
        with numba.parallel_chunksize(RENDER_CHUNK_ROWS):
            _render_kernel(psum, vol_index, spacing, rays, float(scale), out)
    return out
