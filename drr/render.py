"""Public DRR functions: checked wrappers that tie a geometry to a backend kernel.

    render_drr(volume_hu, spacing_mm, geometry)             -> float32 [size, size]
    render_drr_batch(volumes_hu, spacings_mm, geometry)     -> float32 [B, size, size]  (many volumes)
    render_drr_views(volume_hu, spacing_mm, geometries)     -> float32 [V, size, size]  (many views)

Physics and the image map: physics.py.  Geometry and orientation: geometry.py.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from xpgan.drr.geometry import ConeGeometry, DRRArgumentError, Geometry, ParallelGeometry
from xpgan.errors import XPGANError
from xpgan.drr.physics import OUTPUTS, check_mu_water, line_integral_to_image, MU_WATER_PER_MM

BACKENDS = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when numba.cuda sees a real GPU (never true in the CUDA simulator)."""
    from xpgan.drr import siddon_cuda

    return siddon_cuda.real_gpu_available()


def resolve_backend(backend: str) -> str:
    """'auto' -> 'cuda' when a real GPU is present, else 'cpu'; unknown names raise DRRArgumentError."""
    if backend not in BACKENDS:
        raise DRRArgumentError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "cuda" if cuda_available() else "cpu"
    if backend == "cuda" and not _cuda_usable():
        raise XPGANError("backend 'cuda' requested but no CUDA GPU is available (use --backend cpu or auto)")
    return backend


def _cuda_usable() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM) or cuda_available()


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise DRRArgumentError(f"unknown output {output!r}; allowed: {', '.join(OUTPUTS)}")


def _check_geometry(geometry) -> None:
    if not isinstance(geometry, (ConeGeometry, ParallelGeometry)):
        raise DRRArgumentError(f"geometry must be a ConeGeometry or ParallelGeometry, got {type(geometry).__name__}")


def _check_volumes(volumes: np.ndarray, ndim: int, what: str) -> np.ndarray:
    volumes = np.asarray(volumes)
    if volumes.ndim != ndim:
        raise DRRArgumentError(f"{what} must have {ndim} dimensions, got shape {volumes.shape}")
    if volumes.dtype.kind not in "fiu":
        raise DRRArgumentError(f"{what} must hold real numbers (HU), got dtype {volumes.dtype}")
    if min(volumes.shape[-3:], default=0) < 1:
        raise DRRArgumentError(f"{what} is empty: shape {volumes.shape}")
    return volumes


def _check_spacings(spacings, n: int) -> np.ndarray:
    sp = np.asarray(spacings, dtype=np.float64)
    if sp.shape == (3,):
        sp = np.broadcast_to(sp, (n, 3))
    if sp.shape != (n, 3) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise DRRArgumentError(f"spacing must be positive finite mm values of shape (3,) or ({n}, 3), got {spacings!r}")
    return np.ascontiguousarray(sp)


def _finish(p: np.ndarray, output: str) -> np.ndarray:
    return p if output == "line_integral" else line_integral_to_image(p)


def _render(volumes_hu: np.ndarray, vol_index: np.ndarray, spacings: np.ndarray, geometries: Sequence[Geometry],
            backend: str, output: str, mu_water: float) -> np.ndarray:
    # volumes_hu [V, d, h, w]; vol_index [B]; spacings [B, 3]; geometries: B geometries of one size
    _check_output(output)
    mu_water = check_mu_water(mu_water)
    for g in geometries:
        _check_geometry(g)
    sizes = {g.size for g in geometries}
    if len(sizes) > 1:
        raise DRRArgumentError(f"all geometries of one call must share a detector size, got {sorted(sizes)}")
    backend = resolve_backend(backend)
    shape = volumes_hu.shape[1:]
    rays = np.stack([g.rays(shape, sp).as_array() for g, sp in zip(geometries, spacings)])  # [B, 6, 3]
    size = geometries[0].size
    # HU read as it is by the kernels: p = mu_water/1000 * sum(length * max(0, HU + 1000))
    if backend == "cpu":
        from xpgan.drr.siddon_cpu import kernel_volume, render_rays_cpu

        p = render_rays_cpu(kernel_volume(volumes_hu), vol_index, spacings, rays, size,
                            offset=1000.0, scale=mu_water / 1000.0)
    else:
        from xpgan.drr.siddon_cuda import render_hu_cuda

        p = render_hu_cuda(volumes_hu, vol_index, spacings, rays, size, mu_water)
    return _finish(p, output)


def render_drr(volume_hu: np.ndarray, spacing_mm, geometry: Geometry, *, backend: str = "auto",
               output: str = "image", mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Render one DRR.

    volume_hu: [d, h, w] in HU, canonical orientation (docs/design.md), any real dtype.
    spacing_mm: (sd, sh, sw) voxel spacing, mm.
    geometry: ConeGeometry or ParallelGeometry.
    backend: "auto" (cuda when a real GPU is present, else cpu) | "cpu" | "cuda".
    output: "image" (1 - exp(-(p / P_REF)^2), in [0, 1]) | "line_integral" (p = integral of mu dl).
    mu_water: attenuation of water, 1/mm.
    Returns float32 [size, size], rows superior->inferior, columns patient right->left.
    """
    vol = _check_volumes(volume_hu, 3, "volume")
    spacings = _check_spacings(spacing_mm, 1)
    return _render(vol[None], np.zeros(1, np.int64), spacings, [geometry], backend, output, mu_water)[0]


def render_drr_batch(volumes_hu: np.ndarray, spacings_mm, geometry: Union[Geometry, Sequence[Geometry]], *,
                     backend: str = "auto", output: str = "image", mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Render one DRR per volume: volumes [B, d, h, w] HU, spacings [B, 3] or [3] mm -> float32 [B, size, size].

    `geometry` is one geometry for all volumes or a sequence of B geometries with one detector size.
    """
    vols = _check_volumes(volumes_hu, 4, "volumes")
    nb = vols.shape[0]
    spacings = _check_spacings(spacings_mm, nb)
    geoms = [geometry] * nb if isinstance(geometry, (ConeGeometry, ParallelGeometry)) else list(geometry)
    if len(geoms) != nb:
        raise DRRArgumentError(f"got {len(geoms)} geometries for {nb} volumes")
    if nb == 0:
        return np.zeros((0, 0, 0), np.float32) if not geoms else np.zeros((0, geoms[0].size, geoms[0].size), np.float32)
    return _render(vols, np.arange(nb, dtype=np.int64), spacings, geoms, backend, output, mu_water)


def render_drr_views(volume_hu: np.ndarray, spacing_mm, geometries: Sequence[Geometry], *,
                     backend: str = "auto", output: str = "image", mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Render several views of one volume [d, h, w] (HU): float32 [V, size, size], HU -> mu converted once."""
    vol = _check_volumes(volume_hu, 3, "volume")
    geoms = list(geometries)
    if not geoms:
        raise DRRArgumentError("render_drr_views needs at least one geometry")
    spacings = _check_spacings(spacing_mm, len(geoms))
    return _render(vol[None], np.zeros(len(geoms), np.int64), spacings, geoms, backend, output, mu_water)
