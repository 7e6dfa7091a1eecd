"""The generator report: G_ema's images of a CT store's studies measured against their DRRs
(`xpgan.model.gmetrics`), the classifier's evidence on them, and their distance to real radiographs.

Used by `xpgan study` (held-out studies of other patients), `xpgan generate` and the demo, so every place
that evaluates G reports the same figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from xpgan.model import gmetrics
from xpgan.model import metrics as M
from xpgan.model.data import CTDataset, CXRDataset


@dataclass
class StudyImages:
    fake: Tensor            # [n, 1, R, R] G_ema(ct) in [0, 1]
    drr: Tensor             # [n, 1, R, R] the stored DRRs
    labels: np.ndarray      # [n] CT labels (1 positive, 0 negative, -1 unknown)
    index: np.ndarray       # [n] store indices


@torch.no_grad()
def generate_images(G: torch.nn.Module, ct_store: str | Path, hu_window, device: torch.device, *,
                    limit: Optional[int] = None, batch_size: int = 8, noise_mode: str = "const") -> StudyImages:
    """G's image and the stored DRR of every finished study of `ct_store` (the first `limit`), in store order."""
    ds = CTDataset(ct_store, hu_window=hu_window, labelled_only=False, limit=limit)
    if G.cfg.needs_beam:
        ds.check_beams()
    fakes, drrs, labels, index = [], [], [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        fakes.append(G(batch["ct"].to(device).float(), batch.get("beam"), noise_mode=noise_mode).float().cpu())
        drrs.append(batch["drr"].float())
        labels.append(batch["ct_label"].numpy())
        index.append(batch["index"].numpy())
    return StudyImages(torch.cat(fakes), torch.cat(drrs), np.concatenate(labels).astype(np.int64),
                       np.concatenate(index).astype(np.int64))


def stored_drrs(ct_store: str | Path) -> tuple[Tensor, np.ndarray]:
    """The finished DRRs [n, 1, R, R] of a CT store and their CT labels [n], in store order."""
    ds = CTDataset(ct_store, with_volume=False, labelled_only=False)
    items = [ds[i] for i in range(len(ds))]
    if not items:
        return torch.zeros(0), np.zeros(0, np.int64)
    return (torch.stack([torch.from_numpy(it["drr"]) for it in items]).float(),
            np.array([int(it["ct_label"]) for it in items], np.int64))


def mean_drr(ct_store: str | Path) -> Tensor:
    """Per-pixel mean [R, R] of the finished DRRs of a CT store (the mean-image reference prediction)."""
    ds = CTDataset(ct_store, with_volume=False, labelled_only=False)
    acc = None
    for i in range(len(ds)):
        d = ds[i]["drr"][0].astype(np.float64)
        acc = d if acc is None else acc + d
    return torch.from_numpy(acc / max(1, len(ds))).float()


@torch.no_grad()
def positive_probability(C: torch.nn.Module, images: Tensor, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """C's COVID-19 probability for each image [n, 1, R, R]."""
    C.eval()
    out = [torch.softmax(C(images[i:i + batch_size].to(device)).float(), dim=1)[:, 1].cpu()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def classifier_features(C: torch.nn.Module, images: Tensor, device: torch.device, batch_size: int = 64) -> Tensor:
    """DenseNet's pooled features [n, F] of images [n, 1, R, R] (the input of C's last layer)."""
    C.eval()
    net = C.net
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = (images[i:i + batch_size].to(device) - C.mean) / C.std
        f = torch.nn.functional.relu(net.features(x))
        out.append(torch.nn.functional.adaptive_avg_pool2d(f, 1).flatten(1).float().cpu())
    return torch.cat(out)


def real_images(cxr_store: str | Path, part: str, val_fraction: float) -> Tensor:
    """Every radiograph [n, 1, R, R] of one part of a CXR store."""
    ds = CXRDataset(cxr_store, part=part, val_fraction=val_fraction)
    return torch.stack([torch.from_numpy(ds[i]["cxr"]) for i in range(len(ds))])


def evidence(C: torch.nn.Module, images: Tensor, labels: np.ndarray, device: torch.device) -> float:
    """AUROC of C's probabilities on `images` against the CT labels (unknown labels left out); NaN when
    one class is missing."""
    known = labels >= 0
    if len(np.unique(labels[known])) < 2:
        return float("nan")
    return float(M.auroc(labels[known], positive_probability(C, images[known], device)))


def realism(C_ref: torch.nn.Module, real: Tensor, sets: dict[str, Tensor], device: torch.device) -> dict:
    """KID between each image set and the real radiographs, in the pooled feature space of `C_ref`."""
    f_real = classifier_features(C_ref, real, device)
    return {name: gmetrics.kid(classifier_features(C_ref, imgs, device), f_real) for name, imgs in sets.items()}


def realism_report(imgs: StudyImages, real: Tensor, *, cnn: bool = True, seed: int = 0) -> dict:
    """How far G's images and, beside them, the stored DRRs are from the real radiographs `real`
    [m, 1, R, R] (`gmetrics.realism_figures`: two-sample AUROCs, pixel-value W1, between-image sd ratio);
    only a note when either set is smaller than the tests' folds."""
    n = min(int(real.shape[0]), int(imgs.fake.shape[0]))
    if n < gmetrics.REALISM_FOLDS:
        return {"note": f"realism needs at least {gmetrics.REALISM_FOLDS} radiographs and {gmetrics.REALISM_FOLDS} "
                        f"studies, got {int(real.shape[0])} and {int(imgs.fake.shape[0])}"}
    return gmetrics.realism_figures(real, {"g": imgs.fake, "drr": imgs.drr}, seed=seed, cnn=cnn)


def realism_line(rf: dict) -> str:
    """One line for a person: the realism figures of G beside the DRRs'."""
    if "g" not in rf:
        return f"realism: {rf.get('note', 'no figures')}"
    g, d = rf["g"], rf["drr"]
    cnn = (f", CNN {g['cnn_auroc']:.2f} (DRRs {d['cnn_auroc']:.2f})" if "cnn_auroc" in g else "")
    return (f"realism against {rf['real_count']} real radiographs (0.5 = indistinguishable): linear 8x8 AUROC "
            f"{g['linear_auroc_8']:.2f} (DRRs {d['linear_auroc_8']:.2f}){cnn}; pixel-value W1 {g['pixel_w1']:.3f} "
            f"(DRRs {d['pixel_w1']:.3f}); between-image sd {g['sd_ratio']:.2f} of the radiographs' "
            f"(DRRs {d['sd_ratio']:.2f})")


def follows_study(fig: dict) -> bool:
    """The targets a generator that follows its CT meets: identification >= 90 %, own/other L1 <= 0.7 and
    at least half of the DRRs' variation across studies."""
    return (fig["identification"] >= 0.9 and fig["l1_own_over_other"] <= 0.7
            and fig["variation_ratio"] >= 0.5)


def figures(imgs: StudyImages, mean_image: Tensor) -> dict:
    """gmetrics.generator_figures of the images of `imgs` against their DRRs and a mean-image reference."""
    return gmetrics.generator_figures(imgs.fake.flatten(1), imgs.drr.flatten(1), mean_image.flatten())


def store_report(imgs: StudyImages, C: Optional[torch.nn.Module], device: torch.device,
                 mean_image: Optional[Tensor] = None, reference: str = "") -> dict:
    """The generator report of one CT store's studies (`xpgan generate`, the demo, the study): the figures, the
    evidence of the checkpoint's classifier in G's images and in the DRRs, and the verdict `follows_study`.
    `mean_image` defaults to the per-pixel mean of these studies' own DRRs (an in-sample reference, a little
    optimistic for it); `reference` says which was used."""
    if imgs.fake.shape[0] < 2:
        return {"studies": int(imgs.fake.shape[0]), "note": "at least two studies are needed to compare"}
    if mean_image is None:
        mean_image, reference = imgs.drr.mean(dim=0)[0], reference or "the per-pixel mean DRR of these studies"
    fig = figures(imgs, mean_image)
    fig["mean_image_reference"] = reference
    if C is not None:
        fig["evidence_auroc_g"] = evidence(C, imgs.fake, imgs.labels, device)
        fig["evidence_auroc_drr"] = evidence(C, imgs.drr, imgs.labels, device)
    fig["follows_study"] = follows_study(fig)
    return fig


def summary_line(fig: dict) -> str:
    """One line for a person: does G follow the study, with the figures that say so."""
    if "identification" not in fig:
        return f"generator: {fig.get('note', 'no figures')}"
    verdict = "G follows the study" if fig["follows_study"] else "G does NOT follow the study"
    ev = (f"; C's AUROC on G(ct) {fig['evidence_auroc_g']:.3f} vs on the DRRs {fig['evidence_auroc_drr']:.3f}"
          if np.isfinite(fig.get("evidence_auroc_g", float("nan")))
          and np.isfinite(fig.get("evidence_auroc_drr", float("nan"))) else "")
    specific = (f"; on the study-specific part {fig['identification_specific']:.0%}, own/other "
                f"{fig['l1_own_over_other_specific']:.2f}" if "identification_specific" in fig else "")
    return (f"{verdict}: identified {fig['identification']:.0%} of {fig['studies']} studies by their own DRR "
            f"(chance {fig['identification_chance']:.0%}{specific}), L1 own/other study "
            f"{fig['l1_own_over_other']:.2f} "
            f"(target <= 0.7), variation {fig['variation_ratio']:.2f} of the DRRs' (target >= 0.5), L1 "
            f"{fig['l1_g']:.3f} vs mean image {fig['l1_mean_image']:.3f}{ev}")
