"""How the projected generator turns line integrals into an image: a learned tone curve, and the radiograph
head that makes a DRR-like image look like a radiograph.

A radiograph is not a DRR with other anatomy: the detector sees primary plus scattered photons, the film
(or its digital processing) maps log exposure through a sigmoid (H&D) curve whose anchor and slope change
from image to image, the image is blurred, edge-enhanced and noisy. The DRR map is one fixed curve of the
line integral (drr/physics.py). The generator therefore ends in two stages:

* the **core**, G's DRR-like image, trained by the L1 term against the study's DRR:
  ``core = sigmoid(tone(p_est) + gain * y)``, p_est the study's line integrals estimated from G's input
  (model/beam.py), `tone` a learned monotone curve (`ToneCurve`) that starts as the logit of the DRR map
  (so the untrained core is the DRR estimate) and y the synthesis network's residual;
* the **radiograph head** (`RadiographHead`), applied to the core, which only the discriminator and the
  classifier train (the L1 term never sees its output): the core's line integrals ``p = map^-1(core)``,
  primary ``exp(-p)`` plus a broad Gaussian scatter halo (learned fraction), a second monotone tone curve of the
  effective line integral with a per-image contrast and offset read from the style w, a detector blur and
  an unsharp mask (learned gains), and additive noise (learned strength). Every learned part starts where
  the head is the identity (scatter, blur, edge and noise gains at 0, per-image modulation at 0, the curve
  the DRR map's logit), so training moves the appearance only as far as the discriminator asks, while the
  core keeps the study.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from xpgan.drr.physics import image_to_line_integral, line_integral_to_image
from xpgan.model.beam import LOGIT_CLAMP, logit

LOGIT_EPS = LOGIT_CLAMP  # images are clamped to [eps, 1 - eps] before a logit (model/beam.py)
CURVE_KNOTS = 32      # segments of a tone curve over the logits [-U_MAX, U_MAX]
U_MAX = math.log((1.0 - LOGIT_EPS) / LOGIT_EPS)   # the largest logit an image in [eps, 1 - eps] has
CURVE_LR_MULT = 10.0  # learning-rate multiplier of the tone curves' parameters
NOISE_UNIT = 0.1      # the noise gain's unit (image sd)
SCATTER_WIDTH = 0.08  # sd of the scatter halo, as a share of the image side


def _held(x: Tensor, lo, hi) -> Tensor:
    """x clamped to [lo, hi] in the forward pass with the gradient of x itself (a gain that starts on its bound
    can still leave it)."""
    return x + (x.clamp(lo, hi) - x).detach()


def drr_logit(p: Tensor) -> Tensor:
    """The logit of the DRR map (drr/physics.py) at line integrals p: the tone curves' input coordinate."""
    return logit(line_integral_to_image(p))


class ToneCurve(nn.Module):
    """A learned monotone (increasing) piecewise-linear map of logits u -> logits, CURVE_KNOTS equal segments
    over [-U_MAX, U_MAX] (the end slopes continue beyond). It starts as the identity, so
    ``sigmoid(curve(drr_logit(p)))`` is the DRR map of p until training moves it.

    Each segment's rise is exp(CURVE_LR_MULT * parameter) and the start CURVE_LR_MULT * parameter (an
    equalised learning rate): Adam moves a parameter by about lr per step, and a curve must be able to change
    a segment's slope many-fold and its level by several logits within a few hundred steps."""

    def __init__(self):
        super().__init__()
        self.step = 2.0 * U_MAX / CURVE_KNOTS
        self.start = nn.Parameter(torch.tensor([-U_MAX / CURVE_LR_MULT]))
        self.rise = nn.Parameter(torch.full((CURVE_KNOTS,), math.log(self.step) / CURVE_LR_MULT))   # [K]

    def forward(self, u: Tensor) -> Tensor:
        rise = torch.exp(self.rise * CURVE_LR_MULT)                        # [K] > 0
        pos = (u.float() + U_MAX) / self.step                              # in segments
        k = pos.floor().clamp(0, CURVE_KNOTS - 1)
        cum = torch.cat([rise.new_zeros(1), rise.cumsum(0)])               # [K + 1] value above start
        i = k.long()
        return self.start * CURVE_LR_MULT + cum[i] + (pos - k) * rise[i]


def _gauss_kernel(sigma: float, device, dtype) -> Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gauss_blur(x: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian blur of [N, 1, R, R] (replicated edges)."""
    k = _gauss_kernel(float(sigma_px), x.device, x.dtype)
    r = (k.numel() - 1) // 2
    y = torch.nn.functional.pad(x, (r, r, 0, 0), mode="replicate")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))
    y = torch.nn.functional.pad(y, (0, 0, r, r), mode="replicate")
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))


class RadiographHead(nn.Module):
    """core [N, 1, R, R] in [0, 1] (a DRR-like image), style w [N, w_dim] -> a radiograph-like image in [0, 1]
    (module docstring). The identity at initialisation (up to float rounding)."""

    def __init__(self, w_dim: int, img_res: int):
        super().__init__()
        self.curve = ToneCurve()
        self.modulation = nn.Linear(w_dim, 2)           # per-image (log contrast, offset) of the logit
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        # gains that start at 0 (identity) and stay >= 0; Adam moves a parameter by about lr per step, so
        # each is in units where a few tenths are a large change
        self.scatter = nn.Parameter(torch.zeros(()))     # scatter-to-primary ratio
        self.blur = nn.Parameter(torch.zeros(()))        # detector blur share, in [0, 1]
        self.edge = nn.Parameter(torch.zeros(()))        # unsharp-mask gain
        self.noise = nn.Parameter(torch.zeros(()))       # noise sd / NOISE_UNIT
        self.scatter_px = SCATTER_WIDTH * img_res        # the scatter halo's Gaussian sd, px
        self.blur_px = max(0.5, img_res / 64.0)
        self.edge_px = max(1.0, 0.03 * img_res)
        self.register_buffer("const_noise", torch.randn(1, 1, img_res, img_res))

    def forward(self, core: Tensor, w: Tensor, noise_mode: str = "random") -> Tensor:
        # float32 throughout, also under autocast: logits, logs and exponentials of near-black and
        # near-white pixels need the precision, and the head is small
        kind = core.device.type
        if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return self._forward(core.float(), w.float(), noise_mode)
        return self._forward(core.float(), w.float(), noise_mode)

    def _forward(self, core: Tensor, w: Tensor, noise_mode: str) -> Tensor:
        x = core.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
        scatter = _held(self.scatter, 0.0, None)
        primary = torch.exp(-image_to_line_integral(x))                     # [N, 1, R, R]
        total = (primary + scatter * gauss_blur(primary, self.scatter_px)) / (1.0 + scatter)
        u = drr_logit(-torch.log(total.clamp(min=1e-12)))                   # of the effective line integral
        mod = self.modulation(w)                                          # [N, 2]
        u = self.curve(u) * torch.exp(mod[:, 0])[:, None, None, None] + mod[:, 1, None, None, None]
        img = torch.sigmoid(u)
        img = torch.lerp(img, gauss_blur(img, self.blur_px), _held(self.blur, 0.0, 1.0))
        img = img + _held(self.edge, 0.0, None) * (img - gauss_blur(img, self.edge_px))
        if noise_mode != "none":
            n = torch.randn_like(img) if noise_mode == "random" else self.const_noise.to(img.dtype).expand_as(img)
            img = img + NOISE_UNIT * _held(self.noise, 0.0, None) * n
        return img.clamp(0.0, 1.0)
