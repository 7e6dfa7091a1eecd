"""The augmentation benchmark and the posed-DRR device check run end to end (CPU, tiny sizes)."""
import runpy
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_drr_aug_bench_prints_ms_per_sample(capsys):
    main = runpy.run_path(str(BENCH / "drr_aug_bench.py"))["main"]
    assert main(["--shape", "16", "32", "32", "--size", "32", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("ms/sample median") == 4 and "mode xpgan --drr-aug pose" in out


def test_pose_gpu_check_cpu_only(capsys):
    main = runpy.run_path(str(BENCH / "pose_gpu_check.py"))["main"]
    assert main(["--cpu-only", "--shape", "16", "32", "32", "--size", "32", "--batch", "2", "--poses", "4"]) == 0
    out = capsys.readouterr().out
    assert "(ok)" in out and "views/s" in out and out.count("ms per batch") == 2
