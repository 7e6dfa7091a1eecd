"""What train and eval say about stores that lack a class or labels, and where eval writes.

- train: a CXR training part without positives is said at the start; mode drr on CT items whose labels are
  all unknown is refused in one line saying how to give labels; mode xpgan says the same and trains;
  the loader workers default to the machine's cores.
- eval: an undefined AUROC / AUPRC / validation threshold says why; results of another CXR store are never
  overwritten (the default folder is named after the store, an explicit --out is refused).
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import XPGANError
from xpgan.model.config import TrainConfig, default_loader_workers
from xpgan.model.train import train

HOW = "give the labels with a manifest CSV path,label"


def _cfg(ct, cxr, out, mode, **kw):
    return TrainConfig(ct=str(ct) if ct else None, cxr=str(cxr), mode=mode, out=str(out), max_steps=1,
                       batch_size=2, cxr_batch_size=4, preset="tiny", device="cpu", num_workers=0,
                       sample_every=0, progress=False, **kw)


def test_train_refuses_mode_drr_on_unlabelled_ct_and_says_how_to_label(tmp_path, store_writers, one_thread):
    ct = store_writers[0](tmp_path / "ct.zarr", n=8, unlabelled=True)
    cxr = store_writers[1](tmp_path / "cxr.zarr", n=40)
    with pytest.raises(XPGANError) as exc:
        train(_cfg(ct, cxr, tmp_path / "run", "drr"))
    text = str(exc.value)
    assert text.startswith(f"{ct}: every CT label is unknown (-1), and --mode drr trains the classifier")
    assert HOW in text and "MosMed layout studies/CT-0..CT-4" in text and "usable items" not in text


def test_train_xpgan_on_unlabelled_ct_and_no_positive_cxr_says_so_at_the_start(tmp_path, store_writers,
                                                                                one_thread):
    ct = store_writers[0](tmp_path / "ct.zarr", n=8, unlabelled=True)
    cxr = store_writers[1](tmp_path / "cxr.zarr", n=40, negatives_only=True)
    lines = []
    train(_cfg(ct, cxr, tmp_path / "run", "xpgan"), log=lines.append)
    said = "\n".join(lines)
    assert f"warning: the training part of {cxr} has no positive (COVID-19) item" in said
    assert "--positive NAME (recognised without it: covid, covid-19, sars-cov-2" in said
    assert f"warning: every CT label in {ct} is unknown (-1): G and D learn from the volumes" in said and HOW in said


def test_loader_workers_follow_the_cores():
    assert default_loader_workers(1) == 0 and default_loader_workers(2) == 0
    assert default_loader_workers(4) == 3 and default_loader_workers(64) == 8
    cfg = TrainConfig(cxr="c.zarr", mode="baseline", max_steps=1).validate()
    assert cfg.num_workers == default_loader_workers()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, store_writers):
    import torch

    root = tmp_path_factory.mktemp("eval")
    cxr = store_writers[1](root / "cxr.zarr", n=40)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(_cfg(None, cxr, root / "run", "baseline"))
    finally:
        torch.set_num_threads(before)
    return root, cxr, result.checkpoint


def _eval(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args), "--device", "cpu"])


def test_eval_says_why_a_metric_is_undefined(checkpoint, store_writers):
    root, _, ckpt = checkpoint
    negatives = store_writers[1](root / "negatives.zarr", n=40, negatives_only=True)
    res = _eval(ckpt, "--cxr", negatives, "--out", root / "neg-eval")
    assert res.exit_code == 0, res.output
    assert "AUROC undefined, AUPRC undefined" in res.output
    assert "  AUROC undefined: the test split has no positive (COVID-19) item (AUROC needs both classes)" in res.output
    assert "  AUPRC undefined: the test split has no positive (COVID-19) item (AUPRC needs one)" in res.output
    assert ("  threshold 0.5: the validation part of train has no positive item to choose a threshold on"
            in res.output)
    metrics = json.loads((root / "neg-eval" / "metrics.json").read_text())
    assert set(metrics["undefined"]) == {"auroc", "auprc", "threshold"}


def test_eval_never_overwrites_the_results_of_another_store(checkpoint, store_writers):
    root, cxr, ckpt = checkpoint
    other = store_writers[1](root / "other.zarr", n=40, seed=5)
    assert _eval(ckpt, "--cxr", cxr).exit_code == 0
    first = (root / "run" / "eval-test" / "metrics.json").read_text()
    res = _eval(ckpt, "--cxr", other)                    # the default folder is taken: one named after the store
    assert res.exit_code == 0 and f"wrote {root / 'run' / 'eval-test-other'}/metrics.json" in res.output
    assert (root / "run" / "eval-test" / "metrics.json").read_text() == first
    res = _eval(ckpt, "--cxr", other, "--out", root / "run" / "eval-test")   # an explicit --out is refused
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith(f"error: {root / 'run' / 'eval-test' / 'metrics.json'}: holds the results of "
                                 f"another CXR store ({cxr.resolve()}, not {other.resolve()})")
    assert (root / "run" / "eval-test" / "metrics.json").read_text() == first
    assert _eval(ckpt, "--cxr", cxr).exit_code == 0    # the same store: its results are replaced
