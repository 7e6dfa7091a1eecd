"""The study's tables and figures: mean +- sd over seeds, 95 % bootstrap CIs over test images, study.md,
study.png (bars with CIs, ROC curves) and samples.png (DRR | G(ct) | a real radiograph of the same label).

Bootstrap: the test images are resampled with replacement (`n_boot` times, one fixed generator); on each
resample every run of a mode is scored with its own, fixed validation threshold and the metric is averaged
over the mode's seeds; the CI is the 2.5 / 97.5 percentile of those averages (resamples where a metric is
undefined, e.g. AUROC without a positive, are dropped).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from xpgan.model import metrics as M

METRICS = ("precision", "recall", "f1", "auroc", "auprc")
LABELS = {"precision": "precision", "recall": "recall", "f1": "F1", "auroc": "AUROC", "auprc": "AUPRC"}


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat(indices)` over `n_boot` resamples of n items with replacement;
    non-finite statistics are dropped; (nan, nan) when none is finite."""
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, size=n)) for _ in range(int(n_boot))], np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
    return float(lo), float(hi)


def metric_value(name: str, y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    if name == "auroc":
        return M.auroc(y, s)
    if name == "auprc":
        return M.average_precision(y, s)
    return M.prf(M.confusion(y, s, threshold))[name]


def summarize(runs: Sequence[dict], modes: Sequence[str], *, n_boot: int, seed: int = 0) -> dict:
    """Per mode and metric: mean and sd over seeds, and the bootstrap CI over test images."""
    out = {}
    for mode in modes:
        rs = [r for r in runs if r["mode"] == mode]
        if not rs:
            continue
        y = np.asarray(rs[0]["test_labels"], np.int64)
        scores = [np.asarray(r["test_scores"], np.float64) for r in rs]
        thresholds = [float(r["threshold"]) for r in rs]
        entry = {"seeds": [r["seed"] for r in rs]}
        for name in METRICS:
            vals = np.array([r["test"][name] if r["test"][name] is not None else np.nan for r in rs], float)

            def stat(idx, name=name):
                return float(np.mean([metric_value(name, y[idx], sc[idx], t) for sc, t in zip(scores, thresholds)]))

            lo, hi = bootstrap_ci(stat, len(y), n_boot=n_boot, seed=seed)
            entry[name] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                           "ci95": [lo, hi], "values": vals.tolist()}
        gens = [r["generator"] for r in rs if r.get("generator")]
        if gens:
            entry["generator"] = {k: float(np.mean([g.get(k, np.nan) for g in gens]))
                                  for k in ("l1_g", "l1_g_other_study", "l1_constant_mean", "l1_mean_image")}
            entry["generator"]["held_out_studies"] = gens[0]["held_out_studies"]
        out[mode] = entry
    return out


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def markdown(summary: dict, runs: Sequence[dict], *, header: str, footer: str = "") -> str:
    lines = [header, "",
             "Mean ± sd over seeds, [95 % bootstrap CI over test images]; threshold: best F1 on the validation "
             "part of train.", "",
             "| mode | seeds | " + " | ".join(LABELS[m] for m in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for mode, e in summary.items():
        cells = [f"{_fmt(e[m]['mean'])} ± {_fmt(e[m]['sd'])} [{_fmt(e[m]['ci95'][0])}, {_fmt(e[m]['ci95'][1])}]"
                 for m in METRICS]
        lines.append(f"| {mode} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    gens = {m: e["generator"] for m, e in summary.items() if "generator" in e}
    if gens:
        lines += ["", "Generator on held-out CT studies (mean over seeds): L1 between G(ct) and DRR(ct), against "
                  "constant predictions from the training DRRs (lower is better).", "",
                  "| mode | held-out studies | L1 G(ct) vs DRR | L1 G(ct) vs another study's DRR | "
                  "L1 constant mean grey | L1 per-pixel mean DRR |",
                  "|---|---|---|---|---|---|"]
        for mode, g in gens.items():
            lines.append(f"| {mode} | {g['held_out_studies']} | {g['l1_g']:.4f} | {_fmt(g['l1_g_other_study'], 4)} | "
                         f"{g['l1_constant_mean']:.4f} | {g['l1_mean_image']:.4f} |")
    lines += ["", "Every run:", "",
              "| run | threshold | precision | recall | F1 | AUROC | AUPRC | val AUROC | train s | s/step |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        t = r["test"]
        lines.append(f"| {r['mode']} seed {r['seed']} | {r['threshold']:.3f} | " +
                     " | ".join(_fmt(t[m]) for m in METRICS) +
                     f" | {_fmt(r['val'].get('auroc') if r.get('val') else None)} | {r['train_seconds']:.0f} | "
                     f"{r['sec_per_step']:.2f} |")
    if footer:
        lines += ["", footer]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_study(summary: dict, runs: Sequence[dict], path: Path, title: str) -> None:
    plt = _plt()
    fig, (ax, ax_roc) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100, gridspec_kw={"width_ratios": [1.6, 1]})
    modes = list(summary)
    width = 0.8 / max(1, len(modes))
    x = np.arange(len(METRICS))
    for i, mode in enumerate(modes):
        e = summary[mode]
        mean = np.array([e[m]["mean"] for m in METRICS])
        lo = np.array([e[m]["ci95"][0] for m in METRICS])
        hi = np.array([e[m]["ci95"][1] for m in METRICS])
        err = np.vstack([np.clip(mean - lo, 0, None), np.clip(hi - mean, 0, None)])
        err = np.nan_to_num(err)
        ax.bar(x + (i - (len(modes) - 1) / 2) * width, np.nan_to_num(mean), width, yerr=err, capsize=3,
               label=mode, color=f"C{i}")
    ax.set(xticks=x, xticklabels=[LABELS[m] for m in METRICS], ylim=(0, 1.05), ylabel="test split",
           title=f"{title}: mean over seeds, 95 % bootstrap CI")
    ax.legend(loc="upper right", fontsize=8)
    for i, mode in enumerate(modes):
        for j, r in enumerate(r for r in runs if r["mode"] == mode):
            fpr, tpr, _ = M.roc_curve(r["test_labels"], r["test_scores"])
            ax_roc.plot(fpr, tpr, color=f"C{i}", lw=1.5, alpha=0.85,
                        label=f"{mode} (AUROC {summary[mode]['auroc']['mean']:.3f})" if j == 0 else None)
    ax_roc.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, every seed",
               xlim=(0, 1), ylim=(0, 1.02))
    ax_roc.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_samples(cohort, xpgan_checkpoint: Optional[str], path: Path, device: str = "cpu") -> None:
    """One held-out CT study per grade: DRR | G(ct) (when an xpgan run exists) | a test radiograph of the
    same label (the CXR collection records the finding, not the grade)."""
    import torch

    from xpgan.model.data import CTDataset, CXRDataset, open_store

    g = open_store(cohort.ct_holdout_store, "ct")
    done = np.asarray(g["done"][:], bool)
    sev = np.asarray(g["severity"][:])
    picks = [int(np.flatnonzero(done & (sev == k))[0]) for k in range(5) if np.any(done & (sev == k))]
    G, window = None, (-1000.0, 1000.0)
    if xpgan_checkpoint:
        from xpgan.model import checkpoint as ckpt_io
        from xpgan.model.checkpoint import networks_from_checkpoint
        from xpgan.model.distributed import resolve_device

        dev = resolve_device(device)
        state = ckpt_io.load(xpgan_checkpoint, map_location="cpu")
        G = networks_from_checkpoint(state, ("G_ema",), dev)["G_ema"]
        window = tuple(state["net"]["hu_window"])
    ct = CTDataset(cohort.ct_holdout_store, hu_window=window, labelled_only=False)
    pos_of = {int(j): i for i, j in enumerate(ct.indices)}
    cxr = CXRDataset(cohort.cxr_store, part="test")
    pos_items = [i for i in range(len(cxr)) if cxr.labels[i] == 1]
    neg_items = [i for i in range(len(cxr)) if cxr.labels[i] == 0]
    cols = ["DRR(ct)"] + (["G(ct)"] if G is not None else []) + ["real radiograph, same label"]
    plt = _plt()
    fig, axes = plt.subplots(len(picks), len(cols), figsize=(2.4 * len(cols), 2.4 * len(picks)), dpi=100,
                             squeeze=False)
    for row, j in enumerate(picks):
        item = ct[pos_of[j]]
        imgs = [item["drr"][0]]
        if G is not None:
            with torch.no_grad():
                fake = G(torch.from_numpy(item["ct"][None]).to(dev), noise_mode="const").float().cpu().numpy()
            imgs.append(fake[0, 0])
        grade = int(sev[j])
        pool = pos_items if grade > 0 else neg_items
        imgs.append(cxr[pool[row % len(pool)]]["cxr"][0] if pool else np.zeros_like(imgs[0]))
        for c, img in enumerate(imgs):
            ax = axes[row, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"CT-{grade}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
