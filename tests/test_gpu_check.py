"""`xpgan bench gpu --cpu-only` (the GPU check's CPU parts at tiny sizes) runs end to end on a CPU machine."""
import json
import os
import subprocess
import sys


def test_gpu_check_cpu_only(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    p = subprocess.run([sys.executable, "-m", "xpgan.gpu_check", "--cpu-only", "--out", str(out), "--work", str(work),
                        "--max-seconds", "240"], capture_output=True, text=True, timeout=300,
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
    p = subprocess.run([sys.executable, "-m", "xpgan.gpu_check", "--cpu-only", "--sections", "nope",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown sections" in p.stderr
