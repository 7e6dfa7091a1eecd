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
    from numba import cuda

    from xpgan.drr import render_drr, render_drr_batch, render_drr_poses

    # every host array the CUDA path uploads: a 0 stride (vol[None], a broadcast spacing) makes numba-cuda walk
    # the array element by element in array_core (seconds per 64x256x256 volume)
    uploads = []
    to_device = cuda.to_device

    def recording_to_device(obj, *args, **kwargs):
        if isinstance(obj, np.ndarray):
            uploads.append(obj.strides)
        return to_device(obj, *args, **kwargs)

    cuda.to_device = recording_to_device
    results = {name: render_drr(v, sp, g, backend="cuda", output="line_integral")
               for name, (v, sp, g) in cases().items()}
    v, sp, g = cases()["cone_pa"]
    results["batch"] = render_drr_batch(np.stack([v, v[::-1].copy()]), [sp, sp], g, backend="cuda",
                                        output="line_integral")
    from xpgan.drr import render_drr_views, siddon_cuda

    views = [g, cases()["cone_ap"][2], g]
    results["views"] = render_drr_views(v, sp, views, backend="cuda", output="line_integral")
    results["views_again"] = render_drr_views(v, sp, views, backend="cuda", output="line_integral")  # cached rays
    results["ray_cache_misses"] = np.array(siddon_cuda._state().rays.misses)
    siddon_cuda._STATES.clear()
    siddon_cuda._State.STAGE_BYTES = 40  # the upload in chunks of 20 int16 voxels through both staging buffers
    v16 = cases()["parallel_int16"][0]
    results["staged"] = render_drr_batch(np.stack([v16, v16[:, ::-1].copy(), v16[::-1].copy()]), sp,
                                         cases()["parallel_int16"][2], backend="cuda", output="line_integral")
    pvol, psp, pgs = pose_views()  # a yaw x pitch sweep of one volume, then two volumes x the sweep
    results["pose_views"] = render_drr_views(pvol, psp, pgs, backend="cuda", output="line_integral")
    results["poses"] = render_drr_poses(np.stack([pvol, pvol[:, ::-1].copy()]), psp, pgs, backend="cuda",
                                        output="line_integral")
    # large-transfer paths with the thresholds at 0: each upload strategy once (then the fastest), pooled results
    siddon_cuda._STATES.clear()
    siddon_cuda._State.DIRECT_MIN_BYTES = 0
    siddon_cuda._State.POOL_MIN_BYTES = 0
    siddon_cuda._State.POOL_MAX_BUFFERS = 2
    siddon_cuda._State.REGISTER_CHUNK_BYTES = 64   # registered upload in several page-aligned chunks
    pinned, locked = cuda.pinned, []

    def recording_pinned(arr):
        locked.append((arr.ctypes.data, arr.nbytes))
        return pinned(arr)
    cuda.pinned = recording_pinned
    vols = np.stack([v16, v16[:, ::-1].copy(), v16[::-1].copy()])
    held = []
    for k in range(len(siddon_cuda.UPLOADS) + 2):
        held.append(render_drr_batch(vols, sp, cases()["parallel_int16"][2], backend="cuda", output="line_integral"))
        results[f"strategy_{k}"] = np.array(siddon_cuda._state().last_upload[0])
        if results[f"strategy_{k}"] == "register":
            cuda.pinned = pinned   # record the first registered upload only
    for k, h in enumerate(held):   # compared after all calls: a held result is never overwritten
        results[f"direct_{k}"] = h.copy()
    results["locked"] = np.array(locked, np.int64).reshape(-1, 2)
    st = siddon_cuda._state()
    results["pool_buffers"] = np.array(len(st.out_pool))
    results["held_pinned"] = np.array(sum(h.base is not None and any(h.base is b for b in st.out_pool) for h in held))
    held.clear()   # the pool is free again: the next large result reuses a buffer
    results["reused"] = render_drr_batch(vols, sp, cases()["parallel_int16"][2], backend="cuda",
                                         output="line_integral")
    results["reused_from_pool"] = np.array(any(results["reused"].base is b for b in st.out_pool))
    results["zero_stride_uploads"] = np.array(sum(0 in st for st in uploads))
    results["uploads"] = np.array(len(uploads))
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
