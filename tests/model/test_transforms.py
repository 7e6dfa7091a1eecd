import numpy as np
import pytest
import torch

from xpgan.errors import XPGANError
from xpgan.model.transforms import HU_WINDOW, check_hu_window, normalize_hu


def test_numpy_and_torch_give_the_same_values():
    hu = np.random.default_rng(0).integers(-2048, 3072, size=(4, 5, 6)).astype(np.int16)
    a = normalize_hu(hu)
    b = normalize_hu(torch.from_numpy(hu))
    assert a.dtype == np.float32 and b.dtype == torch.float32
    np.testing.assert_allclose(a, b.numpy(), atol=1e-6)
    assert a.min() == -1.0 and a.max() == 1.0


def test_default_window_and_its_rule():
    assert HU_WINDOW == (-1000.0, 1000.0)
    np.testing.assert_array_equal(normalize_hu(np.array([-1000, 0, 1000], np.int16)), [-1.0, 0.0, 1.0])
    with pytest.raises(XPGANError, match="high > low"):
        check_hu_window((5.0, 5.0))
    with pytest.raises(XPGANError):
        check_hu_window((1.0,))
