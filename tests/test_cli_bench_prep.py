"""`xpgan bench prep` through typer's CliRunner: a tiny archive, both runs, the figures printed."""
import re

from typer.testing import CliRunner

from xpgan.cli import app

runner = CliRunner()


def test_bench_prep_prints_throughputs_ratios_and_stages(tmp_path):
    res = runner.invoke(app, ["bench", "prep", "--n", "3", "--shape", "6", "24", "24", "--out-shape", "4", "12", "12",
                              "--workers", "1", "--stages", "1", "--archive", str(tmp_path / "arch")])
    assert res.exit_code == 0, res.output
    out = res.output
    assert re.search(r"read\+gunzip only: 3 volumes in [\d.]+ s = [\d.]+ volumes/s", out), out
    assert re.search(r"prep drr end-to-end: 3 volumes in [\d.]+ s", out), out
    ratio = re.search(r"ratio end-to-end / read-only = ([\d.]+) wall .*, ([\d.]+) in CPU time", out)
    assert ratio and float(ratio.group(1)) > 0 and float(ratio.group(2)) > 0, out
    for stage in ("read_ct", "read_stored", "resize", "quantize", "drr", "encode", "write"):
        assert f"{stage} " in out
    assert "peak RSS per worker, MB" in out
    assert len(list((tmp_path / "arch").rglob("*.nii.gz"))) == 3


def test_bench_prep_refuses_bad_counts(tmp_path):
    res = runner.invoke(app, ["bench", "prep", "--n", "0", "--archive", str(tmp_path / "arch")])
    assert res.exit_code == 2 and "error:" in res.output
