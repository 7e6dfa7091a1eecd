"""`xpgan drr render`: DRRs of one CT file (NIfTI or DICOM series) written as .npy or .png, posed or a sweep.

render_ct_file(*, ct_path, out, geometry, ...) -> str   (the line the CLI prints)
write_drr_file(out, image, output)   .npy: float32 as rendered; .png: 8-bit, line integrals scaled to their max
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from xpgan.errors import XPGANError, check_writable


def parse_floats(text: str, n: int, option: str) -> tuple:
    """'a,b,c' -> n floats, or a one-line error naming the option."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise XPGANError(f"{option} must be {n} comma-separated numbers, got {text!r}")
    return values


def for_viewing(image, output: str):
    """An image map as it is; line integrals (no fixed range) scaled to their own maximum."""
    if output == "image":
        return image
    peak = float(image.max())
    return image / peak if peak > 0 else image


def write_drr_file(out: Path, image, output: str) -> None:
    import numpy as np

    if out.suffix.lower() == ".npy":
        np.save(out, image.astype(np.float32))
        return
    from PIL import Image

    Image.fromarray(np.round(np.clip(for_viewing(image, output), 0.0, 1.0) * 255.0).astype(np.uint8)).save(out)


def write_sweep_sheet(out: Path, images, captions: list[str], ncols: int, output: str) -> None:
    """Views [V, S, S] as a PNG sheet, row-major, `ncols` per row, each under its pose caption."""
    from PIL import Image

    from xpgan.pipeline.picture import labelled_grid

    views = for_viewing(images, output)
    rows = [list(views[i:i + ncols]) for i in range(0, len(views), ncols)]
    caps = [captions[i:i + ncols] for i in range(0, len(views), ncols)]
    Image.fromarray(labelled_grid(rows, captions=caps)).save(out)


def render_ct_file(*, ct_path: Path, out: Path, geometry: str, view: str, size: int, pixel_mm: Optional[float],
                   sdd: float, sid: float, mu_water: float, backend: str, output: str,
                   spacing_range: tuple[float, float], yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                   offset: Optional[str] = None, yaw_sweep: Optional[str] = None, pitch_sweep: Optional[str] = None,
                   roll_sweep: Optional[str] = None, allow_unusual_ct: bool = False) -> str:
    """Render one DRR of a CT volume (rows superior->inferior, columns patient right->left), or a pose sweep
    (one launch), after the same reader and checks as prep drr (validate.read_checked_ct). `output` is "image"
    or "line-integral"."""
    if out.suffix.lower() not in (".npy", ".png"):
        raise XPGANError(f"{out}: output must end in .npy or .png")
    if not out.parent.is_dir():
        raise XPGANError(f"{out}: folder {out.parent} does not exist")
    check_writable(out, "output")
    from xpgan.drr import pose_grid, render_drr_views
    from xpgan.drr.geometry import geometry_from_options
    from xpgan.drr.poses import sweep_values
    from xpgan.pipeline.ct.validate import read_checked_ct

    cone = geometry == "cone"  # parallel rays ignore the cone-only options' defaults
    geom = geometry_from_options(geometry, view=view if cone else None, size=size, pixel_mm=pixel_mm,
                                 sdd_mm=sdd if cone else None, sid_mm=sid if cone else None)
    geom = geom.with_pose(yaw_deg=yaw, pitch_deg=pitch, roll_deg=roll,
                          offset_mm=parse_floats(offset, 3, "--offset") if offset is not None else (0.0, 0.0, 0.0))
    sweeps = {name: sweep_values(text, option) for name, text, option in (
        ("yaw_deg", yaw_sweep, "--yaw-sweep"), ("pitch_deg", pitch_sweep, "--pitch-sweep"),
        ("roll_deg", roll_sweep, "--roll-sweep")) if text is not None}
    geoms = pose_grid(geom, **sweeps) if sweeps else [geom]
    ct = read_checked_ct(ct_path, spacing_range_mm=spacing_range, allow_unusual_ct=allow_unusual_ct)  # as prep drr
    images = render_drr_views(ct.hu(), ct.spacing, geoms, backend=backend, output=output.replace("-", "_"),
                              mu_water=mu_water)  # [V, size, size], one launch
    what = f"{size}x{size}, {geometry}{' ' + view if geometry == 'cone' else ''}, {output}"
    if not sweeps:
        write_drr_file(out, images[0], output)
        return f"wrote {out} ({what})"
    angles = [[(k[:-4], getattr(g, k)) for k in sweeps] for g in geoms]  # [("yaw", -10.0), ...] per view
    if out.suffix.lower() == ".npy":
        write_drr_file(out, images, output)
    else:  # one sweep: one row; several: one row per value of the first
        ncols = math.prod(len(v) for v in list(sweeps.values())[1:]) if len(sweeps) > 1 else len(geoms)
        captions = [" ".join(f"{name} {deg:g}\N{DEGREE SIGN}" for name, deg in view) for view in angles]
        write_sweep_sheet(out, images, captions, ncols, output)
    poses = "; ".join(" ".join(f"{name} {deg:g}" for name, deg in view) for view in angles)
    return f"wrote {out} ({len(geoms)} views {what}; row-major: {poses})"
