"""Posed geometries: zero pose is the plain view, closed-form chords, round trips and image-plane motion."""
import numpy as np
import pytest
from scipy import ndimage

from xpgan.drr import (
    ConeGeometry,
    DRRArgumentError,
    ParallelGeometry,
    geometry_from_dict,
    pose_grid,
    render_drr,
    render_drr_views,
)
from xpgan.errors import XPGANError

MU_W = 0.02
SPACING = (1.0, 0.8, 1.2)


def line_integral(hu, spacing, g):
    return render_drr(hu, spacing, g, backend="cpu", output="line_integral", mu_water=MU_W)


@pytest.mark.parametrize("g", [ConeGeometry(view="pa", sdd_mm=90.0, sid_mm=60.0, size=12),
                               ConeGeometry(view="ap", sdd_mm=90.0, sid_mm=60.0, size=12, pixel_mm=0.9),
                               ParallelGeometry(size=12), ParallelGeometry(size=11, pixel_mm=0.7)],
                         ids=["cone-pa", "cone-ap", "parallel", "parallel-px"])
def test_zero_pose_is_the_plain_view_bit_for_bit(g):
    zero = g.with_pose(yaw_deg=0, pitch_deg=-0.0, roll_deg=0.0, offset_mm=[0, 0, 0])
    assert not zero.is_posed and zero == g and zero.to_dict() == g.to_dict()
    shape = (9, 10, 11)
    np.testing.assert_array_equal(zero.rays(shape, SPACING).as_array(), g.rays(shape, SPACING).as_array())
    hu = np.random.default_rng(0).uniform(-1000, 1500, size=shape).astype(np.float32)
    np.testing.assert_array_equal(render_drr(hu, SPACING, zero, backend="cpu"),
                                  render_drr(hu, SPACING, g, backend="cpu"))
    # a full turn takes the posed code path (is_posed) and must give the same image up to rounding
    turn = g.with_pose(yaw_deg=360.0, pitch_deg=-360.0)
    assert turn.is_posed
    np.testing.assert_allclose(line_integral(hu, SPACING, turn), line_integral(hu, SPACING, g), rtol=1e-6, atol=1e-9)


def test_unposed_dict_has_no_pose_keys_and_posed_dict_round_trips():
    g = ConeGeometry(size=8)
    assert set(g.to_dict()) == {"kind", "view", "sdd_mm", "sid_mm", "size", "pixel_mm"}  # store identities unchanged
    p = g.with_pose(yaw_deg=5.0, offset_mm=(1, -2, 0.5))
    d = p.to_dict()
    assert d["yaw_deg"] == 5.0 and d["offset_mm"] == [1.0, -2.0, 0.5] and "pitch_deg" not in d
    assert geometry_from_dict(d) == p


@pytest.mark.parametrize("yaw, h_sign", [(90.0, 1.0), (-90.0, -1.0)])
def test_parallel_yaw_90_gives_left_right_chords_of_a_box(yaw, h_sign):
    # yaw +90: rays run along w (right-left); image rows stay superior->inferior, columns run along +h
    # (anterior->posterior) for +90 and -h for -90.  Each ray inside the box's (d, h) footprint crosses
    # its full w extent.
    shape = (8, 10, 12)
    hu = np.full(shape, -1000.0, np.float32)
    hu[2:6, 3:8, 2:11] = 0.0
    size, px = 10, 0.7  # pixel centres never on a box face
    p = line_integral(hu, SPACING, ParallelGeometry(size=size, pixel_mm=px, yaw_deg=yaw))
    centre = np.array(shape) * SPACING / 2
    offs = (np.arange(size) - (size - 1) / 2) * px
    d = centre[0] + offs[:, None]
    h = centre[1] + h_sign * offs[None, :]
    inside = (d > 2 * SPACING[0]) & (d < 6 * SPACING[0]) & (h > 3 * SPACING[1]) & (h < 8 * SPACING[1])
    want = np.where(inside, MU_W * 9 * SPACING[2], 0.0)
    assert 10 < np.count_nonzero(want) < want.size
    np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-9)


def smooth_phantom(shape, spacing, seed=3, radius=(7.0, 10.0), sigma=(2.8, 3.4)):
    """Air with Gaussian blobs (up to +1200 HU) off the centre, all well inside the box whatever the rotation."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    centre = np.array(shape) * np.array(spacing) / 2
    hu = np.full(shape, -1000.0)
    for _ in range(4):
        direction = rng.normal(size=3)
        c = centre + rng.uniform(*radius) * direction / np.linalg.norm(direction)
        r2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
        hu = hu + rng.uniform(600, 1200) * np.exp(-r2 / (2 * rng.uniform(*sigma) ** 2))
    return hu.astype(np.float32)


def rot_yaw(a):
    c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
    return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])      # anterior (-h) turns to patient left (+w)


def rot_pitch(a):
    c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])      # anterior (-h) turns to superior (-d)


def rot_roll(a):
    c, s = np.cos(np.deg2rad(a)), np.sin(np.deg2rad(a))
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])      # inferior (+d) turns to patient left (+w)


def counter_rotated(hu, spacing, rot, iso):
    """V'(x) = V(iso + R (x - iso)): the volume turned by R^-1 about iso (voxel centres at (i + 0.5) s)."""
    s = np.asarray(spacing, dtype=np.float64)
    matrix = rot * (1.0 / s)[:, None] * s[None, :]  # S^-1 R S
    offset = (iso + rot @ (0.5 * s - iso)) / s - 0.5
    return ndimage.affine_transform(hu + 1000.0, matrix, offset, order=1, cval=0.0) - 1000.0


def ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


CONE_PA = ConeGeometry(view="pa", sdd_mm=200.0, sid_mm=150.0, size=64)
CONE_AP = ConeGeometry(view="ap", sdd_mm=200.0, sid_mm=150.0, size=64)
PARALLEL = ParallelGeometry(size=64)
YAW, PITCH, ROLL = dict(yaw_deg=25.0), dict(pitch_deg=-20.0), dict(roll_deg=40.0)
ALL = dict(yaw_deg=-15.0, pitch_deg=10.0, roll_deg=-30.0, offset_mm=(2.0, -3.0, 1.5))
# Not parallel + pure roll: its rays stay along h on both sides, so each samples the piecewise-constant voxels
# as a nearest neighbour (first-order error, NCC 0.9985 here); test_roll_90_... checks roll exactly instead.
ROUND_TRIP_CASES = [(CONE_PA, YAW), (CONE_PA, PITCH), (CONE_PA, ROLL), (CONE_PA, ALL), (CONE_AP, YAW), (CONE_AP, ALL),
                    (PARALLEL, YAW), (PARALLEL, PITCH), (PARALLEL, ALL)]


@pytest.mark.parametrize("base, pose", ROUND_TRIP_CASES,
                         ids=[f"{b.kind}-{getattr(b, 'view', '')}-{'+'.join(p)}" for b, p in ROUND_TRIP_CASES])
def test_posed_view_equals_plain_view_of_counter_rotated_volume(base, pose):
    shape, spacing = (80, 88, 84), (0.55, 0.5, 0.52)
    hu = smooth_phantom(shape, spacing)
    rot = (rot_yaw(pose.get("yaw_deg", 0.0)) @ rot_pitch(pose.get("pitch_deg", 0.0))
           @ rot_roll(pose.get("roll_deg", 0.0)))
    offset = np.array(pose.get("offset_mm", (0.0, 0.0, 0.0)))
    iso = np.array(shape) * np.array(spacing) / 2 + offset
    plain = base.with_pose(offset_mm=tuple(offset))  # the same isocentre, no rotation

    def binned(vol, g):  # 2x2 rays per 32x32 pixel: a detector aperture, averaging voxel-sampling errors
        return line_integral(vol, spacing, g).reshape(32, 2, 32, 2).mean(axis=(1, 3))

    got = binned(hu, base.with_pose(**pose))
    assert ncc(got, binned(counter_rotated(hu, spacing, rot, iso), plain)) >= 0.999
    assert ncc(got, binned(hu, plain)) < 0.97  # the pose does change the image


def centroid(img):
    r, c = np.indices(img.shape)
    return np.array([(r * img).sum(), (c * img).sum()]) / img.sum()


@pytest.mark.parametrize("pose", [dict(yaw_deg=5.0), dict(yaw_deg=-5.0), dict(pitch_deg=5.0), dict(pitch_deg=-5.0),
                                  dict(yaw_deg=3.0, pitch_deg=-4.0)])
def test_marker_moves_to_its_projected_position(pose):
    # A smooth marker at (dd, a, b) mm from the isocentre (a > 0: posterior).  PA cone, source at +sid along the
    # gantry's h.  The marker's gantry coordinates are q = R^T (dd, a, b); it projects to
    # (row, col) = centre + sdd / (sid - q_h) * (q_d, q_w) / pixel.
    shape, spacing = (48, 48, 48), (1.0, 1.0, 1.0)
    grid = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij")
    rel = np.array([-4.0, 18.0, 3.0])
    pos = np.array(shape) / 2 + rel
    hu = (-1000.0 + 3000.0 * np.exp(-sum((g - p) ** 2 for g, p in zip(grid, pos)) / (2 * 1.5 ** 2))).astype(np.float32)
    sdd, sid, px, size = 1000.0, 800.0, 0.5, 64
    g = ConeGeometry(view="pa", sdd_mm=sdd, sid_mm=sid, size=size, pixel_mm=px)

    def projected(rot):
        q = rot.T @ rel
        return (size - 1) / 2 + sdd / (sid - q[1]) * np.array([q[0], q[2]]) / px

    rot = rot_yaw(pose.get("yaw_deg", 0.0)) @ rot_pitch(pose.get("pitch_deg", 0.0))
    c0 = centroid(line_integral(hu, spacing, g))
    c1 = centroid(line_integral(hu, spacing, g.with_pose(**pose)))
    # motions of about 4 px; 0.15 px allows for the voxel/pixel grid phase (centroid bias up to 0.1 px)
    np.testing.assert_allclose(c0, projected(np.eye(3)), atol=0.15)
    np.testing.assert_allclose(c1 - c0, projected(rot) - projected(np.eye(3)), atol=0.15)
    # the documented directions: + yaw moves a posterior marker to the image's right, + pitch moves it up
    yaw, pitch = pose.get("yaw_deg", 0.0), pose.get("pitch_deg", 0.0)
    assert np.sign(c1[1] - c0[1]) == np.sign(yaw) or yaw == 0
    assert np.sign(c1[0] - c0[0]) == -np.sign(pitch) or pitch == 0


def test_roll_90_turns_the_image_clockwise_and_offset_shifts_it():
    hu = smooth_phantom((20, 16, 20), (1.0, 1.0, 1.0), seed=5)
    g = ParallelGeometry(size=20, pixel_mm=1.0)
    p = line_integral(hu, (1.0, 1.0, 1.0), g)
    rolled = line_integral(hu, (1.0, 1.0, 1.0), g.with_pose(roll_deg=90.0))
    np.testing.assert_allclose(rolled, np.rot90(p, k=-1), rtol=1e-6, atol=1e-9)  # k=-1: clockwise
    # +w offset of 3 pixels: the isocentre moves to patient left, the content moves 3 columns to the image's left
    shifted = line_integral(hu, (1.0, 1.0, 1.0), g.with_pose(offset_mm=(0.0, 0.0, 3.0)))
    np.testing.assert_allclose(shifted[:, :-3], p[:, 3:], rtol=1e-6, atol=1e-9)


def test_pose_grid_renders_in_one_call_like_single_views():
    hu = smooth_phantom((12, 14, 12), (1.0, 1.0, 1.0))
    gs = pose_grid(ConeGeometry(sdd_mm=120.0, sid_mm=90.0, size=10), yaw_deg=[-8, 0, 8], pitch_deg=(0, 4), roll_deg=3)
    assert [(g.yaw_deg, g.pitch_deg, g.roll_deg) for g in gs] == [(y, p, 3.0) for y in (-8, 0, 8) for p in (0, 4)]
    out = render_drr_views(hu, (1.0, 1.0, 1.0), gs, backend="cpu")
    assert out.shape == (6, 10, 10)
    for g, img in zip(gs, out):
        np.testing.assert_array_equal(img, render_drr(hu, (1.0, 1.0, 1.0), g, backend="cpu"))


@pytest.mark.parametrize("kwargs, match", [(dict(yaw_deg=float("nan")), "yaw_deg"), (dict(roll_deg="5"), "roll_deg"),
                                           (dict(offset_mm=(1.0, 2.0)), "offset_mm"),
                                           (dict(offset_mm=(0, np.inf, 0)), "offset_mm")])
def test_bad_pose_arguments_raise(kwargs, match):
    with pytest.raises(DRRArgumentError, match=match):
        ParallelGeometry(size=4, **kwargs)
    with pytest.raises(DRRArgumentError, match=match):
        ConeGeometry(size=4, **kwargs)


def test_unknown_pose_field_and_posed_source_inside_volume():
    with pytest.raises(DRRArgumentError, match="yaw_deg, pitch_deg"):
        ConeGeometry(size=4).with_pose(tilt=3)
    # sid 30 mm clears the 20 mm half-depth unposed, but not an offset that pulls the source into the box
    g = ConeGeometry(sdd_mm=60.0, sid_mm=30.0, size=4)
    g.rays((10, 40, 40), (1.0, 1.0, 1.0))
    with pytest.raises(XPGANError, match="source inside the volume"):
        g.with_pose(yaw_deg=10.0, offset_mm=(0.0, -15.0, 0.0)).rays((10, 40, 40), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("text, want", [("-10,10,5", [-10, -5, 0, 5, 10]), ("10,-10,-10", [10, 0, -10]),
                                        ("0,1,0.3", [0, 0.3, 0.6, 0.9]), ("3,3,1", [3])])
def test_sweep_values(text, want):
    from xpgan.drr.poses import sweep_values

    np.testing.assert_allclose(sweep_values(text), want)


def test_volumes_times_poses_in_one_launch_with_prefix_sums_once_per_volume(monkeypatch):
    from xpgan.drr import render_drr_poses, siddon_cpu

    calls = {"render": 0, "prefix_volumes": []}
    real_render, real_prefix = siddon_cpu.render_rays_cpu, siddon_cpu.prefix_sums_cpu

    def counting_render(*args, **kwargs):
        calls["render"] += 1
        return real_render(*args, **kwargs)

    def counting_prefix(vol, offset):
        calls["prefix_volumes"].append(vol.shape[0])
        return real_prefix(vol, offset)

    monkeypatch.setattr(siddon_cpu, "render_rays_cpu", counting_render)
    monkeypatch.setattr(siddon_cpu, "prefix_sums_cpu", counting_prefix)
    rng = np.random.default_rng(4)
    vols = rng.uniform(-1000, 1500, size=(2, 9, 10, 11)).astype(np.float32)
    spacings = [(1.0, 0.9, 1.1), (1.2, 1.0, 0.8)]
    gs = pose_grid(ConeGeometry(sdd_mm=100.0, sid_mm=70.0, size=8), yaw_deg=(-6, 6), pitch_deg=(0, 4))
    out = render_drr_poses(vols, spacings, gs, backend="cpu", output="line_integral")
    assert out.shape == (2, 4, 8, 8) and calls == {"render": 1, "prefix_volumes": [2]}
    for b in range(2):
        for p, g in enumerate(gs):
            np.testing.assert_array_equal(out[b, p], line_integral(vols[b], spacings[b], g))
    per_volume = [gs[:2], gs[2:]]  # B sequences of P: each volume its own poses
    out2 = render_drr_poses(vols, spacings, per_volume, backend="cpu", output="line_integral")
    np.testing.assert_array_equal(out2[1, 0], out[1, 2])
    with pytest.raises(DRRArgumentError, match="same P"):
        render_drr_poses(vols, spacings, [gs[:2], gs[:3]], backend="cpu")
