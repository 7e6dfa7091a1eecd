"""Command options declared on configuration dataclasses: a field made with `option` carries what a command
needs to offer it (help, parse-time bound, the flag spelling, whether it is a path), so a command's options
are generated from its configuration (cli_support.options_signature) and the defaults live on the fields."""
from __future__ import annotations

import dataclasses
from typing import Optional

from xpgan import bounds as B


def option(default, help: str = "", *, bound: Optional[B.Bound] = None, flag: Optional[str] = None,
           path: bool = False, cli: bool = True):
    """A dataclass field offered as a command option (`cli=False`: a field only a config file or the API sets).
    `flag`: the option's spelling when it is not `option_name(field)` (`--ct`, `--amp/--no-amp`)."""
    return dataclasses.field(default=default, metadata={"help": help, "bound": bound, "flag": flag, "path": path,
                                                        "cli": cli})


def option_name(field: str) -> str:
    """The command option of a field: batch_size -> --batch-size."""
    return "--" + field.replace("_", "-")


def offered(field: dataclasses.Field) -> bool:
    """Whether a field is a command option (made with `option`, cli not switched off)."""
    return "help" in field.metadata and field.metadata.get("cli", True)


def check_bounds(config) -> None:
    """XPGANError `OPTION must be ..., got VALUE` for the first field of `config` outside its bound."""
    for f in dataclasses.fields(config):
        value, bound = getattr(config, f.name), f.metadata.get("bound")
        if bound is not None and value is not None:
            bound.check((f.metadata.get("flag") or option_name(f.name)).split("/")[0], value)
