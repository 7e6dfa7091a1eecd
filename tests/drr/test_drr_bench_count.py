"""The step count behind `xpgan bench drr` figures equals the number of voxels the rays cross."""
import numpy as np

from xpgan.bench.drr import count_steps
from xpgan.drr import ConeGeometry, ParallelGeometry


def segments(a, b, shape, spacing):
    d = b - a
    ext = np.array(shape) * spacing
    with np.errstate(divide="ignore"):
        t0, t1 = (0 - a) / d, (ext - a) / d
    tmin, tmax = max(0.0, np.minimum(t0, t1).max()), np.maximum(t0, t1).min()
    if tmin >= tmax:
        return 0
    ts = [tmin, tmax]
    for k in range(3):
        if d[k] != 0:
            t = (np.arange(shape[k] + 1) * spacing[k] - a[k]) / d[k]
            ts += list(t[(t > tmin) & (t < tmax)])
    return len(np.unique(ts)) - 1


def test_count_steps_matches_crossed_voxels():
    shape, spacing = (6, 9, 7), np.array([2.0, 1.0, 1.3])
    for g in (ConeGeometry(sdd_mm=40.0, sid_mm=25.0, size=12), ParallelGeometry(size=10, pixel_mm=1.1)):
        start, through = g.rays(shape, spacing).endpoints()
        want = sum(segments(a, b, shape, spacing) for a, b in zip(start.reshape(-1, 3), through.reshape(-1, 3)))
        assert count_steps(shape, spacing, g) == want
