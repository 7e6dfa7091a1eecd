"""The plumbing of the `xpgan` command line (cli.py holds the commands): one-line errors, parse-time bounds,
the resume hint of the prep commands, and the `train` options generated from TrainConfig's fields."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional, get_args, get_origin

import typer
from typer.core import TyperGroup

from xpgan import bounds as B
from xpgan.errors import XPGANError
from xpgan.model.config import TrainConfig
from xpgan.options import offered, option_name
from xpgan.pipeline.ct.validate import check_spacing_range


class OneLineErrorsGroup(TyperGroup):
    """Usage errors (a choice Typer refused, a missing argument, an unknown option) as one line
    `error: <message>` on stderr with exit code 2, like the errors the commands raise (`user_errors`)."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # typer's click exceptions (usage errors) derive from it
            if type(exc).__name__ == "NoArgsIsHelpError":  # `xpgan`, `xpgan prep`: the help, as before
                exc.show()
            else:
                typer.echo(f"error: {usage_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def usage_line(exc: Exception) -> str:
    """A usage error as one line; a refused choice as `--mode must be one of xpgan, drr, baseline, got 'foo'`."""
    message = " ".join(exc.format_message().split())
    param = getattr(exc, "param", None)
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if param is None or get_origin(annotation) is not Literal:
        return message
    got = re.search(r"(\S+) is not one of", message)
    return (f"{param.opts[0]} must be one of {', '.join(map(str, get_args(annotation)))}"
            + (f", got {got.group(1)}" if got else ""))


def user_errors(fn):
    """Report XPGANError as `error: <message>` on stderr with exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from xpgan.errors import Interrupted, Resumable

        try:
            return fn(*args, **kwargs)
        except Resumable as exc:  # stopped part way, kept what it finished: say how to go on
            prefix = "" if isinstance(exc, Interrupted) else "error: "
            typer.echo(one_line(f"{prefix}{exc}{resume_hint()}"), err=True)
            raise typer.Exit(exc.exit_code)
        except XPGANError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2)
        except OSError as exc:  # an output that cannot be written (permission, a file in the way, disk full)
            from xpgan.errors import os_error_line

            typer.echo(f"error: {os_error_line(exc)}", err=True)
            raise typer.Exit(2)

    return wrapper


def one_line(message) -> str:
    """A message (or an exception's) as one line: a file name with a newline or bytes that are not UTF-8 is
    escaped (errors.safe_text); other messages are unchanged."""
    from xpgan.errors import safe_text

    text = str(message)
    return text if text.isprintable() else safe_text(text)


def resume_hint(argv: list[str] | None = None) -> str:
    """`; resume with: xpgan prep ...` (the command as typed, without --overwrite) for the prep commands,
    which resume when run again; "" for other commands."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] != ["prep"]:
        return ""
    return "; resume with: " + shlex.join(["xpgan"] + [a for a in args if a != "--overwrite"])


def output_path(path: Path, option: str) -> Path:
    """Refuse, before any work, an output path that cannot be created (names the path and the reason)."""
    from xpgan.errors import check_writable

    check_writable(path, option)
    return path


class OptionError(typer.BadParameter):
    """An option value refused at parse time, printed as its own message (`--size must be ...`)."""

    def format_message(self) -> str:
        return self.message


def bounded(rule: "B.Bound | Callable[[str, Any], Any]"):
    """A parse-time check of an option (a Bound of xpgan.bounds, or a check function (option, value)),
    so that a refused value stops the command before any file is touched."""
    check = rule.check if isinstance(rule, B.Bound) else rule

    def callback(param: typer.CallbackParam, value):
        if value is None:
            return value
        try:
            return check(param.opts[0], value)
        except XPGANError as exc:
            raise OptionError(str(exc)) from None

    return callback


def spacing_range_rule(option: str, value):
    return check_spacing_range(value)  # pipeline/ct/validate.py owns the rule and names the option


def options_signature(cls, extra: tuple = ()) -> inspect.Signature:
    """A command's options, one per field of the configuration dataclass `cls` made with xpgan.options.option
    (its default, help, choices from a Literal type, bound checked at parse time, flag spelling), then `extra`
    (inspect.Parameter objects of options that are not configuration)."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if not offered(f):
            continue
        meta, annotation, default = f.metadata, hints[f.name], f.default
        if meta.get("path"):
            annotation = Path if default is not None else Optional[Path]
            default = Path(default) if default is not None else None
        opt = typer.Option(default, meta.get("flag") or option_name(f.name), help=meta.get("help") or None,
                           callback=bounded(meta["bound"]) if meta.get("bound") is not None else None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation))
    return inspect.Signature(params + list(extra))


def command_from(fn, signature: inspect.Signature):
    """`fn(**options)` with the given signature (Typer reads parameters and annotations from it)."""
    fn.__signature__ = signature
    fn.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return fn


def train_signature() -> inspect.Signature:
    """`xpgan train`: the TrainConfig options, then --dry-run."""
    dry_run = inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                default=typer.Option(False, "--dry-run",
                                                     help="Print the resolved config as JSON and exit."))
    return options_signature(TrainConfig, (dry_run,))
