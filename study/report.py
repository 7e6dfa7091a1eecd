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
            entry["generator"] = {k: _mean_sd([g.get(k, np.nan) for g in gens]) for k in GEN_FIGURES}
            entry["generator"]["studies"] = gens[0]["studies"]
            real = [g["realism"] for g in gens if g.get("realism", {}).get("g")]
            if real:
                entry["realism"] = {f"{who}_{k}": _mean_sd([rf[who].get(k, np.nan) for rf in real])
                                    for who in ("g", "drr") for k in REALISM_FIGURES}
        transfers = [r["transfer"] for r in rs if r.get("transfer")]
        if transfers:
            entry["transfer"] = {k: _mean_sd([t.get(k, np.nan) for t in transfers]) for k in ("auroc", "f1")}
            entry["transfer"]["images"] = transfers[0].get("images", "")
        out[mode] = entry
    return out


REALISM_FIGURES = ("linear_auroc_4", "linear_auroc_8", "linear_auroc_16", "cnn_auroc", "pixel_w1", "sd_ratio")
PAIRED = (("xpgan", "baseline"), ("xpgan", "drr"))   # the paired differences the study reports


def paired_differences(runs: Sequence[dict], pairs=PAIRED, *, n_boot: int, seed: int = 0,
                       metrics=("f1", "auroc")) -> list[dict]:
    """For each (A, B) pair of modes with seeds in common: the mean over those seeds of metric(A) - metric(B)
    on the test split, and its 95 % bootstrap CI, both modes' runs scored on the same resample of the test
    images each time (a paired bootstrap over the test images, pooled across seeds)."""
    out = []
    for a, b in pairs:
        ra = {r["seed"]: r for r in runs if r["mode"] == a}
        rb = {r["seed"]: r for r in runs if r["mode"] == b}
        seeds = sorted(set(ra) & set(rb))
        if not seeds:
            continue
        y = np.asarray(ra[seeds[0]]["test_labels"], np.int64)
        for name in metrics:
            def stat(idx, name=name):
                return float(np.mean([
                    metric_value(name, y[idx], np.asarray(ra[k]["test_scores"])[idx], float(ra[k]["threshold"]))
                    - metric_value(name, y[idx], np.asarray(rb[k]["test_scores"])[idx], float(rb[k]["threshold"]))
                    for k in seeds]))
            lo, hi = bootstrap_ci(stat, len(y), n_boot=n_boot, seed=seed)
            out.append({"a": a, "b": b, "metric": name, "seeds": seeds, "diff": stat(np.arange(len(y))),
                        "ci95": [lo, hi]})
    return out


# the generator's figures on held-out studies (study/runs.py generator_report, cross_run_generator_metrics)
GEN_FIGURES = ("identification", "identification_specific", "l1_own_over_other_specific",
               "l1_g", "l1_g_other_study", "l1_own_over_other", "l1_mean_image", "variation_ratio",
               "evidence_auroc_g", "evidence_auroc_drr_mode", "kid_g", "kid_drr")


def _mean_sd(vals) -> dict:
    v = np.array([np.nan if x is None else x for x in vals], float)
    ok = v[np.isfinite(v)]
    return {"mean": float(ok.mean()) if ok.size else float("nan"),
            "sd": float(ok.std(ddof=1)) if ok.size > 1 else 0.0, "values": v.tolist()}


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def markdown(summary: dict, runs: Sequence[dict], *, header: str, footer: str = "",
             paired: Optional[list[dict]] = None) -> str:
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
        lines += ["", "Generator on held-out CT studies of other patients (mean ± sd over seeds): identification = "
                  "share of studies whose G(ct) correlates best (NCC) with its own DRR (chance 1/n), on the whole "
                  "images and on their study-specific part (each set minus its per-pixel mean image: what is "
                  "particular to the study, without the appearance G shares across studies); L1 of G(ct) "
                  "against its own and against other studies' DRRs, and of the per-pixel mean training DRR; "
                  "variation = G's per-pixel sd across studies / the DRRs'; evidence = AUROC against the CT label "
                  "of the run's C on G(ct) and of the same seed's drr-mode C on the DRRs; realism = KID (x1000) to "
                  "the real test radiographs in the feature space of the same seed's baseline C.", "",
                  "| mode | studies | identification | identification, specific | L1 own | L1 other | own/other | "
                  "own/other, specific | L1 mean DRR | variation | evidence C(G) | evidence drr-C(DRR) | KID G | "
                  "KID DRR |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for mode, g in gens.items():
            def cell(k, digits=3, scale=1.0, g=g):
                m, sd = g[k]["mean"], g[k]["sd"]
                return f"{_fmt(m * scale, digits)} ± {_fmt(sd * scale, digits)}" if np.isfinite(m) else "n/a"
            lines.append(f"| {mode} | {g['studies']} | {cell('identification')} | "
                         f"{cell('identification_specific')} | {cell('l1_g', 4)} | "
                         f"{cell('l1_g_other_study', 4)} | {cell('l1_own_over_other')} | "
                         f"{cell('l1_own_over_other_specific')} | {cell('l1_mean_image', 4)} | "
                         f"{cell('variation_ratio')} | {cell('evidence_auroc_g')} | "
                         f"{cell('evidence_auroc_drr_mode')} | "
                         f"{cell('kid_g', 2, 1000.0)} | {cell('kid_drr', 2, 1000.0)} |")
    lines += _realism_lines(summary) + _transfer_lines(summary) + _paired_lines(paired or [])
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


def _cell(e: dict, digits: int = 3) -> str:
    return f"{_fmt(e['mean'], digits)} ± {_fmt(e['sd'], digits)}" if np.isfinite(e["mean"]) else "n/a"


def _realism_lines(summary: dict) -> list[str]:
    rows = {m: e["realism"] for m, e in summary.items() if "realism" in e}
    if not rows:
        return []
    lines = ["", "Realism of G's images and, beside them, of the stored DRRs, against the real test radiographs "
             "(mean ± sd over seeds; model/gmetrics.py): two-sample tests, out-of-fold AUROC of a classifier "
             "telling the set from the radiographs (0.5 = indistinguishable): an L2 logistic regression on the "
             "images average-pooled to 4x4, 8x8 and 16x16 pixels, and a small CNN trained from scratch; the "
             "1-Wasserstein distance of the pooled (8x8) pixel values; the between-image sd over the "
             "radiographs'.", "",
             "| mode | linear 4x4 G / DRR | linear 8x8 G / DRR | linear 16x16 G / DRR | CNN G / DRR | "
             "pixel W1 G / DRR | sd ratio G / DRR |", "|---|---|---|---|---|---|---|"]
    for mode, rf in rows.items():
        cells = [f"{_cell(rf['g_' + k])} / {_cell(rf['drr_' + k])}" for k in REALISM_FIGURES]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def _transfer_lines(summary: dict) -> list[str]:
    rows = {m: e["transfer"] for m, e in summary.items() if "transfer" in e}
    if not rows:
        return []
    lines = ["", "Transfer: a fresh classifier trained on CT-derived images of the training CT studies only (no "
             "radiograph), tested on the real test radiographs (mean ± sd over seeds; model/transfer.py).", "",
             "| mode | trained on | transfer AUROC | transfer F1 |", "|---|---|---|---|"]
    for mode, t in rows.items():
        lines.append(f"| {mode} | {t['images']} | {_cell(t['auroc'])} | {_cell(t['f1'])} |")
    return lines


def _paired_lines(paired: list[dict]) -> list[str]:
    if not paired:
        return []
    lines = ["", "Paired differences on the test split (mean over the seeds both modes ran, [95 % paired bootstrap "
             "CI over test images]):", "", "| difference | metric | seeds | value | 95 % CI |", "|---|---|---|---|---|"]
    for d in paired:
        lines.append(f"| {d['a']} − {d['b']} | {LABELS[d['metric']]} | {len(d['seeds'])} | {d['diff']:+.3f} | "
                     f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    return lines


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


def _label_word(label: int) -> str:
    return "COVID-19" if label == 1 else "negative" if label == 0 else "label unknown"


def plot_samples(cohort, generators: dict[str, str], path: Path, device: str = "cpu", per_grade: int = 3) -> None:
    """`per_grade` held-out CT studies per grade (one row per grade), each as DRR | G(ct) of every generator
    in `generators` (column title -> xpgan checkpoint), so a reader sees whether G follows the study; and
    one test radiograph of the row's label (the CXR collection records the finding, not the grade)."""
    import torch

    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.data import CTDataset, CXRDataset, read_strings
    from xpgan.model.distributed import resolve_device
    from xpgan.pipeline.schema import open_store

    g = open_store(cohort.ct_holdout_store, "ct")
    done = np.asarray(g["done"][:], bool)
    sev = np.asarray(g["severity"][:])
    ids = read_strings(g["study_id"], cohort.ct_holdout_store)
    grades = [k for k in range(5) if np.any(done & (sev == k))]
    dev = resolve_device(device)
    Gs = {}
    for name, ckpt in generators.items():
        Gs[name] = networks_from_checkpoint(ckpt_io.load(ckpt, map_location="cpu"), ("G_ema",), dev)["G_ema"]
    ct = CTDataset(cohort.ct_holdout_store, labelled_only=False)
    pos_of = {int(j): i for i, j in enumerate(ct.indices)}
    cxr = CXRDataset(cohort.cxr_store, part="test")
    pools = {k: [i for i in range(len(cxr)) if cxr.labels[i] == k] for k in (0, 1)}
    per_study = ["DRR"] + [f"G {name}" for name in Gs]
    labels = np.asarray(g["label"][:])
    shown = {k: np.flatnonzero(done & (sev == k))[:per_grade] for k in grades}
    n_show = max((len(v) for v in shown.values()), default=1)   # no empty columns when grades have few studies
    n_cols = n_show * len(per_study) + 1
    tile = 2.0   # inches per tile: 200 px at dpi 100, the titles in 9 pt fit above it
    plt = _plt()
    fig, axes = plt.subplots(len(grades), n_cols, figsize=(tile * n_cols + 0.6, (tile + 0.55) * len(grades) + 0.5),
                             dpi=100, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for row, grade in enumerate(grades):
        for k, j in enumerate(shown[grade]):
            item = ct[pos_of[int(j)]]
            imgs = [item["drr"][0]]
            with torch.no_grad():
                for G in Gs.values():
                    hu = torch.from_numpy(item["ct"][None]).to(dev)
                    beam = torch.from_numpy(item["beam"][None])
                    imgs.append(G(hu, beam, noise_mode="const").float().cpu().numpy()[0, 0])
            for c, img in enumerate(imgs):
                ax = axes[row, k * len(per_study) + c]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                study = f"{ids[int(j)][-14:]} ({_label_word(int(labels[int(j)]))})"
                ax.set_title(f"{study}\n{per_study[c]}" if c == 0 else f"\n{per_study[c]}", fontsize=9)
        lab = 1 if grade > 0 else 0
        pool = pools[lab]
        ax = axes[row, -1]
        if pool:
            ax.imshow(cxr[pool[row % len(pool)]]["cxr"][0], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"real test radiograph\n({_label_word(lab)})", fontsize=9)
        axes[row, 0].axis("on")
        for spine in axes[row, 0].spines.values():
            spine.set_visible(False)
        axes[row, 0].set_ylabel(f"CT-{grade}", fontsize=11, fontweight="bold")
    fig.suptitle("Held-out CT studies by grade: the study's DRR and each generator's G(ct);\nright: a real test "
                 "radiograph of the same label", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
