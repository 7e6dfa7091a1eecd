"""XPGAN losses (paper Eq. 1-4) as one object with StyleGAN2-ada style phases.

Total objective: L(C) + V(G, D) + lambda_l1 * R(G), with
  L(C) = CE(C(cxr), y_cxr) + lambda_cls * CE(C(G(ct)), y_ct)     (mode "drr": the stored DRRs instead of G(ct);
                                                                  mode "baseline": the first term only)
  V    = non-saturating logistic loss: D minimises softplus(D(G(ct))) + softplus(-D(cxr)),
         G minimises softplus(-D(G(ct)));  lazy R1 on D's real inputs every r1_interval steps
  R(G) = mean |G(ct) - DRR(ct)|, or, for a generator with a radiograph head (model/film.py), mean
         |core(ct) - DRR(ct)|: the L1 term keeps G's DRR-like core on the study while D and the classifier
         own the head that makes it a radiograph

Each phase updates exactly one network (`PHASE_NETWORK`); the trainer zeroes that network's gradients,
calls `accumulate_gradients(phase, batch)` and steps that network's optimizer:
  "G"    G's loss: softplus(-D(G(ct))) + lambda_l1 * L1 + lambda_cls * CE(C(G(ct)), y_ct). The last term is
         G's share of L(C) (joint training): G receives the gradient of the classifier loss on its images.
  "D"    D's logistic loss on real CXRs and G(ct) (no gradient into G).
  "Dreg" lazy R1: r1_gamma / 2 * ||dD/dx||^2 * r1_interval on real CXRs, x the [-1, 1] image D sees
         internally (StyleGAN2's convention, so its gamma values carry over). Computed in float32 with
         autocast off. The trainer calls it only when step % r1_interval == 0.
  "C"    C's loss L(C); images from G are detached (G's share was applied in phase "G"). The real-CXR
         term may weight its classes (`cxr_class_weight`, the trainer's `class_balance="weight"`).
C always sees the real CXRs and the extra images (G(ct) or DRRs) in one batch [cxr; extra] so that its
batch-norm statistics are the same in phases "G" and "C" (its running statistics are updated in both).

Gradient hygiene (done here, not by the trainer): during a phase the other networks' parameters have
`requires_grad` switched off (restored afterwards), so no weight gradients are computed for them (several
processes reduce gradients themselves, model/distributed.py, so no network is wrapped).

Fakes cache: G(ct) made in phase "G" is kept (detached) and reused by phases "D" and "C" of the same batch
(same `batch["ct"]` tensor object, unmodified), saving two generator forwards per step; set
`reuse_fakes=False` to regenerate.

Mixed precision: pass `amp_dtype` (torch.float16 / torch.bfloat16) and the forwards run under
`torch.autocast` (backward outside it); losses are reduced in float32; with float16 pass a GradScaler as
`scaler` so the backward pass uses `scaler.scale(loss)`.
"""
from __future__ import annotations

import contextlib
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xpgan.model.config import MODES, TrainConfig

PHASES_FOR_MODE = {"xpgan": ("G", "D", "Dreg", "C"), "drr": ("C",), "baseline": ("C",)}
PHASE_NETWORK = {"G": "G", "D": "D", "Dreg": "D", "C": "C"}   # the network each phase updates
_PHASE_KEYS = {
    ("xpgan", "G"): ("ct", "drr", "ct_label", "cxr"),
    ("xpgan", "D"): ("ct", "cxr"),
    ("xpgan", "Dreg"): ("cxr",),
    ("xpgan", "C"): ("ct", "ct_label", "cxr", "cxr_label"),
    ("drr", "C"): ("drr", "ct_label", "cxr", "cxr_label"),
    ("baseline", "C"): ("cxr", "cxr_label"),
}


def cross_entropy_known(logits: Tensor, labels: Tensor, class_weight: Tensor | None = None) -> Tensor:
    """Mean cross entropy over items whose label is >= 0 (label -1 = unknown is skipped); 0 if none.
    With `class_weight` [2], item i counts class_weight[label_i] times (a weighted mean, as torch's
    `F.cross_entropy(weight=...)` takes it)."""
    labels = labels.long()
    valid = (labels >= 0).float()
    per_item = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    if class_weight is not None:
        valid = valid * class_weight.to(per_item.device, torch.float32)[labels.clamp(min=0)]
    return (per_item * valid).sum() / valid.sum().clamp(min=1e-12 if class_weight is not None else 1.0)


def standardize(x: Tensor) -> Tensor:
    """Each image [N, 1, R, R] minus its mean, over its sd (a flat image stays 0)."""
    x = x.float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3)


def l1_term(image: Tensor, drr: Tensor, space: str) -> Tensor:
    """mean |image - drr| in `space` (TrainConfig.l1_space): the intensities, or the standardised images."""
    if space == "normalized":
        return (standardize(image) - standardize(drr)).abs().mean()
    return (image.float() - drr.float()).abs().mean()


def translate(x: Tensor, share: float = 0.125) -> Tensor:
    """Each image of [N, C, R, R] shifted by its own random whole-pixel offset of up to `share` of its side in
    both directions, zeros shifted in (the translation of DiffAugment / ADA; differentiable in x)."""
    n, _, r, _ = x.shape
    m = max(1, int(round(share * r)))
    shift = torch.randint(-m, m + 1, (n, 2), device=x.device)
    pad = torch.nn.functional.pad(x, (m, m, m, m))
    rows = (torch.arange(r, device=x.device)[None, :] + m - shift[:, :1])          # [N, R]
    cols = (torch.arange(r, device=x.device)[None, :] + m - shift[:, 1:])
    idx_r = rows[:, None, :, None].expand(n, x.shape[1], r, r + 2 * m)
    out = pad.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(n, x.shape[1], r, r)
    return out.gather(3, idx_c)


class XPGANLoss:
    def __init__(self, G: nn.Module | None, D: nn.Module | None, C: nn.Module, *, mode: str = "xpgan",
                 lambda_l1: float = TrainConfig.lambda_l1, lambda_cls: float = 1.0,
                 r1_gamma: float = TrainConfig.r1_gamma, r1_interval: int = TrainConfig.r1_interval,
                 amp_dtype: torch.dtype | None = None, reuse_fakes: bool = True,
                 cxr_class_weight: tuple[float, float] | None = None, l1_space: str = TrainConfig.l1_space,
                 d_augment: str = TrainConfig.d_augment):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
        if mode == "xpgan" and (G is None or D is None):
            raise ValueError("mode 'xpgan' needs a generator and a discriminator")
        if C is None:
            raise ValueError("a classifier is required in every mode")
        if r1_interval < 1:
            raise ValueError(f"r1_interval must be >= 1, got {r1_interval}")
        self.G, self.D, self.C = G, D, C
        self.mode = mode
        self.phases = PHASES_FOR_MODE[mode]
        self.lambda_l1, self.lambda_cls = float(lambda_l1), float(lambda_cls)
        self.r1_gamma, self.r1_interval = float(r1_gamma), int(r1_interval)
        self.amp_dtype = amp_dtype
        self.reuse_fakes = bool(reuse_fakes)
        self.l1_space, self.d_augment = l1_space, d_augment
        # weights of the real-CXR cross entropy per class (class imbalance; None: unweighted)
        self.cxr_class_weight = (torch.tensor([float(v) for v in cxr_class_weight])
                                 if cxr_class_weight is not None else None)
        self._cache: tuple[weakref.ref, int, Tensor] | None = None
        self._phase_net: str | None = None

    # ------------------------------------------------------------------------------------------ API
    def accumulate_gradients(self, phase: str, batch: dict, *, gain: float = 1.0, scaler=None) -> dict[str, float]:
        """Forward + backward of `phase` on `batch` (loss scaled by `gain`); returns detached float stats."""
        if phase not in self.phases:
            raise ValueError(f"phase {phase!r} is not part of mode {self.mode!r}; allowed: {', '.join(self.phases)}")
        missing = [k for k in _PHASE_KEYS[(self.mode, phase)] if k not in batch]
        if missing:
            raise KeyError(f"phase {phase!r} of mode {self.mode!r} needs batch keys {missing}")
        self._phase_net = PHASE_NETWORK[phase]
        try:
            with self._freeze_others():
                loss, stats = {"G": self._phase_g, "D": self._phase_d, "Dreg": self._phase_dreg,
                               "C": self._phase_c}[phase](batch)
                loss = loss * gain
                (scaler.scale(loss) if scaler is not None else loss).backward()
        finally:
            self._phase_net = None
        names = list(stats)
        values = torch.stack([stats[k].detach().float().reshape(()) for k in names]).cpu().tolist()
        return dict(zip(names, values))

    def forget_fakes(self) -> None:
        self._cache = None

    # ---------------------------------------------------------------------------------------- phases
    def _phase_g(self, batch):
        ct, drr, cxr = batch["ct"], batch["drr"], batch["cxr"]
        fake, core = self._generate(batch, grad=True, with_core=True)   # [N, 1, R, R] each
        with self._autocast(ct):
            logits = self._run("D", fake)                             # [N]
        g_adv = F.softplus(-logits.float()).mean()
        g_l1 = l1_term(core, drr, self.l1_space)
        loss = g_adv + self.lambda_l1 * g_l1
        stats = {"loss/G_adv": g_adv, "loss/G_l1": g_l1}
        if self.lambda_cls != 0.0:
            with self._autocast(ct):
                c_logits = self._run("C", torch.cat([cxr.to(fake.dtype), fake]))   # [M + N, 2]
            g_cls = cross_entropy_known(c_logits[cxr.shape[0]:], batch["ct_label"])
            loss = loss + self.lambda_cls * g_cls
            stats["loss/G_cls"] = g_cls
        stats["loss/G"] = loss
        return loss, stats

    def _phase_d(self, batch):
        ct, cxr = batch["ct"], batch["cxr"]
        fake = self._generate(batch, grad=False)
        with self._autocast(ct):
            logits_fake = self._run("D", fake).float()               # [N]
            logits_real = self._run("D", cxr).float()                # [M]
        d_fake = F.softplus(logits_fake).mean()
        d_real = F.softplus(-logits_real).mean()
        loss = d_fake + d_real
        return loss, {"loss/D_real": d_real, "loss/D_fake": d_fake, "loss/D": loss,
                      "D/logit_real": logits_real.mean(), "D/logit_fake": logits_fake.mean()}

    def _phase_dreg(self, batch):
        x = (batch["cxr"].detach().float() * 2.0 - 1.0).requires_grad_(True)   # [M, 1, R, R] in [-1, 1]
        with torch.autocast(x.device.type, enabled=False):
            logits = self._run("D", (x + 1.0) * 0.5).float()          # [M]
            (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3))                # [M]
            r1 = penalty.mean() * (self.r1_gamma * 0.5) * self.r1_interval
        # logits * 0 keeps every D parameter in the graph (DDP expects a gradient for each)
        loss = r1 + (logits * 0.0).sum()
        return loss, {"loss/D_r1": r1, "D/r1_grad_norm2": penalty.mean()}

    def _phase_c(self, batch):
        cxr, cxr_label = batch["cxr"], batch["cxr_label"]
        if self.mode == "xpgan":
            extra, extra_name = self._generate(batch, grad=False), "loss/C_gen"
        elif self.mode == "drr":
            extra, extra_name = batch["drr"], "loss/C_drr"
        else:
            extra, extra_name = None, None
        images = cxr if extra is None else torch.cat([cxr, extra.to(cxr.dtype)])
        with self._autocast(cxr):
            logits = self._run("C", images).float()                  # [M (+ N), 2]
        m = cxr.shape[0]
        c_real = cross_entropy_known(logits[:m], cxr_label, self.cxr_class_weight)
        loss = c_real
        stats = {"loss/C_real": c_real}
        if extra is not None:
            c_extra = cross_entropy_known(logits[m:], batch["ct_label"])
            loss = loss + self.lambda_cls * c_extra
            stats[extra_name] = c_extra
        stats["loss/C"] = loss
        stats["acc/C_real"] = (logits[:m].argmax(1) == cxr_label.long()).float().mean()
        return loss, stats

    # --------------------------------------------------------------------------------------- helpers
    def _nets(self) -> dict[str, nn.Module]:
        return {k: v for k, v in (("G", self.G), ("D", self.D), ("C", self.C)) if v is not None}

    @contextlib.contextmanager
    def _freeze_others(self):
        saved = []
        for name, net in self._nets().items():
            if name == self._phase_net:
                continue
            for p in net.parameters():
                saved.append((p, p.requires_grad))
                p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)

    def _run(self, name: str, *args, **kwargs):
        if name == "D" and self.d_augment != "none":
            args = (translate(args[0]),) + args[1:]
        return self._nets()[name](*args, **kwargs)

    def _autocast(self, like: Tensor):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(like.device.type, dtype=self.amp_dtype)

    def _generate(self, batch: dict, *, grad: bool, with_core: bool = False):
        """G(ct, beam) as float32 (batch "ct" and, when the loader gives it, "beam"), with with_core also G's
        core (the image the L1 term sees: the same image for a generator without a head); with grad=False a
        cached detached copy from this batch's phase "G" is reused."""
        ct = batch["ct"]
        if not grad and not with_core and self.reuse_fakes and self._cache is not None:
            ref, version, fake = self._cache
            if ref() is ct and ct._version == version:
                return fake
        with self._autocast(ct), torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            fake, core = self._run("G", ct, batch.get("beam"), with_core=True)   # [N, 1, R, R] each
            fake, core = fake.float(), core.float()
        # a weak reference: the cache must not keep a finished step's CT batch alive
        self._cache = (weakref.ref(ct), ct._version, fake.detach()) if self.reuse_fakes else None
        return (fake, core) if with_core else fake


__all__ = ["XPGANLoss", "PHASES_FOR_MODE", "PHASE_NETWORK", "MODES", "cross_entropy_known", "l1_term", "translate"]
