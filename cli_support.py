"""The plumbing of the `xpgan` command line (cli.py holds the commands): one-line errors, parse-time bounds,
the resume hint of the prep commands, and commands whose options are generated from configuration
dataclasses (config_command)."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import typer
from typer.core import TyperGroup

from xpgan.errors import XPGANError
from xpgan.options import Rule, check_rule, from_fields, offered, option_name


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
    """`; resume with: xpgan ...`: for the prep commands, which resume when run again, the command as typed
    without --overwrite; for train, the command as typed with `--resume latest` instead of its --resume; ""
    for other commands."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["prep"]:
        return "; resume with: " + shlex.join(["xpgan"] + [a for a in args if a != "--overwrite"])
    if args[:1] != ["train"]:
        return ""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            kept.append(a)
    return "; resume with: " + shlex.join(["xpgan"] + kept + ["--resume", "latest"])


def output_path(path: Path, option: str) -> Path:
    """Refuse, before any work, an output path that cannot be created (names the path and the reason)."""
    from xpgan.errors import check_writable

    check_writable(path, option)
    return path


class OptionError(typer.BadParameter):
    """An option value refused at parse time, printed as its own message (`--size must be ...`)."""

    def format_message(self) -> str:
        return self.message


def bounded(rule: "Rule"):
    """A parse-time check of an option (a Bound of xpgan.bounds, or a check function (option, value)),
    so that a refused value stops the command before any file is touched."""

    def callback(param: typer.CallbackParam, value):
        if value is None:
            return value
        try:
            return check_rule(rule, param.opts[0], value)
        except XPGANError as exc:
            raise OptionError(str(exc)) from None

    return callback


def options_signature(*configs, extra: tuple = ()) -> inspect.Signature:
    """A command's parameters, one per field of the configuration dataclasses `configs` made with
    xpgan.options.option / argument (default, help, choices from a Literal type, rule checked at parse time,
    flag spelling, metavar), arguments first, then `extra` (inspect.Parameter objects that are not
    configuration)."""
    arguments, options = [], []
    for cls in configs:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if offered(f):
                (arguments if "argument" in f.metadata else options).append(_parameter(f, hints[f.name]))
    return inspect.Signature(arguments + options + list(extra))


def _parameter(f: dataclasses.Field, annotation) -> inspect.Parameter:
    meta, default = f.metadata, f.default
    if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    if meta.get("path") and default is not dataclasses.MISSING:  # a str field offered as a path
        annotation = Path if default is not None else Optional[Path]
        default = Path(default) if default is not None else None
    default = ... if default is dataclasses.MISSING else default  # Typer's "required"
    callback = bounded(meta["bound"]) if meta.get("bound") is not None else None
    if "argument" in meta:
        info = typer.Argument(default, metavar=meta["argument"], help=meta["help"] or None, callback=callback)
    else:
        info = typer.Option(default, meta.get("flag") or option_name(f.name), help=meta.get("help") or None,
                            callback=callback)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def command_from(fn, signature: inspect.Signature):
    """`fn(**options)` with the given signature (Typer reads parameters and annotations from it)."""
    fn.__signature__ = signature
    fn.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
    return fn


def config_command(group: typer.Typer, name: str, *configs, extra: tuple = (), **settings):
    """Register `fn(*config instances, **extra values)` as command `name` of `group`: its parameters are
    generated from the configuration dataclasses (options_signature), its help is fn's docstring, and
    XPGANError becomes a one-line error (user_errors)."""

    def register(fn):
        def command(**values):
            built = [from_fields(cls, values) for cls in configs]
            return fn(*built, **values)

        command.__name__, command.__doc__ = fn.__name__, fn.__doc__
        command.configs = configs  # what the command's options are generated from (kept on the Typer callback)
        group.command(name, **settings)(user_errors(command_from(command, options_signature(*configs,
                                                                                              extra=extra))))
        return fn

    return register


def given_options(ctx) -> frozenset:
    """The parameters of a command (its click context) that the command line or the environment set."""
    return frozenset(n for n in ctx.params  # by name: Typer may carry its own copy of click's enum
                     if getattr(ctx.get_parameter_source(n), "name", None) in ("COMMANDLINE", "ENVIRONMENT"))


def extra_option(name: str, annotation, default, help: str) -> inspect.Parameter:
    """A command option that is not a configuration field (`--dry-run`)."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, option_name(name), help=help))


CONTEXT = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
"""The click context as a command parameter (a command that reads extra arguments)."""
