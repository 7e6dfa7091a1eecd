"""The marker phantom of the orientation tests: a small asymmetric volume whose flips and permutations all differ."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def marker_phantom(shape: Sequence[int] = (10, 12, 14), seed: int = 0) -> np.ndarray:
    """A small asymmetric canonical volume [d, h, w] (I, P, L) in integer HU, float32, for orientation tests.

    Background: seeded random integers in [-1000, 0] (so any wrong flip or permutation changes the array).
    Markers (all above the background):
    - 2000 HU: a rod at the patient's superior-right, `[0:2, :, 0:3]` (through every h), so the AP mean
      image `hu.mean(axis=1)` shows it in the top-left corner;
    - 1500 HU: an anterior plate near the centre, `[d//2:d//2+2, 0:2, w//2-1:w//2+1]`;
    - 1000 HU: an inferior-left block in the middle of h, `[-2:, h//2, -2:]`.
    """
    d, h, w = (int(s) for s in shape)
    if min(d, h, w) < 6:
        raise ValueError(f"marker_phantom needs every dimension >= 6, got {tuple(shape)}")
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1, size=(d, h, w)).astype(np.float32)
    hu[0:2, :, 0:3] = 2000
    hu[d // 2:d // 2 + 2, 0:2, w // 2 - 1:w // 2 + 1] = 1500
    hu[-2:, h // 2, -2:] = 1000
    return hu
