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

Realism (are G's images radiographs?) takes image sets ``[n, 1, R, R]`` (or ``[n, R, R]``) of real
radiographs and of generated images:

* `linear_two_sample_auroc`: a classifier two-sample test. An L2 logistic regression on the images
  average-pooled to `pool` x `pool` pixels (features standardised on the training folds) learns to tell the
  two sets apart; its out-of-fold AUROC over stratified folds is the figure: 0.5 = indistinguishable,
  1.0 = separable by a linear read of coarse brightness.
* `cnn_two_sample_auroc`: the same test with a small CNN trained from scratch on the full images (three
  strided convolutions, global average pooling), so that texture, noise and edges count as well.
* `pixel_w1`: the 1-Wasserstein distance between the two sets' pooled pixel-value distributions.
* `sd_ratio`: between-image variation (`variation` of the full images) of a set over that of the real set.
* `realism_figures`: all of them, for several sets against one real set.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from xpgan.model import metrics as M

REALISM_POOLS = (4, 8, 16)     # pooled sizes of the linear test (8 is the headline figure)
REALISM_FOLDS = 5


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


# ------------------------------------------------------------------------------------------- realism
def _images(x: Tensor) -> Tensor:
    """[n, 1, R, R] or [n, R, R] -> float64 [n, 1, R, R]."""
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
        raise ValueError(f"expected images [n, 1, R, R] or [n, R, R], got {list(x.shape)}")
    return x.double()


def pooled(images: Tensor, pool: int) -> Tensor:
    """Images average-pooled to pool x pool, flattened: [n, pool * pool] float64."""
    return torch.nn.functional.adaptive_avg_pool2d(_images(images), int(pool)).flatten(1)


def _two_sample_data(a: Tensor, b: Tensor, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0 for a, 1 for b) and each item's fold, stratified: each set spread evenly over the folds in
    a seeded random order."""
    na, nb = int(a.shape[0]), int(b.shape[0])
    if min(na, nb) < folds:
        raise ValueError(f"a two-sample test with {folds} folds needs at least {folds} images per set, got "
                         f"{na} and {nb}")
    rng = np.random.default_rng(seed)
    fold = np.concatenate([rng.permutation(np.arange(na) % folds), rng.permutation(np.arange(nb) % folds)])
    return np.concatenate([np.zeros(na, np.int64), np.ones(nb, np.int64)]), fold


def _balanced_weights(y: Tensor) -> Tensor:
    """Per-item weights that give both sets the same total weight (mean 1)."""
    n1 = y.sum()
    n0 = y.numel() - n1
    return torch.where(y > 0, 0.5 * y.numel() / n1, 0.5 * y.numel() / n0)


def _logistic_scores(x_train: Tensor, y_train: Tensor, x_test: Tensor, l2: float, iters: int = 50) -> Tensor:
    """Fit w, b minimising the class-balanced mean log loss + l2/2 |w|^2 on standardised features by
    Newton's method (float64; the loss is strictly convex, so it converges in a few iterations); the test
    items' logits."""
    mu, sd = x_train.mean(dim=0), x_train.std(dim=0).clamp(min=1e-8)
    ones = torch.ones(x_train.shape[0], 1, dtype=torch.float64)
    xt = torch.cat([(x_train - mu) / sd, ones], dim=1)                       # [n, d + 1], bias last
    xs = torch.cat([(x_test - mu) / sd, torch.ones(x_test.shape[0], 1, dtype=torch.float64)], dim=1)
    y, wts = y_train.double(), _balanced_weights(y_train.double())
    n, d1 = xt.shape
    reg = torch.full((d1,), float(l2), dtype=torch.float64)
    reg[-1] = 0.0                                                            # the bias is not penalised
    w = torch.zeros(d1, dtype=torch.float64)
    for _ in range(iters):
        p = torch.sigmoid(xt @ w)
        grad = xt.T @ (wts * (p - y)) / n + reg * w
        hess = (xt.T * (wts * p * (1.0 - p))) @ xt / n + torch.diag(reg + 1e-10)
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(step.abs().max()) < 1e-9:
            break
    return xs @ w


def linear_two_sample_auroc(a: Tensor, b: Tensor, *, pool: int = 8, folds: int = REALISM_FOLDS, seed: int = 0,
                            l2: float = 1e-2) -> float:
    """Out-of-fold AUROC of an L2 logistic regression telling images `b` from images `a`, on the images
    average-pooled to pool x pool (module docstring). Deterministic in `seed`."""
    y, fold = _two_sample_data(a, b, folds, seed)
    x = torch.cat([pooled(a, pool), pooled(b, pool)])
    yt = torch.from_numpy(y)
    scores = np.zeros(len(y))
    for k in range(folds):
        tr, te = torch.from_numpy(fold != k), torch.from_numpy(fold == k)
        scores[fold == k] = _logistic_scores(x[tr], yt[tr], x[te], l2).numpy()
    return float(M.auroc(y, scores))


class _TwoSampleCNN(nn.Module):
    """[n, 1, R, R] -> logits [n]: three stride-2 3x3 convolutions (8, 16, 32 channels), global average pool."""

    def __init__(self):
        super().__init__()
        layers, ch = [], 1
        for out in (8, 16, 32):
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x * 2.0 - 1.0).mean(dim=(2, 3))).squeeze(1)


def cnn_two_sample_auroc(a: Tensor, b: Tensor, *, folds: int = REALISM_FOLDS, seed: int = 0, steps: int = 200,
                         batch: int = 32, lr: float = 2e-3) -> float:
    """Out-of-fold AUROC of a small CNN (`_TwoSampleCNN`, trained from scratch for `steps` Adam steps on
    class-balanced batches of each training fold) telling images `b` from images `a`. Deterministic in
    `seed` on one machine; the figure is a property of the two sets, a CNN that separates them scores ~1."""
    y, fold = _two_sample_data(a, b, folds, seed)
    x = torch.cat([_images(a), _images(b)]).float()
    scores = np.zeros(len(y))
    for k in range(folds):
        gen = torch.Generator().manual_seed(seed * 1000 + k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + k)
            net = _TwoSampleCNN()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        idx = [np.flatnonzero((fold != k) & (y == c)) for c in (0, 1)]
        half = max(1, batch // 2)
        with torch.enable_grad():           # also when called under no_grad (a report)
            _fit_cnn(net, opt, x, y, idx, half, steps, gen)
        with torch.no_grad():
            test = np.flatnonzero(fold == k)
            scores[test] = torch.cat([net(x[test[i:i + 256]]) for i in range(0, len(test), 256)]).double().numpy()
    return float(M.auroc(y, scores))


def _fit_cnn(net, opt, x, y, idx, half, steps, gen) -> None:
    """`steps` Adam steps of the two-sample CNN on class-balanced batches (`half` of each set) of the items
    `idx` (one index array per set)."""
    for _ in range(steps):
        pick = np.concatenate([i[torch.randint(0, len(i), (half,), generator=gen).numpy()] for i in idx])
        target = torch.from_numpy(y[pick]).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[pick]), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def pixel_w1(a: Tensor, b: Tensor, *, pool: int = 8) -> float:
    """1-Wasserstein distance between the pooled pixel values of two image sets (all pixels of all images
    of a set as one distribution): the mean absolute difference of their quantile functions."""
    va, vb = pooled(a, pool).flatten().numpy(), pooled(b, pool).flatten().numpy()
    q = (np.arange(4096) + 0.5) / 4096
    return float(np.mean(np.abs(np.quantile(va, q) - np.quantile(vb, q))))


def sd_ratio(images: Tensor, real: Tensor) -> float:
    """Between-image variation of `images` over that of `real` (`variation` of the full images)."""
    return variation(_images(images).flatten(1)) / variation(_images(real).flatten(1))


def realism_figures(real: Tensor, sets: dict[str, Tensor], *, seed: int = 0, cnn: bool = True) -> dict:
    """For each named image set: the linear two-sample AUROC against `real` at every pooled size
    (`linear_auroc_4`, `_8`, `_16`), the CNN's (`cnn_auroc`, unless cnn=False), the pooled pixel-value W1
    (`pixel_w1`) and the between-image sd ratio (`sd_ratio`); plus `real_sd` and `real_count`."""
    out: dict = {"real_count": int(real.shape[0]), "real_sd": variation(_images(real).flatten(1))}
    for name, imgs in sets.items():
        fig = {f"linear_auroc_{p}": linear_two_sample_auroc(real, imgs, pool=p, seed=seed) for p in REALISM_POOLS}
        if cnn:
            fig["cnn_auroc"] = cnn_two_sample_auroc(real, imgs, seed=seed)
        fig["pixel_w1"] = pixel_w1(imgs, real)
        fig["sd_ratio"] = sd_ratio(imgs, real)
        fig["count"] = int(imgs.shape[0])
        out[name] = fig
    return out
