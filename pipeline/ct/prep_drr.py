"""`xpgan prep drr`: a CT archive -> a Zarr v3 store of resized volumes and their DRRs, through Dask.

Public API
----------
prep_drr(src, out, *, shape=DEFAULT_SHAPE, geometry=None, mu_water=MU_WATER_PER_MM, backend="auto", workers=None,
         scheduler=None, overwrite=False, progress=True, memory_limit_gb=DEFAULT_MEMORY_LIMIT_GB, salt_file=None,
         items_per_shard=None, processes=True, spacing_range_mm=SPACING_RANGE_MM,
         allow_unusual_ct=False) -> CTPrepSummary
    src: MosMed tree, folder of NIfTI files / DICOM series folders, or manifest CSV (see
    xpgan.pipeline.ct.discover). out: the store path (`OUT.zarr`). geometry: a ConeGeometry /
    ParallelGeometry or its dict (default: cone, PA). memory_limit_gb: an item whose header says reading
    it would need more than this (estimate: voxels x (stored bytes per voxel + 4), the reader's peak) is
    refused before any pixel is read. Rerunning resumes (items with done set are skipped, failed ones retried);
    `overwrite=True` starts again. spacing_range_mm: plausible voxel spacing (validate.check_ct).
    allow_unusual_ct: accept volumes that do not look like a CT in HU (validate.check_ct_plausible). Returns a
    CTPrepSummary (PrepSummary + the discovery line) (summary.failed > 0: some items failed; they are
    listed in the store's "failures" attribute and in `OUT.zarr.failures.csv`).
prep_drr_from(PrepDrrConfig, DRROptions, CTChecks) -> CTPrepSummary
    The same, from the `prep drr` command's configuration (its options are generated from these fields).
process_ct(path, *, job) -> {"volume": int16 [D, H, W], "drr": float32 [S, S], "spacing": float32 [3]}
    One item, as a worker runs it: read the stored voxels and refuse implausible ones
    (xpgan.pipeline.ct.validate.read_checked_ct, the reader of drr render too; headers checked against the
    memory limit first) -> resize, converting
    to HU inside the first pass -> round/clip to int16 -> DRR of the stored int16 volume with its spacing
    (so drr[i] can be re-rendered exactly from volume[i] and spacing[i]).

Store: the "ct" arrays of xpgan.pipeline.schema (docs/design.md): volume int16 (N, D, H, W), drr float32
(N, S, S), label int8, severity int8, study_id str, spacing float32 (N, 3), done bool; plus `patient` (str,
salted hash) only when a manifest gives patient ids. Group attribute `xpgan`: kind "ct", version, shape,
drr_size, geometry, physics (mu_water, image map), resize method, source (format, root, item count), package
version, discovery notes, items_per_shard. Rows with done=False (failed or not yet processed) hold fill
values: select rows by `done`. On resume, done items whose data is missing or damaged are re-done
(verify.repair_for_resume) and listed in the summary.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from xpgan import bounds as B
from xpgan.drr.options import DRROptions
from xpgan.drr.physics import MU_WATER_PER_MM
from xpgan.errors import InputError, XPGANError
from xpgan.options import argument, option
from xpgan.pipeline.ct.validate import (
    ALLOW_UNUSUAL_CT_OPTION,
    HU_LIMITS,
    PLAUSIBLE_CT_RULE,
    SPACING_RANGE_MM,
    CTChecks,
    check_spacing_range,
    read_checked_ct,
)
from xpgan.pipeline.runner import PrepSummary, Task

DEFAULT_SHAPE = (64, 256, 256)
DEFAULT_MEMORY_LIMIT_GB = 6.0

__all__ = ["DEFAULT_SHAPE", "PrepDrrConfig", "PrepSummary", "prep_drr", "prep_drr_from", "process_ct"]


@dataclass
class PrepDrrConfig:
    """`prep drr`: the archive, the store and how the store is built (the DRRs: drr.options.DRROptions; the CT
    checks: validate.CTChecks)."""

    src: Path = argument("CT archive: MosMed tree (studies/CT-0..CT-4), folder of NIfTI files / DICOM series "
                         "folders, or manifest CSV (path,label[,patient_id][,study_id]).", "SRC")
    out: Path = argument("Output Zarr v3 store, e.g. ct.zarr.", "OUT")
    shape: tuple[int, int, int] = option(DEFAULT_SHAPE, "Resized volume size D H W, voxels: three integers "
                                         "separated by spaces.", bound=B.check_ct_shape, metavar="D H W")
    workers: Optional[int] = option(None, "Local Dask worker processes (0: no Dask, in this process).",
                                    bound=B.WORKERS, default_text="one per core, fewer if memory is short")
    scheduler: Optional[str] = option(None, "Address of an existing Dask scheduler, e.g. tcp://host:8786 (workers "
                                            "need xpgan and access to SRC).", bound=B.check_dask_address,
                                      metavar="ADDRESS")
    overwrite: bool = option(False, "Delete OUT and start again (without it a rerun resumes).")
    progress: bool = option(True, "Progress bar on stderr (tty only).", flag="--progress/--no-progress")
    memory_limit_gb: float = option(DEFAULT_MEMORY_LIMIT_GB, "Refuse items whose header says reading needs more "
                                    "than this, GB (stored bytes + 4 per voxel; checked before reading).",
                                    bound=B.MEMORY_GB)
    salt_file: Optional[Path] = option(None, "Salt for patient-id hashes (manifest patient_id); created if missing.",
                                       default_text="OUT.salt")


def prep_drr_from(cfg: PrepDrrConfig, drr: DRROptions, checks: CTChecks) -> CTPrepSummary:
    """prep_drr with the `prep drr` command's configuration."""
    return prep_drr(cfg.src, cfg.out, shape=cfg.shape, geometry=drr.make_geometry(), mu_water=drr.mu_water,
                    backend=drr.backend, workers=cfg.workers, scheduler=cfg.scheduler, overwrite=cfg.overwrite,
                    progress=cfg.progress, memory_limit_gb=cfg.memory_limit_gb, salt_file=cfg.salt_file,
                    spacing_range_mm=checks.spacing_range, allow_unusual_ct=checks.allow_unusual_ct)


@dataclass
class CTPrepSummary(PrepSummary):
    discovery: str = ""  # CTDiscovery.summary(): found / skipped with reasons
    labels: list = field(default_factory=list)  # every item's label as discovery gave it

    def text(self, max_failures: int = 20) -> str:
        return "\n".join(x for x in (self.discovery, super().text(max_failures), self.label_note()) if x)

    def label_note(self) -> str:
        """A line when the studies lack a class: every label unknown (a folder archive), or one class only."""
        from xpgan.pipeline.labels import CT_LABELS_HOW, missing_class

        lack = missing_class(self.labels) if self.labels and self.kept else None
        if lack is None:
            return ""
        if lack == "every label is unknown":
            return (f"note: every study's label is unknown (a folder of NIfTI files or DICOM series has none): "
                    f"train --mode drr needs labels, --mode xpgan trains G and D without them; {CT_LABELS_HOW}")
        return f"note: the studies have {lack}; {CT_LABELS_HOW}"


@dataclass(frozen=True)
class DRRJob:
    shape: tuple[int, int, int]  # (D, H, W) of the stored volume, voxels
    geometry: dict  # geometry.to_dict()
    mu_water: float  # 1/mm
    backend: str  # "auto" | "cpu" | "cuda"
    memory_limit_bytes: int
    spacing_range_mm: tuple[float, float] = SPACING_RANGE_MM  # plausible voxel spacing, mm (validate.check_ct)
    allow_unusual_ct: bool = False  # skip validate.check_ct_plausible


def process_ct(path: str, *, job: DRRJob) -> dict:
    """Read, resize and render one CT (runs on a Dask worker)."""
    from xpgan.drr import geometry_from_dict, render_drr
    from xpgan.pipeline.ct.resize import quantize_int16, resize_volume

    # the memory limit is checked from the headers, before reading; then the checks of validate
    ct = read_checked_ct(path, max_bytes=job.memory_limit_bytes, spacing_range_mm=job.spacing_range_mm,
                         allow_unusual_ct=job.allow_unusual_ct)
    # HU = float32(stored) * scale + offset, converted inside the first resize pass (no full-size float32 copy)
    vol, spacing = resize_volume(ct.data, ct.spacing, job.shape, scale=ct.scale, offset=ct.offset)  # [D, H, W]
    del ct
    vol16, n_bad = quantize_int16(vol)  # [D, H, W] int16 = round(clip(vol))
    del vol
    if n_bad:
        raise InputError(path, f"the volume holds non-finite values (NaN or inf) in {n_bad} resized voxels")
    geometry = geometry_from_dict(job.geometry)
    drr = render_drr(vol16, spacing, geometry, backend=job.backend, output="image", mu_water=job.mu_water)
    return {"volume": vol16, "drr": np.asarray(drr, dtype=np.float32),
            "spacing": np.asarray(spacing, dtype=np.float32)}


def _process_encoded(path: str, *, job: DRRJob, encoders: dict) -> dict:
    """process_ct, then the store's chunk encoding of the volume and DRR, on the worker: compression runs in
    parallel, half the bytes travel, and the single writer only assembles shards (store.write_items)."""
    from xpgan.pipeline.store import encode_items

    return encode_items(process_ct(path, job=job), encoders)


def _relative_reason(reason: str, path: str, rel: str) -> str:
    """Failure reasons name files by archive-relative paths, and drop a leading repeat of the item's path."""
    reason = reason.replace(path, rel)
    return reason[len(rel) + 2:] if reason.startswith(rel + ": ") else reason


def _check_options(shape, mu_water, memory_limit_gb, backend):
    from xpgan import bounds as B
    from xpgan.drr import BACKENDS
    from xpgan.drr.physics import check_mu_water

    shape = B.check_ct_shape("--shape", tuple(int(s) for s in shape))
    B.MEMORY_GB.check("--memory-limit-gb", memory_limit_gb)
    if backend not in BACKENDS:
        raise XPGANError(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    return shape, float(check_mu_water(mu_water))


def _store_description(disc, items, patients, fingerprints, shape, size: int, geometry, mu_water: float,
                       backend: str, spacing_range_mm, allow_unusual_ct: bool) -> tuple[dict, dict, dict]:
    """(arrays, identity, attributes) of the CT store: what makes two runs the same store, and what it says."""
    import xpgan
    from xpgan.pipeline import schema
    from xpgan.pipeline import store as st
    from xpgan.pipeline.ct.resize import RESIZE_METHOD

    n = len(items)
    arrays = schema.item_arrays("ct", {"D": shape[0], "H": shape[1], "W": shape[2], "S": size},
                                optional=("patient",) if patients is not None else ())
    physics = {schema.MU_WATER: mu_water, "image_map": schema.image_map_attrs()}
    identity = {
        "version": schema.FORMAT_VERSION,
        "shape": list(shape),
        schema.GEOMETRY: geometry.to_dict(),
        schema.MU_WATER: mu_water,
        "resize": RESIZE_METHOD["method"],
        "arrays": sorted(arrays),
        "items": st.digest([[it.study_id, it.rel, it.label, it.severity] for it in items]
                           + ([patients] if patients is not None else [])),
        "sources": fingerprints,  # what each item's file(s) hold: another archive of the same names differs
    }
    attrs = {
        "shape": list(shape),
        "drr_size": size,
        schema.GEOMETRY: geometry.to_dict(),
        schema.PHYSICS: physics,
        "resize": RESIZE_METHOD,
        "source": {"format": disc.format, "root": disc.root, "n_items": n},
        "notes": list(disc.notes),
        "skipped": disc.skipped_counts(),
        "validation": {"spacing_mm": list(spacing_range_mm), "hu_limits": list(HU_LIMITS),
                       "refused": "NaN/inf voxels, spacing or HU outside these limits",
                       "plausible_ct": f"skipped ({ALLOW_UNUSUAL_CT_OPTION})" if allow_unusual_ct
                       else PLAUSIBLE_CT_RULE},
        "labels": {str(k): v for k, v in schema.LABEL_NAMES.items()},
        "severity": "MosMed CT-0..CT-4 grade, -1 unknown",
        "study_id": {"mosmed": "file name without extension",
                     "folder": "path relative to the archive root, without extension",
                     "manifest": "study_id column, else the path without extension"}[disc.format],
        "package_version": getattr(xpgan, "__version__", "unknown"),
        "backend": backend,
    }
    return arrays, identity, attrs


def prep_drr(src, out, *, shape=DEFAULT_SHAPE, geometry=None, mu_water: float = MU_WATER_PER_MM, backend: str = "auto",
             workers: int | None = None, scheduler: str | None = None, overwrite: bool = False,
             progress: bool = True, memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB, salt_file=None,
             items_per_shard: int | None = None, processes: bool = True,
             spacing_range_mm=SPACING_RANGE_MM, allow_unusual_ct: bool = False) -> CTPrepSummary:
    """Convert a CT archive into a CT store (see module docstring)."""
    from xpgan.drr import ConeGeometry, ParallelGeometry, geometry_from_dict
    from xpgan.pipeline import store as st
    from xpgan.pipeline.ct.discover import discover_ct
    from xpgan.pipeline.fingerprint import changed_sources, source_fingerprints
    from xpgan.pipeline.lifecycle import prep_salt, run_store_items, salt_attrs
    from xpgan.pipeline.privacy import patient_hash

    shape, mu_water = _check_options(shape, mu_water, memory_limit_gb, backend)
    spacing_range_mm = check_spacing_range(spacing_range_mm)
    if geometry is None:
        geometry = ConeGeometry()
    elif isinstance(geometry, dict):
        geometry = geometry_from_dict(geometry)
    elif not isinstance(geometry, (ConeGeometry, ParallelGeometry)):
        raise XPGANError(f"geometry must be a ConeGeometry, ParallelGeometry or dict, got {type(geometry).__name__}")
    out = Path(out)
    disc = discover_ct(src)
    items = disc.items
    n = len(items)
    size = int(geometry.size)

    with_patients = any(it.patient_id for it in items)
    with st.StoreLock(out), st.disk_full_is_resumable(out), \
            (prep_salt(out, salt_file) if with_patients else contextlib.nullcontext()) as salt:
        patients = [patient_hash(it.patient_id or "", salt) for it in items] if with_patients else None
        fingerprints = source_fingerprints([it.path for it in items])
        arrays, identity, attrs = _store_description(disc, items, patients, fingerprints, shape, size, geometry,
                                                     mu_water, backend, spacing_range_mm, allow_unusual_ct)
        if salt is not None:
            attrs.update(salt_attrs(salt))
        from xpgan.drr.render import probe_backend

        job_backend, fallback = probe_backend(backend)   # "auto" with a failing CUDA path -> "cpu", one warning
        if fallback:
            attrs["backend_note"] = f"auto: the CUDA path failed ({fallback}); rendered on the CPU"
        if not overwrite:
            changed_sources(out, fingerprints, [it.rel for it in items])
        fresh = overwrite or not (out / "zarr.json").is_file()
        group = st.create_or_open(out, kind="ct", arrays=arrays, n_items=n, attrs=attrs, identity=identity,
                                  overwrite=overwrite, items_per_shard=items_per_shard)

        def write(batch: dict[int, dict]) -> None:
            for i, r in batch.items():
                it = items[i]
                r.update(label=it.label, severity=it.severity, study_id=it.study_id)
                if patients is not None:
                    r["patient"] = patients[i]
            st.write_items(group, batch)

        def failure(i: int, reason: str, fresh: bool) -> dict:
            it = items[i]
            return {"index": i, "id": it.study_id, "path": it.rel,
                    "reason": _relative_reason(reason, it.path, it.rel) if fresh else reason}

        job = DRRJob(shape=shape, geometry=geometry.to_dict(), mu_water=mu_water, backend=job_backend,
                     memory_limit_bytes=int(memory_limit_gb * 1e9), spacing_range_mm=spacing_range_mm,
                     allow_unusual_ct=bool(allow_unusual_ct))
        item_gb = 4 * float(np.prod(shape)) / 1e9
        run = run_store_items(group, out, n=n, task=lambda i: Task(i, items[i].path, items[i].rel),
                              process=functools.partial(_process_encoded, job=job, encoders=st.item_encoders(group)),
                              write=write, failure=failure, desc="prep drr", workers=workers, scheduler=scheduler,
                              processes=processes, progress=progress,
                              memory_per_worker_gb=min(memory_limit_gb, 2.0) + 4 * item_gb, fresh=fresh)
    return CTPrepSummary(total=n, done=int(run.done_now.sum()), skipped=int(run.done_before.sum()),
                         failed=len(run.result.failed), failures=[(f["path"], f["reason"]) for f in run.failures],
                         seconds=run.result.seconds, store=str(out), discovery=disc.summary(), redone=run.redone,
                         kept=run.kept, labels=[it.label for it in items])
