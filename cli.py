"""The `xpgan` command line.

Commands are thin: they parse and validate, then call a plain function with keyword arguments.
Heavy imports (numba, torch, dask, zarr) happen inside the commands so `xpgan --help` stays instant.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from xpgan.errors import XPGANError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="CT archives to DRRs, and joint GAN-classifier training for chest X-rays.")
drr_app = typer.Typer(no_args_is_help=True, help="Render digitally reconstructed radiographs.")
prep_app = typer.Typer(no_args_is_help=True, help="Convert CT and CXR archives into Zarr stores.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print throughput figures.")
app.add_typer(drr_app, name="drr")
app.add_typer(prep_app, name="prep")
app.add_typer(bench_app, name="bench")


def user_errors(fn):
    """Report XPGANError as `error: <message>` on stderr with exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XPGANError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)

    return wrapper


# ---- section: drr (render, bench drr) ----

# ---- end section: drr ----

# ---- section: prep drr + inspect ----

# ---- end section: prep drr + inspect ----

# ---- section: prep cxr ----

# ---- end section: prep cxr ----

# ---- section: model (train, eval, generate, bench loader) ----

# ---- end section: model ----

# ---- section: demo ----

# ---- end section: demo ----


def main() -> None:
    app()


if __name__ == "__main__":
    main()
