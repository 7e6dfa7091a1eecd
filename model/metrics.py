"""Binary classification metrics in NumPy (scores = predicted probability of the positive class)."""
from __future__ import annotations

import numpy as np


def _check(y_true, scores):
    y = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def confusion(y_true, scores, threshold: float) -> dict[str, int]:
    """Counts with prediction = score >= threshold."""
    y, s = _check(y_true, scores)
    pred = s >= threshold
    return {"tp": int(np.sum(pred & (y == 1))), "fp": int(np.sum(pred & (y == 0))),
            "fn": int(np.sum(~pred & (y == 1))), "tn": int(np.sum(~pred & (y == 0)))}


def prf(counts: dict[str, int]) -> dict[str, float]:
    """Precision, recall, F1 from counts (0 where undefined)."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def auroc(y_true, scores) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2."""
    y, s = _check(y_true, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    uniq, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) to (1, 1)."""
    y, s = _check(y_true, scores)
    thr = np.unique(s)[::-1]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    tpr = np.array([0.0] + [np.sum((s >= t) & (y == 1)) / n_pos for t in thr])
    fpr = np.array([0.0] + [np.sum((s >= t) & (y == 0)) / n_neg for t in thr])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def pr_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first."""
    y, s = _check(y_true, scores)
    thr = np.unique(s)[::-1]
    prec, rec = [], []
    for t in thr:
        m = prf(confusion(y, s, t))
        prec.append(m["precision"])
        rec.append(m["recall"])
    return np.array(prec), np.array(rec), thr


def average_precision(y_true, scores) -> float:
    """Area under the precision-recall curve as average precision: sum over distinct thresholds t of
    (recall(t) - recall(next higher t)) * precision(t) (sklearn's definition; tied scores are one step).
    NaN when there are no positives."""
    y, s = _check(y_true, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.concatenate([np.flatnonzero(np.diff(ss) != 0), [len(ss) - 1]])   # end of each tie group
    tp = np.cumsum(yy)[last].astype(np.float64)
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def best_f1_threshold(y_true, scores) -> float:
    """The threshold with the highest F1 on (y_true, scores): the best cut between distinct scores
    (ties go to the highest), placed midway between the lowest score it accepts and the next lower
    score, so that it generalises rather than sitting on a positive's score. 0.5 when there are no
    scores or no positives."""
    y, s = _check(y_true, scores)
    if s.size == 0 or y.sum() == 0:
        return 0.5
    uniq = np.unique(s)[::-1]
    best_i, best_f = 0, -1.0
    for i, t in enumerate(uniq):
        f = prf(confusion(y, s, t))["f1"]
        if f > best_f:
            best_i, best_f = i, f
    if best_i + 1 < len(uniq):
        return float((uniq[best_i] + uniq[best_i + 1]) / 2.0)
    return float(uniq[best_i])


def summary(y_true, scores, threshold: float) -> dict:
    counts = confusion(y_true, scores, threshold)
    return {"threshold": float(threshold), **prf(counts),
            "confusion": {"tn": counts["tn"], "fp": counts["fp"], "fn": counts["fn"], "tp": counts["tp"]},
            "confusion_matrix": [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]}


def metrics_line(r: dict) -> str:
    """One line of a metrics.json: AUROC, AUPRC, then P/R/F1 at the validation threshold and at 0.5, each
    labelled with its threshold."""
    def prf(m: dict) -> str:
        return f"P {m['precision']:.3f} R {m['recall']:.3f} F1 {m['f1']:.3f}"

    def num(v) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) and v == v else "undefined"

    return (f"AUROC {num(r.get('auroc'))}, AUPRC {num(r.get('auprc'))}; at the validation threshold "
            f"{r['threshold']:.3f}: {prf(r)}; at 0.5: {prf(r['at_0.5'])}")
