"""The `xpgan` command line.

Commands are thin: each command's options are generated from its configuration dataclass (the defaults,
help, choices and parse-time rules live on the fields, see xpgan.options), and the command calls one
function with the configuration. Heavy imports (numba, torch, dask, zarr) happen inside the commands so
`xpgan --help` stays instant.
"""
from __future__ import annotations

import typer

from xpgan.bench.drr import BenchDrrConfig
from xpgan.bench.loader import BenchLoaderConfig
from xpgan.bench.prep import BenchPrepConfig
from xpgan.cli_support import (
    CONTEXT,
    OneLineErrorsGroup,
    config_command,
    extra_option,
    output_path,
)
from xpgan.demo import DemoConfig
from xpgan.drr.options import DRROptions, PrepDRROptions
from xpgan.model.config import EvalConfig, GenerateConfig, TrainConfig
from xpgan.pipeline.ct.drr_file import RenderConfig
from xpgan.pipeline.ct.prep_drr import PrepDrrConfig
from xpgan.pipeline.ct.validate import CTChecks
from xpgan.pipeline.cxr.prep_cxr import PrepCxrConfig
from xpgan.pipeline.inspection import InspectConfig
from xpgan.study.config import StudyConfig

app = typer.Typer(cls=OneLineErrorsGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="CT archives to DRRs, and joint GAN-classifier training for chest X-rays.")
drr_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Render digitally reconstructed radiographs.")
prep_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Convert CT and CXR archives into Zarr stores.")
bench_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Benchmarks that print throughput figures.")
app.add_typer(drr_app, name="drr")
app.add_typer(prep_app, name="prep")
app.add_typer(bench_app, name="bench")


# ------------------------------------------------------------------------------------ drr
@config_command(drr_app, "render", RenderConfig, DRROptions, CTChecks)
def drr_render_command(cfg: RenderConfig, drr: DRROptions, checks: CTChecks) -> None:
    """Render one DRR of a CT volume (rows superior->inferior, columns patient right->left), or a pose sweep."""
    from xpgan.pipeline.ct.drr_file import render_ct_file

    typer.echo(render_ct_file(cfg, drr, checks))


# ----------------------------------------------------------------------- prep and inspect
@config_command(prep_app, "drr", PrepDrrConfig, PrepDRROptions, CTChecks)
def prep_drr_command(cfg: PrepDrrConfig, drr: DRROptions, checks: CTChecks) -> None:
    """Convert a CT archive into a Zarr store of resized volumes and their DRRs (resumable)."""
    from xpgan.pipeline.ct.prep_drr import prep_drr_from

    output_path(cfg.out, "output store")
    summary = prep_drr_from(cfg, drr, checks)
    typer.echo(summary.text())
    if summary.failures:
        raise typer.Exit(1)


@config_command(prep_app, "cxr", PrepCxrConfig)
def prep_cxr_command(cfg: PrepCxrConfig) -> None:
    """Ingest labelled chest X-rays (PNG/JPEG/DICOM) into a Zarr store with a patient-grouped 80:20 split.

    In class folders every file is its own patient (the file stem); give a manifest CSV with patient_id
    when several images belong to one patient. Rerunning the same command resumes; exit code 1 when some
    files failed (listed in the summary and in OUT.zarr.failures.csv).
    """
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr_from

    output_path(cfg.out, "output store")
    summary = prep_cxr_from(cfg)
    typer.echo(summary.text())
    if summary.failed:
        raise typer.Exit(1)


@config_command(app, "inspect", InspectConfig)
def inspect_command(cfg: InspectConfig) -> None:
    """Summarise a store (counts per label/severity/split, failures, geometry); optionally a PNG sheet.
    Exit code 1 when done items have missing or damaged data (listed)."""
    from xpgan.pipeline.inspection import inspect_from

    text, damaged = inspect_from(cfg)
    typer.echo(text)
    if damaged:
        raise typer.Exit(1)


# ------------------------------------------------------------------ train, eval, generate
@config_command(app, "train", TrainConfig,
                extra=(extra_option("dry_run", bool, False, "Print the resolved config as JSON and exit."), CONTEXT))
def train_command(cfg: TrainConfig, dry_run: bool, ctx: typer.Context) -> None:
    """Train a classifier (and in mode xpgan the generator and discriminator); torchrun for several GPUs.

    --resume continues a run with its checkpoint's options: the run's length and where and how it runs may
    change (said when it starts); an option that would change what it computes is refused (see --resume)."""
    from xpgan.cli_support import given_options
    from xpgan.model.train import train_from_config

    train_from_config(cfg, dry_run=dry_run, log=typer.echo, given=given_options(ctx))


@config_command(app, "eval", EvalConfig)
def eval_command(cfg: EvalConfig) -> None:
    """AUROC, AUPRC, precision, recall and F1 at the threshold chosen on validation (and at 0.5); PR/ROC plots."""
    if cfg.out is not None:
        output_path(cfg.out, "output folder (--out)")
    from xpgan.model.evaluate import evaluate_from

    typer.echo(evaluate_from(cfg))


@config_command(app, "generate", GenerateConfig)
def generate_command(cfg: GenerateConfig) -> None:
    """G_ema's X-ray for each CT item as PNG, plus grid.png (stored DRR | generated)."""
    output_path(cfg.out, "output folder (--out)")
    from xpgan.model.generate import generate_from

    typer.echo(generate_from(cfg))


# ------------------------------------------------------------------------- demo and study
@config_command(app, "demo", DemoConfig)
def demo_command(cfg: DemoConfig) -> None:
    """Run the whole pipeline on built-in synthetic data: archives, prep drr, prep cxr, inspect, train, eval,
    generate (about 2 minutes on 2 idle cores), then print where every output is and the seconds per phase."""
    from xpgan.demo import run_demo

    cfg.out = str(cfg.out)
    typer.echo(run_demo(cfg, log=typer.echo).text())


@config_command(app, "study", StudyConfig, extra=(CONTEXT,), context_settings={"allow_extra_args": True})
def study_command(cfg: StudyConfig, ctx: typer.Context) -> None:
    """The paper's Table 2 on a synthetic cohort: every mode x seed with the same classifier, split, steps and
    threshold rule, evaluated on the CXR test split."""
    from xpgan.study.core import study_from

    study_from(cfg, ctx.args, log=typer.echo)


# ---------------------------------------------------------------------------------- bench
@config_command(bench_app, "drr", BenchDrrConfig)
def bench_drr_command(cfg: BenchDrrConfig) -> None:
    """Print DRRs/s, ray-voxel steps/s and ns per step per core (JIT time reported separately)."""
    from xpgan.bench.drr import bench_drr_from

    typer.echo("\n".join(bench_drr_from(cfg).lines()))


@config_command(bench_app, "prep", BenchPrepConfig)
def bench_prep_command(cfg: BenchPrepConfig) -> None:
    """Print prep drr volumes/s end-to-end vs read+gunzip only (wall and CPU ratios, goal <= 1.5), per-stage
    CPU ms and peak RSS per worker."""
    from xpgan.bench.prep import bench_prep_from

    result = bench_prep_from(cfg)
    typer.echo("\n".join(result.lines()))
    if result.failed:
        raise typer.Exit(1)


@config_command(bench_app, "loader", BenchLoaderConfig)
def bench_loader_command(cfg: BenchLoaderConfig) -> None:
    """Print training-stream samples/s (shuffled, shard-aware) for the CT and CXR stores."""
    from xpgan.bench.loader import bench_loader_from

    for r in bench_loader_from(cfg):
        typer.echo(r.line())


@bench_app.command("gpu", add_help_option=False,
                   context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench_gpu_command(ctx: typer.Context) -> None:
    """The GPU path end to end (agreement, DRR/s, prep, training in bf16/fp16/fp32, eval, generate, loader,
    torchrun): prints a summary, writes a JSON. Each section is time-boxed and failure-isolated. Options:
    `xpgan bench gpu --help` (the check's own parser, which also runs without this CLI on a bare GPU machine)."""
    from xpgan.bench.gpu_check import drive

    raise typer.Exit(drive(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
