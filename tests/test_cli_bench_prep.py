"""`xpgan bench prep` through typer's CliRunner: a tiny archive, both runs, the figures printed."""
import re

import pytest
from typer.testing import CliRunner

from xpgan.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_bench_prep_prints_throughputs_ratios_and_stages(tmp_path):
    res = runner.invoke(app, ["bench", "prep", "--n", "3", "--shape", "8", "24", "24", "--out-shape", "4", "12", "12",
                              "--workers", "1", "--stages", "1", "--archive", str(tmp_path / "arch")])
    assert res.exit_code == 0, res.output
    out = res.output
    read = re.search(r"read\+gunzip only: 3 volumes in ([\d.]+) s = ([\d.]+) volumes/s", out)
    prep = re.search(r"prep drr end-to-end: 3 volumes in ([\d.]+) s = ([\d.]+) volumes/s", out)
    assert read and prep, out
    read_s, prep_s = float(read.group(1)), float(prep.group(1))
    assert read_s > 0 and prep_s > 0
    # the printed rates and ratio are the printed times' (to their 2-decimal rounding)
    assert abs(float(read.group(2)) - 3 / read_s) <= 0.01 + 3 / read_s * 0.01 / read_s, out
    ratio = re.search(r"ratio end-to-end / read-only = ([\d.]+) wall .*, ([\d.]+) in CPU time", out)
    assert ratio and float(ratio.group(2)) > 0, out
    assert abs(float(ratio.group(1)) - prep_s / read_s) <= 0.01 + 0.006 * (prep_s + read_s) / read_s ** 2, out
    cpu_ms = dict((k, float(v)) for k, v in re.findall(r"(\w+) (\d+)", out.split("CPU ms: ")[1].splitlines()[0]))
    assert list(cpu_ms) == ["read_ct", "read_stored", "resize", "quantize", "drr", "encode", "write"], out
    assert all(v >= 0 for v in cpu_ms.values())
    assert "peak RSS per worker, MB" in out
    assert len(list((tmp_path / "arch").rglob("*.nii.gz"))) == 3


def test_bench_prep_refuses_bad_counts(tmp_path):
    res = runner.invoke(app, ["bench", "prep", "--n", "0", "--archive", str(tmp_path / "arch")])
    assert res.exit_code == 2 and "error:" in res.output
