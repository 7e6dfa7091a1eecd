"""The CT intensity transform every model-side reader uses: Hounsfield units -> [-1, 1] over a window.

One function for numpy arrays (the data loaders, posed augmentation in the workers) and torch tensors
(callers that hold tensors); the window's default and its rule live here. The detector's image map of a
line integral is owned by `xpgan.drr.physics` / `xpgan.drr.render.finish_output`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from xpgan.errors import XPGANError

HU_WINDOW: tuple[float, float] = (-1000.0, 1000.0)   # air -> -1, dense bone -> +1


def check_hu_window(hu_window: Sequence[float]) -> tuple[float, float]:
    """(low, high) as floats; XPGANError unless there are two values with high > low."""
    w = tuple(float(v) for v in hu_window)
    if len(w) != 2 or not w[1] > w[0]:
        raise XPGANError(f"hu_window must be (low, high) with high > low, got {tuple(hu_window)}")
    return w


def normalize_hu(volume_hu, hu_window: Sequence[float] = HU_WINDOW):
    """HU -> [-1, 1]: the window's low end maps to -1, its high end to +1, values outside are clipped.
    numpy in -> float32 numpy out (one copy, then in place); torch in -> float32 torch out."""
    lo, hi = check_hu_window(hu_window)
    if isinstance(volume_hu, np.ndarray):
        x = volume_hu.astype(np.float32)
        x -= lo
        x *= 2.0 / (hi - lo)
        x -= 1.0
        return np.clip(x, -1.0, 1.0, out=x)
    import torch

    x = torch.as_tensor(volume_hu).float()
    return ((x.clamp(lo, hi) - lo) * (2.0 / (hi - lo)) - 1.0).clamp(-1.0, 1.0)
