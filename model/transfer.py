"""Transfer: does a set of CT-derived images teach a classifier anything about radiographs?

A fresh classifier (the same DenseNet121 as every mode's) is trained on CT-derived images only (G's images
of the training CT studies, or their DRRs) with the CT labels, never a real radiograph, and tested on the
real test radiographs. Its AUROC is threshold-free; its precision, recall and F1 use the same threshold
rule as every report (best F1 on the validation part of the CXR train split), so the figures are
comparable with the study's rows. A generator that bridges the DRR -> radiograph gap gives a
G-only classifier that transfers better than a DRR-only one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xpgan.model import metrics as M
from xpgan.model.losses import cross_entropy_known


@dataclass(frozen=True)
class TransferSettings:
    steps: int = 150           # classifier updates
    batch: int = 16            # CT-derived images per update
    lr: float = 1e-3           # Adam learning rate (the study's classifier rate), cosine-annealed
    seed: int = 0


def train_on_images(images: Tensor, labels: np.ndarray, settings: TransferSettings, device: torch.device,
                    img_res: int) -> torch.nn.Module:
    """A fresh classifier trained on `images` [n, 1, R, R] in [0, 1] with `labels` [n] (0/1; -1 left out),
    positives and negatives weighted to equal shares of the loss."""
    from xpgan.model.networks import build_classifier, net_config_for

    known = labels >= 0
    x, y = images[known].float(), torch.from_numpy(labels[known].astype(np.int64))
    if len(np.unique(y.numpy())) < 2:
        raise ValueError("transfer needs CT-derived images of both labels")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    weight = torch.tensor([0.5 * len(y) / n_neg, 0.5 * len(y) / n_pos])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        C = build_classifier(net_config_for("tiny", (1, 1, 1), img_res)).to(device).train()
    opt = torch.optim.Adam(C.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.steps, eta_min=0.0)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    with torch.enable_grad():               # also when called under no_grad (a report)
        for _ in range(settings.steps):
            pick = torch.randint(0, len(y), (min(settings.batch, len(y)),), generator=gen)
            loss = cross_entropy_known(C(x[pick].to(device)), y[pick].to(device), weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return C.eval()


def transfer(images: Tensor, labels: np.ndarray, cxr_store: str | Path, val_fraction: float,
             settings: TransferSettings, device: torch.device) -> dict:
    """Train on CT-derived images (`train_on_images`), test on the real radiographs of `cxr_store`: AUROC,
    AUPRC and precision / recall / F1 at the validation threshold, on the test split."""
    from xpgan.model.evaluate import score, validation_threshold

    C = train_on_images(images, labels, settings, device, int(images.shape[-1]))
    y_val, s_val = score(C, cxr_store, "val", val_fraction, device)
    y, s = score(C, cxr_store, "test", val_fraction, device)
    threshold, _ = validation_threshold(y_val, s_val)
    return {**M.prf(M.confusion(y, s, threshold)), "auroc": M.auroc(y, s), "auprc": M.average_precision(y, s),
            "threshold": threshold, "train_images": int((labels >= 0).sum()), "steps": settings.steps}
