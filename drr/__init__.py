"""Digitally reconstructed radiographs: geometry, physics and exact Siddon ray casting (CPU and CUDA).

Public API (docs/design.md, COMMON contracts): `ConeGeometry`, `ParallelGeometry`, `geometry_from_dict`,
`render_drr`, `render_drr_batch`, `render_drr_views`, `image_map_attrs`; poses: `pose_grid`,
`pose_rotation`, `render_drr_poses` (volumes x poses) and each geometry's `with_pose`.  No file I/O here.
"""
from xpgan.drr.geometry import (
    GEOMETRY_KINDS,
    POSE_FIELDS,
    VIEWS,
    ConeGeometry,
    ParallelGeometry,
    RayBundle,
    geometry_from_dict,
    make_geometry,
    pose_grid,
    pose_rotation,
)
from xpgan.drr.physics import (
    MU_WATER_PER_MM,
    OUTPUTS,
    P_REF,
    hu_to_mu,
    image_map_attrs,
    image_to_line_integral,
    line_integral_to_image,
)
from xpgan.drr.poses import render_drr_poses
from xpgan.drr.render import BACKENDS, cuda_available, render_drr, render_drr_batch, render_drr_views, resolve_backend
from xpgan.errors import DRRArgumentError  # re-exported: xpgan.drr.DRRArgumentError

__all__ = [
    "BACKENDS", "ConeGeometry", "DRRArgumentError", "GEOMETRY_KINDS", "MU_WATER_PER_MM", "OUTPUTS", "P_REF",
    "POSE_FIELDS", "ParallelGeometry", "RayBundle", "VIEWS", "cuda_available", "geometry_from_dict", "hu_to_mu",
    "image_map_attrs", "image_to_line_integral", "line_integral_to_image", "make_geometry", "pose_grid",
    "pose_rotation", "render_drr", "render_drr_batch", "render_drr_poses", "render_drr_views", "resolve_backend",
]
