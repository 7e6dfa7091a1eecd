"""Output paths that cannot be written and absurd sizes are one-line errors (exit 2), before any work."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.pipeline.synth.simple import simple_chest
from xpgan.pipeline.synth.writers import write_nifti

runner = CliRunner()


def _commands(tmp_path, out):
    """Each command with valid-looking inputs and `out` as its output path."""
    src = tmp_path / "ct.nii.gz"
    if not src.exists():
        write_nifti(src, np.zeros((4, 6, 6), np.float32), (1.0, 1.0, 1.0))
    return {
        "prep drr": ["prep", "drr", src, out, "--workers", "0"],
        "prep cxr": ["prep", "cxr", tmp_path, out, "--workers", "0"],
        "train": ["train", "--cxr", tmp_path / "cxr.zarr", "--mode", "baseline", "--out", out],
        "eval": ["eval", tmp_path / "step.pt", "--cxr", tmp_path / "cxr.zarr", "--out", out],
        "generate": ["generate", tmp_path / "step.pt", "--ct", tmp_path / "ct.zarr", "--out", out],
        "drr render": ["drr", "render", src, out.with_suffix(".npy")],
    }


def _one_line_error(res, *fragments):
    text = res.output.strip()
    assert res.exit_code == 2 and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith("error: "), text
    for f in fragments:
        assert f in text, text
    return text


COMMANDS = ["prep drr", "prep cxr", "train", "eval", "generate", "drr render"]


@pytest.mark.parametrize("command", COMMANDS)
def test_output_under_a_file_is_one_line_error(tmp_path, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    args = _commands(tmp_path, blocker / "out.zarr")[command]
    res = runner.invoke(app, [str(a) for a in args])
    if command == "drr render":  # its output folder must exist
        _one_line_error(res, str(blocker / "out.npy"), "does not exist")
    else:
        _one_line_error(res, str(blocker / "out.zarr"), f"{blocker} is a file, not a folder")


def test_output_that_is_a_folder_fails_in_one_line_when_written(tmp_path):
    write_nifti(tmp_path / "ct.nii.gz", simple_chest((8, 12, 12), 0, dtype=np.float32), (1.0, 1.0, 1.0))
    (tmp_path / "o.npy").mkdir()
    res = runner.invoke(app, ["drr", "render", str(tmp_path / "ct.nii.gz"), str(tmp_path / "o.npy"), "--size", "8",
                              "--backend", "cpu"])
    _one_line_error(res, str(tmp_path / "o.npy"), "Is a directory")


@pytest.mark.slow  # a CLI subprocess per case (permissions apply only outside root)
@pytest.mark.parametrize("command", ["prep cxr", "train", "drr render"])
def test_read_only_output_folder_is_one_line_error(tmp_path, command, run_cli_unprivileged):
    ro = tmp_path / "ro"
    ro.mkdir()
    args = _commands(tmp_path, ro / "out.zarr")[command]
    ro.chmod(0o555)
    res = run_cli_unprivileged(*args)
    text = (res.stdout + res.stderr).strip()
    assert res.returncode == 2 and len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert text.startswith("error: ") and f"no permission to write in {ro}" in text, text


@pytest.mark.parametrize("args,limit", [(["drr", "render", "{src}", "{tmp}/o.npy"], 8192),
                                        (["prep", "drr", "{src}", "{tmp}/o.zarr"], 8192),
                                        (["bench", "drr"], 8192),
                                        (["prep", "cxr", "{tmp}", "{tmp}/o.zarr"], 4096)])
def test_absurd_size_is_refused_with_the_size(tmp_path, args, limit):
    src = tmp_path / "ct.nii.gz"
    write_nifti(src, np.zeros((4, 6, 6), np.float32), (1.0, 1.0, 1.0))
    argv = [a.format(src=src, tmp=tmp_path) for a in args] + ["--size", "100000"]
    text = _one_line_error(runner.invoke(app, argv), "--size must be an integer >= ", f"and <= {limit:,} pixels",
                           "got 100000")
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "o.npy").exists(), text
    argv[-1] = str(limit + 1)
    _one_line_error(runner.invoke(app, argv), f"<= {limit:,} pixels", f"got {limit + 1}")
