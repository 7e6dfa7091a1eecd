"""XPGANLoss against hand computations. The loss is the unit under test; the networks fed to it are
small closed-form modules written here (a sigmoid 'generator', a linear discriminator and a linear
classifier), except in the gradient-flow and mixed-precision tests, which use the real tiny networks."""

import numpy as np
import pytest
import torch
from torch import nn

from xpgan.model.beam import example_beam
from xpgan.model.losses import PHASES_FOR_MODE, XPGANLoss, cross_entropy_known, l1_term, translate
from xpgan.model.networks import Discriminator, Generator, build_classifier, net_config_for

R = 6           # image side, px
DEPTH = 3       # CT depth, voxels


class SigmoidG(nn.Module):
    """img = sigmoid(scale * mean_depth(ct) + shift); counts its forward calls."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.3))
        self.shift = nn.Parameter(torch.tensor(-0.2))
        self.calls = 0

    def forward(self, ct, beam=None, *, with_core=False):
        self.calls += 1
        img = torch.sigmoid(self.scale * ct.mean(dim=2) + self.shift)       # [N, 1, R, R]
        return (img, img) if with_core else img


class LinearD(nn.Module):
    """D(img) = sum(a * img) + b."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.randn(1, R, R) * 0.3)
        self.b = nn.Parameter(torch.tensor(0.1))

    def forward(self, img):
        return (img * self.a).sum(dim=(1, 2, 3)) + self.b


class LinearC(nn.Module):
    def __init__(self, res=R):
        super().__init__()
        self.lin = nn.Linear(res * res, 2)

    def forward(self, img):
        return self.lin(img.flatten(1))


# many small ops: one thread avoids OpenMP spin-waiting when other jobs share the 2 cores (conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _softplus(t):
    return np.log1p(np.exp(t))


def _ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


@pytest.fixture
def nets():
    torch.manual_seed(0)
    return SigmoidG(), LinearD(), LinearC()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return {"ct": torch.rand(3, 1, DEPTH, R, R, generator=g) * 2 - 1,
            "drr": torch.rand(3, 1, R, R, generator=g),
            "ct_label": torch.tensor([0, 1, 1]),
            "cxr": torch.rand(4, 1, R, R, generator=g),
            "cxr_label": torch.tensor([1, 0, 0, 1])}


def _np(t):
    return t.detach().double().numpy()


def _fake(G, ct):
    with torch.no_grad():
        return torch.sigmoid(G.scale * ct.mean(dim=2) + G.shift)


def _d(D, img):
    return (_np(img) * _np(D.a)).sum(axis=(1, 2, 3)) + D.b.item()


def _c(C, img):
    return _np(img).reshape(len(img), -1) @ _np(C.lin.weight).T + _np(C.lin.bias)


def test_phase_g_terms_match_hand_computation(nets, batch):
    G, D, C = nets
    stats = XPGANLoss(G, D, C, mode="xpgan", lambda_l1=2.0).accumulate_gradients("G", batch)
    fake = _fake(G, batch["ct"])
    adv = _softplus(-_d(D, fake)).mean()
    l1 = np.abs(_np(fake) - _np(batch["drr"])).mean()
    cls = _ce(_c(C, fake), batch["ct_label"].numpy())
    assert stats["loss/G_adv"] == pytest.approx(adv, rel=1e-5)
    assert stats["loss/G_l1"] == pytest.approx(l1, rel=1e-5)
    assert stats["loss/G_cls"] == pytest.approx(cls, rel=1e-5)
    assert stats["loss/G"] == pytest.approx(adv + 2.0 * l1 + cls, rel=1e-5)


def test_phase_g_gradient_equals_autograd_of_hand_total(nets, batch):
    G, D, C = nets
    XPGANLoss(G, D, C, mode="xpgan", lambda_l1=2.0).accumulate_gradients("G", batch)
    fake = torch.sigmoid(G.scale * batch["ct"].mean(dim=2) + G.shift)
    logits = (fake * D.a).sum(dim=(1, 2, 3)) + D.b
    total = (torch.log1p(torch.exp(-logits)).mean() + 2.0 * (fake - batch["drr"]).abs().mean()
             + torch.nn.functional.cross_entropy(C.lin(fake.flatten(1)), batch["ct_label"]))
    g_scale, g_shift = torch.autograd.grad(total, [G.scale, G.shift])
    torch.testing.assert_close(G.scale.grad, g_scale)
    torch.testing.assert_close(G.shift.grad, g_shift)


def test_phase_g_leaves_d_and_c_without_gradients(nets, batch):
    G, D, C = nets
    XPGANLoss(G, D, C).accumulate_gradients("G", batch)
    assert all(p.grad is None for p in list(D.parameters()) + list(C.parameters()))
    assert all(p.requires_grad for net in nets for p in net.parameters())     # restored


def test_phase_d_terms_and_closed_form_gradient(nets, batch):
    G, D, C = nets
    stats = XPGANLoss(G, D, C).accumulate_gradients("D", batch)
    fake, real = _fake(G, batch["ct"]), batch["cxr"]
    lf, lr = _d(D, fake), _d(D, real)
    assert stats["loss/D_fake"] == pytest.approx(_softplus(lf).mean(), rel=1e-5)
    assert stats["loss/D_real"] == pytest.approx(_softplus(-lr).mean(), rel=1e-5)
    # d/da [mean softplus(D(f)) + mean softplus(-D(r))] = mean sigmoid(D(f)) f - mean sigmoid(-D(r)) r
    sig = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    grad_a = (sig(lf)[:, None, None, None] * _np(fake)).mean(0) - (sig(-lr)[:, None, None, None] * _np(real)).mean(0)
    np.testing.assert_allclose(_np(D.a.grad), grad_a, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in G.parameters()) and all(p.grad is None for p in C.parameters())


def test_phase_dreg_r1_closed_form_for_linear_d(nets, batch):
    G, D, C = nets
    gamma, interval = 3.0, 4
    stats = XPGANLoss(G, D, C, r1_gamma=gamma, r1_interval=interval).accumulate_gradients("Dreg", batch)
    # D sees img = (x + 1) / 2 with x in [-1, 1], so dD/dx = a / 2 for every real image
    a = _np(D.a)
    norm2 = (a ** 2).sum() / 4
    assert stats["D/r1_grad_norm2"] == pytest.approx(norm2, rel=1e-5)
    assert stats["loss/D_r1"] == pytest.approx(gamma / 2 * norm2 * interval, rel=1e-5)
    np.testing.assert_allclose(_np(D.a.grad), gamma * interval * a / 4, rtol=1e-5)
    assert D.b.grad is not None and D.b.grad.item() == 0.0


def test_phase_c_xpgan_uses_generated_images_without_touching_g(nets, batch):
    G, D, C = nets
    stats = XPGANLoss(G, D, C).accumulate_gradients("C", batch)
    fake = _fake(G, batch["ct"])
    assert stats["loss/C_real"] == pytest.approx(_ce(_c(C, batch["cxr"]), batch["cxr_label"].numpy()), rel=1e-5)
    assert stats["loss/C_gen"] == pytest.approx(_ce(_c(C, fake), batch["ct_label"].numpy()), rel=1e-5)
    assert stats["loss/C"] == pytest.approx(stats["loss/C_real"] + stats["loss/C_gen"], rel=1e-6)
    assert all(p.grad is None for p in G.parameters()) and C.lin.weight.grad.abs().sum() > 0


def test_phase_c_drr_mode_uses_stored_drrs(nets, batch):
    _, _, C = nets
    stats = XPGANLoss(None, None, C, mode="drr").accumulate_gradients("C", batch)
    assert stats["loss/C_drr"] == pytest.approx(_ce(_c(C, batch["drr"]), batch["ct_label"].numpy()), rel=1e-5)
    assert stats["loss/C"] == pytest.approx(stats["loss/C_real"] + stats["loss/C_drr"], rel=1e-6)


def test_phase_c_baseline_uses_cxr_only_and_touches_no_g(nets, batch):
    G, D, C = nets
    only_cxr = {"cxr": batch["cxr"], "cxr_label": batch["cxr_label"]}
    loss = XPGANLoss(G, D, C, mode="baseline")
    stats = loss.accumulate_gradients("C", only_cxr)
    assert set(stats) == {"loss/C_real", "loss/C", "acc/C_real"}
    assert stats["loss/C"] == pytest.approx(_ce(_c(C, batch["cxr"]), batch["cxr_label"].numpy()), rel=1e-5)
    assert G.calls == 0 and all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))
    assert PHASES_FOR_MODE["baseline"] == ("C",)
    with pytest.raises(ValueError, match="allowed: C"):
        loss.accumulate_gradients("G", batch)


def test_cross_entropy_skips_unknown_labels():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    got = cross_entropy_known(logits, torch.tensor([0, -1, 1]))
    assert got.item() == pytest.approx(_ce(logits[[0, 2]].numpy(), np.array([0, 1])), rel=1e-6)
    assert cross_entropy_known(logits, torch.full((3,), -1)).item() == 0.0


def test_gain_scales_gradients(nets, batch):
    G, D, C = nets
    loss = XPGANLoss(G, D, C)
    loss.accumulate_gradients("D", batch)
    g1 = D.a.grad.clone()
    D.zero_grad(set_to_none=True)
    loss.accumulate_gradients("D", batch, gain=0.25)
    torch.testing.assert_close(D.a.grad, 0.25 * g1)


def test_fakes_from_phase_g_are_reused_only_for_the_same_unmodified_batch(nets, batch):
    G, D, C = nets
    loss = XPGANLoss(G, D, C)
    loss.accumulate_gradients("G", batch)
    loss.accumulate_gradients("D", batch)
    loss.accumulate_gradients("C", batch)
    assert G.calls == 1
    loss.accumulate_gradients("D", dict(batch, ct=batch["ct"].clone()))
    assert G.calls == 2
    batch["ct"].mul_(0.5)                                           # in-place change invalidates the cache
    loss.accumulate_gradients("C", batch)
    assert G.calls == 3


def test_bad_mode_phase_and_batch_are_reported(nets, batch):
    G, D, C = nets
    with pytest.raises(ValueError, match="allowed"):
        XPGANLoss(G, D, C, mode="gan")
    with pytest.raises(ValueError, match="allowed"):
        XPGANLoss(G, D, C).accumulate_gradients("Greg", batch)
    with pytest.raises(KeyError, match="drr"):
        XPGANLoss(G, D, C).accumulate_gradients("G", {k: v for k, v in batch.items() if k != "drr"})


# ------------------------------------------------------------------------------- real tiny networks
@pytest.fixture(scope="module")
def real_nets():
    torch.manual_seed(0)
    cfg = net_config_for("tiny", (8, 32, 32), 32)
    return Generator(cfg), Discriminator(cfg), build_classifier(cfg)


@pytest.fixture
def real_batch():
    g = torch.Generator().manual_seed(2)
    return {"ct": torch.rand(2, 1, 8, 32, 32, generator=g) * 2 - 1, "drr": torch.rand(2, 1, 32, 32, generator=g),
            "ct_label": torch.tensor([0, 1]), "cxr": torch.rand(2, 1, 32, 32, generator=g),
            "cxr_label": torch.tensor([1, 0]), "beam": torch.from_numpy(example_beam((8, 32, 32), 32, 2))}


def _zero(*nets):
    for net in nets:
        net.zero_grad(set_to_none=True)


def test_xpgan_classifier_loss_on_g_output_reaches_generator(real_nets, real_batch):
    G, D, C = real_nets
    with torch.no_grad():
        G.residual_gain.fill_(0.5)    # a trained G: at initialisation the gain is 0 and only it gets a gradient
    grads = []
    for lambda_cls in (0.0, 1.0):
        _zero(G, D, C)
        torch.manual_seed(5)                                         # same noise in both runs
        XPGANLoss(G, D, C, lambda_cls=lambda_cls).accumulate_gradients("G", real_batch)
        grads.append(torch.cat([p.grad.flatten() for p in G.encoder.parameters()]))
    diff = (grads[1] - grads[0]).abs().max().item()
    assert diff > 1e-8 and torch.isfinite(grads[1]).all()
    assert all(p.grad is None for p in C.parameters())
    _zero(G, D, C)


def test_all_phases_run_under_bf16_autocast(real_nets, real_batch):
    # real G and D; a linear C keeps the CPU time low (bf16 DenseNet121 on CPU is slow, and is torchvision's)
    G, D, _ = real_nets
    C = LinearC(32)
    loss = XPGANLoss(G, D, C, amp_dtype=torch.bfloat16)
    for phase in PHASES_FOR_MODE["xpgan"]:
        _zero(G, D, C)
        stats = loss.accumulate_gradients(phase, real_batch)
        assert all(np.isfinite(v) for v in stats.values()), (phase, stats)
        net = {"G": G, "D": D, "Dreg": D, "C": C}[phase]
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert all(g.dtype == torch.float32 for g in grads)
    _zero(G, D, C)


def test_r1_is_computed_in_float32_even_with_amp(real_nets, real_batch):
    G, D, _ = real_nets
    C = LinearC(32)
    got = []
    for amp in (None, torch.bfloat16):
        _zero(G, D)
        got.append(XPGANLoss(G, D, C, amp_dtype=amp).accumulate_gradients("Dreg", real_batch))
        got.append(D.out.weight.grad.clone())
    assert got[0] == got[2]
    torch.testing.assert_close(got[1], got[3], rtol=0, atol=0)
    _zero(G, D)


def test_fakes_cache_does_not_keep_the_ct_batch_alive(nets, batch):
    import weakref

    G, D, C = nets
    loss = XPGANLoss(G, D, C)
    loss.accumulate_gradients("G", batch)
    ref = weakref.ref(batch["ct"])
    del batch["ct"]
    assert ref() is None


class HeadedG(SigmoidG):
    """A generator with a head: the image is the core squared (the L1 term must see the core)."""

    def forward(self, ct, beam=None, *, with_core=False):
        core = super().forward(ct, beam)
        return (core ** 2, core) if with_core else core ** 2


def test_l1_compares_the_core_and_d_sees_the_image(nets, batch):
    G, D, C = HeadedG(), nets[1], nets[2]
    loss = XPGANLoss(G, D, C, mode="xpgan", lambda_l1=2.0)
    stats = loss.accumulate_gradients("G", batch)
    core = torch.sigmoid(G.scale * batch["ct"].mean(dim=2) + G.shift)
    assert stats["loss/G_l1"] == pytest.approx(float((core - batch["drr"]).abs().mean()), rel=1e-5)
    with torch.no_grad():
        adv = torch.nn.functional.softplus(-D(core ** 2)).mean()
    assert stats["loss/G_adv"] == pytest.approx(float(adv), rel=1e-5)


def test_normalized_l1_ignores_brightness_and_contrast():
    x = torch.rand(3, 1, 8, 8)
    assert float(l1_term(2.0 * x + 0.3, x, "normalized")) < 1e-5
    assert float(l1_term(2.0 * x + 0.3, x, "intensity")) == pytest.approx(float((x + 0.3).abs().mean()), rel=1e-5)
    flipped = float(l1_term(1.0 - x, x, "normalized"))
    assert flipped > 1.0                                                   # structure reversed: penalised


def test_translate_shifts_by_whole_pixels_within_the_bound_and_passes_gradients():
    torch.manual_seed(3)
    x = torch.rand(16, 1, 16, 16, requires_grad=True)
    y = translate(x, 0.125)
    assert y.shape == x.shape
    for k in range(16):                    # every output is the input shifted by (dr, dc), |d| <= 2
        hits = [(dr, dc) for dr in range(-2, 3) for dc in range(-2, 3)
                if torch.equal(y[k, 0, 2:-2, 2:-2], x[k, 0, 2 - dr:14 - dr, 2 - dc:14 - dc])]
        assert hits
    y.sum().backward()
    assert float(x.grad.sum()) > 0
