"""`train --resume`: the run's options come from its checkpoint; this invocation may change where and how it
runs and its length (applied, and said in one line), and name the run's stores at other paths; any other
option that differs is refused in one line naming each option and both values (config.resume_rule; the
rule is in `--resume`'s help)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.config import TrainConfig, resume_rule
from xpgan.options import option_name
from xpgan.pipeline import schema


def _flag(name: str) -> str:
    meta = next(f.metadata for f in dataclasses.fields(TrainConfig) if f.name == name)
    return meta.get("flag") or option_name(name)


def _same(a, b) -> bool:
    """Equal values of a field (a saved config holds lists where the dataclass holds tuples)."""
    return (list(a) if isinstance(a, (tuple, list)) else a) == (list(b) if isinstance(b, (tuple, list)) else b)


def resume_plan(saved: dict, cfg: TrainConfig, *, given: Optional[frozenset] = None, stores: Optional[dict] = None,
                identity_of: Callable[[str], Optional[str]] = schema.identity_digest,
                where: str = "the run") -> tuple[TrainConfig, list[str]]:
    """The config a resumed run uses, and what this invocation changed in it (config.resume_rule, said in
    `--resume`'s help): the checkpoint's config, with this invocation's options of where and how it runs, and
    the options `given` on this command line (None: those that differ from their default) applied where that
    is sound. Refuses, in one line naming each option and both
    values, an option that changes what the run computes, and a store other than the run's (`stores`: the
    identity digests the checkpoint recorded)."""
    defaults = TrainConfig()
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if given is None:
        given = frozenset(n for n in fields if not _same(getattr(cfg, n), getattr(defaults, n)))
    merged, changed, refused = dict(saved), [], []
    for name in sorted(fields):
        rule = resume_rule(name)
        new, old = getattr(cfg, name), saved.get(name, getattr(defaults, name))
        if rule == "store":
            path = new if name in given and new is not None else old
            if path is None:
                continue
            recorded, now = (stores or {}).get(name), identity_of(path)
            if recorded is not None and now is not None and recorded != now:
                refused.append(f"{_flag(name)} {path} is not the store the run was trained on (another identity: "
                               "prepped again, or another store)")
            elif not _same(path, old):
                if recorded is None:
                    refused.append(f"{_flag(name)} {new} (the run's: {old}; the checkpoint records no store "
                                   "identity to show it is the same store)")
                else:
                    changed.append(f"{_flag(name)} {new} (the run's store, moved from {old})")
            merged[name] = path
        elif rule == "applied":  # this invocation's, given or not
            merged[name] = new
            if name != "resume" and not _same(new, old):
                changed.append(f"{_flag(name)} {new} (the run's: {old})")
        elif name not in given or _same(new, old):
            continue
        elif rule == "refused":
            refused.append(f"{_flag(name)} {new} (the run's: {old})")
    if not refused and any(n in given for n in ("max_steps", "epochs")):
        length = {n: getattr(cfg, n) for n in ("max_steps", "epochs")}
        old_length = {n: saved.get(n) for n in length}
        merged.update(length)
        if not _same(list(length.values()), list(old_length.values())):
            said = ", ".join(f"{_flag(n)} {v}" for n, v in length.items() if v is not None)
            was = ", ".join(f"{_flag(n)} {v}" for n, v in old_length.items() if v is not None)
            changed.append(f"{said} (the run's: {was}; the cosine schedule is stretched from here, so the result "
                           "differs from an uninterrupted run)")
    if refused:
        raise XPGANError(f"--resume: {where} was trained with other options: {'; '.join(refused)}; resume without "
                         "them, or start a new run with another --out")
    return TrainConfig.from_dict(merged), changed


def resumed(cfg: TrainConfig, given: Optional[frozenset] = None
            ) -> tuple[TrainConfig, Optional[dict], Optional[Path], list[str]]:
    """(config, checkpoint state, checkpoint path, changes said) of a run: with --resume, `resume_plan` of the
    checkpoint; else (cfg, None, None, [])."""
    if not cfg.resume:
        return cfg, None, None, []
    path = ckpt_io.resolve_resume(cfg.resume, cfg.out)
    state = ckpt_io.load(path, map_location="cpu")
    merged, changed = resume_plan(state["config"], cfg, given=given, stores=state.get("stores"),
                                  where=f"the run of {path}")
    return merged, state, path, changed
