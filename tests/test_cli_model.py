import json

from typer.testing import CliRunner

from xpgan.cli import app

runner = CliRunner()


def test_train_dry_run_prints_resolved_config(tmp_path):
    res = runner.invoke(app, ["train", "--ct", str(tmp_path / "ct.zarr"), "--cxr", str(tmp_path / "cxr.zarr"),
                              "--mode", "drr", "--out", str(tmp_path / "run"), "--max-steps", "7",
                              "--batch-size", "3", "--preset", "tiny", "--device", "cpu", "--dry-run"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.output)
    assert cfg["mode"] == "drr" and cfg["max_steps"] == 7 and cfg["batch_size"] == 3 and cfg["lr"] == 0.002
    assert cfg["lambda_l1"] == 2.0 and cfg["preset"] == "tiny"
    assert not (tmp_path / "run").exists()


def test_train_bad_option_is_one_line_error(tmp_path):
    res = runner.invoke(app, ["train", "--cxr", str(tmp_path / "cxr.zarr"), "--mode", "baseline",
                              "--max-steps", "0", "--dry-run"])
    assert res.exit_code == 2
    assert "error: --max-steps must be an integer >= 1" in res.output


def test_eval_missing_checkpoint_is_one_line_error(tmp_path):
    res = runner.invoke(app, ["eval", str(tmp_path / "nope.pt"), "--cxr", str(tmp_path / "cxr.zarr")])
    assert res.exit_code == 2
    assert "no such checkpoint" in res.output


def test_eval_of_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    res = runner.invoke(app, ["eval", str(bad), "--cxr", str(tmp_path / "cxr.zarr")])
    assert res.exit_code == 2
    assert res.output.strip() == (f"error: {bad}: not a checkpoint of this program (not a PyTorch file of tensors, "
                                  "numbers and strings)")


def test_cli_module_imports_no_heavy_library():
    """`xpgan --help` stays fast: importing the CLI (option types and defaults included) loads no torch, numba,
    dask or zarr; the commands import them when they run."""
    import subprocess
    import sys

    code = ("import sys, xpgan.cli; heavy = [m for m in ('torch', 'numba', 'dask', 'zarr', 'nibabel', 'pydicom') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported by xpgan.cli: {out.stdout.strip()}"
