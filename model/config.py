"""The one training configuration: a dataclass built by the CLI, written to `run_dir/config.json`."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from xpgan import bounds as B
from xpgan.errors import XPGANError

# The choices of the options (the CLI takes these types, so Typer validates them); the tuples are the same lists.
Mode = Literal["xpgan", "drr", "baseline"]
Preset = Literal["paper", "tiny"]  # model/networks.py PRESETS
Device = Literal["auto", "cpu", "cuda"]
AmpDtype = Literal["bf16", "fp16"]
DrrAug = Literal["none", "pose", "pose+intensity"]  # model/augment.py
GArch = Literal["projected", "vector"]  # model/networks.py G_ARCHS
ClassBalance = Literal["none", "weight", "oversample"]
EvalSplit = Literal["test", "val", "train"]  # model/evaluate.py: val = the held-out part of train
MODES: tuple[str, ...] = get_args(Mode)
PRESET_NAMES: tuple[str, ...] = get_args(Preset)
DEVICES: tuple[str, ...] = get_args(Device)
AMP_DTYPES: tuple[str, ...] = get_args(AmpDtype)
DRR_AUG_MODES: tuple[str, ...] = get_args(DrrAug)
G_ARCH_NAMES: tuple[str, ...] = get_args(GArch)
CLASS_BALANCE: tuple[str, ...] = get_args(ClassBalance)

# The bound of each numeric field (xpgan/bounds.py); the `train` options check the same ones at parse time.
FIELD_BOUNDS: dict[str, B.Bound] = {
    "epochs": B.EPOCHS, "max_steps": B.STEPS, "stop_at": B.STEPS, "batch_size": B.BATCH, "cxr_batch_size": B.BATCH,
    "lr": B.LR, "c_lr": B.LR, "lambda_l1": B.LOSS_WEIGHT, "r1_gamma": B.LOSS_WEIGHT, "r1_interval": B.EVERY,
    "seed": B.SEED, "num_workers": B.LOADER_WORKERS, "val_fraction": B.FRACTION, "checkpoint_every": B.EVERY,
    "keep_checkpoints": B.KEEP, "log_every": B.EVERY, "sample_every": B.EVERY_OR_NEVER,
}


def option_name(field: str) -> str:
    """The `train` option of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


@dataclass
class TrainConfig:
    ct: Optional[str] = None            # CT store (required for modes xpgan and drr)
    cxr: Optional[str] = None           # CXR store (always required)
    mode: str = "xpgan"                 # xpgan | drr | baseline (the rows of the paper's Table 2)
    out: str = "runs/xpgan"             # run directory
    epochs: Optional[int] = None        # passes over the CXR training items (ignored when max_steps is set)
    max_steps: Optional[int] = None     # optimisation steps; one step = one CT batch + one CXR batch
    batch_size: int = 8                 # CT items per step
    cxr_batch_size: Optional[int] = None  # CXR items per step (None: same as batch_size)
    lr: float = 0.002                   # Adam learning rate of G, D and C (cosine-annealed to 0)
    c_lr: Optional[float] = None        # classifier learning rate (None: lr)
    betas_gd: tuple[float, float] = (0.0, 0.99)   # StyleGAN2 betas for G and D
    betas_c: tuple[float, float] = (0.9, 0.999)   # classifier Adam betas
    lambda_l1: float = 2.0              # weight of L1(G(ct), DRR(ct))
    r1_gamma: float = 1.0               # R1 weight (StyleGAN2 convention, images seen in [-1, 1])
    r1_interval: int = 16               # lazy R1: the Dreg phase runs every r1_interval steps
    ema_kimg: float = 10.0              # half-life of the G EMA, thousands of images
    ema_rampup: Optional[float] = 0.05  # EMA half-life at most ema_rampup * images seen (None: off)
    seed: int = 0
    preset: str = "paper"               # paper | tiny network widths
    device: str = "auto"                # auto | cpu | cuda
    amp: bool = True                    # mixed precision (CUDA only)
    amp_dtype: str = "bf16"             # bf16 (no loss scaling) | fp16 (with GradScaler)
    num_workers: int = 2                # DataLoader worker processes per rank
    val_fraction: float = 0.1           # share of CXR training patients held out for eval's threshold
    class_balance: str = "oversample"   # real-CXR class imbalance: "oversample" (each positive listed
                                        # round(n_neg/n_pos) times per epoch), "weight" (cross entropy
                                        # weights positives by n_neg/n_pos of the train part) or "none";
                                        # see docs/study_calibration.md for the choice
    checkpoint_every: int = 1000        # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3           # newest checkpoints kept (0: keep all)
    log_every: int = 50                 # steps between scalar logs
    sample_every: int = 1000            # steps between PNG sample grids (0: never)
    classifier_weights: Optional[str] = None  # local torchvision DenseNet121 state_dict (ImageNet)
    resume: Optional[str] = None        # checkpoint path or "latest" (newest in out/checkpoints)
    stop_at: Optional[int] = None       # end this invocation at this step (checkpoint written); the
                                        # schedule still spans the whole run, so a resume continues it
    progress: bool = True               # progress bar on rank 0
    allow_incomplete: bool = False      # train on the done items of a store prep is writing or did not finish
    drr_aug: str = "none"               # on-the-fly posed DRRs (model/augment.py): none | pose | pose+intensity
    g_arch: str = "projected"           # generator (mode xpgan): projected (spatial path from the CT's
                                        # beam-collapsed features + global style) | vector (the paper's
                                        # global vector only); model/networks.py G_ARCHS

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
        return cls(**kw)

    @property
    def cxr_batch(self) -> int:
        return self.cxr_batch_size if self.cxr_batch_size is not None else self.batch_size

    def validate(self) -> "TrainConfig":
        """Raise XPGANError on an option the user can fix; return self."""
        if self.mode not in MODES:
            raise XPGANError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.preset not in PRESET_NAMES:
            raise XPGANError(f"--preset must be one of {', '.join(PRESET_NAMES)}, got {self.preset!r}")
        if self.device not in DEVICES:
            raise XPGANError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise XPGANError(f"amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if self.drr_aug not in DRR_AUG_MODES:
            raise XPGANError(f"--drr-aug must be one of {', '.join(DRR_AUG_MODES)}, got {self.drr_aug!r}")
        if self.drr_aug != "none" and self.mode == "baseline":
            raise XPGANError("--drr-aug needs --mode xpgan or drr (mode baseline trains on no CT)")
        if self.drr_aug == "pose+intensity" and self.mode == "xpgan":
            raise XPGANError("--drr-aug pose+intensity applies to --mode drr only (in mode xpgan G could not know "
                             "the exposure change of its L1 target); use pose")
        if self.g_arch not in G_ARCH_NAMES:
            raise XPGANError(f"--g-arch must be one of {', '.join(G_ARCH_NAMES)}, got {self.g_arch!r}")
        if self.class_balance not in CLASS_BALANCE:
            raise XPGANError(f"--class-balance must be one of {', '.join(CLASS_BALANCE)}, "
                             f"got {self.class_balance!r}")
        if self.cxr is None:
            raise XPGANError("--cxr is required (the CXR store)")
        if self.mode in ("xpgan", "drr") and self.ct is None:
            raise XPGANError(f"--ct is required for --mode {self.mode}")
        if self.max_steps is None and self.epochs is None:
            raise XPGANError("give --epochs or --max-steps")
        for name, bound in FIELD_BOUNDS.items():
            if getattr(self, name) is not None:
                bound.check(option_name(name), getattr(self, name))
        return self


def write_config(cfg: TrainConfig, run_dir: str | Path) -> Path:
    path = Path(run_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(cfg.to_json() + "\n")
    tmp.replace(path)
    return path
