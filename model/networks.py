"""XPGAN networks: generator G (3D CT encoder -> StyleGAN2-style synthesis), discriminator D (StyleGAN2
residual discriminator) and classifier C (torchvision DenseNet121, one channel, two classes).

Every size comes from `NetConfig`, so the same code builds the paper-sized networks and CPU-sized ones.

Generator, in order:
  * `xpgan.model.transforms.normalize_hu` (outside the network; the data loader or caller applies it): HU
    window -> [-1, 1].
  * `CTEncoder`: a 3D residual encoder in the spirit of Shen et al. 2019 (stacks of 3x3x3 convolutions
    with identity/projection skip connections). A 1x1x1 "from-CT" layer, then one residual block per
    level; each block halves every axis still larger than 2 * `enc_min_res` (so a 64x256x256 volume ends at
    4x4x4 and an anisotropic volume is reduced per axis), then a 3x3x3 convolution, flattening and two
    fully connected layers give the latent z [N, z_dim].
  * `MappingNetwork`: z normalised to unit second moment, `mapping_layers` fully connected layers with a
    learning-rate multiplier of 0.01 -> style w [N, w_dim] (one w for every synthesis layer).
  * `SynthesisNetwork`: a learned 4x4 constant, then per resolution (4, 8, ..., img_res) modulated 3x3
    convolutions with demodulation (the first one of each block after x2 bilinear upsampling), per-layer
    noise with learned strength, and a 1x1 modulated "to-grey" layer whose output is upsampled and summed
    across resolutions (StyleGAN2 skip generator); the sum is scaled by 1/sqrt(number of resolutions) so
    that the untrained generator's image is not saturated by the output map.
  * Output map: the summed skip image y is mapped to [0, 1] by ``(tanh(y) + 1) / 2`` (= sigmoid(2y)), so
    y = 0 gives mid grey and G's raw output lives in the same [-1, 1] range that D works in.

Discriminator: the input in [0, 1] is rescaled to [-1, 1]; 1x1 from-grey, residual blocks (two 3x3
convolutions, the second after x2 average-pool downsampling, plus a 1x1 projection skip, summed and scaled
by 1/sqrt(2)) down to 4x4, minibatch standard deviation, 3x3 convolution, fully connected layer, logit.

Classifier: torchvision `densenet121(weights=None)` (never downloads), conv0 with one input channel, a
2-class head. The grey input in [0, 1] is normalised with the mean/std of ImageNet's RGB statistics
averaged over the channels (0.449, 0.226), which matches conv0 weights summed over RGB.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from xpgan import bounds as B
from xpgan.errors import InputError, XPGANError
from xpgan.model.beam import check_beam, drr_estimate, logit, plane_centres, project_slabs
from xpgan.model.layers import (
    EqualizedConv2d,
    EqualizedConv3d,
    EqualizedLinear,
    MinibatchStd,
    ModulatedConv2d,
    NoiseInjection,
    lrelu,
    normalize_2nd_moment,
    upsample2x,
)
from xpgan.model.transforms import HU_WINDOW, check_hu_window

NOISE_MODES = ("random", "const", "none")
# Generator architectures and the learning-rate multiplier of their mapping network:
#   "vector"    the paper's layout: the CT reaches the image only through the encoder's global vector z ->
#               mapping (StyleGAN's 0.01, the prior for a random-noise input) -> one style w that modulates a
#               learned 4x4 constant.
#   "projected" the same encoder, mapping and synthesis, plus a spatial path: every encoder level's 3D
#               features are collapsed along the beam (anterior-posterior) axis with learned weights into 2D
#               maps placed on the detector along each study's own beam (the DRR's geometry and the study's
#               spacing, model/beam.py), which enter the synthesis block of the matching resolution
#               (added to the constant at 4x4, after the upsampling convolution above it); w still
#               modulates every layer (co-modulation). Its mapping takes a deterministic, informative code,
#               so it learns at the full rate (1.0).
G_ARCHS: dict[str, float] = {"projected": 1.0, "vector": 0.01}


# --------------------------------------------------------------------------------------------- config
@dataclass
class NetConfig:
    ct_shape: tuple[int, int, int] = (64, 256, 256)    # (D, H, W) of the CT input, voxels
    img_res: int = 256                                 # output / discriminator / classifier resolution, px
    z_dim: int = 512                                   # encoder latent size
    w_dim: int = 512                                   # style size
    mapping_layers: int = 8
    mapping_lr_mult: Optional[float] = None            # None: the architecture's (G_ARCHS)
    g_arch: str = "projected"                          # generator architecture (G_ARCHS)
    beam_slabs: int = 4                                # projected G: anterior-posterior slabs per level
    drr_base: bool = True                              # projected G: start the image from the DRR estimate
    tone_curve: bool = True                            # projected G with drr_base: a learned tone curve of the
                                                       # estimate's line integrals (model/film.py)
    radiograph_head: bool = True                       # projected G: the radiograph head after the core
    enc_channels: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)  # 3D encoder width per level (last repeats)
    enc_min_res: int = 4                               # encoder stops halving an axis at this size, voxels
    syn_channel_base: int = 16384                      # StyleGAN2 width rule: min(base // res, max)
    syn_channel_max: int = 512
    d_channel_base: int = 16384
    d_channel_max: int = 512
    mbstd_group: int = 4
    mbstd_channels: int = 1
    hu_window: tuple[float, float] = HU_WINDOW          # HU mapped to [-1, 1] (model/transforms.py)

    def __post_init__(self):
        # JSON round trips turn tuples into lists; accept them back
        self.ct_shape = tuple(int(v) for v in self.ct_shape)
        self.enc_channels = tuple(int(v) for v in self.enc_channels)
        self.hu_window = check_hu_window(self.hu_window)
        if len(self.ct_shape) != 3 or min(self.ct_shape) < 1:
            raise XPGANError(f"ct_shape must be three positive sizes (D, H, W), got {self.ct_shape}")
        B.check_image_size("img_res", int(self.img_res), B.GENERATOR_MIN_IMAGE)
        if not self.enc_channels or min(self.enc_channels) < 1:
            raise XPGANError(f"enc_channels must be positive widths, got {self.enc_channels}")
        for name in ("beam_slabs", "z_dim", "w_dim", "syn_channel_base", "syn_channel_max", "d_channel_base",
                     "d_channel_max", "mbstd_group", "mbstd_channels", "enc_min_res"):
            if int(getattr(self, name)) < 1:
                raise XPGANError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mapping_layers < 0:
            raise XPGANError(f"mapping_layers must be >= 0, got {self.mapping_layers}")
        if self.g_arch not in G_ARCHS:
            raise XPGANError(f"g_arch must be one of {', '.join(G_ARCHS)}, got {self.g_arch!r}")
        if self.mapping_lr_mult is None:
            self.mapping_lr_mult = G_ARCHS[self.g_arch]
        if not self.mapping_lr_mult > 0:
            raise XPGANError(f"mapping_lr_mult must be > 0, got {self.mapping_lr_mult}")

    @property
    def needs_beam(self) -> bool:
        """Whether the generator reads each study's beam (model/beam.py): the projected one does."""
        return self.g_arch == "projected"

    @property
    def has_head(self) -> bool:
        """Whether G ends in the radiograph head (model/film.py): the projected one, unless turned off."""
        return self.needs_beam and self.radiograph_head

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise XPGANError(f"unknown network config keys: {', '.join(sorted(unknown))}")
        # a config that names no architecture was written by the global-vector generator, one without
        # drr_base by a generator without the DRR estimate, one without tone_curve / radiograph_head by a
        # generator without them
        return cls(**{"g_arch": "vector", "drr_base": False, "tone_curve": False, "radiograph_head": False, **d})


PRESETS: dict[str, NetConfig] = {
    "paper": NetConfig(),
    "tiny": NetConfig(ct_shape=(16, 32, 32), img_res=32, z_dim=32, w_dim=32, mapping_layers=2,
                      enc_channels=(4, 8, 16, 32), syn_channel_base=512, syn_channel_max=32,
                      d_channel_base=512, d_channel_max=32, mbstd_group=2),
}


def net_config_for(preset: str, ct_shape, img_res: int, **overrides) -> NetConfig:
    """The preset's widths with the store's sizes (and any other field overridden by keyword)."""
    if preset not in PRESETS:
        raise XPGANError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    overrides.setdefault("mapping_lr_mult", None)      # the architecture's, unless given
    return dataclasses.replace(PRESETS[preset], ct_shape=tuple(ct_shape), img_res=int(img_res), **overrides)


def _syn_channels(cfg: NetConfig, res: int) -> int:
    return min(cfg.syn_channel_base // res, cfg.syn_channel_max)


def _d_channels(cfg: NetConfig, res: int) -> int:
    return min(cfg.d_channel_base // res, cfg.d_channel_max)


def encoder_plan(cfg: NetConfig) -> list[tuple[tuple[int, int, int], tuple[int, int, int], int]]:
    """Per encoder level: (spatial size (d, h, w) at that level, downsampling factors that led to it,
    channels). Level 0 is the input resolution; an axis is halved while it is >= 2 * enc_min_res."""
    dims = tuple(cfg.ct_shape)
    plan = [(dims, (1, 1, 1), cfg.enc_channels[0])]
    while True:
        down = tuple(2 if s >= 2 * cfg.enc_min_res else 1 for s in dims)
        if down == (1, 1, 1):
            break
        dims = tuple(s // f for s, f in zip(dims, down))
        level = len(plan)
        plan.append((dims, down, cfg.enc_channels[min(level, len(cfg.enc_channels) - 1)]))
    return plan


# ------------------------------------------------------------------------------------------ generator
class ResBlock3D(nn.Module):
    """conv3x3x3 -> (downsample) conv3x3x3, plus a (downsample) 1x1x1 projection skip; sum / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, down: tuple[int, int, int]):
        super().__init__()
        self.conv0 = EqualizedConv3d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv3d(in_ch, out_ch, 3, down=down)
        self.skip = EqualizedConv3d(in_ch, out_ch, 1, bias=False, activation="linear", down=down)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.conv0(x))
        return (y + self.skip(x)) * math.sqrt(0.5)


class CTEncoder(nn.Module):
    """[N, 1, D, H, W] in [-1, 1] -> z [N, z_dim]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        plan = encoder_plan(cfg)
        self.plan = plan
        self.from_ct = EqualizedConv3d(1, plan[0][2], 1)
        self.blocks = nn.ModuleList(
            ResBlock3D(plan[i - 1][2], plan[i][2], plan[i][1]) for i in range(1, len(plan)))
        dims, _, ch = plan[-1]
        self.conv = EqualizedConv3d(ch, ch, 3)
        self.fc = EqualizedLinear(ch * dims[0] * dims[1] * dims[2], cfg.z_dim, activation="lrelu")
        self.out = EqualizedLinear(cfg.z_dim, cfg.z_dim)
        self.ct_shape = tuple(cfg.ct_shape)

    def forward(self, ct: Tensor) -> Tensor:
        return self.features(ct)[1]

    def features(self, ct: Tensor) -> tuple[list[Tensor], Tensor]:
        """(per-level feature volumes [N, C_l, D_l, H_l, W_l] as in `encoder_plan`, z [N, z_dim])."""
        if ct.ndim != 5 or ct.shape[1] != 1 or tuple(ct.shape[2:]) != self.ct_shape:
            raise ValueError(f"expected CT [N, 1, {', '.join(map(str, self.ct_shape))}], got {list(ct.shape)}")
        x = self.from_ct(ct)
        levels = [x]
        for block in self.blocks:
            x = block(x)
            levels.append(x)
        x = self.conv(x)
        return levels, self.out(self.fc(x.flatten(1)))


def projection_plan(cfg: NetConfig) -> dict[int, int]:
    """Synthesis resolution -> the encoder level whose beam-collapsed map feeds it: the level whose
    right-left size is the smallest one >= the resolution (the coarsest level for resolutions below it)."""
    plan = encoder_plan(cfg)
    widths = [dims[2] for dims, _, _ in plan]
    out = {}
    for i in range(2, int(math.log2(cfg.img_res)) + 1):
        res = 2 ** i
        fitting = [lvl for lvl, w in enumerate(widths) if w >= res]
        out[res] = fitting[-1] if fitting else len(plan) - 1
    return out


class BeamProjection(nn.Module):
    """Encoder feature volumes [N, C, D, H, W] -> 2D maps [N, C, res, res] on the detector, along each
    study's own beam (model/beam.py). The anterior-posterior axis H (the beam's) is split into `slabs`
    contiguous slabs; each slab is collapsed by a learned weighted sum along H, one weight per (channel, H
    position), and its map is sampled where the detector pixels' beam cross the slab's centre plane (so a
    cone beam's magnification, which differs between planes near the source and near the detector, is
    followed slab by slab); the slab maps are summed. The weights start at 1/H (the mean along the beam),
    so the untrained map is an average-intensity view of the features placed where the DRR puts them."""

    def __init__(self, channels: int, depth: int, slabs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, depth))
        self.gain = 1.0 / depth
        self.ranges, planes = plane_centres(depth, slabs)
        self.register_buffer("planes", planes, persistent=False)

    def forward(self, x: Tensor, beam: Tensor, res: int) -> Tensor:
        return project_slabs(x, beam, res, self.ranges, self.planes, (self.weight * self.gain).to(x.dtype))


class MappingNetwork(nn.Module):
    """z [N, z_dim] -> w [N, w_dim]; fully connected layers with a small learning-rate multiplier."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(
            EqualizedLinear(a, b, lr_mult=cfg.mapping_lr_mult, activation="lrelu") for a, b in zip(dims, dims[1:]))
        self.project = (EqualizedLinear(cfg.z_dim, cfg.w_dim, lr_mult=cfg.mapping_lr_mult)
                        if cfg.mapping_layers == 0 and cfg.z_dim != cfg.w_dim else None)

    def forward(self, z: Tensor) -> Tensor:
        x = normalize_2nd_moment(z.float())
        for layer in self.layers:
            x = layer(x)
        return self.project(x) if self.project is not None else x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (demodulated) + noise + bias + leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, *, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, demodulate=True, up=up)
        self.noise = NoiseInjection(res)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str) -> Tensor:
        x = self.noise(self.conv(x, w), noise_mode)
        return lrelu(x + self.bias.to(x.dtype)[None, :, None, None])


class ToGrey(nn.Module):
    """1x1 modulated conv without demodulation, plus bias: features -> 1-channel image contribution."""

    def __init__(self, in_ch: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 1, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        y = self.conv(x, w)
        return y + self.bias.to(y.dtype)[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: (4x4 constant | upsampling modulated conv), an optional spatial condition map added
    through a 1x1 convolution (sum scaled by 1/sqrt(2)), a modulated conv, and the to-grey skip output."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, cond_ch: int = 0):
        super().__init__()
        self.res = res
        if res == 4:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, res, up=True)
        self.from_cond = EqualizedConv2d(cond_ch, out_ch, 1, activation="linear") if cond_ch else None
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, res)
        self.to_grey = ToGrey(out_ch, w_dim)

    def forward(self, x, img, w: Tensor, noise_mode: str, cond: Optional[Tensor] = None):
        if self.const is not None:
            x = self.const[None].expand(w.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, w, noise_mode)
        if self.from_cond is not None:
            if cond is None or tuple(cond.shape[2:]) != (self.res, self.res):
                raise ValueError(f"the {self.res}x{self.res} block needs a condition map of that size")
            x = (x + self.from_cond(cond).to(x.dtype)) * math.sqrt(0.5)
        x = self.conv1(x, w, noise_mode)
        y = self.to_grey(x, w).float()
        img = y if img is None else upsample2x(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """w [N, w_dim] -> raw image y [N, 1, R, R] (float32, unbounded)."""

    def __init__(self, cfg: NetConfig, cond_channels: Optional[dict[int, int]] = None):
        super().__init__()
        log2 = int(math.log2(cfg.img_res))
        self.resolutions = [2 ** i for i in range(2, log2 + 1)]
        cond_channels = cond_channels or {}
        blocks, in_ch = [], 0
        for res in self.resolutions:
            out_ch = _syn_channels(cfg, res)
            blocks.append(SynthesisBlock(in_ch, out_ch, cfg.w_dim, res, cond_channels.get(res, 0)))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        # each to-grey output starts with roughly unit variance (and a random offset); scaling the sum by
        # 1/sqrt(#blocks) keeps the initial image inside tanh's near-linear range instead of saturated
        self.skip_gain = 1.0 / math.sqrt(len(self.blocks))

    def forward(self, w: Tensor, noise_mode: str = "random", conds: Optional[dict[int, Tensor]] = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {noise_mode!r}; allowed: {', '.join(NOISE_MODES)}")
        conds = conds or {}
        x = img = None
        for block in self.blocks:
            x, img = block(x, img, w, noise_mode, conds.get(block.res))
        return img * self.skip_gain


class Generator(nn.Module):
    """G(ct, beam): [N, 1, D, H, W] in [-1, 1] -> [N, 1, R, R] in [0, 1] (float32); `cfg.g_arch` (G_ARCHS)
    chooses the global-vector layout or the beam-projected spatial path on top of it. `beam` [N, 8, 3]: each
    study's beam (model/beam.py `study_beam`; the CT datasets give it as item "beam"); the projected path
    needs it, the vector layout ignores it.

    With `cfg.drr_base` (projected), the image starts from the study's DRR estimate computed from G's own
    input (model/beam.py `drr_estimate`): the core is sigmoid(t(logit(b)) + 2 g y), b the estimate, t the
    identity (with `cfg.tone_curve` a learned monotone curve that starts as the identity, model/film.py), y
    the synthesis network's output and g a learned gain that starts at 0, so the
    untrained G draws the estimate and the networks learn what turns it into the study's image (the
    residual in the output's logit). With `cfg.radiograph_head` (projected) the core goes through the
    radiograph head (model/film.py), whose output is G's image; `forward(..., with_core=True)` also returns
    the core, which the L1 term compares with the DRR."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        from xpgan.model.film import RadiographHead, ToneCurve

        self.cfg = cfg
        self.encoder = CTEncoder(cfg)
        self.mapping = MappingNetwork(cfg)
        if cfg.needs_beam:
            self.plan = projection_plan(cfg)
            levels = encoder_plan(cfg)
            # each level is projected once, at the finest resolution it feeds; coarser ones are pooled from it
            self.map_res = {lvl: max(r for r, used in self.plan.items() if used == lvl)
                            for lvl in set(self.plan.values())}
            self.projections = nn.ModuleDict(
                {str(lvl): BeamProjection(levels[lvl][2], levels[lvl][0][1], cfg.beam_slabs)
                 for lvl in sorted(self.map_res)})
            cond = {res: levels[lvl][2] for res, lvl in self.plan.items()}
        else:
            self.plan, self.map_res, self.projections, cond = {}, {}, None, None
        self.synthesis = SynthesisNetwork(cfg, cond)
        self.drr_base = cfg.needs_beam and cfg.drr_base
        self.residual_gain = nn.Parameter(torch.zeros(())) if self.drr_base else None
        self.tone = ToneCurve() if self.drr_base and cfg.tone_curve else None
        self.head = RadiographHead(cfg.w_dim, cfg.img_res) if cfg.has_head else None

    def forward(self, ct: Tensor, beam: Optional[Tensor] = None, noise_mode: str = "random", *,
                with_core: bool = False):
        feats, z = self.encoder.features(ct)                         # per level [N, C, D, H, W]; z [N, z_dim]
        w = self.mapping(z)                                          # [N, w_dim]
        conds = None
        if self.projections is not None:
            check_beam(beam, ct.shape[0])
            beam = beam.to(ct.device)
            maps = {lvl: self.projections[str(lvl)](feats[lvl], beam, res)
                    for lvl, res in self.map_res.items()}            # [N, C_l, res, res]
            conds = {res: _resize_map(maps[lvl], res) for res, lvl in self.plan.items()}
        y = self.synthesis(w, noise_mode, conds).float()             # [N, 1, R, R]
        if self.drr_base:
            base = logit(drr_estimate(ct, beam, self.cfg.img_res, self.cfg.hu_window))   # [N, 1, R, R], no gradient
            if self.tone is not None:
                base = self.tone(base)
            y = y * self.residual_gain + 0.5 * base
        core = (torch.tanh(y) + 1.0) * 0.5                           # = sigmoid(2 y)
        img = self.head(core, w, noise_mode) if self.head is not None else core
        return (img, core) if with_core else img


def _resize_map(x: Tensor, res: int) -> Tensor:
    """[N, C, r, r] -> [N, C, res, res] by area averaging (res <= r)."""
    return x if x.shape[-1] == res else torch.nn.functional.adaptive_avg_pool2d(x, (res, res))


# ------------------------------------------------------------------------------------- discriminator
class DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualizedConv2d(in_ch, out_ch, 1, bias=False, activation="linear", down=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(self.conv0(x))
        return (y + self.skip(x)) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """D(img): [N, 1, R, R] in [0, 1] -> logits [N]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.img_res = cfg.img_res
        log2 = int(math.log2(cfg.img_res))
        self.from_grey = EqualizedConv2d(1, _d_channels(cfg, cfg.img_res), 1)
        self.blocks = nn.ModuleList(
            DBlock(_d_channels(cfg, 2 ** i), _d_channels(cfg, 2 ** (i - 1))) for i in range(log2, 2, -1))
        ch = _d_channels(cfg, 4)
        self.mbstd = MinibatchStd(cfg.mbstd_group, cfg.mbstd_channels)
        self.conv = EqualizedConv2d(ch + cfg.mbstd_channels, ch, 3)
        self.fc = EqualizedLinear(ch * 16, ch, activation="lrelu")
        self.out = EqualizedLinear(ch, 1)

    def forward(self, img: Tensor) -> Tensor:
        r = self.img_res
        if img.ndim != 4 or img.shape[1] != 1 or img.shape[2] != r or img.shape[3] != r:
            raise ValueError(f"expected images [N, 1, {r}, {r}], got {list(img.shape)}")
        x = self.from_grey(img * 2.0 - 1.0)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))                                 # [N, C, 4, 4]
        return self.out(self.fc(x.flatten(1))).squeeze(1).float()   # [N]


# ---------------------------------------------------------------------------------------- classifier
GREY_MEAN = 0.449   # mean of ImageNet's RGB means (0.485, 0.456, 0.406)
GREY_STD = 0.226    # mean of ImageNet's RGB stds (0.229, 0.224, 0.225)
_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                               r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class Classifier(nn.Module):
    """C(img): [N, 1, R, R] in [0, 1] -> logits [N, 2]; grey ImageNet-style normalisation inside."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(GREY_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(GREY_STD), persistent=False)

    def forward(self, img: Tensor) -> Tensor:
        if img.ndim != 4 or img.shape[1] != 1:
            raise ValueError(f"expected images [N, 1, R, R], got {list(img.shape)}")
        return self.net((img - self.mean) / self.std)


def _read_state_dict(path: str) -> dict[str, Tensor]:
    if not os.path.isfile(path):
        raise InputError(path, "classifier weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise InputError(path, f"cannot read as a torch state_dict ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(path, "not a torchvision DenseNet121 state_dict (expected a dict of tensors)")
    out = {}
    for key, value in obj.items():
        key = key[len("module."):] if key.startswith("module.") else key
        # checkpoints written before torchvision 0.3 name layers "norm.1" instead of "norm1"
        m = _OLD_DENSENET_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def _load_imagenet_weights(net: nn.Module, sd: dict[str, Tensor], path: str) -> None:
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}   # drop the 1000-class head
    conv0 = sd.get("features.conv0.weight")
    if conv0 is not None and conv0.ndim == 4 and conv0.shape[1] == 3:
        sd["features.conv0.weight"] = conv0.sum(dim=1, keepdim=True)       # RGB -> grey
    target = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    missing = [k for k in target if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in target]
    bad_shape = [f"{k} {list(sd[k].shape)} != {list(v.shape)}" for k, v in target.items()
                 if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or bad_shape:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
            if items:
                parts.append(f"{len(items)} {name} (e.g. {', '.join(items[:3])})")
        raise InputError(path, "not a torchvision DenseNet121 ImageNet state_dict: " + "; ".join(parts))
    sd = {k: v.to(target[k].dtype) for k, v in sd.items()}
    net.load_state_dict(sd, strict=False)


def build_classifier(cfg: NetConfig, weights_path: str | None = None) -> nn.Module:
    """DenseNet121 with one input channel and two classes; ImageNet weights from a local torchvision
    state_dict file if `weights_path` is given (conv0 summed over RGB, 1000-class head dropped)."""
    from torchvision.models import densenet121

    B.check_image_size("the DenseNet121 classifier's img_res", int(cfg.img_res), B.CLASSIFIER_MIN_IMAGE)
    sd = _read_state_dict(os.fspath(weights_path)) if weights_path is not None else None   # fail fast
    net = densenet121(weights=None)                                   # never downloads
    old = net.features.conv0
    net.features.conv0 = nn.Conv2d(1, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                                   padding=old.padding, bias=False)
    nn.init.kaiming_normal_(net.features.conv0.weight)
    net.classifier = nn.Linear(net.classifier.in_features, 2)
    nn.init.zeros_(net.classifier.bias)
    if sd is not None:
        _load_imagenet_weights(net, sd, os.fspath(weights_path))
    return Classifier(net)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["NetConfig", "PRESETS", "G_ARCHS", "projection_plan", "BeamProjection", "net_config_for",
           "encoder_plan", "Generator",
           "Discriminator", "Classifier", "build_classifier", "count_parameters", "CTEncoder",
           "MappingNetwork", "SynthesisNetwork", "NOISE_MODES", "GREY_MEAN", "GREY_STD"]
