"""train / eval / generate refuse a store that prep is writing (lock held) or did not finish (complete false),
saying how many items are done, unless --allow-incomplete."""
import shutil

import pytest
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.errors import XPGANError
from xpgan.model.data import CTDataset, ct_store_info, cxr_store_info
from xpgan.pipeline import schema
from xpgan.pipeline import store as st

runner = CliRunner()


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _mark_incomplete(path):
    st.set_complete(schema.open_group(path, "r+"), False)


def test_incomplete_store_is_refused_with_done_count(toy_stores, tmp_path):
    ct = _copy(toy_stores[0], tmp_path / "ct.zarr")
    _mark_incomplete(ct)
    with pytest.raises(XPGANError, match=r"incomplete store.*\(39 of 40 items done\).*--allow-incomplete"):
        ct_store_info(ct)
    assert ct_store_info(ct, allow_incomplete=True).n == 40
    assert len(CTDataset(ct)) == 39  # the datasets themselves read done items; the gate is the *_store_info


def test_store_being_written_is_refused_while_the_lock_is_held(toy_stores, tmp_path):
    cxr = _copy(toy_stores[1], tmp_path / "cxr.zarr")
    with st.StoreLock(cxr):
        with pytest.raises(XPGANError, match=r"a prep run \(pid \d+\) is writing this store now \(79 of 80 items"):
            cxr_store_info(cxr)
        assert cxr_store_info(cxr, allow_incomplete=True).n == 80
    assert cxr_store_info(cxr).n == 80  # lock released, store complete


def _train(cxr, out, *extra):
    return runner.invoke(app, ["train", "--cxr", str(cxr), "--mode", "baseline", "--out", str(out), "--max-steps",
                               "1", "--batch-size", "4", "--preset", "tiny", "--device", "cpu", "--num-workers", "0",
                               "--no-progress", "--sample-every", "0", *extra])


@pytest.mark.slow
def test_cli_train_eval_generate_refuse_incomplete_unless_allowed(toy_stores, tiny_xpgan_run, tmp_path, one_thread):
    ct = _copy(toy_stores[0], tmp_path / "ct.zarr")
    cxr = _copy(toy_stores[1], tmp_path / "cxr.zarr")
    _mark_incomplete(cxr)
    _mark_incomplete(ct)
    res = _train(cxr, tmp_path / "run")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.count("error:") == 1 and "(79 of 80 items done)" in res.output
    assert not (tmp_path / "run" / "checkpoints").exists()
    res = _train(cxr, tmp_path / "run", "--allow-incomplete")
    assert res.exit_code == 0, res.output
    ckpt = str(tiny_xpgan_run[1].checkpoint)
    res = runner.invoke(app, ["eval", ckpt, "--cxr", str(cxr), "--device", "cpu", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "incomplete store" in res.output and "(79 of 80 items done)" in res.output
    res = runner.invoke(app, ["eval", ckpt, "--cxr", str(cxr), "--device", "cpu", "--out", str(tmp_path / "e"),
                              "--allow-incomplete"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["generate", ckpt, "--ct", str(ct), "--out", str(tmp_path / "g"), "--device", "cpu",
                              "--limit", "1"])
    assert res.exit_code == 2 and "(39 of 40 items done)" in res.output
    res = runner.invoke(app, ["generate", ckpt, "--ct", str(ct), "--out", str(tmp_path / "g"), "--device", "cpu",
                              "--limit", "1", "--allow-incomplete"])
    assert res.exit_code == 0, res.output
