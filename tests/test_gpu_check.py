"""`xpgan bench gpu --cpu-only` (the GPU check's CPU parts at tiny sizes) runs end to end on a CPU machine."""
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_gpu_check_cpu_only(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    p = subprocess.run([sys.executable, "-m", "xpgan.bench.gpu_check", "--cpu-only", "--out", str(out),
                        "--work", str(work), "--max-seconds", "240"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((out / "gpu_check.json").read_text())
    s = res["sections"]
    for name in ("agree", "rates", "torchrun"):
        assert s[name]["status"] == "skipped (--cpu-only)"
    for name in ("env", "prep", "train", "evalgen", "loader"):
        assert s[name]["status"] == "ok", (name, s[name])
    assert s["prep"]["result"]["prep_drr"]["failures"] == 0
    run = s["train"]["result"]["xpgan-fp32"]
    assert run["loss_finite"] and run["steps"] == 2 and run["samples_per_s"] > 0
    assert run["compute_only"]["samples_per_s"] > 0
    assert s["evalgen"]["result"]["images"] >= 1
    assert s["loader"]["result"]["workers"]["0"] > 0
    assert "wrote" in p.stdout and (out / "gpu_check.log").is_file()


def test_gpu_check_stops_on_unknown_section(tmp_path):
    p = subprocess.run([sys.executable, "-m", "xpgan.bench.gpu_check", "--cpu-only", "--sections", "nope",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown sections" in p.stderr


@pytest.mark.slow
def test_gpu_check_focused_train_runs_and_timings(tmp_path):
    # the focused form the lead runs on a GPU: chosen sections, modes and precision, a per-section limit
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "xpgan.cli", "bench", "gpu", "--cpu-only", "--out", str(out),
                        "--sections", "env,prep,train", "--train-modes", "baseline", "--amp", "fp32",
                        "--limits", "train=120", "--max-seconds", "200"],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=260,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert set(res["sections"]) == {"env", "prep", "train"}
    runs = res["sections"]["train"]["result"]
    assert list(runs) == ["baseline-fp32"]
    tm = runs["baseline-fp32"]["timing"]
    assert len(tm["step_s"]) == 2 and len(tm["batch_s"]) == 2 and tm["phase_s"][0].keys() == {"C"}
    assert tm["setup_s"] > 0 and tm["first_step_s"] > 0 and tm["checkpoint_s"] > 0
    assert "first step" in p.stdout


def test_gpu_check_rejects_bad_train_options(tmp_path):
    for extra in (["--amp", "fp8"], ["--train-modes", "gan"], ["--limits", "train=abc"]):
        p = subprocess.run([sys.executable, "-m", "xpgan.bench.gpu_check", "--cpu-only", "--out", str(tmp_path),
                            *extra],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "error:" in p.stderr, (extra, p.stderr[-500:])
