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
from typer.core import TyperCommand, TyperGroup

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
                typer.echo(f"error: {usage_line(exc, self)}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class PlainHelpCommand(TyperCommand):
    """A command whose help shows no Python types: the usage line names its arguments as typed (`SRC... OUT`,
    no braces), the argument list by name only, the options by the metavars of options_signature."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [re.sub(r"^\{(.+)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]

    def format_options(self, ctx, formatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append((f"{param.metavar or param.name}{'...' if param.nargs != 1 else ''}", record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _tuple_usage(param) -> str | None:
    """`--shape takes 3 integers D H W, separated by spaces (e.g. --shape 64 256 256)` for an option of several
    values; None for other parameters."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if param is None or get_origin(annotation) is not tuple:
        return None
    kinds = {int: "integers", float: "numbers"}
    kind = kinds.get(get_args(annotation)[0], "values")
    default = param.default if isinstance(param.default, (tuple, list)) else ()
    example = f" (e.g. {param.opts[0]} {' '.join(map(str, default))})" if default else ""
    return f"{param.opts[0]} takes {len(get_args(annotation))} {kind} {param.metavar}, separated by spaces{example}"


def _command_of(group, argv: list[str]):
    """The command `argv` names below `group` (`prep drr ...` -> the prep drr command), or None."""
    command = group
    for word in argv:
        if word not in getattr(command, "commands", {}):
            break
        command = command.commands[word]
    return None if hasattr(command, "commands") else command


def usage_line(exc: Exception, group=None) -> str:
    """A usage error as one line; a refused choice as `--mode must be one of xpgan, drr, baseline, got 'foo'`;
    a wrong option of several values (`--shape 32,64,64`) as what it takes."""
    message = " ".join(exc.format_message().split())
    if isinstance(exc, OptionError):   # a parse-time rule's own message
        return message
    param = getattr(exc, "param", None)
    missing = re.match(r"Option '(\S+)' requires \d+ arguments", message)
    command = _command_of(group, sys.argv[1:]) if param is None and missing and group is not None else None
    if command is not None:
        param = next((p for p in command.params if missing.group(1) in getattr(p, "opts", ())), None)
    several = _tuple_usage(param)
    if several is not None:
        argv = sys.argv[1:]
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in param.opts]
        return several + (f", got {given[-1]!r}" if given else "")
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


METAVARS = {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH"}


def metavar_for(annotation) -> str | None:
    """How the help shows an option's value, from its type: INT, FLOAT, TEXT, PATH, the choices `a|b|c`;
    None for a flag. A repeatable option (a list) shows one value; an option of several values (a tuple)
    names them on its field (`option(..., metavar="D H W")`)."""
    if annotation is bool:
        return None
    if get_origin(annotation) is typing.Union:
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is Literal:
        return "|".join(map(str, get_args(annotation)))
    if get_origin(annotation) is list:
        return metavar_for(get_args(annotation)[0])
    if get_origin(annotation) is tuple:
        raise TypeError(f"an option of several values needs its metavar on the field ({annotation})")
    return METAVARS.get(annotation, "VALUE")


def _default_text(default) -> str | None:
    """A default as the help says it, in one style (`[default: 64 256 256]`); None: Typer's own."""
    if isinstance(default, (tuple, list)) and default:
        return " ".join(map(str, default))
    if isinstance(default, Path):
        return str(default)
    return None


def _parameter(f: dataclasses.Field, annotation) -> inspect.Parameter:
    meta, default = f.metadata, f.default
    if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    if meta.get("path") and default is not dataclasses.MISSING:  # a str field offered as a path
        annotation = Path if default is not None else Optional[Path]
        default = Path(default) if default is not None else None
    callback = bounded(meta["bound"]) if meta.get("bound") is not None else None
    if "argument" in meta:
        info = typer.Argument(... if default is dataclasses.MISSING else default, metavar=meta["argument"],
                              help=meta["help"] or None, callback=callback)
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
    shown = meta.get("default_text") or (None if default is dataclasses.MISSING else _default_text(default))
    help_text = meta.get("help") or ""
    if shown:
        help_text = f"{help_text}  [default: {shown}]".strip()
    is_flag = annotation is bool
    info = typer.Option(... if default is dataclasses.MISSING else default, meta.get("flag") or option_name(f.name),
                        help=help_text or None, callback=callback, show_default=not shown,
                        metavar=None if is_flag else (meta.get("metavar") or metavar_for(annotation)))
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
        settings.setdefault("cls", PlainHelpCommand)
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
                             default=typer.Option(default, option_name(name), help=help,
                                                  metavar=metavar_for(annotation)))


CONTEXT = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
"""The click context as a command parameter (a command that reads extra arguments)."""
