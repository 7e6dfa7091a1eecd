"""CUDA path: results in the CUDA simulator (subprocess) and a real PTX compile for an H100 (cc 9.0)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpgan.drr import render_drr, render_drr_batch, render_drr_poses, render_drr_views

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def cudasim_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("cudasim") / "cases.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, str(HERE / "cudasim_cases.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.slow
def test_cuda_simulator_matches_cpu(cudasim_results):
    from cudasim_cases import cases

    for name, (vol, sp, g) in cases().items():
        want = render_drr(vol, sp, g, backend="cpu", output="line_integral")
        assert np.count_nonzero(want) > 5
        np.testing.assert_allclose(cudasim_results[name], want, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_cuda_simulator_batch_matches_cpu(cudasim_results):
    from cudasim_cases import cases

    vol, sp, g = cases()["cone_pa"]
    want = render_drr_batch(np.stack([vol, vol[::-1].copy()]), [sp, sp], g, backend="cpu", output="line_integral")
    np.testing.assert_allclose(cudasim_results["batch"], want, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cuda_simulator_pose_sweep_matches_cpu(cudasim_results):
    from cudasim_cases import pose_views

    vol, sp, gs = pose_views()
    want = render_drr_views(vol, sp, gs, backend="cpu", output="line_integral")
    assert want.shape == (6, 5, 5) and np.ptp(want, axis=0).max() > 0  # the poses differ
    np.testing.assert_allclose(cudasim_results["pose_views"], want, rtol=1e-6, atol=1e-7)
    both = render_drr_poses(np.stack([vol, vol[:, ::-1].copy()]), sp, gs, backend="cpu", output="line_integral")
    np.testing.assert_allclose(cudasim_results["poses"], both, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cuda_simulator_views_cache_and_staged_upload_match_cpu(cudasim_results):
    from cudasim_cases import cases

    vol, sp, g = cases()["cone_pa"]
    views = [g, cases()["cone_ap"][2], g]
    want = render_drr_views(vol, sp, views, backend="cpu", output="line_integral")
    # float32 volume: the simulator's Python arithmetic (no FMA contraction) differs from the CPU kernel in the
    # last bit, as in test_cuda_simulator_matches_cpu; on a GPU the two are equal (bench gpu's "agree")
    np.testing.assert_allclose(cudasim_results["views"], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(cudasim_results["views_again"], cudasim_results["views"])
    # 6 calls with 5 distinct ray tables (the single-view cases) + 1 batch + 1 views table reused once
    assert int(cudasim_results["ray_cache_misses"]) == 7
    v16, _, pg = cases()["parallel_int16"]
    want = render_drr_batch(np.stack([v16, v16[:, ::-1].copy(), v16[::-1].copy()]), sp, pg, backend="cpu",
                            output="line_integral")
    np.testing.assert_array_equal(cudasim_results["staged"], want)


@pytest.mark.slow
def test_cuda_path_uploads_no_zero_strides(cudasim_results):
    # a fixed ~8 s per call: cuda.to_device(vol[None]) (0 stride on the new axis) made numba-cuda's
    # array_core walk the volume voxel by voxel in Python; no array with a 0 stride may reach the device
    assert int(cudasim_results["uploads"]) > 0
    assert int(cudasim_results["zero_stride_uploads"]) == 0


class _StandInSM90:
    """The one attribute numba-cuda asks of "the current device" while compiling device functions."""
    compute_capability = (9, 0)


def compile_ptx_sm90() -> dict:
    """Compile the real kernels to PTX for compute capability 9.0 (H100), int16 and float32 volumes.

    Returns {name: ptx}.  Works without a GPU (NVVM comes from the nvidia-nvvm wheel); type errors raise
    here.  numba-cuda compiles device functions for "the current device", which needs a driver; without a
    GPU that lookup is pointed at a stand-in cc 9.0 device during the compile.
    """
    import contextlib
    from unittest import mock

    from numba import cuda, float32, float64, int16, int32, int64
    from numba.cuda import dispatcher as cuda_dispatcher

    from xpgan.drr.siddon_cuda import _prefix_kernel, _render_kernel, real_gpu_available

    patch = (contextlib.nullcontext() if real_gpu_available()
             else mock.patch.object(cuda_dispatcher, "get_current_device", lambda: _StandInSM90()))
    ptx = {}
    with patch:
        for name, ptype in (("int16", int32), ("float32", float64)):
            sig = (ptype[::1], int64, int64, int64, int64[::1], float64[:, ::1], float64[:, :, ::1], float64,
                   float32[:, :, ::1])
            ptx["render_" + name], _ = cuda.compile_ptx(_render_kernel.py_func, sig, cc=(9, 0))
        for name, vtype, otype, ptype in (("int16", int16, int64, int32), ("float32", float32, float64, float64)):
            sig = (vtype[:, :, :, ::1], otype, ptype[:, :, :, ::1])
            ptx["prefix_" + name], _ = cuda.compile_ptx(_prefix_kernel.py_func, sig, cc=(9, 0))
    return ptx


@pytest.mark.slow
def test_real_kernels_compile_to_ptx_for_sm90():
    ptx = compile_ptx_sm90()
    for name, text in ptx.items():
        assert ".target sm_90" in text, name
        assert ".entry" in text, name


@pytest.mark.slow
def test_cuda_large_transfer_paths_match_cpu_and_never_overwrite_held_results(cudasim_results):
    from cudasim_cases import cases

    from xpgan.drr.siddon_cuda import UPLOADS

    v16, sp, pg = cases()["parallel_int16"]
    want = render_drr_batch(np.stack([v16, v16[:, ::-1].copy(), v16[::-1].copy()]), sp, pg, backend="cpu",
                            output="line_integral")
    n = len(UPLOADS) + 2
    # each strategy tried once, in order, then one of them kept
    assert [str(cudasim_results[f"strategy_{k}"]) for k in range(len(UPLOADS))] == list(UPLOADS)
    assert str(cudasim_results[f"strategy_{n - 1}"]) in UPLOADS
    for k in range(n):
        np.testing.assert_array_equal(cudasim_results[f"direct_{k}"], want, err_msg=f"call {k}")
    # the registered upload locked the batch in several chunks that tile it, interior bounds 64-byte aligned
    locked = cudasim_results["locked"]
    assert len(locked) > 1 and int(locked[:, 1].sum()) == 3 * v16.nbytes
    assert all(int(a) + int(n) == int(b) for (a, n), (b, _) in zip(locked[:-1], locked[1:]))
    assert all(int(a) % 64 == 0 for a, _ in locked[1:])
    # five results held at once: the pool (2 buffers) gives out each buffer once, later calls get new arrays
    assert int(cudasim_results["pool_buffers"]) == 2
    assert int(cudasim_results["held_pinned"]) == 2
    assert bool(cudasim_results["reused_from_pool"])
    np.testing.assert_array_equal(cudasim_results["reused"], want)
