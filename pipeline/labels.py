"""What a store's labels allow, said the same way by every command: a class that a store lacks (no positive,
no negative, every label unknown), why a metric is undefined, and how a user gives the missing labels.

prep cxr and prep drr say it in their summaries, train at its start (and refuses mode drr on CT items whose
labels are all unknown), eval beside a metric it cannot compute.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from xpgan.pipeline.schema import LABEL_NEGATIVE, LABEL_POSITIVE

CT_LABELS_HOW = ("give the labels with a manifest CSV path,label[,patient_id][,study_id] (label 1 COVID-19, "
                 "0 negative) or the MosMed layout studies/CT-0..CT-4/*.nii.gz (CT-0 negative, CT-1..CT-4 "
                 "positive), then prep drr again")


def cxr_labels_how() -> str:
    """How a user names the positive class of a CXR collection."""
    from xpgan.pipeline.cxr.sources import positive_help

    return (f"name the positive class folder or manifest label with --positive NAME (recognised without it: "
            f"{positive_help()}), then prep cxr again")


def counts(labels: Sequence[int] | np.ndarray) -> tuple[int, int, int]:
    """(positives, negatives, unknown) among `labels`."""
    y = np.asarray(labels).astype(np.int64).ravel()
    pos, neg = int(np.sum(y == LABEL_POSITIVE)), int(np.sum(y == LABEL_NEGATIVE))
    return pos, neg, int(y.size) - pos - neg


def missing_class(labels: Sequence[int] | np.ndarray) -> Optional[str]:
    """What the labels lack for a classifier: "every label is unknown", "no positive (COVID-19) item", "no
    negative item", "no item", or None when both classes are there."""
    pos, neg, unknown = counts(labels)
    if pos and neg:
        return None
    if not pos and not neg:
        return "every label is unknown" if unknown else "no item"
    return "no positive (COVID-19) item" if not pos else "no negative item"


def undefined_reasons(y: np.ndarray, y_val: np.ndarray, split: str) -> dict[str, str]:
    """Why eval's figures are undefined: {"auroc": ..., "auprc": ...} for those that are, and "threshold" when
    the validation threshold fell back to 0.5 (model/evaluate.validation_threshold)."""
    out: dict[str, str] = {}
    lack = missing_class(y)
    if lack is not None:
        out["auroc"] = f"the {split} split has {lack} (AUROC needs both classes)"
    if not np.any(np.asarray(y) == LABEL_POSITIVE):
        out["auprc"] = f"the {split} split has no positive (COVID-19) item (AUPRC needs one)"
    if len(y_val) == 0:
        out["threshold"] = "0.5: the validation part of train is empty"
    elif not np.any(np.asarray(y_val) == LABEL_POSITIVE):
        out["threshold"] = "0.5: the validation part of train has no positive item to choose a threshold on"
    return out
