"""Command options declared on configuration dataclasses: a field made with `option` (or `argument`) carries
what a command needs to offer it (help, parse-time rule, the flag spelling, whether it is a path), so a
command's options are generated from its configuration (cli_support.options_signature, config_command) and
the defaults live on the fields."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

from xpgan import bounds as B

Rule = Union[B.Bound, Callable[[str, Any], Any]]  # a bound, or a check (option, value) -> value
REQUIRED = dataclasses.MISSING  # option(REQUIRED, ...): an option the command needs (in a kw_only dataclass)


def option(default, help: str = "", *, bound: Optional[Rule] = None, flag: Optional[str] = None,
           path: bool = False, cli: bool = True, metavar: Optional[str] = None, default_text: Optional[str] = None):
    """A dataclass field offered as a command option (`cli=False`: a field only a config file or the API sets).
    `flag`: the option's spelling when it is not `option_name(field)` (`--ct`, `--amp/--no-amp`); `path`: a
    str field offered as a path; `metavar`: how the help shows its value (`D H W`; default: from its type,
    cli_support.metavar_for); `default_text`: the default as the help says it, for a field whose value None
    stands for a default chosen later ("one per core")."""
    metadata = {"help": help, "bound": bound, "flag": flag, "path": path, "cli": cli, "metavar": metavar,
                "default_text": default_text}
    if isinstance(default, list):  # a repeatable option: each instance gets its own copy
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def argument(help: str, metavar: str):
    """A required dataclass field offered as a positional command argument, shown as `metavar`."""
    return dataclasses.field(metadata={"help": help, "argument": metavar, "cli": True})


def option_name(field: str) -> str:
    """The command option of a field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


def offered(field: dataclasses.Field) -> bool:
    """Whether a field is a command option or argument (made with `option` / `argument`, cli not switched off)."""
    return "help" in field.metadata and field.metadata.get("cli", True)


def check_rule(rule: Rule, option: str, value):
    """`value` checked against a Bound or a check function; returns the (possibly normalised) value."""
    return rule.check(option, value) if isinstance(rule, B.Bound) else rule(option, value)


def check_bounds(config) -> None:
    """XPGANError `OPTION must be ..., got VALUE` for the first field of `config` outside its bound."""
    for f in dataclasses.fields(config):
        value, bound = getattr(config, f.name), f.metadata.get("bound")
        if bound is not None and value is not None:
            check_rule(bound, (f.metadata.get("flag") or option_name(f.name)).split("/")[0], value)


def from_fields(config_cls, values: dict):
    """`config_cls` built from the entries of `values` that are its offered fields (removed from `values`)."""
    return config_cls(**{f.name: values.pop(f.name) for f in dataclasses.fields(config_cls)
                         if offered(f) and f.name in values})
