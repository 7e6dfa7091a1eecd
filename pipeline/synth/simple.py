"""The simple synthetic chest: one generator of small CT-like HU volumes for benchmarks and tests.

`simple_chest(shape, seed)` is air around an elliptic soft-tissue body, two ellipsoidal lungs, a dense spine
and Gaussian noise; `nodule` adds a dense Gaussian blob (a positive case that the DRR shows too). It is cheap
(a few vectorised passes) and deterministic in `seed`. The anatomically detailed phantom of the demo and the
study is `anatomy.chest_phantom`.

Axes are [d, h, w] = (inferior->superior, anterior->posterior, patient right->left), as everywhere in xpgan.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

HU_AIR, HU_SOFT, HU_LUNG, HU_BONE = -1000.0, 40.0, -850.0, 700.0
HU_MIN, HU_MAX = -1024, 3071


def gaussian_blob(shape: Sequence[int], centre: Sequence[float], radius: float) -> np.ndarray:
    """exp(-|x - centre|^2 / (2 radius^2)) on the voxel grid of `shape` (float32; centre in voxels)."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    r2 = sum((g - np.float32(c)) ** 2 for g, c in zip(grids, centre))
    return np.exp(-r2 / np.float32(2.0 * radius ** 2)).astype(np.float32)


def simple_chest(shape: Sequence[int] = (64, 256, 256), seed: int = 0, *, noise_hu: float = 20.0,
                 nodule: Optional[tuple[Sequence[float], float, float]] = None, dtype=np.int16) -> np.ndarray:
    """A CT-like HU volume [d, h, w]: body, lungs, spine, N(0, noise_hu) noise, clipped to [-1024, 3071].

    nodule: (centre in voxels (d, h, w), radius in voxels, peak HU added), or None.
    dtype: int16 (as in the CT store, rounded toward zero) or float32 (as read_ct returns).
    """
    d, h, w = (int(n) for n in shape)
    shape = (d, h, w)
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, d), np.linspace(-1, 1, h), np.linspace(-1, 1, w),
                             indexing="ij", sparse=True)
    hu = np.full(shape, HU_AIR, dtype=np.float32)
    body = (yy / 0.7) ** 2 + (xx / 0.9) ** 2 <= 1.0
    hu[np.broadcast_to(body, shape)] = HU_SOFT
    for side in (-1, 1):
        lung = ((yy + 0.05) / 0.5) ** 2 + ((xx - side * 0.42) / 0.33) ** 2 + (zz / 1.1) ** 2 <= 1.0
        hu[np.broadcast_to(lung, shape)] = HU_LUNG
    spine = ((yy - 0.45) / 0.12) ** 2 + (xx / 0.1) ** 2 <= 1.0
    hu[np.broadcast_to(spine, shape)] = HU_BONE
    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    if nodule is not None:
        centre, radius, peak = nodule
        hu += np.float32(peak) * gaussian_blob(shape, centre, radius)
    return np.clip(hu, HU_MIN, HU_MAX).astype(dtype)
