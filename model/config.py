"""The configurations of the model commands: TrainConfig (the one training configuration, written to
`run_dir/config.json`), EvalConfig and GenerateConfig; each command's options are generated from them."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin, get_type_hints

from xpgan import bounds as B
from xpgan.drr.poses import IntensityRanges, PoseRanges
from xpgan.errors import XPGANError
from xpgan.options import REQUIRED, check_bounds, option_name
from xpgan.options import argument as _argument
from xpgan.options import option as _opt

# The choices of the options (the CLI takes these types, so Typer validates them); the tuples are the same lists.
Mode = Literal["xpgan", "drr", "baseline"]
Preset = Literal["paper", "tiny"]  # model/networks.py PRESETS
Device = Literal["auto", "cpu", "cuda"]
AmpDtype = Literal["bf16", "fp16"]
DrrAug = Literal["none", "pose", "pose+intensity"]  # model/augment.py
GArch = Literal["projected", "vector"]  # model/networks.py G_ARCHS
GHead = Literal["radiograph", "none"]  # model/film.py RadiographHead
L1Space = Literal["intensity", "normalized"]  # model/losses.py
DAugment = Literal["none", "translate"]  # model/losses.py
ClassBalance = Literal["none", "weight", "oversample"]
EvalSplit = Literal["test", "val", "train"]  # model/evaluate.py: val = the held-out part of train
MODES: tuple[str, ...] = get_args(Mode)
PRESET_NAMES: tuple[str, ...] = get_args(Preset)
DEVICES: tuple[str, ...] = get_args(Device)
AMP_DTYPES: tuple[str, ...] = get_args(AmpDtype)
DRR_AUG_MODES: tuple[str, ...] = get_args(DrrAug)
G_ARCH_NAMES: tuple[str, ...] = get_args(GArch)
G_HEAD_NAMES: tuple[str, ...] = get_args(GHead)
CLASS_BALANCE: tuple[str, ...] = get_args(ClassBalance)
DEVICE_HELP = "auto: CUDA when available, else CPU."
LOADER_WORKERS_RULE = ("0 when a process has 2 CPU cores or fewer (loading in the training process is faster "
                       "there), else its cores less one, at most 8")


def default_loader_workers(cores: Optional[int] = None) -> int:
    """The data loader workers of a training process when --num-workers is not given (LOADER_WORKERS_RULE):
    `cores` defaults to the usable cores shared among the processes torchrun starts on this machine."""
    import os

    if cores is None:
        from xpgan.pipeline.runner import usable_cores

        cores = usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return 0 if cores <= 2 else min(8, cores - 1)


_INCOMPLETE_HELP = "Use the done items of a store that prep is still writing or did not finish (refused by default)."

# How `train --resume` treats an option whose value differs from the run's (its checkpoint's config); every
# other field changes what the run computes and a differing value is refused (model/train.resume_plan).
RESUME_APPLIED = ("out", "device", "num_workers", "progress", "checkpoint_every", "keep_checkpoints", "log_every",
                  "sample_every", "resume", "stop_at", "allow_incomplete")  # where and how it runs
RESUME_LENGTH = ("max_steps", "epochs")   # the run's length: applied, the cosine schedule stretched from there
RESUME_STORES = ("ct", "cxr")             # the same store (same identity) at another path: applied


def resume_rule(name: str) -> str:
    """What `--resume` does with a field that differs from the run's: applied, length, store or refused."""
    if name in RESUME_APPLIED:
        return "applied"
    if name in RESUME_LENGTH:
        return "length"
    return "store" if name in RESUME_STORES else "refused"


def _flags(names) -> str:
    return ", ".join(option_name(n) for n in names if n != "resume")


RESUME_HELP = ("Checkpoint file, run directory, or 'latest' (in --out). The run keeps its checkpoint's options: "
               f"{_flags(RESUME_LENGTH)} and the options of where and how it runs ({_flags(RESUME_APPLIED)}) are "
               f"applied and said; {_flags(RESUME_STORES)} may name the run's store at another path (same "
               "contents); any other option that differs from the run's is refused, naming both values.")


@dataclass
class TrainConfig:
    """Every training option once: default, help, choices (Literal types) and bound live on the field; the
    `train` command's options are generated from these fields (cli.py) and `validate` checks the same rules."""

    ct: Optional[str] = _opt(None, "CT store (xpgan prep drr output); modes xpgan, drr.", path=True)
    cxr: Optional[str] = _opt(None, "CXR store (xpgan prep cxr output).", path=True)
    mode: Mode = _opt("xpgan", "xpgan (joint G/D/C), drr (C on CXR + DRRs) or baseline (C on CXR).")
    out: str = _opt("runs/xpgan", "Run directory (config, checkpoints, logs, samples).", path=True)
    epochs: Optional[int] = _opt(None, "Passes over the CXR training items. One of --epochs and --max-steps is "
                                 "needed: without either, train stops before it starts and says so.", bound=B.EPOCHS)
    max_steps: Optional[int] = _opt(None, "Optimisation steps (overrides --epochs).", bound=B.STEPS)
    batch_size: int = _opt(8, "CT items per step (per process).", bound=B.BATCH)
    cxr_batch_size: Optional[int] = _opt(None, "CXR items per step.", bound=B.BATCH, default_text="--batch-size")
    lr: float = _opt(0.002, "Adam learning rate, cosine-annealed to 0 over the run.", bound=B.LR)
    lambda_l1: float = _opt(2.0, "Weight of L1(G(ct), DRR).", bound=B.LOSS_WEIGHT)
    r1_gamma: float = _opt(1.0, "R1 regularisation weight.", bound=B.LOSS_WEIGHT)
    r1_interval: int = _opt(16, "Steps between lazy R1 passes.", bound=B.EVERY)
    seed: int = _opt(0, "Seed of weights, data order and noise.", bound=B.SEED)
    preset: Preset = _opt("paper", "Network widths (tiny: CPU-sized).")
    device: Device = _opt("auto", DEVICE_HELP)
    amp: bool = _opt(True, "Mixed precision on CUDA.", flag="--amp/--no-amp")
    amp_dtype: AmpDtype = _opt("bf16", "fp16 uses loss scaling.")
    num_workers: Optional[int] = _opt(None, "Data loader worker processes per rank.", bound=B.LOADER_WORKERS,
                                      default_text=LOADER_WORKERS_RULE)
    checkpoint_every: int = _opt(1000, "Steps between checkpoints.", bound=B.EVERY)
    keep_checkpoints: int = _opt(3, "Newest checkpoints kept (0: all).", bound=B.KEEP)
    log_every: int = _opt(50, "Steps between logged losses.", bound=B.EVERY)
    sample_every: int = _opt(1000, "Steps between sample grid PNGs (0: never).", bound=B.EVERY_OR_NEVER)
    classifier_weights: Optional[str] = _opt(None, "Local torchvision DenseNet121 ImageNet state_dict.", path=True)
    resume: Optional[str] = _opt(None, RESUME_HELP, metavar="PATH|latest")
    stop_at: Optional[int] = _opt(None, "End this invocation at this step (resume later).", bound=B.STEPS)
    progress: bool = _opt(True, "Progress bar.", flag="--progress/--no-progress")
    class_balance: ClassBalance = _opt("oversample", "Real-CXR class imbalance: oversample (each positive repeated "
                                       "n_neg/n_pos times per epoch), weight (positives weighted n_neg/n_pos in "
                                       "the loss) or none.")
    allow_incomplete: bool = _opt(False, _INCOMPLETE_HELP)
    drr_aug: DrrAug = _opt("none", f"On-the-fly posed DRRs (modes drr, xpgan): none (stored DRRs) | pose "
                           f"({PoseRanges().describe()}) | pose+intensity (mode drr: also "
                           f"{IntensityRanges().describe()}).")
    g_arch: GArch = _opt("projected", "Generator of mode xpgan: projected (the CT's features collapsed along "
                         "each study's rays feed every synthesis resolution, the global vector modulates the "
                         "styles) | vector (the paper's: global vector only).")
    g_head: GHead = _opt("radiograph", "End of the projected generator: radiograph (a learned film curve, scatter, "
                         "blur, edge enhancement and noise after G's DRR-like core; the L1 term compares the core "
                         "with the DRR, D and the classifier see the head's output) | none (the paper's objective: "
                         "L1 on G's image).")
    # not command options: fixed by the method, changed only through a config file or the API
    c_lr: Optional[float] = _opt(None, "classifier learning rate (None: lr)", bound=B.LR, cli=False)
    betas_gd: tuple[float, float] = _opt((0.0, 0.99), "StyleGAN2 Adam betas for G and D", cli=False)
    betas_c: tuple[float, float] = _opt((0.9, 0.999), "classifier Adam betas", cli=False)
    ema_kimg: float = _opt(10.0, "half-life of the G EMA, thousands of images", cli=False)
    ema_rampup: Optional[float] = _opt(0.05, "EMA half-life at most ema_rampup * images seen (None: off)",
                                       cli=False)
    val_fraction: float = _opt(0.1, "share of CXR training patients held out for eval's threshold",
                               bound=B.FRACTION, cli=False)
    cxr_positive_share: float = _opt(1.0, "share of the positive patients of the CXR train part whose "
                                     "radiographs are trained on (negatives, validation and test unchanged)",
                                     bound=B.SHARE, cli=False)
    l1_space: L1Space = _opt("intensity", "what the L1 term compares: intensity (the images as they are) or "
                             "normalized (each image minus its mean, over its sd: structure only)", cli=False)
    d_augment: DAugment = _opt("none", "D's inputs, real and generated alike: none, or translate (each image "
                               "shifted by up to 1/8 of its side, zeros shifted in; differentiable)", cli=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("betas_gd", "betas_c"):
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        kw.setdefault("g_arch", "vector")  # a saved config that names no generator had the global-vector one
        kw.setdefault("g_head", "none")    # ... and one that names no head had none
        kw.setdefault("l1_space", "intensity")
        kw.setdefault("d_augment", "none")
        return cls(**kw)

    @property
    def cxr_batch(self) -> int:
        return self.cxr_batch_size if self.cxr_batch_size is not None else self.batch_size

    def validate(self) -> "TrainConfig":
        """Raise XPGANError on an option the user can fix; return self, with the loader workers chosen for the
        machine when --num-workers was not given (default_loader_workers)."""
        hints = get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), get_args(hints[f.name])
            if get_origin(hints[f.name]) is Literal and value not in choices:
                raise XPGANError(f"{option_name(f.name)} must be one of {', '.join(choices)}, got {value!r}")
        check_bounds(self)
        check_drr_aug(self.mode, self.drr_aug)
        if self.cxr is None:
            raise XPGANError("--cxr is required (the CXR store)")
        if self.mode in ("xpgan", "drr") and self.ct is None:
            raise XPGANError(f"--ct is required for --mode {self.mode}")
        if self.max_steps is None and self.epochs is None:
            raise XPGANError("give --epochs N (passes over the CXR training items) or --max-steps N")
        if self.num_workers is None:
            self.num_workers = default_loader_workers()
        return self


def check_drr_aug(mode: str, drr_aug: str) -> None:
    """The --drr-aug rules (TrainConfig.validate and the augmented dataset read them): a known choice; posed
    DRRs for the modes that train on CT; an exposure change in mode drr only."""
    if drr_aug not in DRR_AUG_MODES:
        raise XPGANError(f"--drr-aug must be one of {', '.join(DRR_AUG_MODES)}, got {drr_aug!r}")
    if drr_aug != "none" and mode not in ("xpgan", "drr"):
        raise XPGANError(f"--drr-aug needs --mode xpgan or drr (mode {mode} trains on no CT)")
    if drr_aug == "pose+intensity" and mode != "drr":
        raise XPGANError("--drr-aug pose+intensity applies to --mode drr only (in mode xpgan G could not know "
                         "the exposure change of its L1 target); use pose")


# The bound of each numeric field, read from the fields (the property test of the options reads this table).
FIELD_BOUNDS: dict[str, B.Bound] = {f.name: f.metadata["bound"] for f in dataclasses.fields(TrainConfig)
                                    if f.metadata.get("bound") is not None}


def write_config(cfg: TrainConfig, run_dir: str | Path) -> Path:
    path = Path(run_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(cfg.to_json() + "\n")
    tmp.replace(path)
    return path


@dataclass(kw_only=True)
class EvalConfig:
    """`eval`: the checkpoint, the CXR store and split, and where the metrics go."""

    checkpoint: Path = _argument("Checkpoint file (RUN/checkpoints/step-*.pt), or a run folder (its newest "
                                 "checkpoint).", "CHECKPOINT")
    cxr: Path = _opt(REQUIRED, "CXR store to evaluate on.")
    split: EvalSplit = _opt("test", "test | val (held-out part of train) | train.")
    out: Optional[Path] = _opt(None, "Output folder; results of another CXR store are not overwritten.",
                               default_text="RUN_DIR/eval-SPLIT, or RUN_DIR/eval-SPLIT-STORE when that one holds "
                                            "another store's results")
    device: Device = _opt("auto", DEVICE_HELP)
    batch_size: int = _opt(64, "Images per forward pass.", bound=B.BATCH)
    allow_incomplete: bool = _opt(False, _INCOMPLETE_HELP)


@dataclass(kw_only=True)
class GenerateConfig:
    """`generate`: the checkpoint, the CT store and where G's images go."""

    checkpoint: Path = _argument("Checkpoint of an xpgan-mode run (file, or a run folder: its newest checkpoint).",
                                 "CHECKPOINT")
    ct: Path = _opt(REQUIRED, "CT store whose volumes are translated.")
    out: Path = _opt(REQUIRED, "Output folder for PNGs.")
    cxr: Optional[Path] = _opt(None, "CXR store: the report also says how far G's images and the DRRs are from its "
                               "test radiographs (two-sample tests, pixel-value distance, variation).")
    limit: Optional[int] = _opt(None, "At most this many CT items.", bound=B.COUNT)
    device: Device = _opt("auto", DEVICE_HELP)
    allow_incomplete: bool = _opt(False, _INCOMPLETE_HELP)
