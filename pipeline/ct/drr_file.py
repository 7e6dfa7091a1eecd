"""`xpgan drr render`: DRRs of one CT file (NIfTI or DICOM series) written as .npy or .png, posed or a sweep.

render_ct_file(RenderConfig, DRROptions, CTChecks) -> str   (the line the CLI prints)
write_drr_file(out, image, output)   .npy: float32 as rendered; .png: 8-bit, line integrals scaled to their max
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from xpgan import bounds as B
from xpgan.drr.options import DRROptions
from xpgan.drr.physics import OutputOption
from xpgan.errors import XPGANError, check_writable
from xpgan.options import argument, option
from xpgan.pipeline.ct.validate import CTChecks


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


@dataclass
class RenderConfig:
    """`drr render`: the CT, the output file, what is written and the pose (or pose sweep)."""

    ct_path: Path = argument("CT volume: NIfTI file (.nii, .nii.gz) or DICOM series folder.", "CT")
    out: Path = argument("Output file: .npy (float32) or .png (8-bit; line integrals are scaled to the image's "
                         "maximum).", "OUT")
    output: OutputOption = option("image", "image (1 - exp(-(p/4)^2) in [0, 1]) or line-integral (p = integral of "
                                           "mu dl, dimensionless).")
    yaw: float = option(0.0, "Pose: turn about the superior-inferior axis, degrees; + = LAO (PA detector towards the "
                             "patient's left; posterior structures move to image right).", bound=B.ANGLE)
    pitch: float = option(0.0, "Pose: cranio-caudal tilt, degrees; + = PA detector cranial (posterior structures "
                               "move up).", bound=B.ANGLE)
    roll: float = option(0.0, "Pose: turn about the beam axis, degrees; + = image content clockwise.", bound=B.ANGLE)
    offset: Optional[str] = option(None, "Pose: isocentre shift from the volume centre, mm, as D,H,W "
                                         "(superior->inferior, anterior->posterior, right->left); a shift that "
                                         "leaves the volume outside the beam is refused.", bound=B.check_offset,
                                   metavar="D,H,W")
    yaw_sweep: Optional[str] = option(None, "START,STOP,STEP degrees: one view per yaw (replaces --yaw); OUT gets a "
                                            "strip (.png) or a stack [V, size, size] (.npy).",
                                      metavar="START,STOP,STEP")
    pitch_sweep: Optional[str] = option(None, "START,STOP,STEP degrees (as --yaw-sweep; with several sweeps, one row "
                                              "per value of the first).", metavar="START,STOP,STEP")
    roll_sweep: Optional[str] = option(None, "START,STOP,STEP degrees (as --yaw-sweep).", metavar="START,STOP,STEP")


def render_ct_file(cfg: RenderConfig, drr: DRROptions, checks: CTChecks) -> str:
    """Render one DRR of a CT volume (rows superior->inferior, columns patient right->left), or a pose sweep
    (one launch), after the same reader and checks as prep drr (validate.read_checked_ct)."""
    out, output = cfg.out, cfg.output
    if out.suffix.lower() not in (".npy", ".png"):
        raise XPGANError(f"{out}: output must end in .npy or .png")
    if not out.parent.is_dir():
        raise XPGANError(f"{out}: folder {out.parent} does not exist")
    check_writable(out, "output")
    from xpgan.drr import pose_grid, render_drr_views
    from xpgan.drr.poses import sweep_values
    from xpgan.pipeline.ct.validate import read_checked_ct

    offset = parse_floats(B.check_offset("--offset", cfg.offset), 3, "--offset") if cfg.offset is not None \
        else (0.0, 0.0, 0.0)
    geom = drr.make_geometry().with_pose(yaw_deg=cfg.yaw, pitch_deg=cfg.pitch, roll_deg=cfg.roll, offset_mm=offset)
    sweeps = {name: sweep_values(text, option) for name, text, option in (
        ("yaw_deg", cfg.yaw_sweep, "--yaw-sweep"), ("pitch_deg", cfg.pitch_sweep, "--pitch-sweep"),
        ("roll_deg", cfg.roll_sweep, "--roll-sweep")) if text is not None}
    geoms = pose_grid(geom, **sweeps) if sweeps else [geom]
    ct = read_checked_ct(cfg.ct_path, spacing_range_mm=checks.spacing_range,
                         allow_unusual_ct=checks.allow_unusual_ct)  # as prep drr
    images = render_drr_views(ct.hu(), ct.spacing, geoms, backend=drr.backend, output=output.replace("-", "_"),
                              mu_water=drr.mu_water)  # [V, size, size], one launch
    if any(offset) and not np.any(images):
        raise XPGANError(f"--offset {cfg.offset}: the shifted isocentre leaves the volume outside the beam (the "
                         "DRR would be empty); the volume spans "
                         + " x ".join(f"{n * s:.0f}" for n, s in zip(ct.data.shape, ct.spacing)) + " mm (D x H x W)")
    what = f"{geom.size}x{geom.size}, {geom.kind}{' ' + geom.view if geom.kind == 'cone' else ''}, {output}"
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
