"""Where a CT's features land on the detector: the per-study beam the projected generator uses.

The DRR of a study is rendered with the store's geometry (drr/geometry.py) and the study's voxel spacing,
so where the volume lands on the detector differs between studies (a fitted field of view fits the larger
of the superior-inferior / right-left extents, a cone beam magnifies planes near the source more than
planes near the detector). The generator's spatial path follows the same beam:

  * `study_beam(geometry, shape, spacing, mu_water)`: [8, 3] float32. Rows 0-5: the study's unposed ray
    bundle (drr/geometry.RayBundle) in the normalised volume frame of torch's grid_sample
    (align_corners=False: -1 and +1 are the volume's outer faces), rows (src_c, src_u, src_v, det_c, det_u,
    det_v), columns (d, h, w): the ray through the detector point at (u, v) in [-1, 1]^2 (u down the rows,
    v along the columns, +-1 the detector's outer edges) runs from src_c + u src_u + v src_v to
    det_c + u det_u + v det_v. Row 6: the voxel spacing (d, h, w) in mm; row 7: (mu_water in 1/mm, 0, 0).
    None of it depends on the detector's pixel count, so any image resolution samples it. Posed training
    (model/augment.py) resamples the volume into the posed frame, so the unposed beam is the right one
    there as well.
  * `slab_grid(beam, res, planes)`: for every pixel of a res x res image and every anterior-posterior plane
    in `planes` (normalised h), the (w, d) point where that pixel's ray crosses the plane, as a grid_sample
    grid [N, K, res, res, 2].

  * `drr_estimate(ct, beam, res, hu_window)`: the study's DRR computed from G's own input, the windowed
    volume: mu = mu_water * max(0, 1 + HU/1000) summed along the beam slab by slab (`ESTIMATE_SLABS`,
    each slab's plane placed along the rays, one anterior-posterior voxel = its spacing in mm), then the
    detector's image map (drr/render.finish_output). It differs from the stored DRR by the window's clipping
    of dense bone, by the slab approximation of the cone beam and by resampling; the projected generator
    starts from it and learns the rest.

Rays that miss the volume sample zeros (padding), as rays through air meet no attenuation.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from xpgan.drr.physics import MU_WATER_PER_MM

BEAM_ROWS = 8        # src_c, src_u, src_v, det_c, det_u, det_v, spacing (mm), (mu_water, 0, 0)
ESTIMATE_SLABS = 16  # anterior-posterior slabs of `drr_estimate` (at most one per voxel plane)


def study_beam(geometry, shape, spacing_mm, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """The unposed beam of `geometry` for a volume of `shape` voxels and `spacing_mm`: [8, 3] float32
    (module docstring)."""
    if geometry.is_posed:
        raise ValueError("study_beam takes the store's unposed geometry")
    b = geometry.rays(tuple(int(s) for s in shape), np.asarray(spacing_mm, dtype=np.float64))
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing_mm, dtype=np.float64)
    scale, mid, half = 2.0 / extent, (b.size - 1) / 2.0, b.size / 2.0    # pixel r = mid + u * half
    points = [(b.src0 + mid * (b.src_dr + b.src_dc)) * scale - 1.0, b.src_dr * half * scale, b.src_dc * half * scale,
              (b.det0 + mid * (b.det_dr + b.det_dc)) * scale - 1.0, b.det_dr * half * scale, b.det_dc * half * scale,
              np.asarray(spacing_mm, dtype=np.float64), np.array([float(mu_water), 0.0, 0.0])]
    return np.stack(points).astype(np.float32)


def study_beams(geometry, shape, spacings_mm, mu_water: float = MU_WATER_PER_MM) -> np.ndarray:
    """`study_beam` for each spacing row: [N, 8, 3] float32."""
    return np.stack([study_beam(geometry, shape, s, mu_water) for s in np.asarray(spacings_mm)]) \
        if len(spacings_mm) else np.zeros((0, BEAM_ROWS, 3), np.float32)


def check_beam(beam: Tensor, n: int) -> None:
    if beam is None or beam.ndim != 3 or tuple(beam.shape) != (n, BEAM_ROWS, 3):
        got = None if beam is None else list(beam.shape)
        raise ValueError(f"the projected generator needs each study's beam [{n}, {BEAM_ROWS}, 3] "
                         f"(model/beam.py study_beam), got {got}")


def slab_grid(beam: Tensor, res: int, planes: Tensor) -> Tensor:
    """beam [N, 8, 3] (rows 0-5 used), output res, planes [K] normalised h -> grid [N, K, res, res, 2]
    of (w, d) crossing points, for grid_sample on each plane's [N, C, D, W] map."""
    beam = beam.float()
    u = (torch.arange(res, device=beam.device, dtype=torch.float32) + 0.5) * (2.0 / res) - 1.0
    r, c = u[:, None], u[None, :]                                            # pixel centres in [-1, 1]
    src = beam[:, 0, None, None, :] + r[None, :, :, None] * beam[:, 1, None, None, :] \
        + c[None, :, :, None] * beam[:, 2, None, None, :]                    # [N, res, res, 3]
    det = beam[:, 3, None, None, :] + r[None, :, :, None] * beam[:, 4, None, None, :] \
        + c[None, :, :, None] * beam[:, 5, None, None, :]
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


def example_beam(ct_shape, img_res: int, n: int = 1, extent_mm: float = 350.0) -> np.ndarray:
    """[n, 8, 3] beams of a volume of `ct_shape` voxels spanning `extent_mm` along every axis under the
    default cone geometry with an `img_res` detector: for callers without a store (benches, examples)."""
    from xpgan.drr.geometry import make_geometry

    shape = tuple(int(s) for s in ct_shape)
    one = study_beam(make_geometry("cone", size=int(img_res)), shape, [extent_mm / s for s in shape])
    return np.repeat(one[None], n, axis=0)


def project_slabs(x: Tensor, beam: Tensor, res: int, ranges, planes: Tensor,
                  weight: Optional[Tensor] = None) -> Tensor:
    """x [N, C, D, H, W] -> [N, C, res, res]: each anterior-posterior slab [a, b) of `ranges` summed along H
    (weighted per (channel, H position) by `weight` [C, H] when given), sampled where the rays cross the
    slab's centre plane (`planes`, normalised h), and the slab maps summed."""
    grid = slab_grid(beam, res, planes)                                          # [N, K, res, res, 2] (w, d)
    out = 0
    for k, (a, b) in enumerate(ranges):
        part = x[:, :, :, a:b]
        slab = part.sum(dim=3) if weight is None else torch.einsum("ncdhw,ch->ncdw", part, weight[:, a:b])
        out = out + torch.nn.functional.grid_sample(slab, grid[:, k].to(slab.dtype), mode="bilinear",
                                                    padding_mode="zeros", align_corners=False)
    return out


@torch.no_grad()
def drr_estimate(ct: Tensor, beam: Tensor, res: int, hu_window) -> Tensor:
    """ct [N, 1, D, H, W] in [-1, 1] (the HU window), beam [N, 8, 3] -> the DRR estimate [N, 1, res, res] in
    [0, 1] (module docstring)."""
    from xpgan.drr.render import finish_output

    lo, hi = float(hu_window[0]), float(hu_window[1])
    hu = lo + (ct.float() + 1.0) * (0.5 * (hi - lo))
    mu = torch.clamp(1.0 + hu / 1000.0, min=0.0)                                  # mu / mu_water
    ranges, planes = plane_centres(ct.shape[3], ESTIMATE_SLABS)
    p = project_slabs(mu, beam, res, ranges, planes.to(ct.device))                # [N, 1, res, res]
    p = p * (beam[:, 6, 1] * beam[:, 7, 0]).float()[:, None, None, None].to(p.device)   # x AP spacing x mu_water
    if p.device.type == "meta":
        return p
    return finish_output(p, "image").to(p.device)


LOGIT_CLAMP = 1e-3   # images are clamped to [eps, 1 - eps] before a logit


def logit(x: Tensor, eps: float = LOGIT_CLAMP) -> Tensor:
    """log(x / (1 - x)) of x clamped to [eps, 1 - eps]."""
    x = x.clamp(eps, 1.0 - eps)
    return torch.log(x) - torch.log1p(-x)
