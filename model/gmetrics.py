"""How well a generator follows its CT: figures over a set of studies never trained on.

Every function takes flattened images ``[n, P]`` (one row per study, pixels in [0, 1]) and returns plain
floats, so the study, `xpgan generate` and the demo report the same numbers:

* `identification`: the share of studies whose G(ct) correlates best (normalised cross-correlation) with
  its own DRR among all the studies' DRRs; chance is 1/n, a G that draws one image for all scores ~1/n.
* `specific`: each image minus the set's per-pixel mean image, so that identification and L1 compare only
  what is particular to each study. A G that bridges the DRR -> radiograph gap draws images whose common
  appearance differs from the DRRs' (contrast, scatter, blur); on chests that share most of their anatomy
  that common part dominates the plain NCC, while the study-specific part shows whether G follows the study.
* `matched_and_other_l1`: mean |G(ct_i) - DRR(ct_i)| and mean |G(ct_i) - DRR(ct_j)| over i != j; their
  ratio is ~1 for a G that ignores its input.
* `variation`: the mean over pixels of the across-study standard deviation; a G that follows the study
  varies about as much as the DRRs do.
* `kid`: kernel inception distance (unbiased MMD^2 with the cubic polynomial kernel) between two sets of
  feature vectors, e.g. a classifier's pooled features of G's images and of real radiographs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_pair(fake: Tensor, target: Tensor) -> None:
    if fake.ndim != 2 or fake.shape != target.shape:
        raise ValueError(f"expected two [n, P] tensors of one shape, got {list(fake.shape)} and {list(target.shape)}")


def ncc_matrix(fake: Tensor, target: Tensor) -> Tensor:
    """[n, n] normalised cross-correlation of every fake_i with every target_j (a flat image scores 0)."""
    _check_pair(fake, target)
    a = fake.double() - fake.double().mean(dim=1, keepdim=True)
    b = target.double() - target.double().mean(dim=1, keepdim=True)
    a = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return a @ b.T


def identification(fake: Tensor, target: Tensor) -> float:
    """Share of rows i whose best-correlated target is target_i (ties count as misses)."""
    m = ncc_matrix(fake, target)
    own = m.diagonal()
    rivals = m - torch.diag(torch.full_like(own, math.inf))
    return float((own > rivals.max(dim=1).values).double().mean()) if m.shape[0] > 1 else float("nan")


def specific(images: Tensor) -> Tensor:
    """[n, P] minus its per-pixel mean over the n rows (studies)."""
    return images.double() - images.double().mean(dim=0, keepdim=True)


def matched_and_other_l1(fake: Tensor, target: Tensor) -> tuple[float, float]:
    """(mean_i |fake_i - target_i|, mean over i != j of |fake_i - target_j|), each |.| a mean over pixels.
    The second is NaN for n < 2."""
    _check_pair(fake, target)
    n = target.shape[0]
    pair = torch.cdist(fake.double(), target.double(), p=1) / target.shape[1]          # [n, n]
    other = float((pair.sum() - pair.diagonal().sum()) / (n * (n - 1))) if n > 1 else float("nan")
    return float(pair.diagonal().mean()), other


def variation(images: Tensor) -> float:
    """Mean over pixels of the standard deviation across rows (studies) of [n, P]."""
    return float(images.double().std(dim=0).mean()) if images.shape[0] > 1 else float("nan")


def kid(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 between feature sets x [n, d] and y [m, d] with k(a, b) = (a.b / d + 1)^3."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"expected [n, d] and [m, d] feature sets with n, m >= 2, got {list(x.shape)}, "
                         f"{list(y.shape)}")
    x, y = x.double(), y.double()
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    n, m = x.shape[0], y.shape[0]
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2.0 * kxy.mean())


def generator_figures(fake: Tensor, drr: Tensor, mean_drr: Tensor) -> dict:
    """The per-study figures of G's images `fake` against their DRRs `drr` (both [n, P]) and a reference
    prediction, the per-pixel mean DRR `mean_drr` [P] of the studies G was trained on."""
    own, other = matched_and_other_l1(fake, drr)
    own_s, other_s = matched_and_other_l1(specific(fake), specific(drr))
    var_g, var_drr = variation(fake), variation(drr)
    return {"studies": int(drr.shape[0]), "identification": identification(fake, drr),
            "identification_chance": 1.0 / drr.shape[0],
            "identification_specific": identification(specific(fake), specific(drr)),
            "l1_own_over_other_specific": own_s / other_s if other_s else float("nan"),
            "l1_g": own, "l1_g_other_study": other, "l1_own_over_other": own / other if other else float("nan"),
            "l1_mean_image": float((drr.double() - mean_drr.double().flatten()[None]).abs().mean()),
            "l1_constant_mean": float((drr.double() - float(mean_drr.double().mean())).abs().mean()),
            "variation_g": var_g, "variation_drr": var_drr,
            "variation_ratio": var_g / var_drr if var_drr else float("nan")}
