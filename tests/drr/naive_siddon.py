"""A slow, obviously-correct Siddon ray caster in plain NumPy (test reference only).

Original Siddon form: collect every voxel-plane crossing of the ray inside the box, sort them, and
charge each segment to the voxel containing its midpoint.  Independent of the incremental kernel.
Same conventions as xpgan.drr.siddon_cpu: ray a + t (b - a), t >= 0, voxel i covers [i s, (i+1) s).
"""
from __future__ import annotations

import numpy as np


def naive_ray(vol: np.ndarray, spacing, a, b) -> float:
    """sum of (length in mm) * vol[voxel] along the ray from a through b and beyond."""
    vol = np.asarray(vol, dtype=np.float64)
    s = np.asarray(spacing, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    d = np.asarray(b, dtype=np.float64) - a
    n = np.array(vol.shape)
    ext = n * s
    tmin, tmax = 0.0, np.inf
    for k in range(3):
        if d[k] == 0:
            if not (0 <= a[k] < ext[k]):
                return 0.0
            continue
        t0, t1 = (0 - a[k]) / d[k], (ext[k] - a[k]) / d[k]
        tmin, tmax = max(tmin, min(t0, t1)), min(tmax, max(t0, t1))
    if not tmin < tmax:
        return 0.0
    ts = [tmin, tmax]
    for k in range(3):
        if d[k] != 0:
            planes = np.arange(n[k] + 1) * s[k]
            t = (planes - a[k]) / d[k]
            ts.extend(t[(t > tmin) & (t < tmax)])
    ts = np.unique(np.array(ts))
    total = 0.0
    for t0, t1 in zip(ts[:-1], ts[1:]):
        mid = a + 0.5 * (t0 + t1) * d
        idx = np.clip(np.floor(mid / s).astype(int), 0, n - 1)
        total += (t1 - t0) * vol[tuple(idx)]
    return total * float(np.linalg.norm(d))


def naive_render(vol: np.ndarray, spacing, rays) -> np.ndarray:
    """Line integrals for every ray of a RayBundle: float64 [size, size]."""
    start, through = rays.endpoints()
    out = np.zeros((rays.size, rays.size))
    for r in range(rays.size):
        for c in range(rays.size):
            out[r, c] = naive_ray(vol, spacing, start[r, c], through[r, c])
    return out
