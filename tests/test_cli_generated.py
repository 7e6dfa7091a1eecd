"""Every command's options are generated from its configuration dataclass: each option is one field (same
name, default, help, required-ness), so a default or a help text has one owner."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer

from xpgan.cli import app
from xpgan.options import offered

ROOT = typer.main.get_command(app)
EXTRA = {"dry_run", "ctx"}  # parameters that are not configuration (train --dry-run, study's extra values)


def _commands(group=ROOT, path=()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path + (name,))
        elif path + (name,) != ("bench", "gpu"):  # its own argparse parser (it also runs without this CLI)
            yield path + (name,), cmd


COMMANDS = list(_commands())


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def test_every_command_but_bench_gpu_is_generated():
    assert len(COMMANDS) == 12
    for path, cmd in COMMANDS:
        assert getattr(cmd.callback, "configs", None), " ".join(path)


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_each_option_is_one_configuration_field(path, cmd):
    fields = {f.name: f for cls in cmd.callback.configs for f in dataclasses.fields(cls) if offered(f)}
    params = {p.name: p for p in cmd.params if p.name not in EXTRA}
    assert set(params) == set(fields)
    for name, p in params.items():
        f, default = fields[name], _field_default(fields[name])
        shown = re.sub(r"  \[default: [^\]]*\]$", "", p.help or "") or None   # the default, said in one style
        assert shown == (f.metadata["help"] or None), name
        assert p.required == (default is dataclasses.MISSING), name
        if default is dataclasses.MISSING:
            continue
        got = p.default
        if isinstance(got, Path) or f.metadata.get("path"):
            got = None if got is None else str(got)
            default = None if default is None else str(default)
        if isinstance(got, (list, tuple)):
            got, default = list(got), list(default)
        assert got == default, name


def test_the_drr_options_are_the_same_in_drr_render_and_prep_drr():
    render, prep = ROOT.commands["drr"].commands["render"], ROOT.commands["prep"].commands["drr"]
    shared = ("geometry", "view", "size", "pixel_mm", "sdd", "sid", "mu_water", "backend", "spacing_range",
              "allow_unusual_ct")
    for name in shared:
        a = next(p for p in render.params if p.name == name)
        b = next(p for p in prep.params if p.name == name)
        assert (a.opts, a.default) == (b.opts, b.default), name
        if name != "size":   # prep drr's DRRs are images the networks read: their size follows the networks' rule
            assert a.help == b.help, name
    size = next(p for p in prep.params if p.name == "size")
    assert "a power of two >= 32" in size.help
