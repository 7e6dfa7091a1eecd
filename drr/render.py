"""Public DRR functions: checked wrappers that tie a geometry to a backend kernel.

    render_drr(volume_hu, spacing_mm, geometry)             -> float32 [size, size]
    render_drr_batch(volumes_hu, spacings_mm, geometry)     -> float32 [B, size, size]  (many volumes)
    render_drr_views(volume_hu, spacing_mm, geometries)     -> float32 [V, size, size]  (many views)

Volumes are numpy arrays (any real dtype; int16 and float32 are used as they are) or torch CUDA
tensors.  GPU-resident use: given torch CUDA tensors (int16 or float32 HU, any layout), the CUDA
backend reads them in place (`__cuda_array_interface__`, no copy when contiguous), queues its kernels
on torch's current stream and returns a torch float32 CUDA tensor on the same device, so a training
step renders DRRs with no host round trip.  With backend "cpu" (or an "auto" fallback) a tensor is
rendered on the CPU and the result still comes back as a tensor on the tensor's device.  For tensors the
image map runs on the GPU in torch (within 1 ulp of the numpy map); line integrals are bit-identical
to the CPU backend's in both forms.

Backends: "cpu" (numba, parallel), "cuda" (numba.cuda; fails loudly) and "auto" (cuda when a real GPU
is present, else cpu; when the CUDA path fails to compile or launch it warns once per process, renders
on the CPU from then on, and `cuda_fallback_reason()` tells why).

Per-call costs on the GPU: kernels compile once per process; the volumes go up once per call through
pinned staging buffers; ray tables stay on the device while the geometry does not change
(siddon_cuda.py).  Host ray tables are cached too (`_rays_for`).

Physics and the image map: physics.py.  Geometry and orientation: geometry.py.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Literal, Sequence, Union, get_args

import numpy as np

from xpgan.drr.geometry import ConeGeometry, Geometry, ParallelGeometry
from xpgan.drr.physics import MU_WATER_PER_MM, OUTPUTS, check_mu_water, line_integral_to_image
from xpgan.errors import DRRArgumentError, XPGANError

Backend = Literal["auto", "cpu", "cuda"]  # --backend
BACKENDS: tuple[str, ...] = get_args(Backend)
_FALLBACK: dict = {}        # {"reason": str} once "auto" has fallen back to the CPU in this process
_RAYS: OrderedDict = OrderedDict()   # (geometries, shape, spacings) -> host rays [B, 6, 3]
_RAYS_CAPACITY = 16


def cuda_fallback_reason():
    """Why backend "auto" renders on the CPU in this process although a GPU is present (None: it does not)."""
    return _FALLBACK.get("reason")


def cuda_available() -> bool:
    """True when numba.cuda sees a real GPU (never true in the CUDA simulator)."""
    from xpgan.drr import siddon_cuda

    return siddon_cuda.real_gpu_available()


def resolve_backend(backend: str) -> str:
    """'auto' -> 'cuda' when a real GPU is present, else 'cpu'; unknown names raise DRRArgumentError."""
    if backend not in BACKENDS:
        raise DRRArgumentError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto":
        return "cuda" if cuda_available() and not _FALLBACK else "cpu"
    if backend == "cuda" and not _cuda_usable():
        raise XPGANError("backend 'cuda' requested but no CUDA GPU is available (use --backend cpu or auto)")
    return backend


def probe_backend(backend: str) -> tuple[str, "str | None"]:
    """The backend a batch job should hand to its workers, tried once here: "auto" that resolves to cuda renders
    a tiny volume on the GPU (compile + launch); if that fails (one warning) -> ("cpu", reason).  Other names
    are returned as resolve_backend gives them, with reason None."""
    resolved = resolve_backend(backend)
    if backend != "auto" or resolved != "cuda":
        return resolved, None
    from xpgan.drr.geometry import ParallelGeometry

    render_drr(np.zeros((2, 2, 2), np.int16), (1.0, 1.0, 1.0), ParallelGeometry(size=2), backend="auto")
    return resolve_backend(backend), cuda_fallback_reason()


def _cuda_usable() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM) or cuda_available()


def _check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise DRRArgumentError(f"unknown output {output!r}; allowed: {', '.join(OUTPUTS)}")


def _check_geometry(geometry) -> None:
    if not isinstance(geometry, (ConeGeometry, ParallelGeometry)):
        raise DRRArgumentError(f"geometry must be a ConeGeometry or ParallelGeometry, got {type(geometry).__name__}")


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "is_cuda")


def _check_volumes(volumes, ndim: int, what: str):
    if _is_torch(volumes):
        if volumes.ndim != ndim:
            raise DRRArgumentError(f"{what} must have {ndim} dimensions, got shape {tuple(volumes.shape)}")
        if volumes.is_complex() or str(volumes.dtype) == "torch.bool":
            raise DRRArgumentError(f"{what} must hold real numbers (HU), got dtype {volumes.dtype}")
        if min(volumes.shape[-3:], default=0) < 1:
            raise DRRArgumentError(f"{what} is empty: shape {tuple(volumes.shape)}")
        return volumes
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


def finish_output(p, output: str):
    """Line integrals p (numpy or torch) as the requested output: themselves, or the detector's image map."""
    if output == "line_integral":
        return p
    if _is_torch(p) and not p.is_cuda:  # the numpy map itself: bit-identical to numpy input
        import torch

        return torch.from_numpy(line_integral_to_image(p.detach().numpy()))
    return line_integral_to_image(p)


def _rays_for(geometries: Sequence[Geometry], shape, spacings: np.ndarray):
    """Host rays [B, 6, 3] and the key they were computed from (cached: geometries are frozen dataclasses)."""
    key = (tuple(geometries), tuple(int(s) for s in shape), spacings.tobytes())
    rays = _RAYS.get(key)
    if rays is None:
        rays = np.stack([g.rays(shape, sp).as_array() for g, sp in zip(geometries, spacings)])  # [B, 6, 3]
        rays.setflags(write=False)
        _RAYS[key] = rays
        while len(_RAYS) > _RAYS_CAPACITY:
            _RAYS.popitem(last=False)
    else:
        _RAYS.move_to_end(key)
    return rays, key


def _render_cpu(volumes_hu, vol_index, spacings, rays, size, mu_water):
    from xpgan.drr.siddon_cpu import kernel_volume, render_rays_cpu

    if _is_torch(volumes_hu):
        import torch

        vol = volumes_hu.detach().cpu()
        vol = vol.numpy() if vol.dtype in (torch.int16, torch.float32) else vol.float().numpy()
        return torch.from_numpy(_render_cpu(vol, vol_index, spacings, rays, size, mu_water)).to(volumes_hu.device)
    # HU read as it is by the kernels: p = mu_water/1000 * sum(length * max(0, HU + 1000))
    return render_rays_cpu(kernel_volume(volumes_hu), vol_index, spacings, rays, size,
                           offset=1000.0, scale=mu_water / 1000.0)


def _render_cuda(volumes_hu, vol_index, spacings, rays, size, mu_water, key):
    from xpgan.drr import siddon_cuda

    if _is_torch(volumes_hu) and volumes_hu.is_cuda:
        return siddon_cuda.render_hu_torch(volumes_hu, vol_index, spacings, rays, size, mu_water, key=key)
    if _is_torch(volumes_hu):
        import torch

        return torch.from_numpy(_render_cuda(volumes_hu.detach().cpu().numpy(), vol_index, spacings, rays, size,
                                             mu_water, key))
    return siddon_cuda.render_hu_cuda(volumes_hu, vol_index, spacings, rays, size, mu_water, key=key)


def _render(volumes_hu, vol_index: np.ndarray, spacings: np.ndarray, geometries: Sequence[Geometry],
            backend: str, output: str, mu_water: float):
    # volumes_hu [V, d, h, w] (numpy or torch); vol_index [B]; spacings [B, 3]; geometries: B geometries of one size
    _check_output(output)
    mu_water = check_mu_water(mu_water)
    for g in geometries:
        _check_geometry(g)
    sizes = {g.size for g in geometries}
    if len(sizes) > 1:
        raise DRRArgumentError(f"all geometries of one call must share a detector size, got {sorted(sizes)}")
    requested = backend
    backend = resolve_backend(backend)
    shape = tuple(volumes_hu.shape[1:])
    rays, key = _rays_for(geometries, shape, spacings)
    size = geometries[0].size
    if backend == "cuda":
        try:
            p = _render_cuda(volumes_hu, vol_index, spacings, rays, size, mu_water, key + (vol_index.tobytes(),))
            return finish_output(p, output)
        except Exception as exc:  # noqa: BLE001 - "auto" must survive any compile or launch failure
            if requested != "auto":
                raise
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
            _FALLBACK["reason"] = reason
            warnings.warn(f"DRR backend 'auto': the CUDA path failed ({reason}); rendering on the CPU from now on "
                          "in this process (use backend='cuda' to see the full error)", RuntimeWarning, stacklevel=3)
    return finish_output(_render_cpu(volumes_hu, vol_index, spacings, rays, size, mu_water), output)


def render_drr(volume_hu: np.ndarray, spacing_mm, geometry: Geometry, *, backend: str = "auto",
               output: str = "image", mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """Render one DRR.

    volume_hu: [d, h, w] in HU, canonical orientation (docs/design.md), any real dtype; a numpy array, or a torch
        tensor (then the result is a torch tensor on its device; see the module docstring).
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
        size = geoms[0].size if geoms else 0
        empty = np.zeros((0, size, size), np.float32)
        if _is_torch(vols):
            import torch

            return torch.from_numpy(empty).to(vols.device)
        return empty
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
