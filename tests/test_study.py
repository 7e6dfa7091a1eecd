"""`xpgan study`: the smoke preset end to end, resume, the bootstrap CI against closed forms, the class
balance options, and the baseline learning an easy cohort."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import XPGANError
from xpgan.model import metrics as M
from xpgan.model.losses import cross_entropy_known
from xpgan.study import PRESETS, bootstrap_ci, run_study
from xpgan.study.cohort import ct_categories

OUTPUTS = ("study.md", "study.json", "study.png", "samples.png")


# ------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_of_a_constant_statistic_is_that_constant():
    assert bootstrap_ci(lambda idx: 0.25, 50, n_boot=200) == (0.25, 0.25)


def test_bootstrap_ci_of_a_proportion_matches_the_binomial_quantiles():
    # resampling n items of which k are 1: the resampled mean is Binomial(n, k/n) / n exactly
    from scipy.stats import binom

    n, k = 200, 30
    x = np.zeros(n)
    x[:k] = 1.0
    lo, hi = bootstrap_ci(lambda idx: float(x[idx].mean()), n, n_boot=20000, seed=3)
    want_lo, want_hi = binom.ppf(0.025, n, k / n) / n, binom.ppf(0.975, n, k / n) / n
    assert abs(lo - want_lo) <= 1.0 / n + 1e-12
    assert abs(hi - want_hi) <= 1.0 / n + 1e-12
    # and the normal approximation's half-width, 1.96 sqrt(p (1 - p) / n), to within one item
    half = 1.96 * math.sqrt((k / n) * (1 - k / n) / n)
    assert abs((hi - lo) / 2 - half) <= 1.0 / n


def test_bootstrap_ci_drops_undefined_resamples():
    assert all(math.isnan(v) for v in bootstrap_ci(lambda idx: float("nan"), 10, n_boot=20))
    lo, hi = bootstrap_ci(lambda idx: float("nan") if idx[0] == 0 else 1.0, 10, n_boot=200)
    assert (lo, hi) == (1.0, 1.0)


# ------------------------------------------------------------------------------------ metrics, losses
def test_average_precision_closed_form_and_step_sum():
    # ranking 1, 0, 1: precision at the two positives 1 and 2/3 -> AP = (1 + 2/3) / 2
    assert M.average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision([0, 1], [0.1, 0.9]) == 1.0
    assert math.isnan(M.average_precision([0, 0], [0.1, 0.9]))
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 300), np.round(rng.random(300), 1)      # many ties
    prec, rec, _ = M.pr_curve(y, s)
    assert M.average_precision(y, s) == pytest.approx(float(np.sum(np.diff(np.concatenate([[0.0], rec])) * prec)))


def test_weighted_cross_entropy_matches_torch_and_skips_unknown_labels():
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 2), torch.tensor([0, 1, 0, 0, 1, 0, 0])
    w = torch.tensor([1.0, 4.0])
    want = F.cross_entropy(logits, labels, weight=w)
    assert torch.allclose(cross_entropy_known(logits, labels, w), want)
    with_unknown = cross_entropy_known(torch.cat([logits, torch.randn(2, 2)]),
                                       torch.cat([labels, torch.tensor([-1, -1])]), w)
    assert torch.allclose(with_unknown, want)
    assert torch.allclose(cross_entropy_known(logits, labels), F.cross_entropy(logits, labels))


def test_ct_categories_mosmed_shares():
    cats = ct_categories(240, (0.23, 0.40, 0.18, 0.12, 0.07))
    assert len(cats) == 240 and cats == sorted(cats)
    counts = [cats.count(g) for g in range(5)]
    assert counts == [55, 96, 43, 29, 17]          # largest remainder of 55.2, 96, 43.2, 28.8, 16.8
    assert set(ct_categories(5, (0.9, 0.1, 0, 0, 0))) == {0, 1, 2, 3, 4}


# ------------------------------------------------------------------------------------------ the study
SMOKE_MODES = ["baseline", "drr", "xpgan", "xpgan:vector"]


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "smoke"
    logs: list[str] = []
    res = run_study(out, preset="smoke", seeds=[0], modes=SMOKE_MODES, device="cpu", workers=1, log=logs.append)
    return out, res, logs


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_smoke_study_writes_every_output_and_trains_every_mode(smoke_study):
    out, res, logs = smoke_study
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 200, name
    data = json.loads((out / "study.json").read_text())
    assert [(r["mode"], r["seed"]) for r in data["runs"]] == [("baseline", 0), ("drr", 0), ("xpgan", 0),
                                                              ("xpgan:vector", 0)]
    n_test = data["cohort"]["counts"]["cxr_test"][0]
    for r in data["runs"]:
        assert r["steps"] == PRESETS["smoke"].steps                   # the same classifier updates
        assert r["config"]["max_steps"] == PRESETS["smoke"].steps
        assert r["config"]["class_balance"] == PRESETS["smoke"].class_balance
        assert len(r["test_scores"]) == len(r["test_labels"]) == n_test
        assert 0.0 <= r["threshold"] <= 1.0 and set(r["test"]) >= {"precision", "recall", "f1", "auroc", "auprc"}
        assert (out / "runs" / f"{r['mode'].replace(':', '-')}-seed0" / "result.json").is_file()
    assert [r["config"]["g_arch"] for r in data["runs"][2:]] == ["projected", "vector"]
    for r in data["runs"][2:]:
        gen = r["generator"]
        assert gen["studies"] == PRESETS["smoke"].n_ct_holdout and gen["l1_g"] > 0 and gen["l1_g_other_study"] > 0
        assert 0.0 <= gen["identification"] <= 1.0 and gen["variation_ratio"] >= 0
        assert gen["g_arch"] == r["config"]["g_arch"]
        # figures that need the seed's drr and baseline runs
        assert 0.0 <= gen["evidence_auroc_drr_mode"] <= 1.0
        assert np.isfinite(gen["kid_g"]) and np.isfinite(gen["kid_drr"])
    md = (out / "study.md").read_text()
    for mode in ("baseline", "drr", "xpgan", "xpgan:vector"):
        assert f"| {mode} | 1 |" in md
    assert "identification" in md and "KID" in md
    assert any("run 4/4 done" in line for line in logs) and any("ETA" in line for line in logs)
    counts = data["cohort"]["counts"]
    assert counts["ct_grades"][0] < sum(counts["ct_grades"][1:])          # CT mostly positive


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_resuming_skips_finished_runs_and_gives_the_same_table(smoke_study):
    out, res, _ = smoke_study
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert len(stamps) == 4

    def table():
        return [ln for ln in (out / "study.md").read_text().splitlines()
                if ln.startswith("| ") and not ln.startswith("| run")]

    before = table()
    logs: list[str] = []
    again = run_study(out, preset="smoke", seeds=[0], modes=SMOKE_MODES, device="cpu", workers=1, log=logs.append)
    assert any("4 of 4 runs already finished" in line for line in logs)
    assert not any("done: " in line and "seed 0 in" in line for line in logs)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == stamps
    assert again["summary"] == res["summary"]
    assert table() == before                     # every row, per-run timings included
    with pytest.raises(XPGANError, match="other settings"):
        run_study(out, preset=dataclasses.replace(PRESETS["smoke"], steps=4), seeds=[0], log=lambda s: None)
    with pytest.raises(XPGANError, match="other settings"):    # --steps changes the budget the folder holds
        run_study(out, preset="smoke", steps=PRESETS["smoke"].steps + 1, seeds=[0], log=lambda s: None)
    run_study(out, preset="smoke", steps=PRESETS["smoke"].steps, seeds=[0], device="cpu", log=logs.append)
    assert any("3 of 3 runs already finished" in line for line in logs[-8:])   # the preset's own budget: same
    # a result that lacks a generator figure gets its generator metrics again from the checkpoint
    path = out / "runs" / "xpgan-seed0" / "result.json"
    old = json.loads(path.read_text())
    json.dump({**old, "generator": {k: v for k, v in old["generator"].items() if k != "follows_study"}},
              path.open("w"))
    logs.clear()
    run_study(out, preset="smoke", seeds=[0], device="cpu", log=logs.append)
    assert any("xpgan seed 0: generator / transfer figures completed" in line for line in logs)
    new_gen, old_gen = json.loads(path.read_text())["generator"], old["generator"]
    flat = {k: v for k, v in new_gen.items() if not isinstance(v, dict)}
    assert flat == pytest.approx({k: v for k, v in old_gen.items() if not isinstance(v, dict)})
    for who in ("g", "drr"):                       # the realism figures, recomputed from the checkpoint
        assert new_gen["realism"][who] == pytest.approx(old_gen["realism"][who])


@pytest.mark.slow
def test_oversampling_repeats_each_positive(smoke_study):
    from xpgan.model.data import CXRDataset

    store = smoke_study[0] / "cohort" / "stores" / "cxr.zarr"
    plain = CXRDataset(store, part="train", val_fraction=0.2)
    over = CXRDataset(store, part="train", val_fraction=0.2, oversample_positive=3)
    n_pos = int(np.sum(plain.labels == 1))
    assert n_pos > 0 and len(over) == len(plain) + 2 * n_pos
    assert int(np.sum(over.labels == 1)) == 3 * n_pos
    assert set(over.indices.tolist()) == set(plain.indices.tolist())
    assert np.all(np.diff(over.indices) >= 0)                 # still in store order (shard-aware blocks)


def test_study_cli_rejects_bad_options_in_one_line(tmp_path):
    r = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--preset", "huge"])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--preset", "smoke", "--modes", "gan"])
    assert r.exit_code == 2 and "--modes" in r.output
    r = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--preset", "smoke", "--steps", "0"])
    assert r.exit_code == 2 and "error: --steps must be an integer >= 1" in r.output


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_baseline_beats_chance_on_an_easy_cohort(tmp_path):
    easy = dataclasses.replace(PRESETS["smoke"], name="easy", n_cxr=150, cxr_positive_fraction=0.3,
                               positive_grades=(4,), steps=40, cxr_batch=16, n_boot=300)
    res = run_study(tmp_path / "easy", preset=easy, seeds=[0], modes=["baseline"], device="cpu", workers=1,
                    log=lambda s: None)
    test = res["runs"][0]["test"]
    ci = res["summary"]["baseline"]["auroc"]["ci95"]
    print("easy cohort baseline:", test, "AUROC CI", ci)
    assert test["auroc"] >= 0.75, test
    assert ci[0] > 0.5, ci                       # the whole 95 % interval above chance


def test_study_cli_takes_space_separated_seeds_and_modes():
    from xpgan.study.config import study_lists

    # what click hands over for `--seeds 3 4 --modes drr xpgan`
    assert study_lists(["3"], ["drr"], ["4", "xpgan"]) == ([3, 4], ["drr", "xpgan"])
    assert study_lists(["0", "1"], ["baseline,drr"], []) == ([0, 1], ["baseline", "drr"])
    with pytest.raises(XPGANError, match="--modes"):
        study_lists(["0"], ["baseline"], ["gan"])


@pytest.mark.parametrize("mode, base, aug", [("drr", "drr", "none"), ("drr+aug", "drr", "pose"),
                                             ("xpgan+aug", "xpgan", "pose"), ("baseline", "baseline", "none")])
def test_aug_rows_train_the_base_mode_with_posed_drrs(tmp_path, mode, base, aug):
    from xpgan.study.cohort import PRESETS, Cohort
    from xpgan.study.config import MODES, PAPER_MODES
    from xpgan.study.runs import train_config

    cohort = Cohort(tmp_path, tmp_path / "ct.zarr", tmp_path / "ho.zarr", tmp_path / "cxr.zarr", {})
    cfg = train_config(PRESETS["smoke"], cohort, mode, 0, tmp_path / "run", "cpu")
    assert (cfg.mode, cfg.drr_aug) == (base, aug)
    assert mode in MODES and set(PAPER_MODES) == {"baseline", "drr", "xpgan"}


def test_study_refuses_a_non_empty_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(XPGANError, match="not empty and was not made by `xpgan study`"):
        run_study(tmp_path, preset="smoke", seeds=[0], modes=["baseline"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
