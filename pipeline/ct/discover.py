"""Find the CT studies of an archive, in a deterministic order, with labels and stable study ids.

Public API
----------
CTItem(path, rel, study_id, label, severity, patient_id)
    One study: `path` absolute path (NIfTI file or DICOM series folder), `rel` its path relative to the
    archive root (posix), `label` 1 positive / 0 negative / -1 unknown, `severity` MosMed grade 0..4 or -1,
    `patient_id` raw id from a manifest (hash it before storing; None when not given).
CTDiscovery(format, root, items, notes)
discover_ct(src) -> CTDiscovery
    src may be:
    - a MosMedData COVID19_1110 tree: a folder holding `studies/CT-0 .. CT-4/*.nii[.gz]` (or the `studies`
      folder itself, or a folder holding `CT-k` folders directly). Label 0 for CT-0, 1 for CT-1..CT-4,
      severity = the digit; study id = file name without extension (`study_0255`). A registry
      (`dataset_registry.xlsx` or a `*registry*.csv` with columns study_file, category) is read when present
      and disagreements are reported in `notes`; the folder names are authoritative.
    - a manifest CSV with columns `path,label` and optional `patient_id`, `study_id`, `severity`; paths are
      relative to the CSV's folder; order = row order; study id defaults to the path without extension. A
      header naming one of these columns twice is refused, and so is a row whose label contradicts its
      severity (SEVERITY_RULE: label 0 with CT-1..CT-4, label 1 with CT-0) or whose path holds a NUL byte.
    - any other folder: NIfTI files and DICOM series folders below it (recursive, names sorted, hidden
      names and `*.zarr` folders skipped, symlinked folders followed once: a link back to a folder above
      it or to a folder already walked is skipped and listed), plus every folder that may have been
      meant as a series and fails later with its reason, so no input vanishes: empty leaf folders, folders
      that cannot be listed, and folders whose files are named like DICOM (`.dcm`, or unreadable files
      with DICOM-like names, `xpgan.pipeline.sniff`) without being readable DICOM. Label -1, study id =
      relative path without extension (`ct/patient_a`, or the folder name when `src` is itself one series).
    In every format one file or series is one study: a second path to it (a symlink alias) is skipped ("same
    study as REL") when it says the same, refused when its label, severity or patient differ.
    `CTDiscovery.skipped` lists what was left out on purpose, (relative path, reason); `summary()` is the
    one-line count printed by `prep drr` (found / skipped with reasons).
    Study ids are paths chosen by whoever built the archive, never DICOM header values (no PHI is read from
    the files); if folder names in an archive hold patient names, the ids will too, so rename such
    folders or use a manifest with `study_id`.
"""
from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from xpgan.errors import InputError, XPGANError, safe_text
from xpgan.pipeline.sniff import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    dicom_like_name,
    has_dicom_magic,
    is_nifti_name,
    walk_once,
)

_MOSMED_DIR = re.compile(r"^CT-([0-4])$")
MANIFEST_COLUMNS = ("path", "label", "patient_id", "study_id", "severity")
SEVERITY_RULE = ("a MosMed grade CT-1..CT-4 grades COVID-19 lesions, so its label is 1; CT-0 has none, label 0; "
                 "severity -1 or empty goes with any label")


@dataclass(frozen=True)
class CTItem:
    path: str  # absolute path of the NIfTI file or DICOM series folder
    rel: str  # path relative to the archive root (posix), used in reports
    study_id: str
    label: int  # 1 positive, 0 negative, -1 unknown
    severity: int = -1  # MosMed CT-0..CT-4 grade, -1 unknown
    patient_id: str | None = field(default=None, repr=False)  # raw; hash before storing


@dataclass
class CTDiscovery:
    format: str  # "mosmed" | "manifest" | "folder"
    root: str
    items: list[CTItem]
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason): left out on purpose

    def summary(self, examples: int = 2) -> str:
        """One line: candidates found (NIfTI files, folders) and what was skipped, by reason, with examples."""
        n_dirs = sum(os.path.isdir(it.path) for it in self.items)
        line = (f"discovery: found {len(self.items)} ({len(self.items) - n_dirs} NIfTI file(s), {n_dirs} "
                f"folder(s))")
        if not self.skipped:
            return line + ", skipped none"
        by_reason: dict[str, list[str]] = {}
        for rel, reason in self.skipped:
            by_reason.setdefault(reason, []).append(rel)
        parts = []
        for reason, rels in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            more = ", ..." if len(rels) > examples else ""
            parts.append(f"{len(rels)} {safe_text(reason)} ({', '.join(map(safe_text, rels[:examples]))}{more})")
        return f"{line}, skipped {len(self.skipped)}: " + "; ".join(parts)

    def skipped_counts(self) -> dict[str, int]:
        """Counts by reason, without paths ("same folder as REL" counts as "same folder"), for the store."""
        return dict(sorted(Counter(reason.partition(" as ")[0] for _, reason in self.skipped).items()))


def strip_nifti(name: str) -> str:
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _is_nifti(name: str) -> bool:
    return is_nifti_name(name) and not name.startswith(".")


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


def _discover_mosmed(src: Path, studies: Path) -> CTDiscovery:
    found: list[tuple[str, int, Path]] = []
    skipped: list[tuple[str, str]] = []
    root = studies.parent if studies.name == "studies" else studies
    for d in sorted(studies.iterdir(), key=lambda p: p.name):
        m = _MOSMED_DIR.match(d.name)
        if not (m and d.is_dir()):
            continue
        grade = int(m.group(1))
        try:
            entries = sorted(d.iterdir(), key=lambda p: p.name)
        except OSError as e:
            raise InputError(d, f"cannot list the folder ({e.strerror or e})") from None
        for f in entries:
            if _is_nifti(f.name) and (f.is_file() or not f.exists()):  # a broken link fails when read
                found.append((strip_nifti(f.name), grade, f))
            else:
                skipped.append((f.relative_to(root).as_posix(), "hidden" if f.name.startswith(".")
                                else "not a NIfTI file"))
    skipped += _beside_studies(root, studies)
    stems = [s for s, _, _ in found]
    dup = {s for s in stems if stems.count(s) > 1}
    items = []
    for stem, grade, f in found:
        rel = f.relative_to(root).as_posix()
        sid = f"{f.parent.name}/{stem}" if stem in dup else stem
        items.append(CTItem(path=str(f.resolve()) if f.exists() else os.path.abspath(f), rel=rel, study_id=sid,
                            label=0 if grade == 0 else 1, severity=grade))
    items.sort(key=lambda it: (it.study_id, it.rel))
    registry, notes = _read_registry(root)
    mismatches = [it.study_id for it in items if it.study_id in registry and registry[it.study_id] != it.severity]
    if mismatches:
        notes.append(f"registry disagrees with the CT-k folders for {len(mismatches)} studies "
                     f"(e.g. {mismatches[0]}); the folders were used")
    return CTDiscovery("mosmed", str(root), items, notes, skipped)


def _beside_studies(root: Path, studies: Path) -> list[tuple[str, str]]:
    """What lies beside `studies/` in a MosMed tree and is not read (a `dicom/` folder, other files), with the
    reason; the registry files, hidden names and `*.zarr` stores are not listed."""
    if root == studies:
        return []
    out = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        name = entry.name
        if entry == studies or name.startswith(".") or name.lower().endswith(".zarr") or "registry" in name.lower():
            continue
        rel = name + "/" if entry.is_dir() else name
        out.append((rel, "beside studies/ (a MosMed tree is read from studies/CT-0..CT-4 only)"))
    return out


def _parse_int(value: str, what: str, allowed: set[int], where: str) -> int:
    """Exactly one of `allowed` written as an integer: "2.7", "1.0", "1e400", "inf" are refused, never rounded."""
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,3}", text):
        raise XPGANError(f"{where}: {what} {text[:40]!r} is not one of {sorted(allowed)}")
    v = int(text)
    if v not in allowed:
        raise XPGANError(f"{where}: {what} {v} is not one of {sorted(allowed)}")
    return v


def _discover_manifest(csv_path: Path) -> CTDiscovery:
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
    repeated = sorted({f for f in fields if f in MANIFEST_COLUMNS and fields.count(f) > 1})
    if repeated:
        raise InputError(csv_path, f"column(s) {', '.join(repeated)} appear more than once in the header (which "
                                   "one counts?); keep one of each")
    items = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(rows, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{csv_path}: line {n}"
        if not row.get("path"):
            raise XPGANError(f"{where}: empty path")
        if "\0" in row["path"]:
            raise XPGANError(f"{where}: the path holds a NUL byte, which no file name can")
        p = Path(row["path"])
        full = p if p.is_absolute() else base / p
        label = _parse_int(row["label"], "label", {-1, 0, 1}, where)
        sev = _parse_int(row["severity"], "severity", {-1, 0, 1, 2, 3, 4}, where) if row.get("severity") else -1
        if (label == 0 and sev >= 1) or (label == 1 and sev == 0):
            raise XPGANError(f"{where}: label {label} with severity {sev} contradicts itself ({SEVERITY_RULE})")
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
    return CTDiscovery("manifest", str(base), items, ["patient ids from manifest"] if has_pid else [])


def _series_candidate(folder: Path, files: list[str]) -> bool:
    """Whether a folder's files make it a (maybe broken) DICOM series: a file with the DICOM magic, a file
    with a DICOM suffix, or an unreadable file with a DICOM-like name (the reader then says what is wrong)."""
    for name in files:
        if name.startswith(".") or name.upper() == "DICOMDIR":
            continue
        try:
            if has_dicom_magic(folder / name):
                return True
        except OSError:
            if dicom_like_name(name):
                return True
            continue
        if Path(name).suffix.lower() in DICOM_SUFFIXES:
            return True
    return False


def _discover_folder(src: Path) -> CTDiscovery:
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []

    def unlistable(err: OSError) -> None:
        if err.filename and Path(err.filename) != src:
            found.append(Path(err.filename))  # fails when read, with the real reason (permission...)

    def skip(name: str) -> str | None:
        return "hidden" if name.startswith(".") else "Zarr store" if name.lower().endswith(".zarr") else None

    for root, dirs, files, pruned in walk_once(src, skip=skip, onerror=unlistable):
        rp = Path(root)
        skipped += [((rp / d).relative_to(src).as_posix(), reason) for d, reason in pruned]
        visible = sorted(f for f in files if not f.startswith("."))
        skipped += [((rp / f).relative_to(src).as_posix(), "hidden") for f in sorted(files) if f.startswith(".")]
        niftis = [f for f in visible if _is_nifti(f)]
        found += [rp / f for f in niftis]
        others = [f for f in visible if not _is_nifti(f)]
        if _series_candidate(rp, others):
            found.append(rp)
        else:
            skipped += [((rp / f).relative_to(src).as_posix(), "not NIfTI or DICOM") for f in others]
            if rp != src and not dirs and not visible:
                found.append(rp)  # an empty leaf folder: probably a missing series; fails with a clear reason
    items = []
    for p in found:
        rel = p.relative_to(src).as_posix()
        if rel == ".":
            rel, sid = src.name, src.name
        else:
            sid = strip_nifti(rel)
        path = str(p.resolve()) if p.exists() else os.path.abspath(p)  # a broken link: fails when read
        items.append(CTItem(path=path, rel=rel, study_id=sid, label=-1, severity=-1))
    items.sort(key=lambda it: it.rel)
    ids = [it.study_id for it in items]
    if len(set(ids)) != len(ids):
        # `a.nii` and `a.nii.gz` side by side: fall back to the full relative path for every item.
        items = [CTItem(it.path, it.rel, it.rel, it.label, it.severity) for it in items]
    return CTDiscovery("folder", str(src.resolve()), items, [], sorted(skipped))


def discover_ct(src: str | os.PathLike) -> CTDiscovery:
    """The studies of a MosMed tree, a manifest CSV or a folder (see module docstring)."""
    src = Path(src)
    if not src.exists():
        raise InputError(src, "no such file or folder")
    if src.is_file():
        if src.suffix.lower() == ".csv":
            disc = _discover_manifest(src)
        elif _is_nifti(src.name):
            disc = CTDiscovery("folder", str(src.parent.resolve()),
                             [CTItem(str(src.resolve()), src.name, strip_nifti(src.name), -1, -1)], [])
        else:
            raise InputError(src, "expected a folder, a manifest .csv or a NIfTI file")
    else:
        studies = _mosmed_root(src)
        disc = _discover_mosmed(src, studies) if studies is not None else _discover_folder(src)
    radiographs = _radiographs(src, disc)
    if radiographs:
        raise InputError(src, f"{radiographs}, not a CT archive; xpgan prep cxr reads chest X-rays: "
                              f"xpgan prep cxr {safe_text(str(src))} OUT.zarr")
    if not disc.items:
        raise InputError(src, "no CT studies found (NIfTI files, DICOM series folders or a MosMed tree)")
    disc.items = _one_record_per_study(disc, src)
    return disc


def _one_record_per_study(disc: CTDiscovery, src: Path) -> list[CTItem]:
    """One item per file or series: a second way to the same one (a symlink alias, another spelling of its
    path) is skipped when it says the same (label, severity, patient), and refused when it says otherwise."""
    first: dict[str, CTItem] = {}
    items = []
    for it in disc.items:
        key = os.path.realpath(it.path)
        seen = first.setdefault(key, it)
        if seen is it:
            items.append(it)
        elif (seen.label, seen.severity, seen.patient_id) == (it.label, it.severity, it.patient_id):
            disc.skipped.append((it.rel, f"same study as {seen.rel}"))
        else:
            raise InputError(src, f"{safe_text(seen.rel)} (label {seen.label}, severity {seen.severity}) and "
                                  f"{safe_text(it.rel)} (label {it.label}, severity {it.severity}) are the same "
                                  "study (one path leads to the other's file): one study cannot have two "
                                  "records; list it once")
    return items


RADIOGRAPH_SUFFIXES = (".png", ".jpg", ".jpeg")
PROBED_SERIES = 8  # DICOM series whose first header is read to tell radiographs from CT


def _radiographs(src: Path, disc: CTDiscovery) -> str:
    """What says a folder is a chest X-ray collection (prep cxr's input) rather than CT: "it holds a
    metadata.csv and PNG/JPEG images", "its DICOM files are radiographs (modality DX)"; "" otherwise. Read
    before a store is made: a metadata.csv or PNG/JPEG files and no CT candidate, or DICOM series whose
    first files (of up to PROBED_SERIES) are all projection radiographs."""
    from xpgan.pipeline.cxr.readers import PROJECTION_MODALITIES

    if src.is_file():
        return ""
    if not disc.items:
        pictures = sum(1 for rel, _ in disc.skipped if rel.lower().endswith(RADIOGRAPH_SUFFIXES))
        if (src / "metadata.csv").is_file():
            return "it holds a metadata.csv" + (f" and {pictures} PNG/JPEG images" if pictures else "")
        return f"it holds {pictures} PNG/JPEG images and no CT" if pictures else ""
    folders = [Path(it.path) for it in disc.items if Path(it.path).is_dir()][:PROBED_SERIES]
    if not folders or len(folders) < min(len(disc.items), PROBED_SERIES):
        return ""
    modalities = {_first_modality(folder) for folder in folders}
    if modalities and modalities <= set(PROJECTION_MODALITIES):
        return f"its DICOM files are radiographs (modality {', '.join(sorted(modalities))})"
    return ""


def _first_modality(folder: Path) -> str:
    """The Modality of the first DICOM file of a folder ("" when none can be read)."""
    import pydicom

    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ""
    for name in names:
        path = folder / name
        try:
            if path.is_file() and has_dicom_magic(path):
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["Modality"])
                return str(ds.get("Modality", "") or "").upper()
        except Exception:  # noqa: BLE001 - an unreadable file fails later, when its series is read
            return ""
    return ""
