"""`xpgan prep cxr`: labelled chest X-rays -> a Zarr v3 store with a patient-grouped stratified split.

Steps: discover every item of every SRC (`cxr.sources`, deterministic order) -> split the full list
(`split.grouped_stratified_split`, strata = source x patient label, before anything is processed, so a
resumed run gets the identical split) -> create or reopen the store (identity = options + a keyed digest of
the item list; a changed archive or option is refused unless --overwrite) -> read + letterbox each item on
Dask workers (`cxr.readers.load_cxr`) -> write from this process only (`store.write_items`, one shard at a time)
-> failures into the store attributes (index, source, reason: no path) and `<store>.failures.csv` beside it
(with paths, for the operator) -> a Table-1-like count per source x split x label.

Store: the "cxr" arrays of xpgan.pipeline.schema (docs/design.md): `image` float32 [N, size, size] in
[0, 1], `label` int8 (1 COVID-19, 0 not), `patient` str (salted HMAC of "<source>/<patient id>", never the
raw id), `source` str, `split` int8 (0 train, 1 test), `done` bool. Failed items keep done=False
(label/split fill -1). Nothing else about a file is stored: no file names, no DICOM attributes. On resume,
done items whose data is missing or damaged are re-done (verify.repair_for_resume). `complete` is set when
the run went through every item (failed ones included, as in prep drr).
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import xpgan
from xpgan import bounds as B
from xpgan.errors import InputError, XPGANError
from xpgan.options import argument, option
from xpgan.pipeline.cxr.readers import ALLOW_BURNED_IN_OPTION, DECODE_BUDGET_BYTES, INTENSITY_ATTRS, load_cxr_depth
from xpgan.pipeline.cxr.sources import (
    DEFAULT_POSITIVE,
    DEFAULT_VIEWS,
    discover,
    items_fingerprint,
    one_patient_per_content,
    positive_help,
    positive_keys,
)
from xpgan.pipeline.cxr.split import check_grouping, grouped_stratified_split
from xpgan.pipeline.fingerprint import changed_done_items, source_fingerprints
from xpgan.pipeline.runner import PrepSummary, Task

KIND = "cxr"
ITEMS_PER_SHARD = 64  # 64 x 256 x 256 float32 = 16 MiB per shard at the default size


@dataclass
class PrepCxrConfig:
    """`prep cxr`: the sources, the store and how it is built."""

    srcs: list[Path] = argument("One or more sources (a folder of class sub-folders, a manifest CSV "
                                "path,label[,patient_id][,source], or a Cohen-style metadata.csv or its folder).",
                                "SRC")
    out: Path = argument("Output Zarr v3 store, e.g. cxr.zarr.", "OUT")
    size: int = option(256, "Output image side, pixels (aspect kept by black padding): a power of two >= "
                            f"{B.CLASSIFIER_MIN_IMAGE}, the sizes the networks read.",
                       bound=B.model_image_size(B.CXR_SIZE))
    test_fraction: float = option(0.2, "Fraction of images (per source and label) put in the test split.",
                                  bound=B.FRACTION)
    seed: int = option(0, "Seed of the patient-grouped split.", bound=B.SEED)
    positive: Optional[list[str]] = option(None, "Class folder / manifest class name that means COVID-19 positive "
                                                 "(repeatable).", metavar="NAME", default_text=positive_help())
    views: str = option(",".join(DEFAULT_VIEWS), "Comma-separated radiographic views kept from a Cohen "
                                                 "metadata.csv.", metavar="VIEW,VIEW")
    source_name: Optional[list[str]] = option(None, "Name stored in `source`, one per SRC in order (repeatable).",
                                              metavar="NAME", default_text="the SRC folder's name")
    workers: Optional[int] = option(None, "Local Dask worker processes (0: no Dask).", bound=B.WORKERS,
                                    default_text="one per core, fewer if memory cannot hold "
                                                 f"{DECODE_BUDGET_BYTES / 1e9:g} GB per worker for decoding")
    scheduler: Optional[str] = option(None, "Address of an existing Dask scheduler (tcp://HOST:PORT).",
                                      bound=B.check_dask_address, metavar="ADDRESS")
    overwrite: bool = option(False, "Delete an existing store and start again.")
    progress: bool = option(True, "Show a progress bar.", flag="--progress/--no-progress")
    salt_file: Optional[Path] = option(None, "Secret key for patient hashes (created if missing).",
                                       default_text="OUT.salt")
    allow_burned_in: bool = option(False, "Accept DICOM radiographs marked BurnedInAnnotation YES (text in the "
                                          "pixels may identify the patient; refused by default).",
                                   flag=ALLOW_BURNED_IN_OPTION)


def prep_cxr_from(cfg: PrepCxrConfig) -> "CXRPrepSummary":
    """prep_cxr with the `prep cxr` command's configuration."""
    return prep_cxr(cfg.srcs, cfg.out, size=cfg.size, test_fraction=cfg.test_fraction, seed=cfg.seed,
                    positive=tuple(cfg.positive) if cfg.positive else DEFAULT_POSITIVE,
                    views=[v.strip() for v in cfg.views.split(",") if v.strip()], source_names=cfg.source_name or None,
                    workers=cfg.workers, scheduler=cfg.scheduler, overwrite=cfg.overwrite, progress=cfg.progress,
                    salt_file=cfg.salt_file, allow_burned_in=cfg.allow_burned_in)


@dataclass
class CXRPrepSummary(PrepSummary):
    # rows (source, split name, negatives, positives) over done items, then "all" rows
    table: list[tuple[str, str, int, int]] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # rows/files left out on purpose, by reason
    classes: dict[str, int] = field(default_factory=dict)  # class folder names / manifest class labels -> label

    def text(self, max_failures: int = 20) -> str:
        lines = [super().text(max_failures)]
        if self.excluded:
            excluded = ", ".join(f"{k}: {v}" for k, v in sorted(self.excluded.items()))
            lines.append("  excluded (not failures): " + excluded)
        lines.append(format_table(self.table))
        lack = self.missing_class()
        if lack:
            lines.append(lack)
        return "\n".join(lines)

    def missing_class(self) -> str:
        """A warning line when the store's done items lack a class ("" when both are there)."""
        from xpgan.pipeline.labels import cxr_labels_how

        pos = sum(r[3] for r in self.table if r[0] == "all")
        neg = sum(r[2] for r in self.table if r[0] == "all")
        if not self.done or (pos and neg):
            return ""
        classes = ", ".join(f"{name} ({'positive' if lb else 'negative'})" for name, lb in sorted(self.classes.items()))
        seen = f"; the classes found: {classes}" if classes else ""
        if not pos:
            return (f"warning: {self.store} has no positive (COVID-19) item, so a classifier cannot learn from it"
                    f"{seen}; {cxr_labels_how()}")
        return f"warning: {self.store} has no negative item, so a classifier cannot learn from it{seen}"


def format_table(table: Sequence[tuple[str, str, int, int]]) -> str:
    """Counts per source x split x label, like the paper's Table 1."""
    width = max([len("source")] + [len(r[0]) for r in table])
    head = f"  {'source':<{width}}  {'split':<5}  {'negative':>8}  {'positive':>8}  {'total':>7}"
    out = [head, "  " + "-" * (len(head) - 2)]
    for src, split, neg, pos in table:
        out.append(f"  {src:<{width}}  {split:<5}  {neg:>8}  {pos:>8}  {neg + pos:>7}")
    return "\n".join(out)


def count_table(source: np.ndarray, split: np.ndarray, label: np.ndarray) -> list[tuple[str, str, int, int]]:
    """Rows (source, split, negatives, positives) for every source in sorted order, then 'all'."""
    rows = []
    names = sorted(set(source.tolist()))
    for name in names + ["all"]:
        sel = np.ones(len(source), bool) if name == "all" else (source == name)
        for s, sname in ((0, "train"), (1, "test")):
            m = sel & (split == s)
            rows.append((name, sname, int((m & (label == 0)).sum()), int((m & (label == 1)).sum())))
    return rows


def _process(payload: tuple[str, int, bool]) -> dict:
    """Worker side: one file -> {"image": float32 [size, size], "bits": int}. Errors carry no path (see
    `_reason`). payload: (path, size, allow_burned_in)."""
    path, size, allow_burned_in = payload
    try:
        image, bits = load_cxr_depth(path, size, allow_burned_in=allow_burned_in)
        return {"image": image, "bits": bits}
    except InputError as exc:
        raise XPGANError(exc.reason) from None  # the path is known to the caller; keep it out of reasons


def _process_encoded(payload: tuple[str, int, bool], encoders: dict) -> dict:
    """_process, then the image encoded as its Zarr chunk (store.item_encoders): compression on the workers."""
    from xpgan.pipeline.store import encode_items

    return encode_items(_process(payload), encoders)


def _reason(reason: str, path: Path) -> str:
    """A failure reason fit for the store: the file's path and name replaced by <file> (whole tokens only)."""
    from xpgan.pipeline.privacy import redact_names

    return redact_names(reason, path)


def _store_description(found, items, salt: bytes, size: int, test_fraction: float, seed: int, positive, views,
                       allow_burned_in: bool) -> tuple[dict, dict]:
    """(identity, attributes) of the CXR store: what makes two runs the same store, and what it says."""
    from xpgan.pipeline import schema

    source_names_used = sorted({it.source for it in items})
    identity = {
        "items": items_fingerprint(items, salt), "n_items": len(items), "size": size,
        "test_fraction": float(test_fraction), "seed": int(seed),
        "positive": sorted(positive_keys(positive)), "views": sorted({v.lower() for v in views}),
    }
    attrs = {
        "size": size,
        "padding": {"mode": "letterbox", "value": 0.0, "align": "centre",
                    "scale": "size / max(height, width)", "odd_margin": "bottom/right"},
        "resample": "Pillow bilinear (triangle filter widened by the down-sampling factor: anti-aliased)",
        "intensity": dict(INTENSITY_ATTRS),
        "split": {"test_fraction": float(test_fraction), "seed": int(seed), "grouped_by": "patient",
                  "stratified_by": ["source", "patient label (max of its images)"],
                  **{name: code for code, name in schema.SPLIT_NAMES.items()}},
        "labels": {**{str(k): v for k, v in schema.LABEL_NAMES.items()},
                   str(schema.LABEL_UNKNOWN): "not written (failed item)"},
        "positive_classes": sorted(positive_keys(positive)),
        "views": list(views),
        "sources": [{"name": n, "kinds": found.source_kinds.get(n, ["manifest"]),
                     "items": int(sum(it.source == n for it in items))} for n in source_names_used],
        "excluded": dict(sorted(found.excluded.items())),
        "patient": "HMAC-SHA256(salt, '<source>/<patient id>')[:16]; salt kept beside the store",
        "bits": "bit depth each image's values were scaled by (array `bits`): PNG/JPEG value / (2**bits - 1), "
                "DICOM BitsStored, 0 float image (own min..max), -1 not written",
        "package_version": xpgan.__version__,
        "refused_per_file": {"modality": "DICOM not CR/DX/RG (CT/MR slices, secondary captures)",
                             "burned_in_annotation": "accepted" if allow_burned_in else "refused",
                             "decode_budget_bytes": DECODE_BUDGET_BYTES},
    }
    return identity, attrs


def prep_cxr(sources: Sequence[str | os.PathLike], out: str | os.PathLike, *, size: int = PrepCxrConfig.size,
             test_fraction: float = PrepCxrConfig.test_fraction, seed: int = PrepCxrConfig.seed,
             positive: Sequence[str] = DEFAULT_POSITIVE,
             views: Sequence[str] = DEFAULT_VIEWS, source_names: Sequence[str] | None = None,
             workers: int | None = None, scheduler: str | None = None, overwrite: bool = False,
             progress: bool = True, salt_file: str | os.PathLike | None = None,
             processes: bool = True, allow_burned_in: bool = False) -> CXRPrepSummary:
    """Build (or resume) a CXR store from `sources`; see the module docstring. Raises XPGANError for bad
    options or sources; per-file problems are failures in the summary, not exceptions. allow_burned_in:
    accept DICOM radiographs marked BurnedInAnnotation YES (refused by default). Each worker may need
    `DECODE_BUDGET_BYTES` to read a file: the default worker count fits them in the machine's memory."""
    from xpgan.pipeline import schema
    from xpgan.pipeline import store as st
    from xpgan.pipeline.lifecycle import prep_salt, run_store_items, salt_attrs
    from xpgan.pipeline.privacy import patient_hash

    B.CXR_SIZE.check("--size", size)
    B.FRACTION.check("--test-fraction", test_fraction)
    if not views:
        raise XPGANError("--views must name at least one view")
    size = int(size)
    out = Path(out)
    found = discover(sources, positive=positive, views=views, source_names=source_names)
    items = found.items
    if not items:
        raise XPGANError(nothing_found(found))

    fingerprints = source_fingerprints([it.path for it in items])
    items, fingerprints, same_content = one_patient_per_content(found, items, fingerprints)
    labels = np.array([it.label for it in items], dtype=np.int8)
    split = grouped_stratified_split(labels, [it.patient_key for it in items], test_fraction=test_fraction,
                                     seed=seed, strata=[it.source for it in items])
    assert not check_grouping(split, [it.patient_key for it in items])

    notes: list[str] = [same_content] if same_content else []
    with st.StoreLock(out), st.disk_full_is_resumable(out), prep_salt(out, salt_file) as salt:
        fresh = overwrite or not (out / "zarr.json").is_file()
        patients = [patient_hash(it.patient_key, salt) for it in items]
        identity, attrs = _store_description(found, items, salt, size, test_fraction, seed, positive, views,
                                             allow_burned_in)
        attrs.update(salt_attrs(salt))
        if not overwrite:
            changed_done_items(out, fingerprints, [str(it.path) for it in items])
        group = st.create_or_open(
            out, kind=KIND, overwrite=overwrite, n_items=len(items), attrs=attrs, identity=identity,
            items_per_shard=ITEMS_PER_SHARD,
            arrays=schema.item_arrays(KIND, {"S": size}, optional=("bits",)))

        def write(batch: dict[int, dict]) -> None:
            st.write_items(group, {i: {"image": r["image"], "bits": int(r["bits"]), "label": int(labels[i]),
                                       "patient": patients[i],
                                       "source": items[i].source, "split": int(split[i])}
                                   for i, r in batch.items()}, inputs={i: fingerprints[i] for i in batch})

        def failure(i: int, reason: str, fresh: bool) -> dict:
            return {"index": i, "id": f"{items[i].source}:{i}", "path": str(items[i].path),
                    "reason": _reason(reason, items[i].path) if fresh else reason}

        # absolute paths: workers of a --scheduler cluster may run in another working directory. The store gets
        # no paths (file names may embed names); the CSV beside it names files for the operator.
        run = run_store_items(
            group, out, n=len(items),
            task=lambda i: Task(i, (os.path.abspath(items[i].path), size, bool(allow_burned_in)), str(items[i].path)),
            process=functools.partial(_process_encoded, encoders=st.item_encoders(group)), write=write,
            failure=failure, desc="prep cxr", workers=workers, scheduler=scheduler, processes=processes,
            progress=progress, memory_per_worker_gb=DECODE_BUDGET_BYTES / 1e9, paths_in_store=False,
            csv_only=[{"path": p, "reason": r} for p, r in found.problems], fresh=fresh,
            prefailed={i: "file not found" for i, fp in enumerate(fingerprints) if fp == "missing"})
        done_now = run.done_now
        table = count_table(np.array([str(x) for x in group["source"][:]], dtype=object)[done_now],
                            np.asarray(group["split"][:])[done_now], np.asarray(group["label"][:])[done_now]) \
            if run.kept else []

    failures = [(str(items[i].path), _reason(r, items[i].path)) for i, r in sorted(run.result.failed.items())]
    failures += list(found.problems)
    return CXRPrepSummary(total=len(items), done=int(done_now.sum()), skipped=int(run.done_before.sum()),
                          failed=len(failures), failures=failures, seconds=run.result.seconds, store=str(out),
                          table=table, excluded=dict(found.excluded), redone=run.redone, notes=notes,
                          classes=dict(found.classes), kept=run.kept)


def nothing_found(found, examples: int = 3) -> str:
    """Why discovery gave no item: the count of unusable rows/files with the first reasons, and what was
    excluded on purpose."""
    from xpgan.errors import safe_text

    excl = ", ".join(f"{k}: {v}" for k, v in sorted(found.excluded.items())) or "none"
    if not found.problems:
        return f"no images found in the sources (excluded: {excl})"
    # a manifest row's reason names its line ("m.csv line 7: ..."); another file's reason is said with its name
    first = "; ".join(safe_text(reason if re.match(r"\S+ line \d+: ", reason) else f"{Path(path).name}: {reason}")
                      for path, reason in found.problems[:examples])
    more = f" (first {examples})" if len(found.problems) > examples else ""
    return (f"no usable images in the sources: {len(found.problems)} rows/files refused{more}: {first} "
            f"(excluded: {excl})")
