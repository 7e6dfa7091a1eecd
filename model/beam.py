"""Where a CT's features land on the detector: the per-study ray geometry the projected generator uses.

The DRR of a study is rendered with the store's geometry (drr/geometry.py) and the study's voxel spacing,
so where the volume lands on the detector differs between studies (a fitted field of view fits the larger
of the superior-inferior / right-left extents, a cone beam magnifies planes near the source more than
planes near the detector). The generator's spatial path follows the same rays:

  * `beam_rays(geometry, shape, spacing)`: the study's unposed ray bundle (drr/geometry.RayBundle) in the
    normalised volume frame of torch's grid_sample (align_corners=False: -1 and +1 are the volume's outer
    faces), [6, 3] float32 rows (src_c, src_u, src_v, det_c, det_u, det_v), columns (d, h, w): the ray
    through the detector point at (u, v) in [-1, 1]^2 (u down the rows, v along the columns, +-1 the
    detector's outer edges) runs from src_c + u src_u + v src_v to det_c + u det_u + v det_v. It does not
    depend on the detector's pixel count, so any image resolution samples it. Posed training
    (model/augment.py) resamples the volume into the posed frame, so the unposed bundle is the right one
    there as well.
  * `slab_grid(rays, res, planes)`: for every pixel of a res x res image and every anterior-posterior plane
    in `planes` (normalised h), the (w, d) point where that pixel's ray crosses the plane, as a grid_sample
    grid [N, K, res, res, 2].

Rays that miss the volume sample zeros (padding), as a DRR's rays through air give no attenuation.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

RAY_ROWS = 6   # src0, src_dr, src_dc, det0, det_dr, det_dc


def beam_rays(geometry, shape, spacing_mm) -> np.ndarray:
    """The unposed ray bundle of `geometry` for a volume of `shape` voxels and `spacing_mm`, in the
    normalised volume frame: [6, 3] float32 (module docstring)."""
    if geometry.is_posed:
        raise ValueError("beam_rays takes the store's unposed geometry")
    b = geometry.rays(tuple(int(s) for s in shape), np.asarray(spacing_mm, dtype=np.float64))
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing_mm, dtype=np.float64)
    scale, mid, half = 2.0 / extent, (b.size - 1) / 2.0, b.size / 2.0    # pixel r = mid + u * half
    points = [(b.src0 + mid * (b.src_dr + b.src_dc)) * scale - 1.0, b.src_dr * half * scale, b.src_dc * half * scale,
              (b.det0 + mid * (b.det_dr + b.det_dc)) * scale - 1.0, b.det_dr * half * scale, b.det_dc * half * scale]
    return np.stack(points).astype(np.float32)


def beam_rays_batch(geometry, shape, spacings_mm) -> np.ndarray:
    """`beam_rays` for each spacing row: [N, 6, 3] float32."""
    return np.stack([beam_rays(geometry, shape, s) for s in np.asarray(spacings_mm)]) if len(spacings_mm) \
        else np.zeros((0, RAY_ROWS, 3), np.float32)


def check_rays(rays: Tensor, n: int) -> None:
    if rays is None or rays.ndim != 3 or tuple(rays.shape) != (n, RAY_ROWS, 3):
        got = None if rays is None else list(rays.shape)
        raise ValueError(f"the projected generator needs each study's rays [{n}, {RAY_ROWS}, 3] "
                         f"(model/beam.py beam_rays), got {got}")


def slab_grid(rays: Tensor, res: int, planes: Tensor) -> Tensor:
    """rays [N, 6, 3] (normalised frame), output res, planes [K] normalised h -> grid [N, K, res, res, 2]
    of (w, d) crossing points, for grid_sample on each plane's [N, C, D, W] map."""
    rays = rays.float()
    u = (torch.arange(res, device=rays.device, dtype=torch.float32) + 0.5) * (2.0 / res) - 1.0
    r, c = u[:, None], u[None, :]                                            # pixel centres in [-1, 1]
    src = rays[:, 0, None, None, :] + r[None, :, :, None] * rays[:, 1, None, None, :] \
        + c[None, :, :, None] * rays[:, 2, None, None, :]                    # [N, res, res, 3]
    det = rays[:, 3, None, None, :] + r[None, :, :, None] * rays[:, 4, None, None, :] \
        + c[None, :, :, None] * rays[:, 5, None, None, :]
    along = det - src
    ah = along[..., 1]
    ah = torch.where(ah.abs() < 1e-6, torch.full_like(ah, 1e-6), ah)         # a ray parallel to the planes
    t = (planes.float()[None, :, None, None] - src[:, None, ..., 1]) / ah[:, None]   # [N, K, res, res]
    d = src[:, None, ..., 0] + t * along[:, None, ..., 0]
    w = src[:, None, ..., 2] + t * along[:, None, ..., 2]
    return torch.stack([w, d], dim=-1)


def plane_centres(depth: int, slabs: int) -> tuple[list[tuple[int, int]], Tensor]:
    """Split `depth` anterior-posterior voxels into `slabs` contiguous slabs: their [start, stop) ranges
    and the normalised h of each slab's centre plane."""
    k = max(1, min(int(slabs), int(depth)))
    edges = np.linspace(0, depth, k + 1).round().astype(int)
    ranges = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    centres = torch.tensor([(a + b) / depth - 1.0 for a, b in ranges], dtype=torch.float32)
    return ranges, centres


def example_rays(ct_shape, img_res: int, n: int = 1, extent_mm: float = 350.0) -> np.ndarray:
    """[n, 6, 3] rays of a volume of `ct_shape` voxels spanning `extent_mm` along every axis under the
    default cone geometry with an `img_res` detector: for callers without a store (benches, examples)."""
    from xpgan.drr.geometry import make_geometry

    shape = tuple(int(s) for s in ct_shape)
    one = beam_rays(make_geometry("cone", size=int(img_res)), shape, [extent_mm / s for s in shape])
    return np.repeat(one[None], n, axis=0)
