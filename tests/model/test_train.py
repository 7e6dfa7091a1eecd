import json

import numpy as np
import pytest
import torch

from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.config import TrainConfig
from xpgan.model.data import BlockShuffleSampler, CXRDataset
from xpgan.model.evaluate import evaluate
from xpgan.model.train import train


@pytest.fixture(scope="module")
def e2e_cxr(tmp_path_factory, store_writers):
    return store_writers[1](tmp_path_factory.mktemp("e2e") / "cxr.zarr", n=160, not_done=(79,))


@pytest.mark.slow
def test_train_then_eval_learns_separable_toy(e2e_cxr, tmp_path, one_thread):
    cfg = TrainConfig(cxr=str(e2e_cxr), mode="baseline", out=str(tmp_path / "run"), max_steps=30, batch_size=8,
                      preset="tiny", device="cpu", num_workers=0, val_fraction=0.3, log_every=10,
                      sample_every=15, checkpoint_every=1000, progress=False, seed=0)
    result = train(cfg)
    m = evaluate(result.checkpoint, e2e_cxr, split="test", out_dir=tmp_path / "eval", device="cpu")
    assert m["counts"]["items"] == 39 and m["counts"]["val_items"] > 0
    assert m["auroc"] > 0.95 and m["f1"] == m["at_best_val_f1"]["f1"]
    assert m["threshold"] == m["at_best_val_f1"]["threshold"]
    assert m["at_0.5"]["f1"] > 0.9
    assert m["at_best_val_f1"]["f1"] > 0.9
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["at_0.5"]["confusion_matrix"] == m["at_0.5"]["confusion_matrix"]
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 0 and (tmp_path / "eval" / "pr.png").stat().st_size > 0


def test_run_dir_holds_config_logs_samples(tiny_xpgan_run):
    cfg, result = tiny_xpgan_run
    run = ckpt_io.Path(result.run_dir)
    assert json.loads((run / "config.json").read_text())["mode"] == "xpgan"
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    assert {"loss/G_adv", "loss/D_real", "loss/D_r1", "loss/C_real", "lr/G"} <= set(lines[1]) | set(lines[0])
    assert lines[-1]["lr/C"] == pytest.approx(0.0, abs=1e-12)        # cosine annealed to zero
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-00000002.png", "step-00000004.png"]
    assert any((run / "tb").iterdir())
    from PIL import Image

    grid = np.asarray(Image.open(run / "samples" / "step-00000004.png"))
    # rows: batch items labelled with their study id; columns titled CT slice | DRR | G(ct) | CXR
    assert grid.shape[0] > 2 * 32 and grid.shape[1] > 4 * 32


def test_sample_sheet_titles_its_columns_and_labels_its_rows():
    from xpgan.model.runlog import image_grid as _image_grid
    from xpgan.pipeline.picture import labelled_grid

    cols = {"DRR": torch.full((3, 1, 8, 8), 0.25), "real CXR": torch.full((3, 1, 8, 8), 0.75)}
    sheet = _image_grid(cols, ["study_0001 / CXR COVID+", "b", "c"], max_rows=2)
    want = labelled_grid([[np.full((8, 8), 0.25), np.full((8, 8), 0.75)]] * 2, col_titles=["DRR", "real CXR"],
                         row_labels=["study_0001 / CXR COVID+", "b"])
    np.testing.assert_array_equal(sheet, want)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, store_writers, one_thread):
    cxr = store_writers[1](tmp_path / "cxr.zarr", n=40)
    cfg = TrainConfig(cxr=str(cxr), mode="baseline", out=str(tmp_path / "run"), max_steps=6, batch_size=4,
                      preset="tiny", device="cpu", num_workers=0, checkpoint_every=1, sample_every=0,
                      progress=False, seed=5)
    # poison the first item of the third batch (the trainer's real order) with a NaN pixel, written by the
    # store writer (a NaN that prep stored, with its digest, not a damaged chunk)
    ds = CXRDataset(cxr, part="train", val_fraction=cfg.val_fraction)
    pos = BlockShuffleSampler(ds.block_ids, seed=cfg.seed).epoch_order(0)[2 * cfg.batch_size]
    store_writers[1](tmp_path / "cxr.zarr", n=40, poison=(int(ds.indices[pos]),))
    with pytest.raises(XPGANError, match=r"step 3: loss term loss/C\w* is nan.*step-00000002.pt is untouched"):
        train(cfg)
    found = ckpt_io.list_checkpoints(tmp_path / "run")
    assert [p.name for p in found] == ["step-00000001.pt", "step-00000002.pt"]
    st = ckpt_io.load(found[-1])
    assert st["step"] == 2
    assert all(torch.isfinite(v).all() for v in st["models"]["C"].values() if v.is_floating_point())


def test_mode_drr_trains_classifier_on_drrs(toy_stores, tmp_path, one_thread):
    ct, cxr = toy_stores
    cfg = TrainConfig(ct=str(ct), cxr=str(cxr), mode="drr", out=str(tmp_path / "run"), max_steps=2, batch_size=4,
                      preset="tiny", device="cpu", num_workers=2, log_every=1, sample_every=0, progress=False)
    result = train(cfg)
    assert result.step == 2 and set(ckpt_io.load(result.checkpoint)["models"]) == {"C"}
    assert "loss/C_drr" in result.last_stats


def test_store_size_mismatch_is_an_error(tmp_path, store_writers):
    ct = store_writers[0](tmp_path / "ct.zarr", n=4, drr_size=64)
    cxr = store_writers[1](tmp_path / "cxr.zarr", n=8)
    cfg = TrainConfig(ct=str(ct), cxr=str(cxr), mode="drr", out=str(tmp_path / "run"), max_steps=1,
                      batch_size=2, preset="tiny", device="cpu", num_workers=0, progress=False)
    with pytest.raises(XPGANError, match="its DRRs are 64 px but the images of .* are 32 px"):
        train(cfg)


def test_cli_train_eval_generate_bench(toy_stores, tiny_xpgan_run, tmp_path, one_thread):
    from typer.testing import CliRunner

    from xpgan.cli import app

    ct, cxr = toy_stores
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--cxr", str(cxr), "--mode", "baseline", "--out", str(run), "--max-steps", "1",
                              "--batch-size", "4", "--preset", "tiny", "--device", "cpu", "--num-workers", "0",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "trained to step 1/1" in res.output
    again = runner.invoke(app, ["train", "--cxr", str(cxr), "--mode", "baseline", "--out", str(run), "--max-steps", "1",
                                "--preset", "tiny", "--device", "cpu"])
    assert again.exit_code == 2 and "already holds checkpoints" in again.output
    res = runner.invoke(app, ["eval", str(run / "checkpoints" / "step-00000001.pt"), "--cxr", str(cxr),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (run / "eval-test" / "metrics.json").is_file() and "AUROC" in res.output
    res = runner.invoke(app, ["generate", tiny_xpgan_run[1].checkpoint, "--ct", str(ct), "--out", str(tmp_path / "g"),
                              "--limit", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g" / "grid.png").is_file()
    res = runner.invoke(app, ["bench", "loader", "--ct", str(ct), "--cxr", str(cxr), "--batches", "2",
                              "--num-workers", "0"])
    assert res.exit_code == 0, res.output
    assert res.output.count("samples/s") == 2


def test_epochs_count_passes_over_cxr_train_part(toy_stores, tmp_path, one_thread):
    _, cxr = toy_stores
    cfg = TrainConfig(cxr=str(cxr), mode="baseline", out=str(tmp_path / "run"), epochs=1, batch_size=20,
                      preset="tiny", device="cpu", num_workers=0, sample_every=0, progress=False,
                      class_balance="none")   # "oversample" lengthens an epoch by the repeated positives
    n_train = len(CXRDataset(cxr, part="train", val_fraction=cfg.val_fraction))
    result = train(cfg)
    assert result.total_steps == result.step == n_train // 20
    assert ckpt_io.load(result.checkpoint)["streams"]["cxr"] == {"epoch": 1, "batch": 0}


def test_progress_postfix_keeps_a_loss_and_an_accuracy_of_the_same_term_apart():
    from xpgan.model.train import postfix

    shown = postfix({"loss/C_real": 0.7, "acc/C_real": 0.625, "loss/G_adv": 1.0})
    assert shown == {"C_real": "0.700", "acc/C_real": "0.625", "G_adv": "1.000"}


def test_cost_lines_say_steps_and_items_and_warn_for_the_paper_preset_on_a_cpu():
    from xpgan.model.train import cost_lines

    cfg = TrainConfig(cxr="c.zarr", ct="t.zarr", mode="xpgan", max_steps=100, batch_size=8, preset="paper")
    lines = cost_lines(cfg, 0, 100, 100, "cpu", 1, with_ct=True, img_res=256, ct_shape=(64, 256, 256))
    assert lines[0] == ("train xpgan: steps 0 -> 100 of 100 (100 to run), 8 CXR + 8 CT items per step, preset "
                        "paper, on cpu")
    assert lines[1].startswith("warning: the paper preset is sized for a GPU") and "4 h 43 min or more" in lines[1]
    assert "(256 px, volumes 64x256x256) takes about 170-220 s" in lines[1]
    assert len(cost_lines(cfg, 0, 100, 100, "cuda", 1, with_ct=True, img_res=256)) == 1
    cfg.preset = "tiny"
    assert len(cost_lines(cfg, 0, 100, 100, "cpu", 1, with_ct=True, img_res=256)) == 1


def test_the_paper_preset_cpu_warning_follows_the_store_sizes():
    from xpgan.model.train import cost_lines

    cfg = TrainConfig(cxr="c.zarr", ct="t.zarr", mode="xpgan", max_steps=10, batch_size=8, preset="paper")
    small = cost_lines(cfg, 0, 10, 10, "cpu", 1, with_ct=True, img_res=64, ct_shape=(32, 64, 64))[1]
    assert "(64 px, volumes 32x64x64) takes about 59-98 s" in small
    cfg.batch_size, cfg.cxr_batch_size = 2, 2   # a quarter of the items: a quarter of the time
    assert "takes about 15-24 s" in cost_lines(cfg, 0, 10, 10, "cpu", 1, with_ct=True, img_res=64)[1]
    cfg.mode = "baseline"   # the classifier is the same in both presets: no warning
    assert len(cost_lines(cfg, 0, 10, 10, "cpu", 1, with_ct=False, img_res=256)) == 1


def test_train_reports_its_cost_then_an_eta(tmp_path, store_writers, one_thread):
    cxr = store_writers[1](tmp_path / "cxr.zarr", n=40)
    cfg = TrainConfig(cxr=str(cxr), mode="baseline", out=str(tmp_path / "run"), max_steps=5, batch_size=4,
                      preset="tiny", device="cpu", num_workers=0, sample_every=0, progress=False, seed=0)
    lines = []
    train(cfg, log=lines.append)
    assert lines[0].startswith("train baseline: steps 0 -> 5 of 5 (5 to run), 4 CXR items per step, preset tiny")
    assert len(lines) == 2 and lines[1].startswith("step 3: ") and "for the 2 steps left (ETA " in lines[1]
