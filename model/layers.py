"""Building blocks of the XPGAN networks: equalized-learning-rate layers, modulated convolution,
noise injection and the minibatch standard deviation layer.

Equalized learning rate (Karras et al. 2018): parameters are stored with unit-scale initialisation
(``randn / lr_mult``) and multiplied at run time by ``lr_mult / sqrt(fan_in)``. Adam then moves every
layer at the same relative speed, and ``lr_mult`` < 1 slows a layer down (the mapping network uses 0.01).

Activations use a leaky ReLU with slope 0.2 followed by a gain of sqrt(2), which keeps the second
moment of unit-variance signals roughly constant through a stack of layers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
_ACTIVATIONS = ("linear", "lrelu")


def lrelu(x: Tensor) -> Tensor:
    """Leaky ReLU (slope 0.2) times sqrt(2)."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def _activate(x: Tensor, activation: str) -> Tensor:
    return lrelu(x) if activation == "lrelu" else x


def _check_activation(activation: str) -> str:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(_ACTIVATIONS)}")
    return activation


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale each vector so that its mean square along `dim` is 1."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling of [N, C, H, W] (half-pixel centres)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate.

    Effective weight = ``weight * lr_mult / sqrt(in_features)``, effective bias = ``bias * lr_mult``;
    the stored bias is ``bias_init / lr_mult`` so the effective bias starts at ``bias_init``.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, bias_init: float = 0.0,
                 lr_mult: float = 1.0, activation: str = "linear"):
        super().__init__()
        if lr_mult <= 0:
            raise ValueError(f"lr_mult must be > 0, got {lr_mult}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation = _check_activation(activation)
        self.lr_mult = float(lr_mult)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mult)) if bias else None
        self.weight_gain = lr_mult / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.lr_mult if self.bias is not None else None
        return _activate(F.linear(x, w, b), self.activation)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, lr_mult={self.lr_mult}, "
                f"activation={self.activation}")


class EqualizedConv2d(nn.Module):
    """2D convolution with equalized learning rate, 'same' padding, optional x2 average-pool
    downsampling applied before the convolution (cheap and alias-reducing)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "lrelu", down: bool = False):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.activation = _check_activation(activation)
        self.down = bool(down)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:                         # [N, C, H, W]
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return _activate(x, self.activation)


class EqualizedConv3d(nn.Module):
    """3D convolution with equalized learning rate, 'same' padding, optional per-axis average-pool
    downsampling ``down = (fd, fh, fw)`` (each 1 or 2) applied before the convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "lrelu", down: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if any(f not in (1, 2) for f in down) or len(down) != 3:
            raise ValueError(f"down must be three factors of 1 or 2, got {down}")
        self.activation = _check_activation(activation)
        self.down = tuple(int(f) for f in down)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 3)
        self.padding = kernel_size // 2

    def forward(self, x: Tensor) -> Tensor:                         # [N, C, D, H, W]
        if self.down != (1, 1, 1):
            x = F.avg_pool3d(x, self.down)
        x = F.conv3d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return _activate(x, self.activation)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution with optional weight demodulation.

    The style ``s = affine(w)`` (bias initialised to 1) scales the input channels of the weight; with
    demodulation every output channel of each sample's weight is then rescaled to unit L2 norm, so a
    unit-variance, independent input gives a unit-variance output. One grouped convolution (groups = N)
    applies a different weight to every sample. Weights are formed in float32 even under autocast.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, *,
                 demodulate: bool = True, up: bool = False, eps: float = 1e-8):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.up, self.eps = bool(demodulate), bool(up), eps
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def modulated_weight(self, styles: Tensor) -> Tensor:
        """styles [N, in] -> per-sample weights [N, out, in, k, k] (float32)."""
        w = self.weight.float()[None] * (self.weight_gain * styles.float())[:, None, :, None, None]
        if self.demodulate:
            w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + self.eps).rsqrt()
        return w

    def forward(self, x: Tensor, w: Tensor) -> Tensor:              # x [N, in, H, W], w [N, w_dim]
        n, c = x.shape[:2]
        if c != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {c}")
        if self.up:
            x = upsample2x(x)
        h, wd = x.shape[2:]
        weight = self.modulated_weight(self.affine(w))               # [N, out, in, k, k]
        weight = weight.reshape(n * self.out_channels, c, self.kernel_size, self.kernel_size)
        weight = weight.to(x.dtype)    # under autocast conv2d recasts both operands anyway
        y = F.conv2d(x.reshape(1, n * c, h, wd), weight, padding=self.kernel_size // 2, groups=n)
        return y.reshape(n, self.out_channels, h, wd)

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, k={self.kernel_size}, "
                f"demodulate={self.demodulate}, up={self.up}")


class NoiseInjection(nn.Module):
    """Per-pixel noise times a learned strength (initialised to 0).

    noise_mode "random": fresh N(0, 1) noise per sample; "const": a fixed noise image stored as a buffer
    (saved in checkpoints); "none": no noise.
    """

    MODES = ("random", "const", "none")

    def __init__(self, resolution: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: Tensor, noise_mode: str = "random") -> Tensor:   # [N, C, H, W]
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif noise_mode == "const":
            noise = self.noise_const.to(x.dtype)[None, None]
        elif noise_mode == "none":
            return x
        else:
            raise ValueError(f"unknown noise_mode {noise_mode!r}; allowed: {', '.join(self.MODES)}")
        return x + noise * self.strength.to(x.dtype)


def _group_size_for(n: int, group_size: int) -> int:
    """Largest divisor of n that is <= group_size (so any batch size works)."""
    g = max(1, min(group_size, n))
    while n % g:
        g -= 1
    return g


def minibatch_std(x: Tensor, group_size: int, num_channels: int = 1, eps: float = 1e-8) -> Tensor:
    """Append `num_channels` feature maps holding the standard deviation across groups of samples.

    Samples are grouped as in StyleGAN2: with G = group size and n = N / G, sample i belongs to group
    ``i % n``. For each group and channel block, std over the G members is averaged over channels and
    pixels. G is the largest divisor of N not above `group_size`. [N, C, H, W] -> [N, C + F, H, W].
    """
    n_all, c, h, w = x.shape
    f = num_channels
    if c % f:
        raise ValueError(f"channels ({c}) must be divisible by num_channels ({f})")
    g = _group_size_for(n_all, group_size)
    y = x.float().reshape(g, -1, f, c // f, h, w)                   # [G, n, F, c/F, H, W]
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + eps).sqrt()                        # [n, F, c/F, H, W]
    y = y.mean(dim=(2, 3, 4))                                         # [n, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)       # [N, F, H, W]
    return torch.cat([x, y], dim=1)


class MinibatchStd(nn.Module):
    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = int(group_size), int(num_channels)

    def forward(self, x: Tensor) -> Tensor:
        return minibatch_std(x, self.group_size, self.num_channels)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
