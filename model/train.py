"""The one training loop: G, D, C trained jointly by phases (stylegan2-ada style), for every mode.

A step takes one CT batch and one CXR batch and runs the mode's phases (`PHASES_FOR_MODE`): for each,
that phase's network's gradients are zeroed, the loss object accumulates them (it also switches
`requires_grad` off for the other networks during the phase: losses.py owns that), they are averaged
over ranks and its optimizer steps. Dreg (lazy R1) runs when `step % r1_interval == 0`. Then the cosine
schedules step, the EMA of G follows G, and BatchNorm buffers are synchronised from rank 0. Exact resume:
see `xpgan.model.checkpoint` and `xpgan.model.data`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from xpgan.errors import Interrupted, Resumable, XPGANError, signal_name
from xpgan.model import checkpoint as ckpt_io
from xpgan.model import distributed as dist
from xpgan.model.config import RESUME_APPLIED, TrainConfig
from xpgan.model.ctsource import ct_source_for
from xpgan.model.data import BatchStream, CXRDataset, ct_store_info, cxr_store_info, to_device
from xpgan.model.resume import resume_plan, resumed
from xpgan.model.runlog import RunRecord
from xpgan.pipeline import schema
from xpgan.signals import SignalCatcher

# Options that may differ when resuming (where and how the run executes, not what it computes).
RESUME_OVERRIDES = RESUME_APPLIED

__all__ = ["RESUME_OVERRIDES", "Run", "TrainHooks", "TrainResult", "Trainer", "build_run", "resume_plan", "resumed",
           "train", "train_from_config"]


@dataclass
class TrainResult:
    run_dir: str
    step: int
    total_steps: int
    checkpoint: Optional[str]
    seconds: float
    steps_per_s: float
    samples_per_s: float              # CT + CXR items per second, all ranks
    last_stats: dict[str, float] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)   # sha256 of each network's weights (this rank)


# ---------------------------------------------------------------------------------------- networks
def build_networks(net_cfg, mode: str, *, classifier_weights: Optional[str] = None) -> dict[str, torch.nn.Module]:
    """The mode's networks, initialised from the current torch RNG (seed before calling)."""
    from xpgan.model.networks import Discriminator, Generator, build_classifier

    nets: dict[str, torch.nn.Module] = {}
    if mode == "xpgan":
        nets["G"] = Generator(net_cfg)
        nets["D"] = Discriminator(net_cfg)
    nets["C"] = build_classifier(net_cfg, classifier_weights)
    return nets


# ------------------------------------------------------------------------------------------ helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _ema_update(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    with torch.no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """The config a run will use (`resumed`), validated."""
    return resumed(cfg)[0].validate()


def train_from_config(cfg: TrainConfig, *, dry_run: bool = False, log=print,
                      given: Optional[frozenset] = None) -> Optional[TrainResult]:
    """`xpgan train`: the command's TrainConfig (path options may arrive as Path objects: they are stored as
    text, the input paths made absolute so a resume from another folder finds them); with dry_run, log the
    resolved config as JSON and stop; else train, and log where the run ended (on the main process)."""
    from xpgan.errors import InputError, check_writable

    if cfg.classifier_weights is not None and not Path(cfg.classifier_weights).is_file():
        raise InputError(cfg.classifier_weights, "classifier weights file not found")
    absolute = ("ct", "cxr", "classifier_weights")
    cfg = dataclasses.replace(cfg, **{f.name: str(Path(v).absolute()) if f.name in absolute else str(v)
                                      for f in dataclasses.fields(cfg)
                                      if isinstance(v := getattr(cfg, f.name), Path)})
    if dry_run:
        log(resumed(cfg, given)[0].validate().to_json())
        return None
    check_writable(Path(cfg.out), "run folder (--out)")
    if cfg.resume is None:
        cfg.validate()
    result = train(cfg, log=log, given=given)
    if dist.is_main():
        log(f"trained to step {result.step}/{result.total_steps} in {result.seconds:.1f} s "
            f"({result.steps_per_s:.3g} steps/s, {result.samples_per_s:.3g} samples/s); "
            f"checkpoint {result.checkpoint}")
    return result


# --------------------------------------------------------------------------------------------- train
@dataclass
class Run:
    """The parts of a training run (`build_run`); `state` is its checkpoint, `load` puts one into it."""
    net_cfg: Any
    nets: dict
    G_ema: Optional[torch.nn.Module]
    opts: dict
    scheds: dict
    scalers: dict
    loss: Any
    cxr_stream: BatchStream
    ct_source: Any
    total: int
    step: int = 0           # the step the run starts from (the checkpoint's on resume; the Trainer counts on)
    stores: dict = field(default_factory=dict)   # identity digest of each store (schema.identity_digest)
    notes: list = field(default_factory=list)  # what the stores lack for this run (model/preflight.py), said at start

    def load(self, st: dict, rank: int) -> None:
        for k, m in self.nets.items():
            m.load_state_dict(st["models"][k])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(st["models"]["G_ema"])
        for k, o in self.opts.items():
            o.load_state_dict(st["optimizers"][k])
        for k, s in self.scheds.items():
            s.load_state_dict(st["schedulers"][k])
            if s.T_max != self.total:
                s.T_max = self.total
        for k, s in self.scalers.items():
            if k in st.get("scalers", {}):
                s.load_state_dict(st["scalers"][k])
        self.step = int(st["step"])
        self.cxr_stream.load_state_dict(st["streams"]["cxr"])
        if self.ct_source is not None:
            self.ct_source.load(st["streams"]["ct"], st.get("augment"))
        rngs = st["rng"]
        ckpt_io.set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])

    def state(self, cfg: TrainConfig, step: int, world: int) -> dict:
        """The checkpoint of the run at `step` (what `load` reads back); every rank takes part (RNG gather)."""
        rngs = [ckpt_io.rng_state()]
        if dist.is_initialized() and world > 1:
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        models = {k: m.state_dict() for k, m in self.nets.items()}
        if self.G_ema is not None:
            models["G_ema"] = self.G_ema.state_dict()
        ct = self.ct_source.state() if self.ct_source is not None else {}
        return {
            "version": ckpt_io.CHECKPOINT_VERSION,
            "config": cfg.to_dict(),
            "net": self.net_cfg.to_dict(),
            "models": models,
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "schedulers": {k: s.state_dict() for k, s in self.scheds.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "step": step,
            "streams": {"cxr": self.cxr_stream.state_dict(), **({"ct": ct["stream"]} if ct else {})},
            "rng": rngs,
            "stores": dict(self.stores),
            **({"augment": ct["augment"]} if "augment" in ct else {}),
        }

    def digests(self) -> dict[str, str]:
        """sha256 of each network's weights (G_ema included)."""
        out = {k: ckpt_io.weights_digest(m.state_dict()) for k, m in self.nets.items()}
        if self.G_ema is not None:
            out["G_ema"] = ckpt_io.weights_digest(self.G_ema.state_dict())
        return out


def _net_config(cfg: TrainConfig, resume_state: Optional[dict]):
    """The networks' configuration: from the stores' sizes (a new run) or the checkpoint's (a resume, refused
    when the stores hold other sizes)."""
    from xpgan.model.networks import PRESETS, net_config_for
    from xpgan.model.preflight import check_image_size

    cxr_info = cxr_store_info(cfg.cxr, allow_incomplete=cfg.allow_incomplete)
    img_res = cxr_info.img_res
    check_image_size(cfg.cxr, img_res, "prep cxr --size")
    ct_shape = PRESETS[cfg.preset].ct_shape
    if cfg.mode in ("xpgan", "drr"):
        ct_info = ct_store_info(cfg.ct, allow_incomplete=cfg.allow_incomplete)
        if ct_info.img_res != img_res:
            raise XPGANError(f"{cfg.ct}: its DRRs are {ct_info.img_res} px but the images of {cfg.cxr} are "
                             f"{img_res} px; prepare both stores at one size (prep drr --size, prep cxr --size)")
        ct_shape = ct_info.ct_shape
    if resume_state is not None:
        net_cfg = ckpt_io.net_config_from_dict(resume_state["net"])
        if net_cfg.img_res != img_res or (cfg.mode == "xpgan" and net_cfg.ct_shape != ct_shape):
            raise XPGANError(f"the checkpoint was trained on CT {net_cfg.ct_shape} / images "
                             f"{net_cfg.img_res} px; these stores hold {ct_shape} / {img_res} px")
    else:
        net_cfg = net_config_for(cfg.preset, ct_shape, img_res, g_arch=cfg.g_arch,
                                 radiograph_head=cfg.g_head == "radiograph")
    return net_cfg


def _optimisers(cfg: TrainConfig, nets: dict) -> dict[str, torch.optim.Optimizer]:
    """Adam for each network: StyleGAN2 betas for G and D, D's lr and betas corrected for lazy R1."""
    c = cfg.r1_interval / (cfg.r1_interval + 1)
    opts: dict[str, torch.optim.Optimizer] = {}
    if "G" in nets:
        opts["G"] = torch.optim.Adam(nets["G"].parameters(), lr=cfg.lr, betas=tuple(cfg.betas_gd), eps=1e-8)
        opts["D"] = torch.optim.Adam(nets["D"].parameters(), lr=cfg.lr * c,
                                     betas=tuple(b ** c for b in cfg.betas_gd), eps=1e-8)
    c_lr = cfg.c_lr if cfg.c_lr is not None else cfg.lr
    opts["C"] = torch.optim.Adam(nets["C"].parameters(), lr=c_lr, betas=tuple(cfg.betas_c))
    return opts


def build_run(cfg: TrainConfig, device: torch.device, *, rank: int = 0, world: int = 1,
              resume_state: Optional[dict] = None, amp_dtype: Optional[torch.dtype] = None,
              phases: tuple[str, ...] = ()) -> Run:
    """Everything a training run is made of: the network config (the checkpoint's on resume), networks and
    G's EMA copy, optimisers, schedulers, loss scalers, the loss, the CXR stream and the CT source; on resume
    the checkpoint's state is loaded into all of them (`Run.load`), else the per-rank noise streams are seeded."""
    from xpgan.model.losses import XPGANLoss
    from xpgan.model.preflight import store_lines

    if device.type == "cuda":
        # cuDNN autotuning (XPGAN_CUDNN_BENCHMARK=0: off, e.g. when the first steps' autotuning of the 3D
        # convs costs more than a short run gains; `xpgan bench gpu` times both)
        torch.backends.cudnn.benchmark = os.environ.get("XPGAN_CUDNN_BENCHMARK", "1") != "0"
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    net_cfg = _net_config(cfg, resume_state)

    # identical initial weights everywhere (then broadcast to be safe)
    seed_everything(cfg.seed)
    # on resume every weight comes from the checkpoint (the pretrained file is not read again)
    nets = build_networks(net_cfg, cfg.mode, classifier_weights=None if resume_state else cfg.classifier_weights)
    nets = {k: v.to(device).train() for k, v in nets.items()}
    G_ema = None
    if "G" in nets:
        G_ema = copy.deepcopy(nets["G"]).eval().requires_grad_(False)
    for m in nets.values():
        dist.broadcast_module(m)

    opts = _optimisers(cfg, nets)

    # data; class balance of the real CXRs (config.class_balance)
    train_part = CXRDataset(cfg.cxr, part="train", val_fraction=cfg.val_fraction,
                            positive_share=cfg.cxr_positive_share)
    n_pos, n_neg = _class_counts(train_part)
    notes = store_lines(cfg, train_part.labels)   # refuses mode drr on CT labels that are all unknown
    ratio = n_neg / n_pos if n_pos and n_neg else 1.0
    oversample = max(1, round(ratio)) if cfg.class_balance == "oversample" else 1
    cxr_class_weight = (1.0, ratio) if cfg.class_balance == "weight" else None
    cxr_stream = BatchStream(
        CXRDataset(cfg.cxr, part="train", val_fraction=cfg.val_fraction, oversample_positive=oversample,
                   positive_share=cfg.cxr_positive_share),
        batch_size=cfg.cxr_batch,
        seed=cfg.seed, rank=rank, world_size=world, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", name=f"{cfg.cxr} (train part)")
    ct_source = ct_source_for(cfg, net_cfg.hu_window, device, rank=rank, world_size=world,
                              needs_beam=cfg.mode == "xpgan" and net_cfg.needs_beam)
    if cfg.max_steps is not None:
        total = int(cfg.max_steps)
    else:
        total = int(cfg.epochs) * cxr_stream.batches_per_epoch

    scheds = {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.0) for k, o in opts.items()}
    fp16 = amp_dtype == torch.float16
    scalers = {p: torch.amp.GradScaler("cuda", enabled=fp16) for p in phases}

    loss = XPGANLoss(nets.get("G"), nets.get("D"), nets["C"], mode=cfg.mode, lambda_l1=cfg.lambda_l1,
                     r1_gamma=cfg.r1_gamma, r1_interval=cfg.r1_interval, amp_dtype=amp_dtype,
                     cxr_class_weight=cxr_class_weight, l1_space=cfg.l1_space, d_augment=cfg.d_augment)
    stores = {k: d for k in ("ct", "cxr") if getattr(cfg, k) and (d := schema.identity_digest(getattr(cfg, k)))}
    run = Run(net_cfg, nets, G_ema, opts, scheds, scalers, loss, cxr_stream, ct_source, total, stores=stores,
              notes=notes)
    if resume_state is not None:
        run.load(resume_state, rank)
    else:
        # per-rank streams of noise, restorable from the checkpoint
        seed_everything(cfg.seed * 1000 + 17 + rank)
    return run


class TrainHooks:
    """What a training run reports as it goes; subclass and override (the defaults do nothing).

    With `timed` true the trainer times its parts, with the device's queued work finished (CUDA synchronised)
    before each clock reading, and calls: on_setup(s) once (networks, optimisers, stores and loaders built),
    on_batch(s) per batch wait, on_phase(phase, s) per loss phase (G / D / Dreg / C) and on_step(step, s) per
    whole step, on_after_step(s) per scheduler + EMA update, on_checkpoint(path, s) per checkpoint write.
    Without `timed` only on_step and on_checkpoint are called, with seconds None."""

    timed = False

    def on_setup(self, seconds: Optional[float]) -> None: ...
    def on_batch(self, seconds: Optional[float]) -> None: ...
    def on_phase(self, phase: str, seconds: Optional[float]) -> None: ...
    def on_step(self, step: int, seconds: Optional[float]) -> None: ...
    def on_after_step(self, seconds: Optional[float]) -> None: ...
    def on_checkpoint(self, path: Optional[Path], seconds: Optional[float]) -> None: ...


def train(cfg: TrainConfig, log: Optional[Callable[[str], None]] = None,
          hooks: Optional[TrainHooks] = None, given: Optional[frozenset] = None) -> TrainResult:
    """Train (or resume) a run; returns where it ended. Raises XPGANError on bad options or NaN loss. With
    `log`, the main process reports what the run will cost at the start and an ETA after its first steps;
    `hooks` (TrainHooks) receives the run's events and, when timed, where its time goes; `given`: the options
    named on the command line (a resume applies or refuses those: resume_plan)."""
    device = dist.resolve_device(cfg.device)
    dist.init(device)
    try:
        return Trainer(cfg, device, log, hooks, given).run()
    finally:
        dist.shutdown()


class Trainer:
    """One training run: `setup` builds it (resumed state merged), `next_batch` / `train_step` / `after_step`
    advance it by one step, `save_checkpoint` writes it, `close` releases its loaders; `run` does all of it
    to the end of the schedule, reporting to `hooks`."""

    def __init__(self, cfg: TrainConfig, device: torch.device, log: Optional[Callable[[str], None]] = None,
                 hooks: Optional[TrainHooks] = None, given: Optional[frozenset] = None):
        self.device = device
        self.hooks = hooks or TrainHooks()
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        self.say = log if (log is not None and self.main) else (lambda line: None)
        cfg, self.resume_state, self.resume_path, changed = resumed(cfg, given)
        if self.resume_state is not None:
            self.say(f"resuming {cfg.out} from step {int(self.resume_state['step'])} ({self.resume_path})"
                     + (f"; from this command: {'; '.join(changed)}" if changed else ""))
        self.cfg = cfg.validate()
        self.run_dir = Path(cfg.out)
        if self.resume_state is None and ckpt_io.list_checkpoints(self.run_dir):
            raise XPGANError(f"{self.run_dir} already holds checkpoints of a run; continue it with "
                             "--resume latest, or choose a new --out")
        self.phases = _phases_for(cfg.mode)
        self.amp = bool(cfg.amp and device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bf16" else torch.float16

    # ------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build the run (`build_run`, the resumed state merged): `parts`; `step` counts on from its start."""
        run = build_run(self.cfg, self.device, rank=self.rank, world=self.world, resume_state=self.resume_state,
                        amp_dtype=self.amp_dtype if self.amp else None, phases=self.phases)
        self.parts: Run = run
        self.step = run.step

    def save_checkpoint(self) -> Optional[Path]:
        t = self._clock()
        state = self.parts.state(self.cfg, self.step, self.world)  # every rank takes part (RNG gather)
        path = None
        if self.main:
            try:
                path = ckpt_io.save_atomic(state, ckpt_io.checkpoint_path(self.run_dir, self.step))
            except Resumable as exc:  # a full disk: the temp file is gone, the older checkpoints are untouched
                kept = (f"the last checkpoint {self.last_checkpoint} is kept" if self.last_checkpoint
                        else "no checkpoint was written yet")
                raise Resumable(f"{exc}; {kept}; free some space, then resume") from None
            ckpt_io.prune(self.run_dir, self.cfg.keep_checkpoints)
        dist.barrier()
        self.last_checkpoint = path
        self.hooks.on_checkpoint(path, self._since(t))
        return path

    # ------------------------------------------------------------------------------------- step
    def _clock(self) -> Optional[float]:
        """perf_counter after the device's queued work, when the hooks want timings; else None."""
        if not self.hooks.timed:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _since(self, t: Optional[float]) -> Optional[float]:
        return None if t is None else self._clock() - t

    def close(self) -> None:
        """Stop the loaders' workers."""
        self.parts.cxr_stream.close()
        if self.parts.ct_source is not None:
            self.parts.ct_source.close()

    def next_batch(self) -> dict:
        batch = to_device(next(self.parts.cxr_stream), self.device)
        if self.parts.ct_source is not None:
            batch.update(self.parts.ct_source.next_batch(self.device))
        return batch

    def train_step(self, batch: dict) -> dict[str, float]:
        stats: dict[str, float] = {}
        bad: Optional[tuple[str, float]] = None
        for phase in self.phases:
            if phase == "Dreg" and self.step % self.cfg.r1_interval != 0:
                continue
            net_name = "D" if phase == "Dreg" else phase
            net, opt, scaler = self.parts.nets[net_name], self.parts.opts[net_name], self.parts.scalers[phase]
            opt.zero_grad(set_to_none=True)
            t = self._clock()
            s = self.parts.loss.accumulate_gradients(phase, batch, scaler=scaler if scaler.is_enabled() else None)
            if t is not None:
                self.hooks.on_phase(phase, self._since(t))
            for k, v in s.items():
                v = float(v)
                if not math.isfinite(v) and bad is None:
                    bad = (k, v)
                stats[k] = v
            if dist.any_rank(bad is not None, self.device):
                return {"__bad__": bad or ("a term on another rank", float("nan")), "__phase__": phase}
            dist.all_reduce_grads(net.parameters())
            if scaler.is_enabled():
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        return stats

    def after_step(self) -> None:
        cfg = self.cfg
        for s in self.parts.scheds.values():
            s.step()
        if self.parts.G_ema is not None:
            batch_total = cfg.batch_size * self.world
            ema_nimg = cfg.ema_kimg * 1000.0
            if cfg.ema_rampup is not None:
                ema_nimg = min(ema_nimg, (self.step + 1) * batch_total * cfg.ema_rampup)
            beta = 0.5 ** (batch_total / max(ema_nimg, 1e-8))
            _ema_update(self.parts.G_ema, self.parts.nets["G"], beta)
        for m in self.parts.nets.values():
            dist.broadcast_buffers(m)

    # -------------------------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg
        t = self._clock()
        self.setup()
        if t is not None:
            self.hooks.on_setup(self._since(t))
        self.last_checkpoint = self.resume_path
        if self.main:
            for line in ckpt_io.remove_stale_temps(self.run_dir):
                self.say(line)
        self.record = RunRecord(cfg, self.parts, self.device, self.main)
        self.record.open(start_step=self.step)
        end = self.parts.total if cfg.stop_at is None else min(self.parts.total, int(cfg.stop_at))
        start_step = self.step
        for line in cost_lines(cfg, start_step, end, self.parts.total, self.device.type, self.world,
                               with_ct=self.parts.ct_source is not None, img_res=self.parts.net_cfg.img_res,
                               ct_shape=self.parts.net_cfg.ct_shape) + self.parts.notes:
            self.say(line)
        bar = tqdm(total=self.parts.total, initial=self.step, disable=not (self.main and cfg.progress),
                   desc=f"train {cfg.mode}", unit="step", dynamic_ncols=True)
        t0 = time.perf_counter()
        t_first = t0
        t_log, stats = t0, {}
        batch = None
        stop, stopped = StopOnSignal(self), False
        try:
            with stop:
                while self.step < end:
                    batch, stats = self._one_step()
                    bar.update(1)
                    if self.step == start_step + 1:
                        t_first = time.perf_counter()  # the first step includes warm-up; the ETA leaves it out
                    elif self.step == start_step + 1 + ETA_AFTER_STEPS and self.step < end:
                        self.say(eta_line((time.perf_counter() - t_first) / ETA_AFTER_STEPS, self.step, end))
                    if self.step % cfg.log_every == 0 or self.step == end:
                        now = time.perf_counter()
                        n = cfg.log_every if self.step % cfg.log_every == 0 else max(1, self.step - start_step)
                        self.record.log(self.step, stats, (now - t_log) / n)
                        t_log = now
                        if self.main and cfg.progress:
                            bar.set_postfix(postfix(stats))
                    if cfg.sample_every and self.step % cfg.sample_every == 0:
                        self.record.sample(self.step, batch)
                    if dist.any_rank(stop.signum is not None, self.device):
                        stopped = True
                        break  # a stop signal (on some rank): the step is finished; its checkpoint follows
                    if self.step % cfg.checkpoint_every == 0 and self.step < end:
                        self.save_checkpoint()
                seconds = time.perf_counter() - t0
                if batch is not None and self.step > start_step:
                    self.save_checkpoint()
                    if cfg.sample_every and self.step % cfg.sample_every != 0 and not stopped:
                        self.record.sample(self.step, batch)
        finally:
            bar.close()
            self.close()
            self.record.close()
        if stopped:
            kept = (f"checkpoint {self.last_checkpoint} written" if self.last_checkpoint
                    else "no checkpoint was written")
            raise Interrupted(f"train interrupted by {signal_name(stop.signum or signal.SIGTERM)} after step "
                              f"{self.step} of {self.parts.total}: {kept}", signum=stop.signum or signal.SIGTERM)
        steps = self.step - start_step
        per_step_items = cfg.cxr_batch + (cfg.batch_size if self.parts.ct_source is not None else 0)
        return TrainResult(run_dir=str(self.run_dir), step=self.step, total_steps=self.parts.total,
                           checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
                           seconds=seconds, steps_per_s=steps / seconds if seconds > 0 else 0.0,
                           samples_per_s=steps * per_step_items * self.world / seconds if seconds > 0 else 0.0,
                           last_stats={k: v for k, v in stats.items() if not k.startswith("__")},
                           digests=self.parts.digests())

    def _one_step(self) -> tuple[dict, dict[str, float]]:
        """Batch, step, scheduler/EMA update, reported to the hooks; XPGANError on a non-finite loss term."""
        t = self._clock()
        batch = self.next_batch()
        if t is not None:
            self.hooks.on_batch(self._since(t))
        t = self._clock()
        stats = self.train_step(batch)
        step_s = self._since(t)
        if "__bad__" in stats:
            term, value = stats["__bad__"]
            where = (f"; the last good checkpoint {self.last_checkpoint} is untouched"
                     if self.last_checkpoint else "; no checkpoint was written yet")
            raise XPGANError(f"step {self.step + 1}: loss term {term} is {value} in phase "
                             f"{stats['__phase__']}; training stopped{where}")
        t = self._clock()
        self.after_step()
        if t is not None:
            self.hooks.on_after_step(self._since(t))
        self.step += 1
        self.hooks.on_step(self.step, step_s)
        return batch, stats


class StopOnSignal(SignalCatcher):
    """While entered (in the main thread): the first SIGINT or SIGTERM is recorded in `signum`, and the
    trainer finishes its step, writes a checkpoint and stops (errors.Interrupted, with the resume command on
    the command line); a second one stops at once, losing the steps since the last checkpoint."""

    def __init__(self, trainer: Optional["Trainer"] = None):
        super().__init__()
        self.trainer = trainer
        self.signum: Optional[int] = None

    def _handler(self, signum, _frame):
        if self.signum is None:
            self.signum = signum
            return
        last = getattr(self.trainer, "last_checkpoint", None)
        kept = f"the last checkpoint is {last}" if last else "no checkpoint was written"
        raise Interrupted(f"train stopped at once by a second {signal_name(signum)}: the steps since the last "
                          f"checkpoint are lost; {kept}", signum=self.signum)



ETA_AFTER_STEPS = 2   # timed steps after the first before the ETA is printed
# Measured seconds per step of mode xpgan with the paper preset on 2 CPU cores, 8 CT + 8 CXR items per step,
# by image side (volumes 64x256x256 at 256 px; 32x64x64 at 64 px, the demo's stores, steps 1-4 on cores shared
# with other jobs): what the CPU warning is estimated from.
CPU_PAPER_S_PER_STEP = {64: (59.0, 98.0), 256: (170.0, 220.0)}
CPU_PAPER_ITEMS = 16      # the items per step of those measurements
CPU_WARN_S_PER_STEP = 2.0  # the paper preset on a CPU is worth a warning from this estimate on


def cpu_paper_seconds(img_res: int, items: int) -> tuple[float, float]:
    """Estimated (low, high) seconds per mode-xpgan step of the paper preset on 2 CPU cores: the measured
    figures (CPU_PAPER_S_PER_STEP) interpolated in log-log by image side (the volume grows with it), then
    scaled by the items per step."""
    (r0, (lo0, hi0)), (r1, (lo1, hi1)) = sorted(CPU_PAPER_S_PER_STEP.items())
    t = math.log(img_res / r0) / math.log(r1 / r0)
    scale = items / CPU_PAPER_ITEMS
    return (scale * lo0 * (lo1 / lo0) ** t, scale * hi0 * (hi1 / hi0) ** t)


def cost_lines(cfg: TrainConfig, start: int, end: int, total: int, device: str, world: int, *,
               with_ct: bool, img_res: int, ct_shape=None) -> list[str]:
    """What a run will cost, said before its first step: steps, items per step, and a warning when the paper
    preset (GPU-sized G and D) runs mode xpgan on a CPU, with the time a step takes at these stores' sizes."""
    items = f"{cfg.cxr_batch} CXR" + (f" + {cfg.batch_size} CT" if with_ct else "") + " items per step"
    where = f"{world} processes on {device}" if world > 1 else device
    lines = [f"train {cfg.mode}: steps {start} -> {end} of {total} ({end - start} to run), {items}, "
             f"preset {cfg.preset}, on {where}"]
    if cfg.preset == "paper" and cfg.mode == "xpgan" and device == "cpu":
        lo, hi = cpu_paper_seconds(img_res, cfg.cxr_batch + cfg.batch_size)
        if lo >= CPU_WARN_S_PER_STEP:
            volume = f", volumes {'x'.join(map(str, ct_shape))}" if ct_shape else ""
            lines.append(f"warning: the paper preset is sized for a GPU; on a CPU a step at these sizes "
                         f"({img_res} px{volume}) takes about {lo:.0f}-{hi:.0f} s on 2 cores, so "
                         f"{end - start} steps take about {_duration((end - start) * lo)} or more; --preset tiny "
                         "is the CPU size")
    return lines


def eta_line(sec_per_step: float, step: int, end: int) -> str:
    left = (end - step) * sec_per_step
    return (f"step {step}: {sec_per_step:.3g} s/step, about {_duration(left)} for the {end - step} steps left "
            f"(ETA {time.strftime('%Y-%m-%d %H:%M', time.localtime(time.time() + left))})")


def _duration(seconds: float) -> str:
    m = int(round(seconds / 60))
    if m < 1:
        return f"{seconds:.0f} s"
    if m < 120:
        return f"{m} min"
    return f"{m // 60} h {m % 60:02d} min" if m < 48 * 60 else f"{m / 1440:.1f} days"


def postfix(stats: dict[str, float], n: int = 4) -> dict[str, str]:
    """The progress bar's figures: losses by their term name, other figures with their group (acc/C_real
    stays distinct from loss/C_real)."""
    shown = [(k, v) for k, v in stats.items() if not k.startswith("__")][:n]
    return {k.removeprefix("loss/"): f"{v:.3f}" for k, v in shown}


def _class_counts(ds: CXRDataset) -> tuple[int, int]:
    """(positives, negatives) of a CXR dataset."""
    return int(np.sum(ds.labels == 1)), int(np.sum(ds.labels == 0))


def _phases_for(mode: str) -> tuple[str, ...]:
    from xpgan.model.losses import PHASES_FOR_MODE

    if mode not in PHASES_FOR_MODE:
        raise XPGANError(f"--mode must be one of {', '.join(PHASES_FOR_MODE)}, got {mode!r}")
    return tuple(PHASES_FOR_MODE[mode])
