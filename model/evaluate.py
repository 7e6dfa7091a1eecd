"""Evaluate a checkpoint's classifier on a CXR store: metrics.json plus PR and ROC curve PNGs.

The headline precision, recall and F1 (top level of metrics.json) are at the documented threshold rule:
the best-F1 threshold chosen on the validation part of the train split (the same deterministic carve the
trainer held out), never on the test split. The same figures at a fixed 0.5 are kept under "at_0.5",
and every printed line says which threshold a figure belongs to.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader

from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model import metrics as M
from xpgan.model.config import EvalConfig, EvalSplit
from xpgan.model.data import CXRDataset, cxr_store_info
from xpgan.pipeline.labels import undefined_reasons

SPLITS = get_args(EvalSplit)


@torch.no_grad()
def predict(C: torch.nn.Module, dataset: CXRDataset, *, device: torch.device, batch_size: int = 64,
            num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels [N], positive-class probabilities [N]) over a dataset, in dataset order."""
    if len(dataset) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    labels, probs = [], []
    C.eval()
    for batch in loader:
        logits = C(batch["cxr"].to(device).float())                     # [N, 2]
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy().astype(np.float64))
        labels.append(batch["cxr_label"].numpy().astype(np.int64))
    return np.concatenate(labels), np.concatenate(probs)


def _plot_curves(y: np.ndarray, s: np.ndarray, out_dir: Path, title: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fpr, tpr, _ = M.roc_curve(y, s)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {M.auroc(y, s):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png")
    plt.close(fig)
    written.append(str(out_dir / "roc.png"))

    prec, rec, _ = M.pr_curve(y, s)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.step(np.concatenate([[0.0], rec]), np.concatenate([[1.0], prec]), where="post", lw=2,
            label=f"AUPRC {M.average_precision(y, s):.3f}")
    base = float(np.mean(y)) if len(y) else 0.0
    ax.axhline(base, ls="--", c="grey", lw=1, label=f"prevalence {base:.2f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"PR — {title}", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(out_dir / "pr.png")
    plt.close(fig)
    written.append(str(out_dir / "pr.png"))
    return written


def score(C: torch.nn.Module, cxr_store: str | Path, part: str, val_fraction: float, device: torch.device, *,
          batch_size: int = 64, num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, C's positive-class probabilities) over one part of a CXR store ("train", "val", "test",
    "train_all"; the validation carve of `val_fraction` as the trainer made it)."""
    return predict(C, CXRDataset(cxr_store, part=part, val_fraction=val_fraction), device=device,
                   batch_size=batch_size, num_workers=num_workers)


def validation_threshold(y_val: np.ndarray, s_val: np.ndarray) -> tuple[float, str]:
    """The decision threshold every report uses, and where it came from: the best F1 on the validation part
    of train (never the test split); 0.5 when that part is empty or has no positives."""
    if len(y_val) == 0 or y_val.sum() == 0:
        return 0.5, "0.5 (the validation part is empty or has no positives)"
    return M.best_f1_threshold(y_val, s_val), "validation part of train (best F1)"


METRICS_FILE = "metrics.json"


def results_store(out: Path) -> Optional[str]:
    """The CXR store whose results `out/metrics.json` holds (absolute path), or None when it holds none."""
    try:
        old = json.loads((out / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return old.get("store_path") or old.get("store") if isinstance(old, dict) else None


def output_folder(out_dir: Optional[str | Path], checkpoint: Path, cxr_store: str | Path, split: str) -> Path:
    """Where eval writes: `out_dir`, or RUN_DIR/eval-SPLIT, or RUN_DIR/eval-SPLIT-STORE when RUN_DIR/eval-SPLIT
    holds another store's results. A folder holding another store's results is never overwritten: XPGANError
    naming both stores."""
    store = str(Path(cxr_store).resolve())
    if out_dir is None:
        run_dir = checkpoint.resolve().parent.parent
        out = run_dir / f"eval-{split}"
        if results_store(out) not in (None, store):
            out = run_dir / f"eval-{split}-{_name_of(cxr_store)}"
    else:
        out = Path(out_dir)
    other = results_store(out)
    if other not in (None, store):
        raise XPGANError(f"{out / METRICS_FILE}: holds the results of another CXR store ({other}, not {store}); "
                         "give another --out, or delete it to replace them")
    return out


def _name_of(store: str | Path) -> str:
    """A folder-name form of a store's name: cxr64.zarr -> cxr64."""
    name = Path(store).resolve().name
    name = name[:-5] if name.endswith(".zarr") else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "store"


def evaluate(checkpoint: str | Path, cxr_store: str | Path, *, split: EvalSplit = "test",
             out_dir: Optional[str | Path] = None, device: str = EvalConfig.device,
             batch_size: int = EvalConfig.batch_size, num_workers: int = 0, allow_incomplete: bool = False) -> dict:
    """Metrics of the checkpoint's classifier (a checkpoint file, or a run folder: its newest checkpoint) on
    `split` of the CXR store; writes metrics.json, roc.png and pr.png into out_dir (default: beside the
    checkpoint's run, `eval-<split>/`, named after the store when that one holds another store's results; a
    folder holding another store's results is refused: output_folder). Returns the metrics (see the module
    docstring). The store is refused while prep writes it or when its last prep run did not finish, unless
    `allow_incomplete`."""
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.distributed import resolve_device

    if split not in SPLITS:
        raise XPGANError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    dev = resolve_device(device)
    checkpoint = ckpt_io.resolve_checkpoint(checkpoint)
    out = output_folder(out_dir, checkpoint, cxr_store, split)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    net_res = int(state["net"]["img_res"])
    info = cxr_store_info(cxr_store, allow_incomplete=allow_incomplete)
    if info.img_res != net_res:
        raise XPGANError(f"{cxr_store}: images are {info.img_res} px but the classifier was trained at "
                         f"{net_res} px")
    C = networks_from_checkpoint(state, ("C",), dev)["C"]
    val_fraction = float(state["config"].get("val_fraction", 0.1))

    y, s = score(C, cxr_store, "train" if split == "train" else split, val_fraction, dev, batch_size=batch_size,
                 num_workers=num_workers)
    if len(y) == 0:
        raise XPGANError(f"{cxr_store}: no finished, labelled items in the {split} split")
    y_val, s_val = score(C, cxr_store, "val", val_fraction, dev, batch_size=batch_size, num_workers=num_workers)
    best_t, threshold_source = validation_threshold(y_val, s_val)
    result = {
        "checkpoint": str(checkpoint),
        "step": int(state["step"]),
        "mode": state["config"].get("mode"),
        "store": str(cxr_store),
        "store_path": str(Path(cxr_store).resolve()),
        "split": split,
        "counts": {"items": int(len(y)), "positive": int(y.sum()), "negative": int(len(y) - y.sum()),
                   "val_items": int(len(y_val)), "val_positive": int(y_val.sum())},
        "auroc": M.auroc(y, s),
        "auprc": M.average_precision(y, s),
        # headline figures at the validation threshold (the same numbers as in "at_best_val_f1")
        "threshold": best_t,
        "threshold_source": threshold_source,
        **M.prf(M.confusion(y, s, best_t)),
        "at_0.5": M.summary(y, s, 0.5),
        "at_best_val_f1": {**M.summary(y, s, best_t), "threshold_source": threshold_source},
        "val": {"auroc": M.auroc(y_val, s_val) if len(y_val) else float("nan"),
                "at_best_val_f1": M.summary(y_val, s_val, best_t) if len(y_val) else None},
        "undefined": undefined_reasons(y, y_val, split),   # why a figure above is undefined (or at 0.5)
    }
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = _plot_curves(y, s, out, f"{split} split") if len(np.unique(y)) == 2 else []
    (out / METRICS_FILE).write_text(json.dumps(jsonable(result), indent=2) + "\n")
    result["out_dir"] = str(out)
    return result


def jsonable(x):
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def evaluate_from(cfg: EvalConfig) -> str:
    """The `eval` command: evaluate() with its configuration; returns the lines it prints."""
    r = evaluate(cfg.checkpoint, cfg.cxr, split=cfg.split, out_dir=cfg.out, device=cfg.device,
                 batch_size=cfg.batch_size, allow_incomplete=cfg.allow_incomplete)
    lines = [f"{cfg.split}: {r['counts']['items']} items ({r['counts']['positive']} positive), {M.metrics_line(r)}"]
    lines += [f"  {LABELS.get(k, k)} undefined: {why}" if k != "threshold" else f"  threshold {why}"
              for k, why in r["undefined"].items()]
    return "\n".join(lines + [f"wrote {r['out_dir']}/{METRICS_FILE}"])


LABELS = {"auroc": "AUROC", "auprc": "AUPRC"}
