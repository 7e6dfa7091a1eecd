import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from xpgan.errors import XPGANError
from xpgan.model.beam import example_beam
from xpgan.model.layers import (
    EqualizedConv2d,
    EqualizedConv3d,
    EqualizedLinear,
    ModulatedConv2d,
    NoiseInjection,
    minibatch_std,
)
from xpgan.model.networks import (
    GREY_MEAN,
    GREY_STD,
    PRESETS,
    Discriminator,
    Generator,
    NetConfig,
    build_classifier,
    count_parameters,
    encoder_plan,
    net_config_for,
)
from xpgan.model.transforms import normalize_hu

# many small ops: one thread avoids OpenMP spin-waiting when other jobs share the 2 cores (conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------- config
def test_normalize_hu_torch_window_maps_ends_and_clips():
    hu = torch.tensor([-3000.0, -1000.0, -500.0, 0.0, 250.0, 1000.0, 2500.0])
    out = normalize_hu(hu, (-1000.0, 1000.0))
    np.testing.assert_allclose(out.numpy(), [-1, -1, -0.5, 0, 0.25, 1, 1], atol=1e-6)
    out2 = normalize_hu(torch.tensor([-160, 40, 240], dtype=torch.int16), (-160.0, 240.0))
    np.testing.assert_allclose(out2.numpy(), [-1, 0, 1], atol=1e-6)
    with pytest.raises(XPGANError):
        normalize_hu(hu, (100.0, 100.0))


def test_net_config_json_round_trip_and_presets():
    cfg = net_config_for("tiny", (8, 32, 32), 32)
    assert cfg.ct_shape == (8, 32, 32) and cfg.img_res == 32 and cfg.z_dim == PRESETS["tiny"].z_dim
    back = NetConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg
    assert PRESETS["paper"].ct_shape == (64, 256, 256) and PRESETS["paper"].img_res == 256
    with pytest.raises(XPGANError, match="unknown preset"):
        net_config_for("huge", (8, 32, 32), 32)
    with pytest.raises(XPGANError, match="power of two"):
        net_config_for("tiny", (8, 32, 32), 48)


def test_encoder_plan_halves_axes_down_to_min_res():
    plan = encoder_plan(PRESETS["paper"])
    assert [p[0] for p in plan] == [(64, 256, 256), (32, 128, 128), (16, 64, 64), (8, 32, 32), (4, 16, 16),
                                    (4, 8, 8), (4, 4, 4)]
    assert plan[5][1] == (1, 2, 2)
    tiny = encoder_plan(net_config_for("tiny", (8, 32, 32), 32))
    assert tiny[-1][0] == (4, 4, 4) and [p[2] for p in tiny] == [4, 8, 16, 32]


# ------------------------------------------------------------------------------------------- layers
def test_equalized_linear_runtime_gain_and_init_scale():
    layer = EqualizedLinear(400, 300, lr_mult=0.01, bias_init=0.5)
    assert abs(layer.weight.std().item() - 100.0) < 2.0              # stored ~ N(0, 1) / lr_mult
    x = torch.randn(5, 400)
    expected = x @ (layer.weight * 0.01 / math.sqrt(400)).T + layer.bias * 0.01
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer(torch.zeros(1, 400)), torch.full((1, 300), 0.5))
    big = EqualizedLinear(1024, 1024, bias=False)
    y = big(torch.randn(256, 1024))                                  # unit-variance in -> ~unit out
    assert 0.9 < y.std().item() < 1.1


def test_equalized_conv_runtime_gain():
    conv = EqualizedConv2d(8, 6, 3, activation="linear")
    x = torch.randn(2, 8, 9, 9)
    ref = F.conv2d(x, conv.weight / math.sqrt(8 * 9), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref)
    conv3 = EqualizedConv3d(64, 64, 3, activation="linear", bias=False)
    y = conv3(torch.randn(2, 64, 8, 8, 8))[:, :, 1:-1, 1:-1, 1:-1]    # interior: no zero padding
    assert 0.9 < y.std().item() < 1.1
    down = EqualizedConv3d(2, 3, 1, down=(1, 2, 2), activation="linear")
    assert down(torch.randn(1, 2, 4, 8, 6)).shape == (1, 3, 4, 4, 3)


def test_demodulated_weight_has_unit_norm_per_output_channel():
    conv = ModulatedConv2d(16, 12, 3, w_dim=8)
    styles = torch.randn(3, 16) * 3.0
    w = conv.modulated_weight(styles)                                # [N, out, in, k, k]
    norms = w.square().sum(dim=(2, 3, 4)).sqrt()
    torch.testing.assert_close(norms, torch.ones(3, 12), atol=1e-5, rtol=0)
    plain = ModulatedConv2d(16, 1, 1, w_dim=8, demodulate=False).modulated_weight(styles)
    assert not torch.allclose(plain.square().sum(dim=(2, 3, 4)), torch.ones(3, 1))


def test_modulated_conv_grouped_equals_per_sample_loop():
    conv = ModulatedConv2d(5, 4, 3, w_dim=6, up=True)
    x, w = torch.randn(3, 5, 6, 6), torch.randn(3, 6)
    out = conv(x, w)
    styles = conv.affine(w)
    x_up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    for i in range(3):
        wi = conv.weight * styles[i][None, :, None, None] / math.sqrt(5 * 9)
        wi = wi / wi.square().sum(dim=(1, 2, 3), keepdim=True).sqrt()
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x_up[i:i + 1], wi, padding=1), atol=1e-5, rtol=1e-5)


def test_modulated_conv_unit_variance_in_gives_unit_variance_out():
    conv = ModulatedConv2d(64, 32, 3, w_dim=16)
    y = conv(torch.randn(4, 64, 32, 32), torch.randn(4, 16) * 5.0)[:, :, 1:-1, 1:-1]
    assert 0.9 < y.std().item() < 1.1


def test_noise_modes():
    noise = NoiseInjection(8)
    x = torch.zeros(2, 3, 8, 8)
    assert torch.equal(noise(x, "random"), x)                        # strength starts at 0
    with torch.no_grad():
        noise.strength.fill_(0.5)
    torch.testing.assert_close(noise(x, "const"), 0.5 * noise.noise_const.expand(2, 3, 8, 8))
    assert torch.equal(noise(x, "none"), x)
    r = noise(x, "random")
    assert not torch.equal(r[0], r[1]) and torch.equal(r[0, 0], r[0, 2])   # per sample, shared over channels
    with pytest.raises(ValueError, match="allowed"):
        noise(x, "loud")


def _mbstd_reference(x: np.ndarray, group: int) -> np.ndarray:
    n, c, h, w = x.shape
    n_groups = n // group
    out = np.empty(n)
    for i in range(n):
        members = [j for j in range(n) if j % n_groups == i % n_groups]
        stack = x[members]                                           # [G, C, H, W]
        std = np.sqrt(((stack - stack.mean(0)) ** 2).mean(0) + 1e-8)
        out[i] = std.mean()
    return out


def test_minibatch_std_matches_hand_computation():
    x = torch.randn(6, 3, 4, 4)
    y = minibatch_std(x, group_size=3)
    assert y.shape == (6, 4, 4, 4)
    torch.testing.assert_close(y[:, :3], x)
    ref = _mbstd_reference(x.double().numpy(), 3)
    np.testing.assert_allclose(y[:, 3].numpy(), ref[:, None, None] * np.ones((6, 4, 4)), rtol=1e-5)


def test_minibatch_std_group_falls_back_to_divisor_of_batch():
    x = torch.randn(3, 2, 4, 4)                                      # 3 is not divisible by 2 -> groups of 1
    y = minibatch_std(x, group_size=2)
    torch.testing.assert_close(y[:, 2], torch.full((3, 4, 4), 1e-4))


# ------------------------------------------------------------------------------------------ networks
def beam(ct_shape, res: int, n: int) -> torch.Tensor:
    return torch.from_numpy(example_beam(ct_shape, res, n))


@pytest.mark.parametrize("ct_shape,res,n", [((8, 32, 32), 32, 2), ((16, 64, 64), 64, 3), ((6, 20, 24), 16, 1)])
def test_generator_and_discriminator_shapes_and_ranges(ct_shape, res, n):
    cfg = net_config_for("tiny", ct_shape, res)
    G, D = Generator(cfg), Discriminator(cfg)
    ct = torch.rand(n, 1, *ct_shape) * 2 - 1
    img = G(ct, beam(ct_shape, res, n))
    assert img.shape == (n, 1, res, res) and img.dtype == torch.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0
    logits = D(img)
    assert logits.shape == (n,) and torch.isfinite(logits).all()


def test_generator_rejects_wrong_ct_shape():
    G = Generator(net_config_for("tiny", (8, 32, 32), 32))
    with pytest.raises(ValueError, match="expected CT"):
        G(torch.zeros(1, 1, 8, 32, 30), beam((8, 32, 32), 32, 1))
    with pytest.raises(ValueError, match="beam"):
        G(torch.zeros(1, 1, 8, 32, 32))


def test_generator_const_noise_is_deterministic_and_random_is_not():
    G = Generator(net_config_for("tiny", (8, 32, 32), 32))
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, NoiseInjection):
                m.strength.fill_(0.3)
        G.residual_gain.fill_(1.0)   # the synthesis network's share of the image (0 at initialisation)
        ct, r = torch.rand(2, 1, 8, 32, 32) * 2 - 1, beam((8, 32, 32), 32, 2)
        assert torch.equal(G(ct, r, noise_mode="const"), G(ct, r, noise_mode="const"))
        assert not torch.equal(G(ct, r, noise_mode="random"), G(ct, r, noise_mode="random"))
        with pytest.raises(ValueError, match="noise_mode"):
            G(ct, r, noise_mode="loud")


def test_generator_output_depends_on_ct():
    G = Generator(net_config_for("tiny", (8, 32, 32), 32))
    ct = torch.rand(2, 1, 8, 32, 32) * 2 - 1
    with torch.no_grad():
        img = G(ct, beam((8, 32, 32), 32, 2), noise_mode="none")
    assert (img[0] - img[1]).abs().max() > 1e-4


def test_generator_fits_fixed_targets_with_l1():
    # end-to-end gradient sanity: Adam on an L1 loss must pull G's images towards two target images
    G = Generator(net_config_for("tiny", (8, 32, 32), 32))
    ct = torch.rand(2, 1, 8, 32, 32) * 2 - 1
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    target = torch.stack([0.5 + 0.4 * torch.sin(3 * xx) * torch.cos(2 * yy), 0.3 + 0.5 * (xx > 0).float()])[:, None]
    opt = torch.optim.Adam(G.parameters(), lr=0.002, betas=(0.0, 0.99))
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = (G(ct, beam((8, 32, 32), 32, 2), noise_mode="const") - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * losses[0]


def test_discriminator_rescales_input_to_minus_one_one():
    D = Discriminator(net_config_for("tiny", (8, 32, 32), 32))
    seen = {}
    D.from_grey.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    D(torch.tensor([0.0, 1.0]).repeat_interleave(512).reshape(1, 1, 32, 32))
    assert seen["x"].min().item() == -1.0 and seen["x"].max().item() == 1.0


def test_paper_preset_shapes_and_parameter_counts_on_meta_device():
    cfg = PRESETS["paper"]
    with torch.device("meta"):
        G, D = Generator(cfg), Discriminator(cfg)
        img = G(torch.empty(1, 1, 64, 256, 256), beam((64, 256, 256), 256, 1))
        logits = D(img)
    assert img.shape == (1, 1, 256, 256) and logits.shape == (1,)
    n_g, n_d = count_parameters(G), count_parameters(D)
    print(f"paper preset: G {n_g:,} parameters (encoder {count_parameters(G.encoder):,}), D {n_d:,}")
    assert 20e6 < n_g < 100e6 and 10e6 < n_d < 50e6


# ---------------------------------------------------------------------------------------- classifier
def test_classifier_shape_and_normalisation():
    C = build_classifier(net_config_for("tiny", (8, 32, 32), 32)).eval()
    x = torch.rand(3, 1, 32, 32)
    logits = C(x)
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, C.net((x - GREY_MEAN) / GREY_STD))
    assert C.net.features.conv0.weight.shape == (64, 1, 7, 7)


def test_classifier_needs_res_32():
    with pytest.raises(XPGANError, match="32"):
        build_classifier(net_config_for("tiny", (8, 32, 32), 16))


@pytest.fixture(scope="module")
def fake_imagenet_state_dict():
    torch.manual_seed(1)
    return torchvision.models.densenet121(weights=None).state_dict()


def test_classifier_loads_imagenet_state_dict_summing_conv0(tmp_path, fake_imagenet_state_dict):
    sd = fake_imagenet_state_dict
    path = tmp_path / "densenet121.pth"
    torch.save(sd, path)
    C = build_classifier(net_config_for("tiny", (8, 32, 32), 32), weights_path=str(path))
    net_sd = C.net.state_dict()
    torch.testing.assert_close(net_sd["features.conv0.weight"], sd["features.conv0.weight"].sum(1, keepdim=True))
    key = "features.denseblock3.denselayer7.conv2.weight"
    torch.testing.assert_close(net_sd[key], sd[key])
    torch.testing.assert_close(net_sd["features.norm5.running_var"], sd["features.norm5.running_var"])
    assert net_sd["classifier.weight"].shape == (2, 1024)


def test_classifier_loads_old_style_keys(tmp_path, fake_imagenet_state_dict):
    old = {}
    for k, v in fake_imagenet_state_dict.items():
        if k.endswith("num_batches_tracked"):
            continue                                                 # pre-0.4 checkpoints lack them
        old[k.replace("norm1.", "norm.1.").replace("conv1.", "conv.1.")
             .replace("norm2.", "norm.2.").replace("conv2.", "conv.2.")] = v
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    path = tmp_path / "old.pth"
    torch.save(old, path)
    C = build_classifier(net_config_for("tiny", (8, 32, 32), 32), weights_path=str(path))
    key = "features.denseblock1.denselayer1.norm1.weight"
    torch.testing.assert_close(C.net.state_dict()[key], fake_imagenet_state_dict[key])


def test_classifier_weights_errors(tmp_path):
    cfg = net_config_for("tiny", (8, 32, 32), 32)
    with pytest.raises(XPGANError, match="not found"):
        build_classifier(cfg, weights_path=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(XPGANError, match="cannot read"):
        build_classifier(cfg, weights_path=str(garbage))
    other = tmp_path / "other.pth"                                   # a ResNet-like key set
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, other)
    with pytest.raises(XPGANError, match="DenseNet121"):
        build_classifier(cfg, weights_path=str(other))
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.norm5.weight": torch.zeros(7)}, wrong)
    with pytest.raises(XPGANError, match="wrong shape"):
        build_classifier(cfg, weights_path=str(wrong))
