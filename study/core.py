"""`xpgan study`: the paper's Table 2 (baseline / + DRRs / XPGAN) on a synthetic cohort, reproducibly.

Steps: build or reuse the cohort (`cohort.py`), then every mode x seed run (`runs.py`) with the same
classifier, split, number of classifier updates and threshold rule, then the table and figures
(`report.py`): DIR/study.md, DIR/study.json, DIR/study.png, DIR/samples.png. Finished runs are kept and
skipped on a rerun (resume); the outputs are rewritten from every finished run each time.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from xpgan.errors import XPGANError, check_output_folder
from xpgan.study import report
from xpgan.study.cohort import PRESETS, StudyPreset, build_cohort, format_counts
from xpgan.study.config import DEFAULT_SEEDS, PAPER_MODES, StudyConfig, check_modes, study_lists
from xpgan.study.runs import complete_generator_metrics, cross_run_generator_metrics, execute, load_result, run_name

# rough relative cost of a step, for the first ETA
COST = {"baseline": 1.0, "drr": 1.4, "xpgan": 3.5, "drr+aug": 1.6, "xpgan+aug": 3.9}
CONFIG = "study_config.json"


def resolve_preset(preset: str | StudyPreset) -> StudyPreset:
    if isinstance(preset, StudyPreset):
        return preset
    if preset not in PRESETS:
        raise XPGANError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


def _eta(done: dict[str, list[float]], todo: Sequence[str]) -> Optional[float]:
    """Seconds left for the modes in `todo`, from the measured run times (scaled by COST where a mode has
    none yet)."""
    if not done:
        return None
    per_cost = [t / _cost(m) for m, ts in done.items() for t in ts]
    unit = sum(per_cost) / len(per_cost)
    return sum((sum(done[m]) / len(done[m])) if done.get(m) else unit * _cost(m) for m in todo)


def _cost(mode: str) -> float:
    return COST[mode.partition(":")[0]]


def _minutes(sec: Optional[float]) -> str:
    return "unknown" if sec is None else f"{sec / 60:.1f} min"


def run_study(out: str | Path, *, preset: str | StudyPreset = StudyConfig.preset, seeds: Sequence[int] = DEFAULT_SEEDS,
              modes: Sequence[str] = PAPER_MODES, device: str = StudyConfig.device,
              cohort_seed: int = StudyConfig.cohort_seed, workers: Optional[int] = None,
              threads: Optional[int] = StudyConfig.threads, steps: Optional[int] = None,
              log: Callable[[str], None] = print) -> dict:
    """Run (or resume) a study into `out`; returns the contents of study.json. `threads`: torch CPU threads
    for training (None: torch's default). One is the default because on a shared 2-core machine two
    threads per process oversubscribe the cores and a step can get several times slower; on an idle
    machine two threads are about 1.6x faster (docs/study_calibration.md). `steps`: the training budget of
    every run instead of the preset's (the cohort is the same; a study folder holds one budget)."""
    import torch

    if threads is not None and int(threads) < 1:
        raise XPGANError(f"--threads must be >= 1, got {threads}")
    p = resolve_preset(preset)
    if steps is not None:
        if int(steps) < 1:
            raise XPGANError(f"--steps must be >= 1, got {steps}")
        p = dataclasses.replace(p, steps=int(steps))
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run_study(out, p, seeds, modes, device, cohort_seed, workers, threads, log)
    finally:
        torch.set_num_threads(before)


def study_from(cfg: StudyConfig, extra_args: list[str], log: Callable[[str], None] = print) -> dict:
    """The `study` command: run_study with its configuration; `extra_args`: the further values of --seeds and
    --modes that the command line leaves over (study_lists)."""
    seeds, modes = study_lists(cfg.seeds, cfg.modes, extra_args)
    return run_study(cfg.out, preset=cfg.preset, seeds=seeds, modes=modes, device=cfg.device,
                     cohort_seed=cfg.cohort_seed, threads=cfg.threads, steps=cfg.steps, log=log)


def _run_study(out, p: StudyPreset, seeds, modes, device, cohort_seed, workers, threads, log) -> dict:
    modes = check_modes(modes)
    seeds = [int(s) for s in dict.fromkeys(seeds)]
    if not seeds:
        raise XPGANError("give at least one --seeds value")
    out = Path(out)
    check_output_folder(out, CONFIG, "study")
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / CONFIG
    settings = {"preset": p.to_dict(), "cohort_seed": int(cohort_seed)}
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if old != settings:
            raise XPGANError(f"{out}: holds a study with other settings ({cfg_path}); choose another --out")
    else:
        cfg_path.write_text(json.dumps(settings, indent=2) + "\n")
    t_start = time.perf_counter()
    log(f"[study] {p.describe()}")
    log(f"[study] modes {', '.join(modes)} x seeds {', '.join(map(str, seeds))} = {len(modes) * len(seeds)} runs, "
        f"device {device}, {threads or 'default'} CPU thread(s), output {out}")
    cohort = build_cohort(out / "cohort", p, seed=cohort_seed, workers=workers, log=log)

    plan = [(m, s) for s in seeds for m in modes]
    runs, times = [], {}
    todo = [(m, s) for m, s in plan if load_result(out / "runs" / run_name(m, s)) is None]
    if len(todo) < len(plan):
        log(f"[study] resuming: {len(plan) - len(todo)} of {len(plan)} runs already finished, kept")
    for k, (mode, seed) in enumerate(plan):
        run_dir = out / "runs" / run_name(mode, seed)
        r = load_result(run_dir)
        if r is not None:
            if complete_generator_metrics(r, run_dir, cohort, device, p):
                log(f"[study] {mode} seed {seed}: generator / transfer figures completed from its checkpoint")
            runs.append(r)
            continue
        left = [m for m, s in todo if (m, s) != (mode, seed)]
        n_done = len(plan) - len(todo)
        log(f"[study] run {n_done + 1}/{len(plan)}: {mode} seed {seed} ({p.steps} steps) ... "
            f"ETA for all runs {_minutes(_eta(times, [mode] + left))}")
        r = execute(p, cohort, mode, seed, run_dir, device)
        runs.append(r)
        times.setdefault(mode, []).append(r["train_seconds"] + r["eval_seconds"])
        todo = [(m, s) for m, s in todo if (m, s) != (mode, seed)]
        t = r["test"]
        gen = r.get("generator")
        log(f"[study] run {len(plan) - len(todo)}/{len(plan)} done: {mode} seed {seed} in "
            f"{r['train_seconds']:.0f} s ({r['sec_per_step']:.2f} s/step): test F1 {t['f1']:.3f}, AUROC "
            f"{t['auroc']:.3f}, AUPRC {t['auprc']:.3f}" +
            (f"; G identification {gen['identification']:.2f} (study-specific part "
             f"{gen['identification_specific']:.2f}), L1 own/other {gen['l1_own_over_other']:.2f}, "
             f"variation {gen['variation_ratio']:.2f} of the DRRs'" if gen else "") +
            (f"; {len(todo)} to do, ETA {_minutes(_eta(times, [m for m, _ in todo]))}" if todo else ""))
    return write_outputs(out, p, cohort, runs, modes, seeds, device, time.perf_counter() - t_start, log)


def write_outputs(out: Path, p: StudyPreset, cohort, runs: list[dict], modes, seeds, device: str,
                  seconds: float, log: Callable[[str], None]) -> dict:
    for r in runs:
        if cross_run_generator_metrics(r, runs, cohort, device):
            log(f"[study] {r['mode']} seed {r['seed']}: generator evidence / realism against the seed's drr and "
                "baseline runs")
    summary = report.summarize(runs, modes, n_boot=p.n_boot)
    paired = report.paired_differences(runs, n_boot=p.n_boot)
    counts = cohort.info.get("counts", {})
    header = (f"# XPGAN study, preset `{p.name}`\n\n{p.describe()}\n\ncohort: {format_counts(counts)}"
              if counts else f"# XPGAN study, preset `{p.name}`\n\n{p.describe()}")
    run_secs = sum(r["train_seconds"] + r["eval_seconds"] for r in runs)
    footer = (f"Cohort built in {cohort.info.get('seconds', 0):.0f} s; runs took {run_secs:.0f} s in all; "
              f"this invocation {seconds:.0f} s.")
    md = report.markdown(summary, runs, header=header, footer=footer, paired=paired)
    result = {"preset": p.to_dict(), "modes": list(modes), "seeds": list(seeds), "device": device,
              "cohort": cohort.info, "summary": summary, "paired": paired, "runs": runs, "invocation_seconds": seconds,
              "run_seconds": run_secs}
    from xpgan.model.evaluate import jsonable

    (out / "study.json").write_text(json.dumps(jsonable(result), indent=1) + "\n")
    (out / "study.md").write_text(md)
    report.plot_study(summary, runs, out / "study.png", f"preset {p.name}")
    first_seed = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r.get("generator") and r["mode"] not in first_seed:
            first_seed[r["mode"]] = r["checkpoint"]
    report.plot_samples(cohort, first_seed, out / "samples.png", device=device)
    log(md)
    log(f"[study] wrote {out / 'study.md'}, {out / 'study.json'}, {out / 'study.png'}, {out / 'samples.png'}")
    return result
