"""One study run (mode x seed): train with the preset's shared settings, then evaluate on the CXR test split.

The decision threshold is the best-F1 threshold on the validation part of the CXR train split (the
patients the trainer held out, `val_fraction`), never the test split; the same rule for every mode.
A run is finished when its `result.json` exists (written atomically, last); an unfinished run folder is
cleared and the run trained again.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from xpgan.model import metrics as M
from xpgan.model.evaluate import _jsonable
from xpgan.study.cohort import Cohort, StudyPreset

RESULT = "result.json"


def run_name(mode: str, seed: int) -> str:
    return f"{mode}-seed{seed}"


def load_result(run_dir: Path) -> Optional[dict]:
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def train_config(preset: StudyPreset, cohort: Cohort, mode: str, seed: int, run_dir: Path, device: str):
    from xpgan.model.config import TrainConfig

    base, _, aug = mode.partition("+")          # "xpgan+aug": mode xpgan with fresh posed DRRs every step
    return TrainConfig(
        ct=str(cohort.ct_store), cxr=str(cohort.cxr_store), mode=base, drr_aug="pose" if aug else "none",
        out=str(run_dir), max_steps=preset.steps,
        batch_size=preset.ct_batch, cxr_batch_size=preset.cxr_batch, lr=preset.lr, c_lr=preset.c_lr, seed=seed,
        preset=preset.net_preset, device=device, amp=preset.amp, num_workers=0, val_fraction=preset.val_fraction,
        class_balance=preset.class_balance, checkpoint_every=preset.steps, keep_checkpoints=1,
        log_every=max(1, preset.steps // 10), sample_every=preset.steps, progress=False).validate()


def threshold_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    """Precision, recall, F1 at `threshold`; AUROC and AUPRC (threshold-free)."""
    return {**M.prf(M.confusion(y, s, threshold)), "auroc": M.auroc(y, s), "auprc": M.average_precision(y, s)}


def execute(preset: StudyPreset, cohort: Cohort, mode: str, seed: int, run_dir: Path, device: str) -> dict:
    """Train and evaluate one run; writes run_dir/result.json and returns it."""
    from xpgan.model.train import train

    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)                      # an interrupted run starts again
    cfg = train_config(preset, cohort, mode, seed, run_dir, device)
    t0 = time.perf_counter()
    tr = train(cfg)
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = {"mode": mode, "seed": int(seed), "run_dir": str(run_dir), "checkpoint": tr.checkpoint,
              "config": cfg.to_dict(), "train_seconds": t_train, "sec_per_step": t_train / max(1, tr.step),
              "steps": tr.step, "last_stats": tr.last_stats}
    result.update(evaluate_run(tr.checkpoint, cohort, cfg.val_fraction, device))
    if mode.partition("+")[0] == "xpgan":
        result["generator"] = generator_l1(tr.checkpoint, cohort, device)
    result["eval_seconds"] = time.perf_counter() - t1
    _write_result(run_dir, result)
    return result


def _write_result(run_dir: Path, result: dict) -> None:
    tmp = Path(run_dir) / (RESULT + ".tmp")
    tmp.write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    os.replace(tmp, Path(run_dir) / RESULT)


def complete_generator_metrics(result: dict, run_dir: Path, cohort: Cohort, device: str) -> bool:
    """A finished xpgan run whose result predates a generator metric (l1_g_other_study) gets its generator
    metrics again from its checkpoint (result.json rewritten atomically); True when it did."""
    gen = result.get("generator")
    if gen is None or "l1_g_other_study" in gen or not Path(result.get("checkpoint", "")).is_file():
        return False
    result["generator"] = generator_l1(result["checkpoint"], cohort, device)
    _write_result(run_dir, result)
    return True


def evaluate_run(checkpoint: str, cohort: Cohort, val_fraction: float, device: str) -> dict:
    """Scores on the validation part and the test split, the validation threshold, the test metrics."""
    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.data import CXRDataset
    from xpgan.model.distributed import resolve_device
    from xpgan.model.evaluate import predict

    dev = resolve_device(device)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    C = networks_from_checkpoint(state, ("C",), dev)["C"]
    y_val, s_val = predict(C, CXRDataset(cohort.cxr_store, part="val", val_fraction=val_fraction), device=dev)
    y, s = predict(C, CXRDataset(cohort.cxr_store, part="test", val_fraction=val_fraction), device=dev)
    threshold = M.best_f1_threshold(y_val, s_val)      # 0.5 when val has no positives
    return {"threshold": threshold,
            "threshold_source": "best F1 on the validation part of train" if y_val.sum() else "0.5 (no val positives)",
            "val": threshold_metrics(y_val, s_val, threshold) if len(y_val) else {},
            "test": threshold_metrics(y, s, threshold),
            "test_at_0.5": M.prf(M.confusion(y, s, 0.5)),
            "test_labels": y.astype(int).tolist(), "test_scores": s.tolist()}


@torch.no_grad()
def generator_l1(checkpoint: str, cohort: Cohort, device: str) -> dict:
    """Mean |G_ema(ct) - DRR(ct)| over the held-out CT studies, against two constant predictions: the mean
    grey level of the training store's DRRs, and their per-pixel mean image. `l1_g_other_study` is the mean
    |G_ema(ct_i) - DRR(ct_j)| over pairs of different held-out studies i != j: about equal to `l1_g` when G
    draws the same chest for every study, clearly above it when G's image follows its own study."""
    from torch.utils.data import DataLoader

    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.data import CTDataset
    from xpgan.model.distributed import resolve_device

    dev = resolve_device(device)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    G = networks_from_checkpoint(state, ("G_ema",), dev)["G_ema"]
    window = state["net"]["hu_window"]
    train_drr = torch.from_numpy(_mean_drr(CTDataset(cohort.ct_store, hu_window=window, with_volume=False,
                                                     labelled_only=False)))
    fakes, drrs = [], []
    ds = CTDataset(cohort.ct_holdout_store, hu_window=window, labelled_only=False)
    for batch in DataLoader(ds, batch_size=8, shuffle=False):
        drrs.append(batch["drr"].float())                                                  # [N, 1, R, R]
        fakes.append(G(batch["ct"].to(dev).float(), noise_mode="const").float().cpu())
    fake, drr = torch.cat(fakes).flatten(1), torch.cat(drrs).flatten(1)                    # [n, R*R]
    same, other = matched_and_other_l1(fake, drr)
    return {"held_out_studies": int(drr.shape[0]), "l1_g": same, "l1_g_other_study": other,
            "l1_constant_mean": float((drr - float(train_drr.mean())).abs().mean()),
            "l1_mean_image": float((drr - train_drr.flatten()[None]).abs().mean())}


def matched_and_other_l1(fake: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(mean_i |fake_i - target_i|, mean over i != j of |fake_i - target_j|), each |.| a mean over pixels;
    fake and target [n, P]. The second is NaN for n < 2."""
    n = target.shape[0]
    pair = torch.cdist(fake, target, p=1) / target.shape[1]                               # [n, n]
    other = float((pair.sum() - pair.diagonal().sum()) / (n * (n - 1))) if n > 1 else float("nan")
    return float(pair.diagonal().mean()), other


def _mean_drr(ds) -> np.ndarray:
    acc = None
    for i in range(len(ds)):
        d = ds[i]["drr"][0].astype(np.float64)
        acc = d if acc is None else acc + d
    return (acc / max(1, len(ds))).astype(np.float32)
