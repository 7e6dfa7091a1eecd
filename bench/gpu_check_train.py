"""The training runs of `xpgan bench gpu` (gpu_check.py): the real trainer, timed phase by phase.

Each run records where its wall time goes, so a slow start tells its cause:
    setup_s            networks, optimizers, stores and loaders built (`Trainer.setup`)
    batch_s[i]         waiting for batch i (the first includes DataLoader worker start-up and store opening)
    step_s[i]          training step i, GPU work finished (the first includes cuDNN autotuning when
                       cudnn.benchmark is on, and lazy CUDA module loading)
    phase_s[i]         step i per phase (G / D / Dreg / C), so autotuning of the 3D convs of G shows by name
    after_step_s[i]    schedulers + the EMA copy of G
    checkpoint_s       the final checkpoint write
`cudnn_benchmark` says whether cuDNN autotuning was on (XPGAN_CUDNN_BENCHMARK=0 turns it off).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


class _Timings:
    """The run's timings, recorded through the trainer's public hooks (model/train.py TrainHooks)."""

    def __init__(self):
        from xpgan.model.train import TrainHooks

        rec: dict = {"setup_s": None, "batch_s": [], "step_s": [], "phase_s": [], "after_step_s": [],
                     "checkpoint_s": []}
        self.rec = rec

        class Hooks(TrainHooks):
            timed = True
            phases: dict = {}

            def on_setup(self, seconds):
                rec["setup_s"] = seconds

            def on_batch(self, seconds):
                rec["batch_s"].append(seconds)

            def on_phase(self, phase, seconds):
                self.phases[phase] = seconds

            def on_step(self, step, seconds):
                rec["step_s"].append(seconds)
                rec["phase_s"].append(dict(self.phases))
                self.phases.clear()

            def on_after_step(self, seconds):
                rec["after_step_s"].append(seconds)

            def on_checkpoint(self, path, seconds):
                rec["checkpoint_s"].append(seconds)

        self.hooks = Hooks()

    def summary(self) -> dict:
        r = dict(self.rec)
        steps = r["step_s"]
        r["first_batch_s"] = r["batch_s"][0] if r["batch_s"] else None
        r["first_step_s"] = steps[0] if steps else None
        later = sorted(steps[2:] or steps[1:] or steps)
        r["steady_step_s"] = later[len(later) // 2] if later else None
        r["checkpoint_s"] = sum(r["checkpoint_s"])
        return r


def train_one(work: Path, stores: dict, mode: str, amp: str, sz: dict, device: str, steps: int,
              cudnn_benchmark: bool = True) -> dict:
    import os

    import torch

    from xpgan.model.config import TrainConfig
    from xpgan.model.train import train

    tag = f"{mode}-{amp}" + ("" if cudnn_benchmark else "-nobench")
    run = stores["runs"] / tag
    if torch.cuda.is_available() and device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(ct=str(stores["ct"]), cxr=str(stores["cxr"]), mode=mode, out=str(run), max_steps=steps,
                      batch_size=sz["batch"], preset=sz["preset"], device=device, amp=amp != "fp32",
                      amp_dtype=amp if amp != "fp32" else "bf16", num_workers=0 if device == "cpu" else 4,
                      checkpoint_every=steps, keep_checkpoints=1, log_every=max(1, steps // 2), sample_every=0,
                      progress=False).validate()
    if run.exists():
        import shutil

        shutil.rmtree(run)
    os.environ["XPGAN_CUDNN_BENCHMARK"] = "1" if cudnn_benchmark else "0"
    t = time.perf_counter()
    timings = _Timings()
    r = train(cfg, hooks=timings.hooks)
    wall = time.perf_counter() - t
    logs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    sec = logs[-1]["sec_per_step"] if logs else r.seconds / max(1, r.step)
    items = cfg.cxr_batch + (cfg.batch_size if mode != "baseline" else 0)
    out = {"steps": r.step, "sec_per_step_last": sec, "samples_per_s": items / sec,
           "ct_samples_per_s": (cfg.batch_size / sec) if mode != "baseline" else None,
           "samples_per_s_all": r.samples_per_s, "seconds": r.seconds, "wall_s": wall,
           "cudnn_benchmark": torch.backends.cudnn.benchmark if device == "cuda" else None,
           "timing": timings.summary(),
           "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None,
           "loss_finite": all(math.isfinite(v) for v in r.last_stats.values()), "last": r.last_stats,
           "checkpoint": r.checkpoint}
    out["compute_only"] = compute_only_rate(cfg, run.parent / f"{run.name}-compute", items,
                                            steps=4 if device == "cuda" else 1)
    return out


def compute_only_rate(cfg, out_dir: Path, items: int, steps: int = 6) -> dict:
    """What the GPU consumes with no loader in the way: the trainer's own step on one batch, repeated."""
    import dataclasses

    import torch

    from xpgan.model.train import Trainer

    device = torch.device(cfg.device)
    tr = Trainer(dataclasses.replace(cfg, out=str(out_dir)), device)
    tr.setup()
    try:
        batch = tr.next_batch()
        for _ in range(2):
            tr.train_step(batch)
            tr.after_step()
            tr.step += 1
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            tr.train_step(batch)
            tr.after_step()
            tr.step += 1
        _sync(device)
        sec = (time.perf_counter() - t) / steps
    finally:
        tr.close()
    return {"sec_per_step": sec, "samples_per_s": items / sec,
            "ct_samples_per_s": cfg.batch_size / sec if cfg.mode != "baseline" else None}
