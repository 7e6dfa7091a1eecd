"""`xpgan study`: a reproducible Table-2 study (baseline / + DRRs / XPGAN) on a synthetic cohort.

The names below are loaded on first use, so that `xpgan --help` (which imports study.cohort for the
`--preset` choices) does not import torch.
"""
from __future__ import annotations

import importlib

_WHERE = {"PRESETS": "cohort", "StudyPreset": "cohort", "StudyPresetName": "cohort", "MODES": "config",
          "PAPER_MODES": "config", "StudyConfig": "config", "run_study": "core",
          "study_from": "core", "bootstrap_ci": "report"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'xpgan.study' has no attribute {name!r}")
    return getattr(importlib.import_module(f"xpgan.study.{_WHERE[name]}"), name)
