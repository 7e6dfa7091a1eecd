"""What train says about its stores before the first step: their image size against the networks' rule, the
classes of the CXR training part and the CT labels (pipeline/labels.py words them). A store the run cannot
learn from at all is refused here, in one line, instead of failing later in the loader."""
from __future__ import annotations

from typing import Optional

import numpy as np

from xpgan import bounds as B
from xpgan.errors import XPGANError
from xpgan.model.config import TrainConfig
from xpgan.pipeline import labels as L
from xpgan.pipeline import schema


def check_image_size(store: str, img_res: int, option: str) -> None:
    """XPGANError naming the store when its images are a size the networks cannot read."""
    if not B.image_size_ok(img_res):
        raise XPGANError(f"{store}: its images are {img_res} px, and the networks need {B.image_size_rule()}; "
                         f"prep it again with {option} {B.nearest_image_sizes(img_res)}")


def ct_labels(path: str) -> np.ndarray:
    """The labels of a CT store's finished items."""
    g = schema.open_store(path, "ct")
    done = np.asarray(schema.read(g, path, "done"), bool)
    return np.asarray(schema.read(g, path, "label"))[done]


def store_lines(cfg: TrainConfig, cxr_train_labels: np.ndarray) -> list[str]:
    """Warnings about what the stores lack for this run (empty when nothing is missing); XPGANError when mode
    drr would train on CT items whose labels are all unknown."""
    lines = []
    lack = L.missing_class(cxr_train_labels)
    if lack is not None:
        lines.append(f"warning: the training part of {cfg.cxr} has {lack}, so the classifier cannot learn to "
                     f"tell the classes apart; {L.cxr_labels_how()}")
    if cfg.mode in ("xpgan", "drr") and cfg.ct is not None:
        lines += _ct_lines(cfg.ct, cfg.mode)
    return lines


def _ct_lines(ct: str, mode: str) -> list[str]:
    labels = ct_labels(ct)
    lack: Optional[str] = L.missing_class(labels)
    if lack is None:
        return []
    if lack == "every label is unknown":
        if mode == "drr":
            raise XPGANError(f"{ct}: every CT label is unknown (-1), and --mode drr trains the classifier on the "
                             f"DRRs' labels; {L.CT_LABELS_HOW}")
        return [f"warning: every CT label in {ct} is unknown (-1): G and D learn from the volumes, but the "
                f"classifier gets no CT term; {L.CT_LABELS_HOW}"]
    return [f"warning: the CT items of {ct} have {lack}: the CT term teaches the classifier one class only; "
            f"{L.CT_LABELS_HOW}"]
