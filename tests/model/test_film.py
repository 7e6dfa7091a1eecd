"""The tone curve and the radiograph head (model/film.py): identity at the start, monotone, every gain
trainable from its starting bound, closed forms of the scatter and blur steps, and the generator's
core / image split that the L1 term relies on."""
import numpy as np
import pytest
import torch

from xpgan.drr.physics import image_to_line_integral, line_integral_to_image
from xpgan.model.beam import example_beam
from xpgan.model.film import U_MAX, RadiographHead, ToneCurve, drr_logit, gauss_blur
from xpgan.model.networks import PRESETS, Generator, NetConfig, net_config_for


def test_tone_curve_starts_as_the_identity_and_extends_with_its_end_slopes():
    u = torch.linspace(-2 * U_MAX, 2 * U_MAX, 401)
    torch.testing.assert_close(ToneCurve()(u), u, atol=1e-5, rtol=0)


def test_tone_curve_stays_monotone_whatever_its_parameters():
    c = ToneCurve()
    with torch.no_grad():
        c.rise.normal_(0.0, 0.1)
        c.start.normal_()
    v = c(torch.linspace(-15, 15, 2001))
    assert bool((v.diff() >= 0).all()) and float(v[-1] - v[0]) > 0


def test_drr_logit_is_the_logit_of_the_map():
    p = torch.tensor([0.5, 2.0, 4.0, 6.0])
    img = line_integral_to_image(p)
    torch.testing.assert_close(drr_logit(p), torch.log(img / (1 - img)))
    torch.testing.assert_close(image_to_line_integral(img), p, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(image_to_line_integral(img.numpy()), p.numpy(), atol=1e-4)


def test_radiograph_head_is_the_identity_at_the_start():
    torch.manual_seed(0)
    head = RadiographHead(w_dim=8, img_res=16)
    core = torch.rand(3, 1, 16, 16) * 0.96 + 0.02
    out = head(core, torch.randn(3, 8), noise_mode="random")
    torch.testing.assert_close(out, core, atol=2e-5, rtol=0)


def test_every_head_gain_learns_from_its_starting_bound():
    torch.manual_seed(1)
    head = RadiographHead(w_dim=8, img_res=16)
    core = torch.rand(4, 1, 16, 16) * 0.9 + 0.05
    target = gauss_blur(core, 2.0)                                 # asks for blur, scatter, lower contrast
    loss = (head(core, torch.randn(4, 8)) - target).abs().mean() + head(core, torch.randn(4, 8)).std()
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_a_uniform_image_passes_scatter_blur_and_edges_unchanged():
    head = RadiographHead(w_dim=4, img_res=16)
    with torch.no_grad():
        head.scatter.fill_(0.7)
        head.blur.fill_(1.0)
        head.edge.fill_(0.5)
    flat = torch.full((2, 1, 16, 16), 0.4)
    torch.testing.assert_close(head(flat, torch.zeros(2, 4), noise_mode="none"), flat, atol=1e-5, rtol=0)
    torch.testing.assert_close(gauss_blur(flat, 3.0), flat)


def test_scatter_lowers_contrast():
    head = RadiographHead(w_dim=4, img_res=32)
    core = torch.full((1, 1, 32, 32), 0.2)
    core[..., 8:24, 8:24] = 0.8
    w = torch.zeros(1, 4)
    before = head(core, w, noise_mode="none")
    with torch.no_grad():
        head.scatter.fill_(0.8)
    after = head(core, w, noise_mode="none")
    contrast = lambda x: float(x[..., 16, 16].detach() - x[..., 2, 2].detach())  # noqa: E731
    assert 0 < contrast(after) < contrast(before)


def test_noise_modes_of_the_head():
    head = RadiographHead(w_dim=4, img_res=8)
    with torch.no_grad():
        head.noise.fill_(1.0)
    core, w = torch.full((2, 1, 8, 8), 0.5), torch.zeros(2, 4)
    assert torch.equal(head(core, w, "none"), core)
    assert torch.equal(head(core, w, "const"), head(core, w, "const"))
    assert not torch.equal(head(core, w, "random"), head(core, w, "random"))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_generator_with_head_returns_image_and_core_at_every_preset(preset):
    shape = (16, 32, 32) if preset == "tiny" else (64, 256, 256)
    res = 32 if preset == "tiny" else 256
    cfg = net_config_for(preset, shape, res)
    assert cfg.has_head and cfg.tone_curve
    with torch.device("meta"):
        G = Generator(cfg)
        img, core = G(torch.zeros(2, 1, *shape), torch.from_numpy(example_beam(shape, res, 2)).to("meta"),
                      with_core=True)
    assert img.shape == core.shape == (2, 1, res, res)


def test_untrained_generator_image_is_its_core_and_the_core_its_estimate():
    from xpgan.model.beam import drr_estimate
    from xpgan.model.transforms import HU_WINDOW

    torch.manual_seed(0)
    G = Generator(net_config_for("tiny", (16, 32, 32), 32))
    ct = torch.rand(2, 1, 16, 32, 32) * 2 - 1
    beam = torch.from_numpy(example_beam((16, 32, 32), 32, 2))
    with torch.no_grad():
        img, core = G(ct, beam, noise_mode="const", with_core=True)
        base = drr_estimate(ct, beam, 32, HU_WINDOW)
    torch.testing.assert_close(core, base.clamp(1e-3, 1 - 1e-3), atol=1e-5, rtol=0)
    torch.testing.assert_close(img, core, atol=2e-5, rtol=0)


def test_a_net_config_without_the_new_fields_is_a_generator_without_them():
    d = PRESETS["tiny"].to_dict()
    for k in ("tone_curve", "radiograph_head"):
        d.pop(k)
    cfg = NetConfig.from_dict(d)
    assert not cfg.tone_curve and not cfg.radiograph_head and not cfg.has_head
    G = Generator(cfg)
    assert G.head is None and G.tone is None
    assert not net_config_for("tiny", (16, 32, 32), 32, g_arch="vector").has_head
