import math

import numpy as np
import pytest

from xpgan import bounds as B
from xpgan.errors import XPGANError


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10**400, True, "3", None])
def test_no_bound_accepts_what_is_not_a_finite_number(value):
    assert not B.LR.accepts(value) and not B.LOSS_WEIGHT.accepts(value)


def test_integer_bounds_take_python_and_numpy_integers_only():
    assert B.SEED.accepts(0) and B.SEED.accepts(np.int64(7)) and B.SEED.accepts(2**32 - 1)
    assert not B.SEED.accepts(2**32) and not B.SEED.accepts(-1) and not B.SEED.accepts(3.0)


def test_open_ends_exclude_their_limit():
    assert not B.LR.accepts(0.0) and B.LR.accepts(1.0) and B.LR.accepts(math.ulp(0.0))
    assert B.FRACTION.accepts(0.0) and not B.FRACTION.accepts(1.0)


def test_a_refusal_names_the_option_the_range_the_reason_and_the_value():
    with pytest.raises(XPGANError) as err:
        B.DETECTOR_SIZE.check("--size", 100000)
    assert str(err.value) == ("--size must be an integer >= 1 and <= 8,192 pixels (an 8192x8192 float32 image and "
                              "its temporaries take about 1 GiB), got 100000")

