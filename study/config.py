"""What a study runs: the modes it may compare and the `study` command's configuration (light to import:
`xpgan --help` reads it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from xpgan import bounds as B
from xpgan.errors import XPGANError
from xpgan.model.config import DEVICE_HELP, Device
from xpgan.options import REQUIRED, option
from xpgan.study.cohort import StudyPresetName

PAPER_MODES = ("baseline", "drr", "xpgan")                   # the rows of the paper's Table 2 (the default)
# "+aug": train --drr-aug pose (beyond the paper); ":VARIANT": mode xpgan with these training options instead
# of the defaults (without it: the default generator and objective)
GENERATOR_VARIANTS: dict[str, dict] = {
    "vector": {"g_arch": "vector"},                          # the paper's global-vector G
    "plain": {"g_head": "none"},                             # projected G without the radiograph head: L1 on
                                                             # G's image (the paper's objective)
    "translate": {"d_augment": "translate"},                 # + D's inputs translated (DiffAugment / ADA)
    "normalized": {"g_head": "none", "l1_space": "normalized"},   # no head; L1 on standardised images
}
MODES = PAPER_MODES + ("drr+aug", "xpgan+aug") + tuple(f"xpgan:{v}" for v in GENERATOR_VARIANTS) \
    + ("xpgan+aug:vector",)
DEFAULT_SEEDS = (0, 1)


@dataclass(kw_only=True)
class StudyConfig:
    """`study`: the folder, the cohort preset, the rows (modes x seeds) and how runs train."""

    out: Path = option(REQUIRED, "Study folder (cohort, runs, study.md/json/png, samples.png); rerun the same "
                                 "command to resume.")
    preset: StudyPresetName = option("cpu", "cpu (~25-40 min on 2 cores) | gpu (paper sizes, one GPU) | smoke "
                                            "(plumbing, under a minute).")
    seeds: list[str] = option([str(s) for s in DEFAULT_SEEDS], "Training seeds: --seeds 0 1 (or 0,1).",
                              metavar="SEED...")
    modes: list[str] = option(list(PAPER_MODES), "Rows of the table: --modes baseline drr xpgan (or "
                                                 "comma-separated).", metavar="MODE...")
    device: Device = option("auto", DEVICE_HELP)
    cohort_seed: int = option(0, "Seed of the synthetic cohort.", bound=B.SEED)
    threads: int = option(1, "torch CPU threads for training (1 is robust on a shared machine; 2 is ~1.6x faster "
                             "on an idle 2-core one).", bound=B.THREADS)
    steps: Optional[int] = option(None, "Training steps of every run; the cohort stays the same. One budget per "
                                        "--out folder.", bound=B.STEPS, default_text="the preset's")


def study_lists(seeds: list[str], modes: list[str], extra: list[str]) -> tuple[list[int], list[str]]:
    """`--seeds 0 1 --modes drr xpgan`: click keeps the first value of each option and leaves the others as
    extra arguments; seeds are integers and modes are names, so every value has one home. Values may also
    be comma-separated."""
    tokens = [t for v in list(seeds) + list(modes) + list(extra) for t in v.replace(",", " ").split()]
    seed_list = [B.SEED.check("--seeds", int(t)) for t in tokens if t.lstrip("-").isdigit()]
    mode_list = check_modes([t for t in tokens if not t.lstrip("-").isdigit()])
    return list(dict.fromkeys(seed_list)), mode_list


def check_modes(modes) -> list[str]:
    """The study's rows without repeats; XPGANError for none or for a name outside MODES."""
    modes = list(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise XPGANError(f"--modes must be among {', '.join(MODES)}, got {', '.join(bad) or 'none'}")
    return modes
