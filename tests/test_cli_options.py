"""Every numeric option of every command, fed hostile values: one line of error naming the option, no
traceback, and no file created. The options are enumerated from the Typer app, not listed by hand."""
from __future__ import annotations

import re
from typing import get_args, get_origin

import pytest
import typer
from typer.testing import CliRunner

from xpgan import bounds as B
from xpgan.cli import app
from xpgan.errors import XPGANError

ROOT = typer.main.get_command(app)
ALWAYS_REFUSED = {"huge": None, "inf": "inf", "nan": "nan", "word": "abc"}
MAYBE_VALID = {"minus one": "-1", "zero": "0"}


def _numeric_kind(param):
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation in (int, float):
        return annotation
    if get_origin(annotation) is tuple and set(get_args(annotation)) <= {int, float}:
        return get_args(annotation)[0]
    return None


def _commands(group=ROOT, path=()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


NUMERIC = [(path, cmd, p) for path, cmd in _commands() for p in cmd.params
           if p.param_type_name == "option" and _numeric_kind(p) is not None]


def _required_args(cmd, skip, tmp_path) -> list[str]:
    """Values for the command's required parameters: paths in tmp_path that do not exist."""
    args = []
    for p in cmd.params:
        if p is skip or not p.required:
            continue
        values = [str(tmp_path / "missing-in"), str(tmp_path / "missing-out")] if p.nargs == -1 else \
            [str(tmp_path / f"missing-{p.name}")]
        args += values if p.param_type_name == "argument" else [p.opts[0], *values]
    return args


def _option_args(param, value: str) -> list[str]:
    if param.nargs > 1:  # a tuple option: the hostile value first, valid defaults after it
        return [param.opts[0], value, *(str(v) for v in param.default[1:])]
    return [param.opts[0], value]


def _files(tmp_path) -> set:
    return {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}


def _ids(items):
    return [f"{' '.join(path)} {p.opts[0]}" for path, _, p in items]


def test_the_app_has_numeric_options_of_every_command_group():
    groups = {path[0] for path, _, _ in NUMERIC}
    assert {"drr", "prep", "bench", "train", "eval", "demo", "study", "generate", "inspect"} <= groups


@pytest.mark.parametrize("path, cmd, param", NUMERIC, ids=_ids(NUMERIC))
@pytest.mark.parametrize("label", list(ALWAYS_REFUSED))
def test_hostile_numbers_are_one_line_errors_before_any_file(tmp_path, monkeypatch, path, cmd, param, label):
    monkeypatch.chdir(tmp_path)
    value = ALWAYS_REFUSED[label] or ("1e300" if _numeric_kind(param) is float else str(2**70))
    args = [*_required_args(cmd, param, tmp_path), *_option_args(param, value)]
    before = _files(tmp_path)
    with pytest.raises(typer.BadParameter) as refused:  # refused while parsing, before the command runs
        cmd.make_context(path[-1], list(args))
    assert param.opts[0] in refused.value.format_message() or refused.value.param is param
    res = CliRunner().invoke(app, [*path, *args])
    text = res.output.strip()
    assert res.exit_code == 2, text
    assert len(text.splitlines()) == 1 and text.startswith("error: ") and "Traceback" not in text, text
    assert param.opts[0] in text, text
    assert _files(tmp_path) == before


@pytest.mark.parametrize("path, cmd, param", NUMERIC, ids=_ids(NUMERIC))
@pytest.mark.parametrize("label", list(MAYBE_VALID))
def test_minus_one_and_zero_are_refused_at_parse_time_or_accepted(tmp_path, monkeypatch, path, cmd, param, label):
    monkeypatch.chdir(tmp_path)
    option = _option_args(param, MAYBE_VALID[label])
    before = _files(tmp_path)
    try:  # parsing alone (the callbacks run, the command does not)
        cmd.make_context(path[-1], [*_required_args(cmd, param, tmp_path), *option])
    except typer.BadParameter:
        res = CliRunner().invoke(app, [*path, *_required_args(cmd, param, tmp_path), *option])
        text = res.output.strip()
        assert res.exit_code == 2 and len(text.splitlines()) == 1 and param.opts[0] in text, text
    assert _files(tmp_path) == before


def test_the_shape_bound_refuses_a_volume_no_worker_holds():
    with pytest.raises(XPGANError, match="the largest allowed volume is"):
        B.check_ct_shape("--shape", (1000, 1000, 1000))
    assert B.check_ct_shape("--shape", (64, 256, 256)) == (64, 256, 256)


@pytest.mark.parametrize("address, ok", [("tcp://10.0.0.5:8786", True), ("10.0.0.5:8786", True),
                                         ("tls://host:1", True), ("notaurl", False), ("tcp://host", False),
                                         ("tcp://host:99999", False), ("http://host:8786", False)])
def test_scheduler_addresses(address, ok):
    if ok:
        assert B.check_dask_address("--scheduler", address) == address
    else:
        with pytest.raises(XPGANError, match="--scheduler must be a Dask scheduler address"):
            B.check_dask_address("--scheduler", address)


def test_scheduler_that_is_not_an_address_creates_no_store(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    res = CliRunner().invoke(app, ["prep", "drr", str(src), str(tmp_path / "o.zarr"), "--scheduler", "notaurl"])
    assert res.exit_code == 2 and "--scheduler must be a Dask scheduler address" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_refused_choice_names_the_choices(tmp_path):
    res = CliRunner().invoke(app, ["train", "--cxr", str(tmp_path / "c.zarr"), "--mode", "foo"])
    assert res.exit_code == 2
    assert res.output.strip() == "error: --mode must be one of xpgan, drr, baseline, got 'foo'"


def test_train_config_reads_the_same_bounds():
    from xpgan.model.config import TrainConfig

    with pytest.raises(XPGANError, match="--lr must be a number > 0 and <= 1, got 1e\\+300"):
        TrainConfig(cxr="c.zarr", mode="baseline", max_steps=1, lr=1e300).validate()
    with pytest.raises(XPGANError, match="--seed must be an integer >= 0"):
        TrainConfig(cxr="c.zarr", mode="baseline", max_steps=1, seed=-1).validate()


def test_train_help_fits_80_columns_without_cutting_option_names():
    res = CliRunner().invoke(app, ["train", "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert max(len(x) for x in lines) <= 80
    train = ROOT.commands["train"]
    for p in train.params:
        for opt in p.opts:
            assert any(x.strip().startswith(opt) for x in lines), opt
    assert any(x.strip().startswith("--classifier-weights PATH") for x in lines)


def _help(path) -> str:
    res = CliRunner().invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert res.exit_code == 0, (path, res.output)
    return res.output


@pytest.mark.parametrize("path", [path for path, _ in _commands() if path != ("bench", "gpu")],
                         ids=" ".join)
def test_help_shows_no_python_types_braces_or_a_second_default_style(path):
    text = _help(path)
    usage = text.splitlines()[0]
    assert "{" not in usage and "}" not in usage, usage
    assert not re.search(r"<[a-z]", text), text                   # no <int>, <list[Path]>, <str>, <int,int,int>...
    for word in ("list[", "Path]", "<str>", "(default ", "(default:", "Default:", "; default"):
        assert word not in text, (path, word)


def test_help_names_the_values_of_options_that_take_several():
    prep = _help(("prep", "drr"))
    assert "prep drr [OPTIONS] SRC OUT\n" in prep
    assert "--shape D H W" in prep and "--spacing-range LO HI" in prep and "[default: 64 256 256]" in prep
    assert "prep cxr [OPTIONS] SRC... OUT\n" in _help(("prep", "cxr"))
    render = _help(("drr", "render"))
    assert "--offset D,H,W" in render and "--yaw-sweep START,STOP,STEP" in render
    train = " ".join(_help(("train",)).split())
    assert "One of --epochs and --max-steps is needed: without either, train stops before it starts" in train
    assert "--num-workers INT" in train and "[default: 0 when a process has 2 CPU cores or fewer" in train


@pytest.mark.parametrize("args, message", [
    (["--shape", "32,64,64"], "--shape takes 3 integers D H W, separated by spaces (e.g. --shape 64 256 256), "
                              "got '32,64,64'"),
    (["--shape", "32,64,64", "--size", "64"], "--shape takes 3 integers D H W, separated by spaces"),
    (["--shape", "32", "64"], "--shape takes 3 integers D H W"),
    (["--spacing-range", "0.5,5"], "--spacing-range takes 2 numbers LO HI, separated by spaces (e.g. "
                                   "--spacing-range 0.1 20.0), got '0.5,5'"),
])
def test_an_option_of_several_values_says_what_it_takes(tmp_path, monkeypatch, args, message):
    import subprocess
    import sys

    out = tmp_path / "ct.zarr"
    res = subprocess.run([sys.executable, "-m", "xpgan.cli", "prep", "drr", str(tmp_path), str(out), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: " + message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("path, extra", [
    (("prep", "drr"), ["SRC", "OUT.zarr"]), (("prep", "cxr"), ["SRC", "OUT.zarr"]), (("demo",), []),
])
@pytest.mark.parametrize("size, hint", [("100", "try 64 or 128"), ("24", "try 32"), ("48", "try 32 or 64")])
def test_image_sizes_the_networks_cannot_read_are_refused_when_the_command_line_is_read(tmp_path, path, extra,
                                                                                        size, hint):
    args = [*path, *[str(tmp_path / e) for e in extra], "--size", size]
    if path == ("demo",):
        args += ["--out", str(tmp_path / "d")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert res.output.strip() == (f"error: --size must be a power of two >= 32 (32, 64, 128, 256, ...: the image "
                                  f"sizes the networks read), got {size}; {hint}")
    assert list(tmp_path.iterdir()) == []


def test_drr_render_takes_any_detector_size():
    assert "--size INT" in _help(("drr", "render"))
    with pytest.raises(XPGANError, match="power of two >= 32"):
        B.check_image_size("--size", 100)
    assert B.check_image_size("--size", 64) == 64


def test_every_positional_argument_has_an_upper_case_placeholder():
    for path, cmd in _commands():
        for p in cmd.params:
            if p.param_type_name == "argument":
                assert p.metavar and p.metavar.isupper(), (path, p.name, p.metavar)


def test_study_seeds_obey_the_seed_bound(tmp_path):
    res = CliRunner().invoke(app, ["study", "--out", str(tmp_path / "s"), "--seeds", "0", "5000000000"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("error: --seeds must be an integer >= 0 and <= 4,294,967,295")
    assert not (tmp_path / "s").exists()
