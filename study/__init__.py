"""`xpgan study`: a reproducible Table-2 study (baseline / + DRRs / XPGAN) on a synthetic cohort."""
from xpgan.study.cohort import PRESETS, StudyPreset
from xpgan.study.core import MODES, run_study
from xpgan.study.report import bootstrap_ci

__all__ = ["PRESETS", "StudyPreset", "MODES", "run_study", "bootstrap_ci"]
