"""Find the CT studies of an archive, in a deterministic order, with labels and stable study ids.

Public API
----------
CTItem(path, rel, study_id, label, severity, patient_id)
    One study: `path` absolute path (NIfTI file or DICOM series folder), `rel` its path relative to the
    archive root (posix), `label` 1 positive / 0 negative / -1 unknown, `severity` MosMed grade 0..4 or -1,
    `patient_id` raw id from a manifest (hash it before storing; None when not given).
Discovery(format, root, items, notes)
discover_ct(src) -> Discovery
    src may be:
    - a MosMedData COVID19_1110 tree: a folder holding `studies/CT-0 .. CT-4/*.nii[.gz]` (or the `studies`
      folder itself, or a folder holding `CT-k` folders directly). Label 0 for CT-0, 1 for CT-1..CT-4,
      severity = the digit; study id = file name without extension (`study_0255`). A registry
      (`dataset_registry.xlsx` or a `*registry*.csv` with columns study_file, category) is read when present
      and disagreements are reported in `notes`; the folder names are authoritative.
    - a manifest CSV with columns `path,label` and optional `patient_id`, `study_id`, `severity`; paths are
      relative to the CSV's folder; order = row order; study id defaults to the path without extension.
    - any other folder: NIfTI files and DICOM series folders below it (recursive, names sorted, hidden
      names and `*.zarr` folders skipped), plus empty leaf folders (reported as failures later, so a
      missing series is not silently dropped); label -1, study id = relative path without extension
      (`ct/patient_a`, or the folder name when `src` is itself one series).
    Study ids are paths chosen by whoever built the archive, never DICOM header values (no PHI is read from
    the files); if folder names in an archive hold patient names, the ids will too, so rename such
    folders or use a manifest with `study_id`.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from xpgan.errors import InputError, XPGANError

_MOSMED_DIR = re.compile(r"^CT-([0-4])$")
_NIFTI = (".nii.gz", ".nii")


@dataclass(frozen=True)
class CTItem:
    path: str  # absolute path of the NIfTI file or DICOM series folder
    rel: str  # path relative to the archive root (posix), used in reports
    study_id: str
    label: int  # 1 positive, 0 negative, -1 unknown
    severity: int = -1  # MosMed CT-0..CT-4 grade, -1 unknown
    patient_id: str | None = field(default=None, repr=False)  # raw; hash before storing


@dataclass
class Discovery:
    format: str  # "mosmed" | "manifest" | "folder"
    root: str
    items: list[CTItem]
    notes: list[str] = field(default_factory=list)


def strip_nifti(name: str) -> str:
    low = name.lower()
    for suf in _NIFTI:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(_NIFTI) and not name.startswith(".")


def _mosmed_root(src: Path) -> Path | None:
    """The folder holding CT-0..CT-4, if `src` is (or contains) a MosMed tree."""
    for cand in (src / "studies", src):
        if cand.is_dir():
            try:
                names = [p.name for p in cand.iterdir() if p.is_dir()]
            except OSError:
                continue
            if any(_MOSMED_DIR.match(n) for n in names):
                return cand
    return None


def _read_table(path: Path) -> dict[str, list]:
    """Column name -> values of a CSV (csv module) or xlsx (pandas, imported only then: ~0.4 s) table."""
    if path.suffix == ".xlsx":
        import pandas as pd

        df = pd.read_excel(path)
        return {c: list(df[c]) for c in df.columns}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    return {h: [r[i] if i < len(r) else "" for r in body] for i, h in enumerate(header)}


def _read_registry(src: Path) -> tuple[dict[str, int], list[str]]:
    """study stem -> grade from a MosMed registry (xlsx or csv) next to `studies/`, if any."""
    notes: list[str] = []
    cands = [src / "dataset_registry.xlsx"] + sorted(src.glob("*registry*.csv"))
    for path in cands:
        if not path.is_file():
            continue
        try:
            columns = _read_table(path)
        except Exception as exc:  # an unreadable registry is not fatal: folders are authoritative
            notes.append(f"{path.name}: registry not readable ({type(exc).__name__}); using folder names")
            continue
        cols = {str(c).strip().lower(): c for c in columns}
        fcol = cols.get("study_file") or cols.get("study") or cols.get("file")
        ccol = cols.get("category") or cols.get("class")
        if fcol is None or ccol is None:
            notes.append(f"{path.name}: no study_file/category columns; using folder names")
            continue
        out: dict[str, int] = {}
        for f, c in zip(columns[fcol], columns[ccol]):
            m = re.search(r"CT-?([0-4])", str(c))
            if m:
                out[strip_nifti(Path(str(f)).name)] = int(m.group(1))
        return out, notes
    return {}, notes


def _discover_mosmed(src: Path, studies: Path) -> Discovery:
    found: list[tuple[str, int, Path]] = []
    for d in sorted(studies.iterdir(), key=lambda p: p.name):
        m = _MOSMED_DIR.match(d.name)
        if not (m and d.is_dir()):
            continue
        grade = int(m.group(1))
        for f in sorted(d.iterdir(), key=lambda p: p.name):
            if f.is_file() and _is_nifti(f.name):
                found.append((strip_nifti(f.name), grade, f))
    stems = [s for s, _, _ in found]
    dup = {s for s in stems if stems.count(s) > 1}
    root = studies.parent if studies.name == "studies" else studies
    items = []
    for stem, grade, f in found:
        rel = f.relative_to(root).as_posix()
        sid = f"{f.parent.name}/{stem}" if stem in dup else stem
        items.append(CTItem(path=str(f.resolve()), rel=rel, study_id=sid, label=0 if grade == 0 else 1,
                            severity=grade))
    items.sort(key=lambda it: (it.study_id, it.rel))
    registry, notes = _read_registry(root)
    mismatches = [it.study_id for it in items if it.study_id in registry and registry[it.study_id] != it.severity]
    if mismatches:
        notes.append(f"registry disagrees with the CT-k folders for {len(mismatches)} studies "
                     f"(e.g. {mismatches[0]}); the folders were used")
    return Discovery("mosmed", str(root), items, notes)


def _parse_int(value: str, what: str, allowed: set[int], where: str) -> int:
    try:
        v = int(float(str(value).strip()))
    except ValueError:
        raise XPGANError(f"{where}: {what} {value!r} is not an integer") from None
    if v not in allowed:
        raise XPGANError(f"{where}: {what} {v} is not one of {sorted(allowed)}")
    return v


def _discover_manifest(csv_path: Path) -> Discovery:
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(csv_path, f"cannot read the manifest: {exc}") from None
    if "path" not in fields or "label" not in fields:
        raise InputError(csv_path, "a manifest needs the columns path,label[,patient_id][,study_id]")
    items = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(rows, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{csv_path}: line {n}"
        if not row.get("path"):
            raise XPGANError(f"{where}: empty path")
        p = Path(row["path"])
        full = p if p.is_absolute() else base / p
        label = _parse_int(row["label"], "label", {-1, 0, 1}, where)
        sev = _parse_int(row["severity"], "severity", {-1, 0, 1, 2, 3, 4}, where) if row.get("severity") else -1
        rel = p.as_posix()
        sid = row.get("study_id") or strip_nifti(rel.rstrip("/"))
        if sid in seen:
            raise XPGANError(f"{where}: study id {sid!r} repeats line {seen[sid]}")
        seen[sid] = n
        items.append(CTItem(path=str(Path(os.path.abspath(full))), rel=rel, study_id=sid, label=label,
                            severity=sev, patient_id=row.get("patient_id") or None))
    if not items:
        raise InputError(csv_path, "the manifest lists no studies")
    has_pid = "patient_id" in fields
    return Discovery("manifest", str(base), items, ["patient ids from manifest"] if has_pid else [])


def _discover_folder(src: Path) -> Discovery:
    from xpgan.pipeline.io import is_dicom_series_dir

    found: list[Path] = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.lower().endswith(".zarr"))
        rp = Path(root)
        niftis = [f for f in files if _is_nifti(f)]
        found += [rp / f for f in niftis]
        visible = [f for f in files if not f.startswith(".")]
        if is_dicom_series_dir(rp):
            found.append(rp)
        elif rp != src and not dirs and not visible:
            found.append(rp)  # an empty leaf folder: probably a missing series; fails with a clear reason
    items = []
    for p in found:
        rel = p.relative_to(src).as_posix()
        if rel == ".":
            rel, sid = src.name, src.name
        else:
            sid = strip_nifti(rel)
        items.append(CTItem(path=str(p.resolve()), rel=rel, study_id=sid, label=-1, severity=-1))
    items.sort(key=lambda it: it.rel)
    ids = [it.study_id for it in items]
    if len(set(ids)) != len(ids):
        # `a.nii` and `a.nii.gz` side by side: fall back to the full relative path for every item.
        items = [CTItem(it.path, it.rel, it.rel, it.label, it.severity) for it in items]
    return Discovery("folder", str(src.resolve()), items, [])


def discover_ct(src: str | os.PathLike) -> Discovery:
    """The studies of a MosMed tree, a manifest CSV or a folder (see module docstring)."""
    src = Path(src)
    if not src.exists():
        raise InputError(src, "no such file or folder")
    if src.is_file():
        if src.suffix.lower() == ".csv":
            disc = _discover_manifest(src)
        elif _is_nifti(src.name):
            disc = Discovery("folder", str(src.parent.resolve()),
                             [CTItem(str(src.resolve()), src.name, strip_nifti(src.name), -1, -1)], [])
        else:
            raise InputError(src, "expected a folder, a manifest .csv or a NIfTI file")
    else:
        studies = _mosmed_root(src)
        disc = _discover_mosmed(src, studies) if studies is not None else _discover_folder(src)
    if not disc.items:
        raise InputError(src, "no CT studies found (NIfTI files, DICOM series folders or a MosMed tree)")
    return disc
