"""xpgan.pipeline.ct.validate.check_ct: the plausibility checks shared by prep drr and drr render."""
import numpy as np
import pytest

from xpgan.errors import InputError, XPGANError
from xpgan.pipeline.ct.validate import HU_LIMITS, _memory_order, check_ct, check_spacing_range


def _reason(*args, **kw):
    with pytest.raises(InputError) as info:
        check_ct(*args, **kw)
    assert info.value.path == "ct.nii" and "\n" not in str(info.value)
    return info.value.reason


def test_spacing_limits_are_inclusive_and_overridable():
    vol = np.zeros((3, 4, 5), np.int16)
    check_ct(vol, (0.1, 20.0, 1.0), "ct.nii")
    assert "(0.0999, 1, 1) mm is outside the plausible CT range 0.1 to 20 mm" in _reason(vol, (0.0999, 1, 1), "ct.nii")
    assert "outside" in _reason(vol, (1, 1, 20.01), "ct.nii")
    assert "outside" in _reason(vol, (1, float("nan"), 1), "ct.nii")
    check_ct(vol, (1e-6, 1, 1), "ct.nii", spacing_range_mm=(1e-7, 2))
    for bad in [(2, 1), (0, 1), (1,), ("a", 2), (1, float("inf"))]:
        with pytest.raises(XPGANError, match="--spacing-range"):
            check_spacing_range(bad)


def test_counts_of_bad_voxels_are_exact():
    vol = np.zeros((4, 5, 6), np.float32)
    vol[0, 0, :3] = np.nan
    vol[1, 1, 1] = -np.inf
    assert _reason(vol, (1, 1, 1), "ct.nii") == "4 of 120 voxels are NaN or infinite"
    vol = np.zeros((4, 5, 6), np.float32)
    vol[2, 2, 2], vol[3, 3, 3] = 40000.0, -1e30
    assert _reason(vol, (1, 1, 1), "ct.nii").startswith("2 of 120 voxels are outside the storable HU range "
                                                        "-32768 to 32767 (min -1e+30, max 4e+04 HU)")


def test_stored_values_are_checked_through_their_linear_map():
    stored = np.array([[[-30, 0], [10, 33]]], np.int16).repeat(2, axis=0)  # [2, 2, 2]
    check_ct(stored, (1, 1, 1), "ct.nii", scale=900.0, offset=-1000.0)  # -28000 .. 28700 HU
    # 33 * 1000 = 33000 HU (twice) is beyond the int16 range, -30 * 1000 = -30000 is not
    assert _reason(stored, (1, 1, 1), "ct.nii", scale=1000.0).startswith("2 of 8 voxels are outside")
    edge = np.array(HU_LIMITS, np.float32).reshape(1, 1, 2).repeat(2, 0).repeat(2, 1)
    check_ct(edge, (1, 1, 1), "ct.nii")  # the limits themselves are storable


def test_reoriented_views_give_the_same_answer():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 500, (6, 7, 8)).astype(np.float32)
    a[5, 6, 7] = 1e9
    for view in (a, a[::-1], a.transpose(2, 0, 1)[:, ::-1, ::-1], a.transpose(1, 2, 0)[::-1]):
        mem = _memory_order(view)
        assert np.shares_memory(mem, a) and mem.flags.c_contiguous
        assert _reason(view, (1, 1, 1), "ct.nii").startswith("1 of 336 voxels are outside")


def test_cli_default_is_the_validation_default():
    import typer.main

    from xpgan.cli import app
    from xpgan.pipeline.ct.validate import SPACING_RANGE_MM

    cli = typer.main.get_command(app)
    for group, name in (("prep", "drr"), ("drr", "render")):
        option = next(p for p in cli.commands[group].commands[name].params if p.name == "spacing_range")
        assert tuple(option.default) == SPACING_RANGE_MM, (group, name)
