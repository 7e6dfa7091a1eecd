"""`xpgan demo` end to end on a reduced size: every output exists and the metrics parse."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.demo import DemoConfig, run_demo
from xpgan.errors import XPGANError


def _tiny(out: Path) -> DemoConfig:
    return DemoConfig(out=str(out), seed=1, n_ct=5, ct_shape=(12, 64, 64), size=32, prep_depth=16, n_cxr=16,
                      cxr_image_px=64, cxr_phantom_shape=(24, 40, 40), train_steps=2, batch_size=2,
                      workers=1, progress=False)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_pipeline_reduced(tmp_path):
    out = tmp_path / "demo"
    logs = []
    res = run_demo(_tiny(out), log=logs.append)
    text = res.text()
    for key in ("CT archive", "CXR archive", "CT store", "CXR store", "CT contact sheet", "CXR contact sheet",
                "checkpoint", "metrics", "generated images", "summary"):
        assert key in res.paths, key
        assert Path(res.paths[key]).exists(), (key, res.paths[key])
        assert res.paths[key] in text
    for sheet in ("ct_sheet.png", "cxr_sheet.png", "ct_item.png"):
        assert (out / "sheets" / sheet).stat().st_size > 1000
    # the metrics are those of the CXR store's test split, and G translated every done CT item
    from xpgan.pipeline import schema

    cxr, ct = schema.open_store(res.paths["CXR store"]), schema.open_store(res.paths["CT store"])
    test = np.asarray(cxr["done"][:], bool) & (np.asarray(cxr["split"][:]) == schema.SPLIT_TEST)
    metrics = json.loads(Path(res.paths["metrics"]).read_text())
    assert metrics["split"] == "test" and metrics["counts"]["items"] == int(test.sum()) > 0
    assert metrics["counts"]["positive"] == int(np.asarray(cxr["label"][:])[test].sum())
    for at in ("at_0.5", "at_best_val_f1"):
        assert all(0.0 <= metrics[at][k] <= 1.0 for k in ("precision", "recall", "f1")), metrics[at]
    assert math.isnan(metrics["auroc"]) or 0.0 <= metrics["auroc"] <= 1.0
    generated = [p for p in (out / "runs" / "xpgan" / "generated").glob("*.png") if p.name != "grid.png"]
    assert len(generated) == int(np.asarray(ct["done"][:], bool).sum()) == 5
    assert (out / "archives" / "mosmed" / "dataset_registry.csv").exists()
    assert (out / "archives" / "cxr" / "metadata.csv").exists()
    assert set(res.seconds) == {"archives", "prep drr", "prep cxr", "inspect", "train", "eval", "generate"}


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(XPGANError, match="not made by `xpgan demo`"):
        run_demo(_tiny(tmp_path), log=lambda s: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_cli_reports_bad_options_in_one_line(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--size", "100"])
    assert r.exit_code == 2
    assert "error:" in r.output and "Traceback" not in r.output


def test_demo_folder_is_cleared_on_rerun(tmp_path):
    from xpgan.demo import MARKER, _prepare_out

    _prepare_out(tmp_path / "d")
    (tmp_path / "d" / "stores" / "ct.zarr").mkdir(parents=True)
    (tmp_path / "d" / "stores" / "ct.zarr.salt").write_text("x" * 32)
    _prepare_out(tmp_path / "d")
    assert (tmp_path / "d" / MARKER).exists()
    assert not (tmp_path / "d" / "stores").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_is_reproducible_for_a_seed(tmp_path):
    # Same seed -> same archives, stores (patient hashes included: the demo's salt comes from the seed) and
    # hence the same trainer validation carve, the same weights and the same metrics.
    import torch
    import zarr

    runs = [run_demo(_tiny(tmp_path / name), log=lambda s: None) for name in ("a", "b")]
    patients = [list(map(str, zarr.open_group(r.paths["CXR store"], mode="r")["patient"][:])) for r in runs]
    assert patients[0] == patients[1] and any(patients[0])
    states = [torch.load(r.paths["checkpoint"], map_location="cpu", weights_only=True)["models"] for r in runs]
    assert states[0].keys() == states[1].keys()
    for net in states[0]:
        for key, value in states[0][net].items():
            assert torch.equal(value, states[1][net][key]), (net, key)
    metrics = [json.loads(Path(r.paths["metrics"]).read_text()) for r in runs]
    for key in ("auroc", "precision", "recall", "f1", "at_0.5", "at_best_val_f1"):
        assert metrics[0].get(key) == metrics[1].get(key), key


def test_demo_verdict_says_whether_the_classifier_learned():
    from xpgan.demo import verdict

    assert verdict(0.92).startswith("the classifier learned")
    assert "NOT" in verdict(0.55) and "--steps" in verdict(0.55)
    assert "undefined" in verdict(float("nan")) and "undefined" in verdict(None)
