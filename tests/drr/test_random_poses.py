"""Random poses for augmentation: ranges, determinism, posed geometries and resampling into the posed frame."""
import numpy as np
import pytest
from test_pose import ncc, rot_pitch, rot_roll, rot_yaw, smooth_phantom

from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr
from xpgan.drr.poses import PoseRanges, apply_pose, random_pose, resample_to_pose


def test_random_poses_stay_in_range_and_take_seven_draws():
    ranges = PoseRanges(yaw_deg=8.0, pitch_deg=6.0, roll_deg=5.0, offset_mm=(10.0, 5.0, 2.0), sid_mm=(1000.0, 1800.0))
    rng = np.random.default_rng(0)
    poses = [random_pose(rng, ranges) for _ in range(400)]
    for key, lim in (("yaw_deg", 8.0), ("pitch_deg", 6.0), ("roll_deg", 5.0)):
        v = np.array([p[key] for p in poses])
        assert np.all(np.abs(v) <= lim) and v.max() > 0.9 * lim and v.min() < -0.9 * lim
    off = np.array([p["offset_mm"] for p in poses])
    assert np.all(np.abs(off) <= [10.0, 5.0, 2.0]) and np.all(off.max(axis=0) > [9.0, 4.5, 1.8])
    sid = np.array([p["sid_mm"] for p in poses])
    assert sid.min() >= 1000.0 and sid.max() <= 1800.0 and sid.max() - sid.min() > 700.0
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert random_pose(a) == random_pose(np.random.default_rng(5))
    random_pose(a)
    b.uniform(size=14)  # two poses
    assert a.uniform() == b.uniform()  # a fixed number of draws per pose


def test_apply_pose_keeps_the_detector_gap_and_ignores_sid_for_parallel():
    pose = {"yaw_deg": 3.0, "pitch_deg": -2.0, "roll_deg": 1.0, "offset_mm": (1.0, 0.0, -2.0), "sid_mm": 1000.0}
    g = apply_pose(ConeGeometry(size=16), pose)
    assert (g.sid_mm, g.sdd_mm, g.yaw_deg, g.offset_mm) == (1000.0, 1200.0, 3.0, (1.0, 0.0, -2.0))
    p = apply_pose(ParallelGeometry(size=16), pose)
    assert (p.yaw_deg, p.pitch_deg, p.roll_deg) == (3.0, -2.0, 1.0)


@pytest.mark.parametrize("pose", [
    {"yaw_deg": 20.0, "pitch_deg": -10.0, "roll_deg": 15.0, "offset_mm": (3.0, -2.0, 4.0)}, {"yaw_deg": -30.0}])
def test_resampled_marker_lands_where_the_inverse_pose_puts_it(pose):
    # V'(x) = V(c + off + R (x - c)): a marker at p in V appears at x = c + R^T (p - c - off)
    shape, spacing = (30, 34, 32), np.array([1.2, 1.0, 1.1])
    p = np.array([13.7, 20.3, 14.9])  # mm: a smooth marker, so interpolation does not shift its centroid
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    hu = -1000.0 + 3000.0 * np.exp(-sum((g - q) ** 2 for g, q in zip(grid, p)) / (2 * 1.6 ** 2))
    out = resample_to_pose(hu.astype(np.float32), spacing, pose)
    c = np.array(shape) * spacing / 2
    rot = (rot_yaw(pose.get("yaw_deg", 0.0)) @ rot_pitch(pose.get("pitch_deg", 0.0))
           @ rot_roll(pose.get("roll_deg", 0.0)))
    want = c + rot.T @ (p - c - np.array(pose.get("offset_mm", (0.0, 0.0, 0.0))))
    weights = np.clip(out + 1000.0, 0.0, None)
    grid = np.indices(shape).reshape(3, -1).T
    got = ((grid + 0.5) * spacing * weights.reshape(-1, 1)).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(got, want, atol=0.05)
    assert out.dtype == np.float32 and out[0, 0, 0] == -1000.0


@pytest.mark.parametrize("base", [ConeGeometry(view="pa", sdd_mm=200.0, sid_mm=150.0, size=32),
                                  ParallelGeometry(size=32)], ids=["cone", "parallel"])
def test_plain_view_of_resampled_volume_is_the_posed_view(base):
    shape, spacing = (80, 88, 84), (0.55, 0.5, 0.52)
    hu = smooth_phantom(shape, spacing, seed=9)
    pose = {"yaw_deg": 7.0, "pitch_deg": -6.0, "roll_deg": 4.0, "offset_mm": (2.0, 1.0, -3.0)}
    posed = render_drr(hu, spacing, apply_pose(base, pose), backend="cpu", output="line_integral")
    plain = render_drr(resample_to_pose(hu, spacing, pose), spacing, base, backend="cpu", output="line_integral")
    assert ncc(posed, plain) >= 0.999
    assert ncc(posed, render_drr(hu, spacing, base, backend="cpu", output="line_integral")) < 0.99


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_affine_resample_equals_scipy_linear_grid_constant(dtype):
    from scipy import ndimage

    from xpgan.drr.geometry import pose_rotation
    from xpgan.drr.resample import affine_resample

    rng = np.random.default_rng(1)
    vol = rng.uniform(-32768, 32767, size=(9, 12, 11)).astype(dtype)  # int16 extremes: no overflow in differences
    matrix = pose_rotation(20.0, -35.0, 10.0) * [[1.0], [0.8], [1.3]]
    start = np.array([1.5, -2.0, 3.25])
    want = ndimage.affine_transform(vol.astype(np.float64), matrix, start, order=1, mode="grid-constant",
                                    cval=-1000.0, prefilter=False)
    got = affine_resample(vol, matrix, start, fill=-1000.0)
    assert got.dtype == np.float32 and np.count_nonzero(got == -1000.0) > 10 and np.count_nonzero(got != -1000.0) > 500
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0.05)
    with pytest.raises(ValueError, match="matrix"):
        affine_resample(vol, np.eye(2), start)
