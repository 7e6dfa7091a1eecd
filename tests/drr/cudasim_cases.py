"""Tiny DRR cases rendered with backend="cuda"; run as a script under NUMBA_ENABLE_CUDASIM=1.

    python cudasim_cases.py OUT.npz   -> writes one float32 array per case (line integrals)

A separate process because the simulator switch must be set before numba.cuda is first imported.
"""
import sys

import numpy as np

from xpgan.drr import ConeGeometry, ParallelGeometry


def cases():
    rng = np.random.default_rng(11)
    vol = rng.uniform(-1000, 1500, size=(4, 5, 6)).astype(np.float32)
    vol16 = rng.integers(-1000, 2000, size=(4, 5, 6)).astype(np.int16)
    sp = (1.2, 0.9, 1.5)
    return {
        "cone_pa": (vol, sp, ConeGeometry(view="pa", sdd_mm=40.0, sid_mm=25.0, size=5)),
        "cone_ap": (vol, sp, ConeGeometry(view="ap", sdd_mm=40.0, sid_mm=25.0, size=5)),
        "parallel_int16": (vol16, sp, ParallelGeometry(size=5)),
        "cone_posed": (vol, sp, ConeGeometry(view="pa", sdd_mm=40.0, sid_mm=25.0, size=5, yaw_deg=20.0,
                                             pitch_deg=-10.0, roll_deg=30.0, offset_mm=(0.5, -0.3, 0.2))),
        "parallel_lateral_int16": (vol16, sp, ParallelGeometry(size=5, yaw_deg=90.0)),
    }


def pose_views():
    """One volume, a yaw x pitch sweep: render_drr_views puts them in one launch."""
    from xpgan.drr import pose_grid

    vol, sp, g = cases()["cone_pa"]
    return vol, sp, pose_grid(g, yaw_deg=(-8.0, 0.0, 8.0), pitch_deg=(0.0, 5.0))


def main(out_path):
    from numba import config

    assert config.ENABLE_CUDASIM, "run with NUMBA_ENABLE_CUDASIM=1"
    from xpgan.drr import render_drr, render_drr_batch, render_drr_poses, render_drr_views

    results = {name: render_drr(v, sp, g, backend="cuda", output="line_integral") for name, (v, sp, g) in cases().items()}
    v, sp, g = cases()["cone_pa"]
    results["batch"] = render_drr_batch(np.stack([v, v[::-1].copy()]), [sp, sp], g, backend="cuda", output="line_integral")
    vol, sp, gs = pose_views()
    results["views"] = render_drr_views(vol, sp, gs, backend="cuda", output="line_integral")
    results["poses"] = render_drr_poses(np.stack([vol, vol[:, ::-1].copy()]), sp, gs, backend="cuda",
                                        output="line_integral")
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
