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
from xpgan.model.evaluate import jsonable
from xpgan.study.cohort import Cohort, StudyPreset

RESULT = "result.json"


def run_name(mode: str, seed: int) -> str:
    return f"{mode.replace(':', '-')}-seed{seed}"


def parse_mode(mode: str) -> tuple[str, bool, dict]:
    """A study mode "BASE[+aug][:VARIANT]" -> (train --mode, posed augmentation on, the variant's training
    options, study.config.GENERATOR_VARIANTS)."""
    from xpgan.study.config import GENERATOR_VARIANTS

    head, _, variant = mode.partition(":")
    base, _, aug = head.partition("+")
    return base, bool(aug), dict(GENERATOR_VARIANTS[variant]) if variant else {}


def load_result(run_dir: Path) -> Optional[dict]:
    path = Path(run_dir) / RESULT
    return json.loads(path.read_text()) if path.is_file() else None


def train_config(preset: StudyPreset, cohort: Cohort, mode: str, seed: int, run_dir: Path, device: str):
    from xpgan.model.config import TrainConfig

    base, aug, variant = parse_mode(mode)
    return TrainConfig(
        ct=str(cohort.ct_store), cxr=str(cohort.cxr_store), mode=base, drr_aug="pose" if aug else "none",
        **variant,
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
    if parse_mode(mode)[0] == "xpgan":
        result["generator"] = generator_report(tr.checkpoint, cohort, device)
    if parse_mode(mode)[0] in TRANSFER_MODES:
        result["transfer"] = transfer_report(preset, cohort, mode, seed, tr.checkpoint, cfg.val_fraction, device)
    result["eval_seconds"] = time.perf_counter() - t1
    _write_result(run_dir, result)
    return result


def _write_result(run_dir: Path, result: dict) -> None:
    tmp = Path(run_dir) / (RESULT + ".tmp")
    tmp.write_text(json.dumps(jsonable(result), indent=1) + "\n")
    os.replace(tmp, Path(run_dir) / RESULT)


REPORT_KEYS = ("follows_study", "identification_specific", "realism")   # a result without one: an older report
TRANSFER_MODES = ("xpgan", "drr")   # the runs whose CT-derived images (G's, the DRRs) are tested for transfer


def complete_generator_metrics(result: dict, run_dir: Path, cohort: Cohort, device: str,
                               preset: Optional[StudyPreset] = None) -> bool:
    """A finished run whose result lacks a figure of `generator_report` (xpgan runs) or its transfer figures
    (`transfer_report`, xpgan and drr runs, when `preset` is given) gets them from its checkpoint
    (result.json rewritten atomically); True when it did."""
    if not Path(result.get("checkpoint", "")).is_file():
        return False
    changed = False
    gen = result.get("generator")
    if gen is not None and not all(k in gen for k in REPORT_KEYS):
        result["generator"] = generator_report(result["checkpoint"], cohort, device)
        changed = True
    if (preset is not None and "transfer" not in result
            and parse_mode(result["mode"])[0] in TRANSFER_MODES):
        result["transfer"] = transfer_report(preset, cohort, result["mode"], result["seed"], result["checkpoint"],
                                             result["config"]["val_fraction"], device)
        changed = True
    if changed:
        _write_result(run_dir, result)
    return changed


@torch.no_grad()
def _ct_images(mode: str, checkpoint: str, ct_store: Path, device) -> tuple[torch.Tensor, np.ndarray]:
    """The CT-derived images a run trains its classifier on, for every study of `ct_store`: G_ema's (xpgan)
    or the stored DRRs (drr), with the CT labels."""
    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model import greport
    from xpgan.model.checkpoint import networks_from_checkpoint

    if parse_mode(mode)[0] == "drr":
        return greport.stored_drrs(ct_store)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    G = networks_from_checkpoint(state, ("G_ema",), device)["G_ema"]
    imgs = greport.generate_images(G, ct_store, state["net"]["hu_window"], device)
    return imgs.fake, imgs.labels


def transfer_report(preset: StudyPreset, cohort: Cohort, mode: str, seed: int, checkpoint: str,
                    val_fraction: float, device: str) -> dict:
    """Transfer (model/transfer.py) of the run's CT-derived images of the training CT studies: a fresh
    classifier trained on them alone (the preset's steps, CXR batch size and classifier learning rate, the
    run's seed), tested on the real test radiographs."""
    from xpgan.model.distributed import resolve_device
    from xpgan.model.transfer import TransferSettings, transfer

    dev = resolve_device(device)
    images, labels = _ct_images(mode, checkpoint, cohort.ct_store, dev)
    settings = TransferSettings(steps=preset.steps, batch=preset.cxr_batch, lr=preset.c_lr, seed=int(seed))
    t0 = time.perf_counter()
    out = transfer(images, labels, cohort.cxr_store, val_fraction, settings, dev)
    return {**out, "images": "G_ema(ct)" if parse_mode(mode)[0] == "xpgan" else "stored DRRs",
            "seconds": time.perf_counter() - t0}


def evaluate_run(checkpoint: str, cohort: Cohort, val_fraction: float, device: str) -> dict:
    """Scores on the validation part and the test split, the validation threshold, the test metrics."""
    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.distributed import resolve_device
    from xpgan.model.evaluate import score, validation_threshold

    dev = resolve_device(device)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    C = networks_from_checkpoint(state, ("C",), dev)["C"]
    y_val, s_val = score(C, cohort.cxr_store, "val", val_fraction, dev)
    y, s = score(C, cohort.cxr_store, "test", val_fraction, dev)
    threshold, source = validation_threshold(y_val, s_val)
    return {"threshold": threshold, "threshold_source": source,
            "val": threshold_metrics(y_val, s_val, threshold) if len(y_val) else {},
            "test": threshold_metrics(y, s, threshold),
            "test_at_0.5": M.prf(M.confusion(y, s, 0.5)),
            "test_labels": y.astype(int).tolist(), "test_scores": s.tolist()}


@torch.no_grad()
def generator_report(checkpoint: str, cohort: Cohort, device: str) -> dict:
    """G_ema on the held-out CT studies (other patients, never trained on): the figures of
    `xpgan.model.gmetrics` against their DRRs and the per-pixel mean DRR of the training store, the
    evidence the run's own classifier finds (AUROC against the CT labels) in G's images and in the DRRs, and
    the realism of G's images and of the DRRs against the real test radiographs (`realism`)."""
    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model import greport
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.distributed import resolve_device

    dev = resolve_device(device)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    nets = networks_from_checkpoint(state, ("G_ema", "C"), dev)
    imgs = greport.generate_images(nets["G_ema"], cohort.ct_holdout_store, state["net"]["hu_window"], dev)
    fig = greport.store_report(imgs, nets["C"], dev, mean_image=greport.mean_drr(cohort.ct_store),
                               reference="the per-pixel mean DRR of the training store")
    real = greport.real_images(cohort.cxr_store, "test", float(state["config"]["val_fraction"]))
    fig["realism"] = greport.realism_report(imgs, real)
    net = ckpt_io.net_config_from_dict(state["net"])
    return {**fig, "g_arch": net.g_arch, "g_head": "radiograph" if net.has_head else "none"}


@torch.no_grad()
def cross_run_generator_metrics(result: dict, runs: list[dict], cohort: Cohort, device: str) -> bool:
    """Figures of an xpgan run that need the other modes' runs of its seed: the drr-mode classifier's
    evidence (AUROC) on the held-out DRRs, and realism, the KID of G's images and of the DRRs to the real
    test radiographs in the feature space of the baseline classifier (trained on real CXRs only). Stored
    in result["generator"] (result.json rewritten); True when anything was added."""
    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model import greport
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.distributed import resolve_device

    gen = result.get("generator")
    if gen is None:
        return False
    peers = {r["mode"]: r for r in runs if r["seed"] == result["seed"]}
    todo = [m for m, key in (("drr", "evidence_auroc_drr_mode"), ("baseline", "kid_g")) if key not in gen
            and m in peers and Path(peers[m].get("checkpoint", "")).is_file()]
    if not todo:
        return False
    dev = resolve_device(device)
    state = ckpt_io.load(result["checkpoint"], map_location="cpu")
    G = networks_from_checkpoint(state, ("G_ema",), dev)["G_ema"]
    imgs = greport.generate_images(G, cohort.ct_holdout_store, state["net"]["hu_window"], dev)
    for m in todo:
        C = networks_from_checkpoint(ckpt_io.load(peers[m]["checkpoint"], map_location="cpu"), ("C",), dev)["C"]
        if m == "drr":
            gen["evidence_auroc_drr_mode"] = greport.evidence(C, imgs.drr, imgs.labels, dev)
        else:
            real = greport.real_images(cohort.cxr_store, "test", result["config"]["val_fraction"])
            kid = greport.realism(C, real, {"g": imgs.fake, "drr": imgs.drr}, dev)
            gen["kid_g"], gen["kid_drr"] = kid["g"], kid["drr"]
    _write_result(Path(result["run_dir"]), result)
    return True
