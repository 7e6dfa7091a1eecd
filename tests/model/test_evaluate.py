import math

import numpy as np
import pytest

from xpgan.model import metrics as M

Y = np.array([1, 0, 1, 1, 0, 0])
S = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])


def test_confusion_and_prf_at_half():
    c = M.confusion(Y, S, 0.5)
    assert c == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    m = M.prf(c)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)


def test_auroc_counts_ordered_pairs():
    # positive/negative pairs ranked correctly: 0.9 beats 3, 0.7 beats 2, 0.4 beats 2 -> 7 of 9
    assert M.auroc(Y, S) == pytest.approx(7 / 9)
    assert M.auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)      # a tie counts one half
    assert math.isnan(M.auroc([1, 1], [0.2, 0.3]))


def test_best_f1_threshold_by_hand():
    # thresholds 0.9, 0.8, 0.7, 0.4, 0.3, 0.1 give F1 1/2, 2/5, 2/3, 6/7, 3/4, 2/3; the cut below 0.4
    # sits midway to the next score 0.3
    assert M.best_f1_threshold(Y, S) == pytest.approx(0.35)
    assert M.prf(M.confusion(Y, S, 0.35))["f1"] == pytest.approx(6 / 7)
    assert M.prf(M.confusion(Y, S, 0.4))["f1"] == pytest.approx(6 / 7)


def test_roc_and_pr_curves_by_hand():
    fpr, tpr, thr = M.roc_curve(Y, S)
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    prec, rec, _ = M.pr_curve(Y, S)
    np.testing.assert_allclose(prec, [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5, 1 / 2])
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 2 / 3, 1, 1, 1])


def test_summary_confusion_matrix_layout():
    s = M.summary(Y, S, 0.5)
    assert s["confusion_matrix"] == [[2, 1], [1, 2]]          # rows true 0/1, columns predicted 0/1


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match="0 or 1"):
        M.confusion([2, 0], [0.1, 0.2], 0.5)


def test_headline_metrics_follow_the_validation_threshold(tiny_xpgan_run, toy_stores, tmp_path):
    import json

    from xpgan.model.evaluate import evaluate

    _, result = tiny_xpgan_run
    _, cxr = toy_stores
    m = evaluate(result.checkpoint, cxr, out_dir=tmp_path / "e", device="cpu")
    best = m["at_best_val_f1"]
    assert m["threshold"] == best["threshold"]
    assert (m["precision"], m["recall"], m["f1"]) == (best["precision"], best["recall"], best["f1"])
    assert m["at_0.5"]["threshold"] == 0.5 and m["auprc"] == M.average_precision(*_labels_scores(m, tmp_path))
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["f1"] == m["f1"] and saved["threshold_source"].startswith("validation")


def _labels_scores(m, tmp_path):
    """The test split's labels and scores, recomputed the way evaluate does."""
    import torch

    from xpgan.model import checkpoint as ckpt_io
    from xpgan.model.data import CXRDataset
    from xpgan.model.evaluate import predict

    state = ckpt_io.load(m["checkpoint"])
    C = ckpt_io.networks_from_checkpoint(state, ("C",), torch.device("cpu"))["C"]
    return predict(C, CXRDataset(m["store"], part="test"), device=torch.device("cpu"))


def test_eval_of_a_run_folder_takes_its_newest_checkpoint_and_labels_each_threshold(tiny_xpgan_run, toy_stores,
                                                                                     tmp_path):
    import json

    from typer.testing import CliRunner

    from xpgan.cli import app

    _, result = tiny_xpgan_run
    _, cxr = toy_stores
    res = CliRunner().invoke(app, ["eval", str(result.run_dir), "--cxr", str(cxr), "--device", "cpu",
                                   "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    line = res.output.splitlines()[0]
    assert line.startswith("test: ") and "AUROC" in line and "AUPRC" in line
    assert "at the validation threshold" in line and "; at 0.5: P " in line
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["checkpoint"] == str(result.checkpoint)
