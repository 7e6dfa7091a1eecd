"""Resize CT volumes to a fixed grid with anti-aliasing, fast.

Public API
----------
resize_volume(hu, spacing, out_shape, *, scale=1.0, offset=0.0) -> (float32 [D, H, W], (sd, sh, sw))
    Separable resampling with a triangle (linear) kernel whose support is stretched by the down-sampling
    factor on every axis that shrinks (so it low-pass filters before decimating, like PIL's and torch's
    antialiased bilinear), and plain linear interpolation on axes that grow. Sample centres are aligned
    (pixel-area convention: output sample o sits at input coordinate (o + 0.5) * n_in / n_out - 0.5), taps
    falling outside the volume are dropped and the remaining weights renormalised (no edge darkening).
    The new spacing keeps the physical extent: new = old * n_in / n_out per axis.
    `hu` may also be a CT's stored voxels (any numeric dtype, a canonical view with mirrored axes) with
    HU = float32(stored) * scale + offset: converted inside the first pass (xpgan.pipeline.ct.readers.read_ct_stored).
resample_axis(x, axis, n_out) -> float32 array
    The same 1D operation along one axis (used by resize_volume; handy for tests).
axis_taps(n_in, n_out) -> (idx int32 [n_out, K], w float32 [n_out, K])
    The kernel taps; an obviously-correct NumPy reference can be built on them.
quantize_int16(x) -> (int16 array, n_nonfinite)
    round(clip(x, int16 range)) in one parallel pass, counting NaN/inf voxels (stored as 0).
RESIZE_METHOD: dict written into store attributes.

Why not scikit-image: `skimage.transform.resize(anti_aliasing=True)` Gaussian-filters the whole input
volume in float64 and then interpolates; for a 40x512x512 CT that costs more than reading the .nii.gz.
Here each axis is reduced in turn (the most shrinking axis first), so later passes run on smaller arrays,
in float32, inside a parallel Numba kernel.
"""
from __future__ import annotations

import math

import numpy as np

RESIZE_METHOD = {
    "method": "separable-antialiased-linear",
    "kernel": "triangle; support scaled by n_in/n_out on shrinking axes, 1 sample on growing axes",
    "alignment": "sample centres: x_in = (x_out + 0.5) * n_in / n_out - 0.5; out-of-volume taps dropped, "
                 "weights renormalised",
    "spacing": "new spacing = old spacing * n_in / n_out (physical extent kept)",
    "dtype": "float32 computation; stored volume = round(clip(HU, int16 range))",
}


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Row o of the kernel reads samples first[o] + k, k < K, with weights w[o, k] (0 outside the axis)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
    scale = n_in / n_out
    support = max(scale, 1.0)  # half-width of the triangle, in input samples
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5  # all within [-0.5, n_in - 0.5]
    k = 2 * int(math.ceil(support)) + 1
    first = np.floor(centres - support).astype(np.int64) + 1
    idx = first[:, None] + np.arange(k)[None, :]  # [n_out, K]
    w = np.maximum(0.0, 1.0 - np.abs(idx - centres[:, None]) / support)
    w = np.where((idx >= 0) & (idx < n_in), w, 0.0)
    w = w / w.sum(axis=1, keepdims=True)  # > 0: the nearest sample is within 0.5 < support
    keep = np.flatnonzero((w > 0).any(axis=0))  # drop tap columns that are zero for every output
    w = w[:, keep[0]:keep[-1] + 1]
    return np.ascontiguousarray(first + keep[0]), np.ascontiguousarray(w, dtype=np.float32)


def axis_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices and normalised weights of the antialiased linear kernel, [n_out, K] each."""
    first, w = _taps(n_in, n_out)
    idx = np.clip(first[:, None] + np.arange(w.shape[1])[None, :], 0, n_in - 1)
    return idx.astype(np.int32), w


_kernels = None


def _get_kernels():
    """Compile (or load from cache) the Numba kernels on first use so importing this module stays cheap."""
    global _kernels
    if _kernels is None:
        import numba

        # x may be of any numeric dtype (the stored CT voxels): each load is converted to float32 and scaled,
        # float32(x) * scale + offset, the same two float32 roundings as the reader's conversion (exact for
        # scale 1, offset 0). Tap k of output o reads x[first[o] + step * k] (step -1: a mirrored axis, see
        # _oriented_taps), so the weights are summed in the same order in either orientation.
        @numba.njit(parallel=True, cache=True)
        def _resample_mid(x, first, step, w, scale, offset, out):  # x [A, N, B], out [A, M, B] float32
            a_n, m, b_n = out.shape
            k_n = w.shape[1]
            for job in numba.prange(a_n * m):
                a = job // m
                o = job % m
                for b in range(b_n):
                    out[a, o, b] = 0.0
                for k in range(k_n):
                    wk = w[o, k]
                    if wk != 0.0:  # zero for every tap outside the axis
                        i = first[o] + step * k
                        for b in range(b_n):
                            out[a, o, b] += wk * (np.float32(x[a, i, b]) * scale + offset)

        @numba.njit(parallel=True, cache=True)
        def _resample_last(x, first, step, w, scale, offset, out):  # x [R, N], out [R, M] float32
            r_n, m = out.shape
            k_n = w.shape[1]
            n = x.shape[1]
            for r in numba.prange(r_n):
                for o in range(m):
                    f = first[o]
                    lo = f if step > 0 else f - (k_n - 1)
                    acc = np.float32(0.0)
                    if lo >= 0 and lo + k_n <= n:  # interior: every tap inside the axis
                        for k in range(k_n):
                            acc += w[o, k] * (np.float32(x[r, f + step * k]) * scale + offset)
                    else:
                        for k in range(k_n):
                            if w[o, k] != 0.0:
                                acc += w[o, k] * (np.float32(x[r, f + step * k]) * scale + offset)
                    out[r, o] = acc

        @numba.njit(parallel=True, cache=True)
        def _quantize(x, lo, hi, out):  # x float32 [n], out int16 [n]; returns count of non-finite values
            bad = 0
            for i in numba.prange(x.size):
                v = x[i]
                if not np.isfinite(v):
                    bad += 1
                    out[i] = 0
                else:
                    out[i] = np.int16(min(max(np.rint(v), lo), hi))
            return bad

        _kernels = (_resample_mid, _resample_last, _quantize)
    return _kernels


def quantize_int16(x: np.ndarray) -> tuple[np.ndarray, int]:
    """round(clip(x)) to int16 (half to even, like np.rint) and the number of NaN/inf voxels (stored as 0)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.int16)
    info = np.iinfo(np.int16)
    bad = _get_kernels()[2](x.reshape(-1), np.float32(info.min), np.float32(info.max), out.reshape(-1))
    return out, int(bad)


def _oriented_taps(n_in: int, n_out: int, mirrored: bool) -> tuple[np.ndarray, int, np.ndarray]:
    """(first, step, w) for resampling an axis whose input is stored mirrored (memory index = n_in - 1 -
    canonical index): output o (in canonical order) reads its canonical taps at the mirrored positions, in
    the same order, so the result is bit-identical to resampling a flipped copy, and no longer mirrored."""
    first, w = _taps(n_in, n_out)
    if not mirrored:
        return first, 1, w
    return np.ascontiguousarray(n_in - 1 - first), -1, w


def _resample(x: np.ndarray, axis: int, n_out: int, *, mirrored: bool = False, scale: float = 1.0,
              offset: float = 0.0) -> np.ndarray:
    """One pass on a C-contiguous `x` of any numeric dtype -> float32 C-contiguous."""
    n_in = x.shape[axis]
    first, step, w = _oriented_taps(n_in, n_out, mirrored)
    mid, last, _ = _get_kernels()
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    trail = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    out_shape = x.shape[:axis] + (n_out,) + x.shape[axis + 1:]
    scale, offset = np.float32(scale), np.float32(offset)
    if trail == 1:
        out = np.empty((lead, n_out), dtype=np.float32)
        last(x.reshape(lead, n_in), first, step, w, scale, offset, out)
    else:
        out = np.empty((lead, n_out, trail), dtype=np.float32)
        mid(x.reshape(lead, n_in, trail), first, step, w, scale, offset, out)
    return out.reshape(out_shape)


def resample_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Resample float32 `x` along `axis` to `n_out` samples with the antialiased linear kernel."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 1:
        raise ValueError("resample_axis needs an array with at least one axis")
    axis = axis % x.ndim
    if n_out == x.shape[axis]:
        return x.copy()
    return _resample(x, axis, n_out)


def resize_volume(hu: np.ndarray, spacing, out_shape, *, scale: float = 1.0,
                  offset: float = 0.0) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resize a [d, h, w] volume to `out_shape` (D, H, W); returns (float32 volume, new spacing in mm).

    `hu` may be the stored voxels of a CT in any numeric dtype, with `scale` and `offset` (NIfTI scl_slope
    and scl_inter, DICOM RescaleSlope and RescaleIntercept) giving HU = float32(stored) * scale + offset:
    the first pass then converts while it resamples, so the full-size float32 volume is never made. A view
    with mirrored axes (negative strides, as the readers' canonical views of on-disk data are) is read in
    memory order; each mirrored axis is put back in canonical order by its own pass (axes that keep their
    size are flipped at the end); the result is bit-identical to resizing
    `np.ascontiguousarray(hu, dtype=np.float32) * scale + offset`.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"resize_volume needs a 3D [d, h, w] volume, got shape {hu.shape}")
    if min(hu.shape) < 1:
        raise ValueError(f"resize_volume got an empty volume of shape {hu.shape}")
    out_shape = tuple(int(s) for s in out_shape)
    if len(out_shape) != 3 or min(out_shape) < 1:
        raise ValueError(f"out_shape must be three positive sizes (D, H, W), got {out_shape}")
    spacing = tuple(float(s) for s in spacing)  # mm per voxel (sd, sh, sw)
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values, got {spacing}")
    if not np.issubdtype(hu.dtype, np.number) or np.issubdtype(hu.dtype, np.complexfloating):
        raise ValueError(f"resize_volume needs a real numeric volume, got dtype {hu.dtype}")
    new_spacing = tuple(spacing[a] * hu.shape[a] / out_shape[a] for a in range(3))
    mirrored = tuple(hu.strides[a] < 0 and hu.shape[a] > 1 for a in range(3))
    x = hu[tuple(slice(None, None, -1) if m else slice(None) for m in mirrored)]  # memory order, strides > 0
    if x.dtype.isnative:
        x = x.view(x.dtype.newbyteorder("="))  # e.g. '<i2' from a NIfTI header: the same type for Numba
    if not x.flags.c_contiguous or not x.dtype.isnative or out_shape == hu.shape:
        # general layouts: one conversion pass to a canonical float32 array first
        x = np.ascontiguousarray(hu, dtype=np.float32)
        if scale != 1.0 or offset != 0.0:
            x = x * np.float32(scale) + np.float32(offset)
        mirrored = (False, False, False)
        scale, offset = 1.0, 0.0
    # Shrink the most-reduced axis first: every later pass then runs on a smaller array.
    # Ties go to the inner-contiguous (d, h) passes first, which vectorise better than the w gather pass.
    order = sorted(range(3), key=lambda a: (out_shape[a] / hu.shape[a], a == 2))
    for a in order:
        if x.shape[a] != out_shape[a]:
            x = _resample(x, a, out_shape[a], mirrored=mirrored[a], scale=scale, offset=offset)
            scale, offset = 1.0, 0.0  # applied by the first pass
            mirrored = mirrored[:a] + (False,) + mirrored[a + 1:]  # the pass wrote axis a in canonical order
    if any(mirrored):  # mirrored axes that kept their size
        x = np.ascontiguousarray(x[tuple(slice(None, None, -1) if m else slice(None) for m in mirrored)])
    if x is hu or np.shares_memory(x, hu):
        x = x.copy()
    return x, new_spacing
