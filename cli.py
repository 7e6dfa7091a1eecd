"""The `xpgan` command line.

Commands are thin: they parse and validate, then call a plain function with keyword arguments.
Heavy imports (numba, torch, dask, zarr) happen inside the commands so `xpgan --help` stays instant; the
option types (Literal choices that Typer validates) and defaults come from the modules that own them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from xpgan import bounds as B
from xpgan.bench.drr import VolumeDtype
from xpgan.cli_support import (
    OneLineErrorsGroup,
    bounded,
    command_from,
    options_signature,
    output_path,
    spacing_range_rule,
    train_signature,
    user_errors,
)
from xpgan.demo import DemoConfig
from xpgan.drr.geometry import ConeGeometry, GeometryKind, View
from xpgan.drr.physics import MU_WATER_PER_MM, OutputOption
from xpgan.drr.render import Backend
from xpgan.errors import XPGANError
from xpgan.model.config import Device, EvalSplit
from xpgan.pipeline.ct.prep_drr import DEFAULT_SHAPE
from xpgan.pipeline.ct.validate import (
    ALLOW_UNUSUAL_CT_HELP,
    ALLOW_UNUSUAL_CT_OPTION,
    SPACING_RANGE_MM,
)
from xpgan.pipeline.cxr.readers import ALLOW_BURNED_IN_OPTION, DECODE_BUDGET_BYTES
from xpgan.study.cohort import StudyPresetName

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


SPACING_OPTION_HELP = ("Plausible CT voxel spacing LO HI, mm per axis; volumes outside it are refused, as are NaN/inf "
                       "voxels and values outside the int16 HU range.")


# ------------------------------------------------------------------------------------ drr
@drr_app.command("render")
@user_errors
def drr_render_command(
    ct_path: Path = typer.Argument(..., metavar="CT",
                                   help="CT volume: NIfTI file (.nii, .nii.gz) or DICOM series folder."),
    out: Path = typer.Argument(..., metavar="OUT",
                               help="Output file: .npy (float32) or .png (8-bit; line integrals are scaled to the "
                                    "image's maximum)."),
    geometry: GeometryKind = typer.Option("cone", "--geometry", help="Ray geometry."),
    view: View = typer.Option("pa", "--view", help="Cone beam direction: pa (source posterior) or ap."),
    size: int = typer.Option(256, "--size", callback=bounded(B.DETECTOR_SIZE),
                             help="Detector size, pixels per side (square)."),
    pixel_mm: Optional[float] = typer.Option(
        None, "--pixel-mm", callback=bounded(B.PIXEL_MM),
        help="Pixel spacing, mm (cone: detector plane; parallel: isocentre plane). Default: fit the field of view "
             "to the volume."),
    sdd: float = typer.Option(ConeGeometry.sdd_mm, "--sdd", callback=bounded(B.DISTANCE_MM),
                              help="Cone: source-to-detector distance, mm."),
    sid: float = typer.Option(ConeGeometry.sid_mm, "--sid", callback=bounded(B.DISTANCE_MM),
                              help="Cone: source-to-isocentre (volume centre) distance, mm."),
    mu_water: float = typer.Option(MU_WATER_PER_MM, "--mu-water", callback=bounded(B.MU_WATER),
                                   help="Linear attenuation of water, 1/mm."),
    backend: Backend = typer.Option("auto", "--backend", help="auto: the GPU if present."),
    output: OutputOption = typer.Option("image", "--output", help="image (1 - exp(-(p/4)^2) in [0, 1]) or "
                                        "line-integral (p = integral of mu dl, dimensionless)."),
    spacing_range: tuple[float, float] = typer.Option(SPACING_RANGE_MM, "--spacing-range",
                                                      callback=bounded(spacing_range_rule),
                                                      help=SPACING_OPTION_HELP),
    yaw: float = typer.Option(0.0, "--yaw", callback=bounded(B.ANGLE),
                              help="Pose: turn about the superior-inferior axis, degrees; + = LAO "
                              "(PA detector towards the patient's left; posterior structures move to image right)."),
    pitch: float = typer.Option(0.0, "--pitch", callback=bounded(B.ANGLE),
                                help="Pose: cranio-caudal tilt, degrees; + = PA detector cranial "
                                "(posterior structures move up)."),
    roll: float = typer.Option(0.0, "--roll", callback=bounded(B.ANGLE),
                               help="Pose: turn about the beam axis, degrees; + = image content "
                               "clockwise."),
    offset: Optional[str] = typer.Option(None, "--offset", help="Pose: isocentre shift from the volume centre, mm, "
                                         "as D,H,W (superior->inferior, anterior->posterior, right->left)."),
    yaw_sweep: Optional[str] = typer.Option(None, "--yaw-sweep", help="START,STOP,STEP degrees: one view per yaw "
                                            "(replaces --yaw); OUT gets a strip (.png) or a stack [V, size, size] "
                                            "(.npy)."),
    pitch_sweep: Optional[str] = typer.Option(None, "--pitch-sweep", help="START,STOP,STEP degrees (as --yaw-sweep; "
                                              "with several sweeps, one row per value of the first)."),
    roll_sweep: Optional[str] = typer.Option(None, "--roll-sweep", help="START,STOP,STEP degrees (as --yaw-sweep)."),
    allow_unusual_ct: bool = typer.Option(False, ALLOW_UNUSUAL_CT_OPTION, help=ALLOW_UNUSUAL_CT_HELP),
) -> None:
    """Render one DRR of a CT volume (rows superior->inferior, columns patient right->left), or a pose sweep."""
    from xpgan.pipeline.ct.drr_file import render_ct_file

    typer.echo(render_ct_file(ct_path=ct_path, out=out, geometry=geometry, view=view, size=size, pixel_mm=pixel_mm,
                              sdd=sdd, sid=sid, mu_water=mu_water, backend=backend, output=output,
                              spacing_range=spacing_range, yaw=yaw, pitch=pitch, roll=roll, offset=offset,
                              yaw_sweep=yaw_sweep, pitch_sweep=pitch_sweep, roll_sweep=roll_sweep,
                              allow_unusual_ct=allow_unusual_ct))


# ----------------------------------------------------------------------- prep and inspect
@prep_app.command("drr")
@user_errors
def prep_drr_command(
    src: Path = typer.Argument(..., metavar="SRC",
                               help="CT archive: MosMed tree (studies/CT-0..CT-4), folder of NIfTI files / DICOM "
                                    "series folders, or manifest CSV (path,label[,patient_id][,study_id])."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output Zarr v3 store, e.g. ct.zarr."),
    shape: tuple[int, int, int] = typer.Option(DEFAULT_SHAPE, "--shape", callback=bounded(B.check_ct_shape),
                                               help="Resized volume size D H W, voxels."),
    geometry: GeometryKind = typer.Option("cone", "--geometry", help="DRR geometry."),
    view: Optional[View] = typer.Option(None, "--view", help="Cone beam direction (default pa)."),
    size: int = typer.Option(256, "--size", callback=bounded(B.DETECTOR_SIZE),
                             help="DRR detector size, pixels per side."),
    pixel_mm: Optional[float] = typer.Option(None, "--pixel-mm", callback=bounded(B.PIXEL_MM),
                                             help="DRR pixel spacing, mm (cone: detector "
                                             "plane; parallel: isocentre plane). Default: fit the volume."),
    sdd: Optional[float] = typer.Option(None, "--sdd", callback=bounded(B.DISTANCE_MM),
                                        help="Cone source-to-detector distance, mm (default 1800)."),
    sid: Optional[float] = typer.Option(None, "--sid", callback=bounded(B.DISTANCE_MM),
                                        help="Cone source-to-isocentre distance, mm (default 1600)."),
    mu_water: float = typer.Option(MU_WATER_PER_MM, "--mu-water", callback=bounded(B.MU_WATER),
                                   help="Linear attenuation of water, 1/mm."),
    backend: Backend = typer.Option("auto", "--backend", help="Ray caster (auto: the GPU if present)."),
    workers: Optional[int] = typer.Option(None, "--workers", callback=bounded(B.WORKERS),
                                          help="Local Dask worker processes (default: one per "
                                          "core, fewer if memory is short; 0: no Dask, in this process)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", callback=bounded(B.check_dask_address),
                                            help="Address of an existing Dask scheduler, "
                                            "e.g. tcp://host:8786 (workers need xpgan and access to SRC)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete OUT and start again (default: resume)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr (tty only)."),
    memory_limit_gb: float = typer.Option(6.0, "--memory-limit-gb", callback=bounded(B.MEMORY_GB),
                                          help="Refuse items whose header says reading "
                                          "needs more than this, GB (stored bytes + 4 per voxel; checked "
                                          "before reading)."),
    salt_file: Optional[Path] = typer.Option(None, "--salt-file", help="Salt for patient-id hashes (manifest "
                                             "patient_id); default OUT.salt, created if missing."),
    spacing_range: tuple[float, float] = typer.Option(SPACING_RANGE_MM, "--spacing-range",
                                                      callback=bounded(spacing_range_rule),
                                                      help=SPACING_OPTION_HELP),
    allow_unusual_ct: bool = typer.Option(False, ALLOW_UNUSUAL_CT_OPTION, help=ALLOW_UNUSUAL_CT_HELP),
):
    """Convert a CT archive into a Zarr store of resized volumes and their DRRs (resumable)."""
    from xpgan.drr.geometry import geometry_from_options
    from xpgan.pipeline.ct.prep_drr import prep_drr

    output_path(out, "output store")
    geom = geometry_from_options(geometry, view=view, size=size, pixel_mm=pixel_mm, sdd_mm=sdd, sid_mm=sid)
    summary = prep_drr(src, out, shape=shape, geometry=geom, mu_water=mu_water, backend=backend, workers=workers,
                       scheduler=scheduler, overwrite=overwrite, progress=progress,
                       memory_limit_gb=memory_limit_gb, salt_file=salt_file, spacing_range_mm=spacing_range,
                       allow_unusual_ct=allow_unusual_ct)
    typer.echo(summary.text())
    if summary.failures:
        raise typer.Exit(1)


@prep_app.command("cxr")
@user_errors
def prep_cxr_command(
    srcs: list[Path] = typer.Argument(..., metavar="SRC",
                                      help="One or more sources (a folder of class sub-folders, a manifest CSV "
                                           "path,label[,patient_id][,source], or a Cohen-style metadata.csv or "
                                           "its folder)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Output Zarr v3 store, e.g. cxr.zarr."),
    size: int = typer.Option(256, "--size", callback=bounded(B.CXR_SIZE),
                             help="Output image side, pixels (aspect kept by black padding)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", callback=bounded(B.FRACTION),
                                        help="Fraction of images (per source and label) put in the test split."),
    seed: int = typer.Option(0, "--seed", callback=bounded(B.SEED), help="Seed of the patient-grouped split."),
    positive: Optional[list[str]] = typer.Option(None, "--positive",
                                                 help="Class folder / manifest class name that means COVID-19 "
                                                      "positive (repeatable; default covid, covid-19, covid19)."),
    views: str = typer.Option("PA,AP,AP Supine", "--views",
                              help="Comma-separated radiographic views kept from a Cohen metadata.csv."),
    source_name: Optional[list[str]] = typer.Option(None, "--source-name",
                                                    help="Name stored in `source`, one per SRC in order "
                                                         "(default: the SRC folder's name)."),
    workers: Optional[int] = typer.Option(None, "--workers", callback=bounded(B.WORKERS),
                                          help="Local Dask worker processes (default: one per core, fewer if memory "
                                               f"cannot hold {DECODE_BUDGET_BYTES / 1e9:g} GB per worker for "
                                               "decoding; 0: no Dask)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", callback=bounded(B.check_dask_address),
                                            help="Address of an existing Dask scheduler (tcp://HOST:PORT)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing store and start again."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    salt_file: Optional[Path] = typer.Option(None, "--salt-file",
                                             help="Secret key for patient hashes (default: OUT.zarr.salt, created)."),
    allow_burned_in: bool = typer.Option(False, ALLOW_BURNED_IN_OPTION,
                                         help="Accept DICOM radiographs marked BurnedInAnnotation YES (text in "
                                              "the pixels may identify the patient; refused by default)."),
) -> None:
    """Ingest labelled chest X-rays (PNG/JPEG/DICOM) into a Zarr store with a patient-grouped 80:20 split.

    In class folders every file is its own patient (the file stem); give a manifest CSV with patient_id
    when several images belong to one patient. Rerunning the same command resumes; exit code 1 when some
    files failed (listed in the summary and in OUT.zarr.failures.csv).
    """
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr
    from xpgan.pipeline.cxr.sources import DEFAULT_POSITIVE

    output_path(out, "output store")
    view_list = [v.strip() for v in views.split(",") if v.strip()]
    summary = prep_cxr(srcs, out, size=size, test_fraction=test_fraction, seed=seed,
                       positive=tuple(positive) if positive else DEFAULT_POSITIVE, views=view_list,
                       source_names=source_name or None, workers=workers, scheduler=scheduler,
                       overwrite=overwrite, progress=progress, salt_file=salt_file,
                       allow_burned_in=allow_burned_in)
    typer.echo(summary.text())
    if summary.failed:
        raise typer.Exit(1)


@app.command("inspect")
@user_errors
def inspect_command(
    store: Path = typer.Argument(..., metavar="STORE", help="A CT or CXR Zarr store made by xpgan prep."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a PNG contact sheet: FILE.png, or an existing "
                                         "folder (the sheet is named after the store inside it)."),
    item: Optional[int] = typer.Option(None, "--item", callback=bounded(B.INDEX),
                                       help="Sheet of one item (CT: DRR beside axial, coronal "
                                       "and sagittal mid-slices) instead of the grid."),
    verify: bool = typer.Option(False, "--verify", help="Read every chunk of every done item back against its "
                                "checksum (without: shard files, indexes and small chunks only)."),
    deep: bool = typer.Option(False, "--deep", help="With --verify (CT store): also re-render 8 DRRs, spread over "
                              "the store, from their stored volumes and compare."),
    poses: bool = typer.Option(False, "--poses", help="With --item (CT): random posed views of the study, as "
                               "train --drr-aug draws them, rendered from the stored volume."),
):
    """Summarise a store (counts per label/severity/split, failures, geometry); optionally a PNG sheet.
    Exit code 1 when done items have missing or damaged data (listed)."""
    from xpgan.pipeline.inspection import check_store, inspect_store, sheet_path
    from xpgan.pipeline.schema import StoreDamageError

    if deep and not verify:
        raise XPGANError("--deep goes with --verify: xpgan inspect --verify --deep STORE")
    sheet = sheet_path(sheet, store, item, poses)  # refused before any reading
    report, damaged = check_store(store, full=verify, deep=deep)
    try:
        typer.echo(inspect_store(store, sheet=sheet, item=item, poses=poses))
    except StoreDamageError as exc:
        if not damaged:
            raise
        typer.echo(f"{store}: no summary: {exc}")
    typer.echo(report)
    if damaged:
        raise typer.Exit(1)


# ------------------------------------------------------------------ train, eval, generate
def _train_command(**options) -> None:
    """Train a classifier (and in mode xpgan the generator and discriminator); torchrun for several GPUs."""
    from xpgan.model.train import train_from_options

    train_from_options(dry_run=options.pop("dry_run"), log=typer.echo, **options)


train_command = app.command("train")(user_errors(command_from(_train_command, train_signature())))


@app.command("eval")
@user_errors
def eval_command(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT",
                                      help="Checkpoint file (RUN/checkpoints/step-*.pt), or a run folder (its "
                                           "newest checkpoint)."),
    cxr: Path = typer.Option(..., "--cxr", help="CXR store to evaluate on."),
    split: EvalSplit = typer.Option("test", "--split", help="test | val (held-out part of train) | train."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/eval-SPLIT)."),
    device: Device = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(64, "--batch-size", callback=bounded(B.BATCH), help="Images per forward pass."),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Use the done items of a store that "
                                          "prep is still writing or did not finish."),
) -> None:
    """AUROC, AUPRC, precision, recall and F1 at the threshold chosen on validation (and at 0.5); PR/ROC plots."""
    if out is not None:
        output_path(out, "output folder (--out)")
    from xpgan.model.evaluate import evaluate
    from xpgan.model.metrics import metrics_line

    r = evaluate(checkpoint, cxr, split=split, out_dir=out, device=device, batch_size=batch_size,
                 allow_incomplete=allow_incomplete)
    typer.echo(f"{split}: {r['counts']['items']} items, {metrics_line(r)}")
    typer.echo(f"wrote {r['out_dir']}/metrics.json")


@app.command("generate")
@user_errors
def generate_command(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint of an xpgan-mode run (file, or a "
                                                                      "run folder: its newest checkpoint)."),
    ct: Path = typer.Option(..., "--ct", help="CT store whose volumes are translated."),
    out: Path = typer.Option(..., "--out", help="Output folder for PNGs."),
    limit: Optional[int] = typer.Option(None, "--limit", callback=bounded(B.COUNT), help="At most this many CT items."),
    device: Device = typer.Option("auto", "--device"),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Use the done items of a store that "
                                          "prep is still writing or did not finish."),
) -> None:
    """G_ema's X-ray for each CT item as PNG, plus grid.png (stored DRR | generated)."""
    output_path(out, "output folder (--out)")
    from xpgan.model.generate import generate

    r = generate(checkpoint, ct, out, limit=limit, device=device, allow_incomplete=allow_incomplete)
    from xpgan.model.greport import summary_line

    typer.echo(f"{summary_line(r['report'])} ({r['report_path']})")
    typer.echo(f"wrote {len(r['images'])} images and {r['grid']}")


# ------------------------------------------------------------------------- demo and study
def _demo_command(**options) -> None:
    """Run the whole pipeline on built-in synthetic data: archives, prep drr, prep cxr, inspect, train, eval,
    generate (about 2 minutes on 2 idle cores), then print where every output is and the seconds per phase."""
    from xpgan.demo import run_demo

    options["out"] = str(options["out"])
    result = run_demo(DemoConfig(**options), log=typer.echo)
    typer.echo(result.text())


demo_command = app.command("demo")(user_errors(command_from(_demo_command, options_signature(DemoConfig))))


@app.command("study", context_settings={"allow_extra_args": True})
@user_errors
def study_command(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Study folder (cohort, runs, study.md/json/png, samples.png); "
                             "rerun the same command to resume."),
    preset: StudyPresetName = typer.Option("cpu", "--preset", help="cpu (~25-40 min on 2 cores) | gpu (paper "
                                           "sizes, one GPU) | smoke (plumbing, under a minute)."),
    seeds: list[str] = typer.Option(["0", "1"], "--seeds", help="Training seeds: --seeds 0 1 (or 0,1)."),
    modes: list[str] = typer.Option(["baseline", "drr", "xpgan"], "--modes",
                                    help="Rows of the table: --modes baseline drr xpgan (or comma-separated)."),
    device: Device = typer.Option("auto", "--device"),
    cohort_seed: int = typer.Option(0, "--cohort-seed", callback=bounded(B.SEED), help="Seed of the synthetic cohort."),
    threads: int = typer.Option(1, "--threads", callback=bounded(B.THREADS),
                                help="torch CPU threads for training (1 is robust on a shared "
                                "machine; 2 is ~1.6x faster on an idle 2-core one)."),
    steps: Optional[int] = typer.Option(None, "--steps", callback=bounded(B.STEPS),
                                        help="Training steps of every run (default: the "
                                        "preset's); the cohort stays the same. One budget per --out folder."),
):
    """The paper's Table 2 on a synthetic cohort: every mode x seed with the same classifier, split, steps and
    threshold rule, evaluated on the CXR test split."""
    from xpgan.study import run_study

    seed_list, mode_list = study_lists(seeds, modes, ctx.args)
    run_study(out, preset=preset, seeds=seed_list, modes=mode_list, device=device, cohort_seed=cohort_seed,
              threads=threads, steps=steps, log=typer.echo)


def study_lists(seeds: list[str], modes: list[str], extra: list[str]) -> tuple[list[int], list[str]]:
    """`--seeds 0 1 --modes drr xpgan`: click keeps the first value of each option and leaves the others as
    extra arguments; seeds are integers and modes are names, so every value has one home. Values may also
    be comma-separated."""
    from xpgan.study import MODES

    tokens = [t for v in list(seeds) + list(modes) + list(extra) for t in v.replace(",", " ").split()]
    seed_list = [B.SEED.check("--seeds", int(t)) for t in tokens if t.lstrip("-").isdigit()]
    mode_list = [t for t in tokens if not t.lstrip("-").isdigit()]
    unknown = [t for t in mode_list if t not in MODES]
    if unknown:
        raise XPGANError(f"--modes must be among {', '.join(MODES)}; got {', '.join(unknown)}")
    return list(dict.fromkeys(seed_list)), list(dict.fromkeys(mode_list))


# ---------------------------------------------------------------------------------- bench
@bench_app.command("drr")
@user_errors
def bench_drr_command(
    depth: int = typer.Option(64, "--depth", callback=bounded(B.CT_AXIS),
                             help="Volume slices (superior-inferior), voxels."),
    height: int = typer.Option(256, "--height", callback=bounded(B.CT_AXIS),
                             help="Volume rows (anterior-posterior), voxels."),
    width: int = typer.Option(256, "--width", callback=bounded(B.CT_AXIS),
                             help="Volume columns (right-left), voxels."),
    size: int = typer.Option(256, "--size", callback=bounded(B.DETECTOR_SIZE),
                             help="Detector size, pixels per side."),
    geometry: GeometryKind = typer.Option("cone", "--geometry", help="cone (PA) or parallel."),
    backend: Backend = typer.Option("cpu", "--backend"),
    batch: int = typer.Option(1, "--batch", callback=bounded(B.BATCH),
                              help="DRRs per call (render_drr_batch when > 1)."),
    repeats: int = typer.Option(20, "--repeats", callback=bounded(B.REPEATS),
                                help="Timed calls after warm-up; the best is reported."),
    dtype: VolumeDtype = typer.Option("int16", "--dtype", help="HU voxel type: int16 (CT store) or float32 (read_ct)."),
) -> None:
    """Print DRRs/s, ray-voxel steps/s and ns per step per core (JIT time reported separately)."""
    from xpgan.bench.drr import bench_drr

    result = bench_drr(shape=(depth, height, width), size=size, geometry=geometry, backend=backend, batch=batch,
                       repeats=repeats, dtype=dtype)
    for line in result.lines():
        typer.echo(line)


@bench_app.command("prep")
@user_errors
def bench_prep_command(
    n: int = typer.Option(24, "--n", callback=bounded(B.COUNT), help="Volumes in the generated MosMed-like archive."),
    shape: tuple[int, int, int] = typer.Option((40, 512, 512), "--shape", callback=bounded(B.check_ct_shape),
                                               help="Archive volume size D H W, voxels "
                                               "(int16 .nii.gz)."),
    out_shape: tuple[int, int, int] = typer.Option(DEFAULT_SHAPE, "--out-shape", callback=bounded(B.check_ct_shape),
                                                   help="prep drr --shape D H W, "
                                                   "voxels."),
    workers: int = typer.Option(2, "--workers", callback=bounded(B.WORKERS),
                                help="Local Dask worker processes for both runs."),
    stages: int = typer.Option(3, "--stages", callback=bounded(B.INDEX),
                               help="Volumes timed stage by stage in one process (0: skip)."),
    archive: Optional[Path] = typer.Option(None, "--archive", help="Where the archive is generated (reused when "
                                           "it is already there); default: a folder in the temp dir."),
):
    """Print prep drr volumes/s end-to-end vs read+gunzip only (wall and CPU ratios, goal <= 1.5), per-stage
    CPU ms and peak RSS per worker."""
    if workers < 1:
        raise XPGANError("--workers must be >= 1 (both runs use Dask)")
    from xpgan.bench.prep import bench_prep

    result = bench_prep(n=n, shape=shape, out_shape=out_shape, workers=workers, archive=archive, stages=stages)
    for line in result.lines():
        typer.echo(line)
    if result.failed:
        raise typer.Exit(1)


@bench_app.command("loader")
@user_errors
def bench_loader_command(
    ct: Optional[Path] = typer.Option(None, "--ct", help="CT store."),
    cxr: Optional[Path] = typer.Option(None, "--cxr", help="CXR store."),
    batch_size: int = typer.Option(8, "--batch-size", callback=bounded(B.BATCH), help="Items per batch."),
    num_workers: int = typer.Option(2, "--num-workers", callback=bounded(B.LOADER_WORKERS),
                                    help="Loader worker processes."),
    batches: int = typer.Option(20, "--batches", callback=bounded(B.REPEATS),
                                help="Timed batches (after one warm-up batch)."),
) -> None:
    """Print training-stream samples/s (shuffled, shard-aware) for the CT and CXR stores."""
    from xpgan.bench.loader import bench_loader

    for r in bench_loader(ct=str(ct) if ct else None, cxr=str(cxr) if cxr else None, batch_size=batch_size,
                          num_workers=num_workers, batches=batches):
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
