"""The projected generator's beam (model/beam.py): its DRR estimate against the Siddon renderer, and the
estimate as the untrained generator's image."""
import numpy as np
import pytest
import torch

from xpgan.drr import render_drr
from xpgan.drr.geometry import make_geometry
from xpgan.model.beam import drr_estimate, study_beam
from xpgan.model.networks import Generator, net_config_for
from xpgan.model.transforms import HU_WINDOW, normalize_hu
from xpgan.pipeline.synth.simple import simple_chest


@pytest.mark.parametrize("kind,spacing", [("cone", (9.0, 5.5, 5.5)), ("cone", (6.0, 7.0, 4.0)),
                                          ("parallel", (8.0, 6.0, 6.0))])
def test_drr_estimate_matches_the_siddon_drr(kind, spacing):
    shape, size = (24, 48, 48), 64
    vol = simple_chest(shape, seed=4).astype(np.float32)
    vol = np.clip(vol, *HU_WINDOW)                                   # the estimate sees the windowed volume
    geometry = make_geometry(kind, size=size)
    want = render_drr(vol, spacing, geometry, backend="cpu")         # [64, 64] in [0, 1]
    beam = torch.from_numpy(study_beam(geometry, shape, spacing))[None]
    ct = torch.from_numpy(normalize_hu(vol))[None, None]
    got = drr_estimate(ct, beam, size, HU_WINDOW)[0, 0].numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 0.1 * want.mean()   # voxel boxes (Siddon) vs bilinear samples
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_untrained_projected_generator_draws_the_estimate():
    shape, spacing = (16, 32, 32), (10.0, 6.0, 6.0)
    G = Generator(net_config_for("tiny", shape, 32))
    vol = simple_chest(shape, seed=1).astype(np.float32)
    beam = torch.from_numpy(study_beam(make_geometry("cone", size=32), shape, spacing))[None]
    ct = torch.from_numpy(normalize_hu(vol))[None, None]
    with torch.no_grad():
        img = G(ct, beam, noise_mode="const")
        base = drr_estimate(ct, beam, 32, HU_WINDOW)
    torch.testing.assert_close(img, base.clamp(1e-3, 1 - 1e-3), atol=1e-5, rtol=0)
