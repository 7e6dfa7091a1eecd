"""Discovery of labelled chest X-rays: class folders, manifest CSVs and Cohen-style `metadata.csv`.

Every SRC gives an ordered list of `CXRItem` (deterministic: same files -> same order), with a binary
label, a *raw* patient key used only to group the split and to compute the salted hash (it never reaches
a store), and a source name (stored in `source`).

Kinds of SRC (mixed freely, in the order given):

- **Class folders**: a folder with one sub-folder per class (`covid/`, `normal/`, ...). A sub-folder whose
  name is one of `positive` gives label 1, any other gives 0; names are compared by `class_key` (case and the
  separators `-`, `_`, `.` and spaces ignored), so the default POSITIVE_CLASSES also take `COVID_19/`,
  `covid19/`, `SARS_CoV_2/`. Images are found
  recursively inside each sub-folder (symlinked folders followed once, links to folders above skipped;
  PNG/JPEG/DICOM by suffix, or DICOM by its `DICM` magic); other files are skipped and counted by
  reason (`.gif`, `.tif` ...: "unsupported image format"); files at the top level are not labelled and are
  skipped (counted). The patient id is the file stem, i.e. every
  file is its own patient: give a manifest when several images belong to one patient. Files whose stem
  appears under two labels (`covid/1.png`, `normal/1.png`) would be one patient with conflicting labels:
  they are reported as problems (failures naming both class folders) and not stored.
- **Manifest CSV** (`path,label[,patient_id][,source]`): paths relative to the CSV's folder (absolute
  paths kept); label exactly `0` or `1`, or a class name mapped like a sub-folder name (one of `positive` by
  `class_key` -> 1, else 0; `parse_label`). Anything else fails its row, with its line number: other numbers (`1.5`,
  `1e400`, `inf`), and words that state a label without naming a class (`positive`, `yes`, `true`:
  `NOT_CLASS_NAMES`, unless given as a positive class). Patient id defaults to the file stem. A path listed
  twice with the same label is kept once; with different labels every such row fails.
- **Cohen metadata.csv** (COVID-19 image data collection; the CSV itself or its folder): a folder holding
  a `metadata.csv` is always read as such a source (never as class folders), and refused with the reason
  (e.g. `;` separators, a missing column) when the CSV is not one. Columns
  `patientid, finding, view, modality, folder, filename` (others ignored; a trailing comma's unnamed
  column ignored; rows with extra trailing fields tolerated). Kept: modality X-ray and a view in `views`
  (case-insensitive). Label 1 where the finding contains COVID-19 (hierarchical findings such as
  `Pneumonia/Viral/COVID-19`), else 0; rows whose finding is empty or `todo` (unlabelled) are skipped.
  Image path: `<csv folder>/<folder>/<filename>` (`folder` defaults to `images`). A missing image file is
  still an item: it fails when processed (reported, not fatal), and succeeds on a rerun once restored.

Frontal views only, by one rule in every source: Cohen rows by their `view` column, and any DICOM file (class
folders and manifests too) by its ViewPosition, when set: a view not in `views` (LL, RL, LATERAL) is left
out and counted ("view not selected"). Manifest headers naming a column twice are refused, and a row whose
path holds a NUL byte fails alone. Images with identical content in different files (copies in two sources)
are one patient for the split (`one_patient_per_content`).

The source name is `source_names[i]` when given, else the SRC folder's name (for a CSV, the name of the
folder holding it), or a manifest's `source` column. Patient keys are namespaced by source: the same id
in two sources is two patients (give both the same source name when they share a patient register).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import hmac
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from xpgan.errors import InputError
from xpgan.pipeline.cxr.readers import RASTER_SUFFIXES, is_cxr_image
from xpgan.pipeline.sniff import is_dicom_file, not_regular_reason, walk_once

# The names of the positive (COVID-19) class that class folders and manifest labels are recognised by without
# --positive; each is compared by class_key, so every spelling with other case or separators matches too
# (covid_19, COVID 19, covid19, SARS_CoV_2, sarscov2, 2019_nCoV, covid_positive).
POSITIVE_CLASSES = ("covid", "covid-19", "sars-cov-2", "2019-ncov", "covid-positive")
DEFAULT_POSITIVE = POSITIVE_CLASSES
DEFAULT_VIEWS = ("PA", "AP", "AP Supine")
COHEN_COLUMNS = ("patientid", "finding", "view", "modality", "filename")
XRAY_MODALITIES = ("x-ray", "xray", "x ray", "cr", "dx")
UNSUPPORTED_IMAGE_SUFFIXES = (".gif", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".heic")
_COVID = re.compile(r"covid[-_ ]?19", re.IGNORECASE)
_UNLABELLED_FINDINGS = ("", "todo", "unknown")


# Label words that are not class names: a manifest must say 0/1 or name the class.
NOT_CLASS_NAMES = frozenset({"yes", "no", "y", "n", "true", "false", "t", "f", "positive", "negative", "pos", "neg",
                             "inf", "infinity", "nan", "none", "null", "na", "n/a"})


@dataclass(frozen=True)
class CXRItem:
    path: Path  # never stored
    label: int  # 1 positive, 0 negative
    patient_key: str  # "<source>/<raw patient id>": for grouping and hashing only, never stored
    source: str
    origin: str = field(default="", compare=False)  # where it was listed ("m.csv line 7"), for messages only


@dataclass
class CXRDiscovery:
    items: list[CXRItem] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): unusable rows
    excluded: Counter = field(default_factory=Counter)  # reason -> count (filtered on purpose)
    source_kinds: dict[str, list[str]] = field(default_factory=dict)  # source name -> kinds of its SRCs
    classes: dict[str, int] = field(default_factory=dict)  # class folder names / manifest class labels -> label

    def add_kind(self, source: str, kind: str) -> None:
        kinds = self.source_kinds.setdefault(source, [])
        if kind not in kinds:
            kinds.append(kind)


def _norm(text: str) -> str:
    return " ".join(str(text).split()).lower()


def class_key(name: str) -> str:
    """What a class name is compared by: lower case, without `-`, `_`, `.` and white space (COVID_19 and
    covid-19 are one class)."""
    return re.sub(r"[-_.\s]+", "", str(name)).lower()


def positive_keys(positive: Iterable[str]) -> set[str]:
    """The class_key of each positive class name."""
    return {class_key(p) for p in positive}


def positive_help() -> str:
    """The default positive classes as the help and the messages say them."""
    return f"{', '.join(POSITIVE_CLASSES)}; case, '-', '_', '.' and spaces ignored, so covid_19 and SARS_CoV_2 match"


def _make_key(source: str, patient_id: str) -> str:
    return f"{source}/{patient_id}"


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """Header (lower-cased, stripped), rows and each row's line number in the file; tolerant of a BOM, a
    trailing comma and extra fields."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise InputError(path, "empty CSV file") from None
            cols = [_norm(c) for c in header]
            rows, lines = [], []
            line = reader.line_num + 1
            for values in reader:
                first, line = line, reader.line_num + 1  # the row's first line (quoted fields may span lines)
                if not any(v.strip() for v in values):
                    continue
                # a trailing comma makes an unnamed column: keep only named columns, pad short rows
                row = {c: (values[i].strip() if i < len(values) else "") for i, c in enumerate(cols) if c}
                rows.append(row)
                lines.append(first)
    except OSError as exc:
        raise InputError(path, f"cannot read CSV ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise InputError(path, f"malformed CSV ({exc})") from None
    return cols, rows, lines


def is_cohen_header(cols: Iterable[str]) -> bool:
    return set(COHEN_COLUMNS) <= set(cols)


def _not_cohen_reason(cols: Sequence[str]) -> str:
    """Why a header is not a Cohen-style metadata.csv header (separator, missing columns)."""
    named = [c for c in cols if c]
    if len(named) == 1:  # one column: another separator (headers are whitespace-normalised: a tab is a space)
        for sep, what in ((";", "';'"), ("|", "'|'"), (" ", "tabs or spaces")):
            if sep in named[0]:
                return f"fields are separated by {what}, not ',' (save it as a comma-separated CSV)"
    missing = sorted(set(COHEN_COLUMNS) - set(cols))
    return f"missing column(s) {', '.join(missing)} (found: {', '.join(named) or 'none'})"


def _resolve(base: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else base / p


MANIFEST_COLUMNS = ("path", "label", "patient_id", "source")


def _refuse_repeated(csv_path: Path, cols: Sequence[str], used: Sequence[str]) -> None:
    """A header naming a column that is read twice (`path,label,label`): which one counts? Refused."""
    repeated = sorted({c for c in cols if c in used and cols.count(c) > 1})
    if repeated:
        raise InputError(csv_path, f"column(s) {', '.join(repeated)} appear more than once in the header (which "
                                   "one counts?); keep one of each")


def _nul(text: str) -> bool:
    return "\0" in text


def discover_cohen(csv_path: Path, source: str, *, views: Sequence[str], into: CXRDiscovery) -> None:
    cols, rows, lines = _read_csv(csv_path)
    if not is_cohen_header(cols):
        raise InputError(csv_path, f"not a Cohen-style metadata.csv: {_not_cohen_reason(cols)}")
    _refuse_repeated(csv_path, cols, COHEN_COLUMNS + ("folder",))
    wanted_views = {_norm(v) for v in views}
    base = csv_path.parent
    for n, row in zip(lines, rows):
        if _norm(row.get("modality", "")) not in XRAY_MODALITIES:
            into.excluded["modality not X-ray"] += 1
            continue
        if _norm(row.get("view", "")) not in wanted_views:
            into.excluded["view not selected"] += 1
            continue
        finding = row.get("finding", "")
        if _norm(finding) in _UNLABELLED_FINDINGS:
            into.excluded["finding unlabelled"] += 1
            continue
        filename = row.get("filename", "")
        if not filename:
            into.problems.append((str(csv_path), "row without filename"))
            continue
        if _nul(filename) or _nul(row.get("folder", "")):
            into.problems.append((f"{csv_path}:{n}", f"{csv_path.name} line {n}: the file name holds a NUL byte, "
                                                     "which no file name can"))
            continue
        path = base / (row.get("folder") or "images") / filename
        pid = row.get("patientid", "") or Path(filename).stem
        label = 1 if _COVID.search(finding) else 0
        into.items.append(CXRItem(path=path, label=label, patient_key=_make_key(source, pid), source=source,
                                  origin=f"{csv_path.name} line {n}"))


def parse_label(text: str, positive: set[str]) -> int | None:
    """A manifest label: 1 for a positive class name (`positive`: their class_key) or "1", 0 for "0" or
    another class name, None for anything else (other numbers, NOT_CLASS_NAMES, text that does not start with
    a letter)."""
    t = _norm(text)
    if class_key(t) in positive:
        return 1
    if t in ("0", "1"):
        return int(t)
    if not t or not t[0].isalpha() or t in NOT_CLASS_NAMES:
        return None
    return 0


def discover_manifest(csv_path: Path, source: str, *, positive: Sequence[str], into: CXRDiscovery) -> None:
    cols, rows, lines = _read_csv(csv_path)
    if "path" not in cols or "label" not in cols:
        raise InputError(csv_path, "manifest CSV needs the columns path,label[,patient_id][,source]")
    _refuse_repeated(csv_path, cols, MANIFEST_COLUMNS)
    pos = positive_keys(positive)
    base = csv_path.parent
    for n, row in zip(lines, rows):
        where = f"{csv_path.name} line {n}"
        if not row.get("path"):
            into.problems.append((f"{csv_path}:{n}", "manifest row without path"))
            continue
        if _nul(row["path"]):
            into.problems.append((f"{csv_path}:{n}", f"{where}: the path holds a NUL byte, which no file name can"))
            continue
        path = _resolve(base, row["path"])
        label = parse_label(row.get("label", ""), pos)
        if label is None:
            into.problems.append((str(path), f"{where}: label {row.get('label', '')[:40]!r} is not 0, 1 or a class "
                                             f"name (positive classes: {', '.join(sorted(positive))})"))
            continue
        if _norm(row.get("label", "")) not in ("0", "1"):
            into.classes.setdefault(_norm(row.get("label", "")), label)
        src = row.get("source") or source
        pid = row.get("patient_id") or path.stem
        into.items.append(CXRItem(path=path, label=label, patient_key=_make_key(src, pid), source=src, origin=where))


def _skip_reason(path: Path) -> str:
    """Why a visible file in a class folder is not taken as an image (counted in `excluded`)."""
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_IMAGE_SUFFIXES:
        return f"unsupported image format {suffix} (convert to PNG)"
    return f"not a PNG/JPEG/DICOM file ({suffix or 'no suffix'})"


def _image_files(folder: Path, into: CXRDiscovery) -> list[Path]:
    """Images below `folder` (recursive, symlinked folders followed once, hidden names skipped), sorted by
    their path relative to `folder`; other visible files are counted in `into.excluded` by reason."""
    out = []
    for root, _, files, _ in walk_once(folder, skip=lambda name: "hidden" if name.startswith(".") else None):
        for f in files:
            path = Path(root) / f
            if f.startswith("."):
                continue
            if is_cxr_image(path):
                out.append(path)
            elif path.is_file():
                into.excluded[_skip_reason(path)] += 1
    # a FIFO or a device named like an image is kept: it fails alone, with the reason, when it is read
    return sorted((p for p in out if p.is_file() or not_regular_reason(p)),
                  key=lambda p: p.relative_to(folder).as_posix())


def discover_class_folders(root: Path, source: str, *, positive: Sequence[str], into: CXRDiscovery) -> None:
    pos = positive_keys(positive)
    found: list[CXRItem] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if is_cxr_image(entry):
                into.excluded["image outside a class folder"] += 1
            continue
        if not entry.is_dir():
            continue
        label = 1 if class_key(entry.name) in pos else 0
        into.classes.setdefault(entry.name, label)
        for path in _image_files(entry, into):
            found.append(CXRItem(path=path, label=label, patient_key=_make_key(source, path.stem), source=source,
                                 origin=f"class folder {entry.name}"))
    if not found:
        raise InputError(root, "no images in class sub-folders (expected e.g. covid/ and normal/ holding "
                               "PNG/JPEG/DICOM files)")
    # The file stem is the patient id: one stem under two labels would be one patient with conflicting labels.
    labels_of: dict[str, set[int]] = {}
    for item in found:
        labels_of.setdefault(item.patient_key, set()).add(item.label)
    for item in found:
        if len(labels_of[item.patient_key]) == 1:
            into.items.append(item)
            continue
        others = sorted({p.relative_to(root).parts[0] for p in (it.path for it in found)
                         if p.stem == item.path.stem and p != item.path})
        into.problems.append((str(item.path), f"the same file name is in class folder(s) {', '.join(others)} with "
                                              "another label (class folders take the file name as the patient id); "
                                              "rename the files or give a manifest CSV with patient_id"))


def discover(sources: Sequence[str | os.PathLike], *, positive: Sequence[str] = DEFAULT_POSITIVE,
             views: Sequence[str] = DEFAULT_VIEWS, source_names: Sequence[str] | None = None) -> CXRDiscovery:
    """All items of all SRCs, in order. Raises InputError for an unusable SRC (not for a bad row/file)."""
    if not sources:
        raise InputError("SRC", "no source given")
    if any(not str(p).strip() for p in positive):
        raise InputError("--positive", "class names must not be empty")
    if source_names is not None and len(source_names) not in (0, len(sources)):
        raise InputError("--source-name", f"give one per SRC ({len(sources)}), got {len(source_names)}")
    found = CXRDiscovery()
    for i, src in enumerate(sources):
        src = Path(src)
        if not src.exists():
            raise InputError(src, "does not exist")
        default_name = (src.parent.resolve().name if src.is_file() else src.resolve().name) or "source"
        name = source_names[i] if source_names else default_name
        if not str(name).strip():
            raise InputError("--source-name", "source names must not be empty")
        if src.is_dir():
            meta = src / "metadata.csv"
            if meta.exists():  # a folder with a metadata.csv is a Cohen-style source, never class folders
                discover_cohen(meta, name, views=views, into=found)
                found.add_kind(name, "cohen_metadata")
            else:
                discover_class_folders(src, name, positive=positive, into=found)
                found.add_kind(name, "class_folders")
        elif src.suffix.lower() == ".csv":
            cols, _, _ = _read_csv(src)
            if is_cohen_header(cols):
                discover_cohen(src, name, views=views, into=found)
                found.add_kind(name, "cohen_metadata")
            elif "path" in cols and "label" in cols:
                discover_manifest(src, name, positive=positive, into=found)
                found.add_kind(name, "manifest")
            else:
                raise InputError(src, "CSV is neither a manifest (path,label[,patient_id]) nor a Cohen-style "
                                      f"metadata.csv (patientid,finding,view,modality,folder,filename): "
                                      f"{_not_cohen_reason(cols)}")
        else:
            raise InputError(src, "expected a folder of class sub-folders, a manifest CSV or a metadata.csv "
                                  "(a single image has no label)")
    found.items = _frontal_only(_drop_duplicates(found), views, found)
    return found


def dicom_view(path: Path) -> str:
    """A DICOM file's ViewPosition (header only; "" when absent or unreadable: the reader then decides)."""
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"], force=True)
        return str(ds.get("ViewPosition", "") or "")
    except Exception:  # a damaged file fails when read, with its reason
        return ""


def _frontal_only(items: list[CXRItem], views: Sequence[str], found: CXRDiscovery) -> list[CXRItem]:
    """One rule for the view in every source: a DICOM file whose ViewPosition is set and is not one of `views`
    (LL, RL, LATERAL...) is left out as a Cohen row of such a view is (counted, "view not selected")."""
    wanted = {_norm(v) for v in views}
    kept = []
    for it in items:
        if it.path.suffix.lower() not in RASTER_SUFFIXES and is_dicom_file(it.path) \
                and not_regular_reason(it.path) is None:
            view = _norm(dicom_view(it.path))
            if view and view not in wanted:
                found.excluded["view not selected"] += 1
                continue
        kept.append(it)
    return kept


def _drop_duplicates(found: CXRDiscovery) -> list[CXRItem]:
    """The same file reached twice (overlapping SRCs, a repeated manifest row, a symlink alias) is kept once,
    at its first place; listed with different labels, every listing is a problem and none is kept."""
    listings: dict[str, list[CXRItem]] = {}
    for item in found.items:
        # the resolved path: a symlink alias or another spelling of a path is the same file
        listings.setdefault(os.path.normcase(os.path.realpath(item.path)), []).append(item)
    unique = []
    for key, its in listings.items():
        if len({it.label for it in its}) > 1:
            where = ", ".join(f"{it.origin or it.source}: {it.label}" for it in its)
            for it in its:
                own = f"{it.origin}: " if it.origin else ""
                found.problems.append((str(it.path), f"{own}listed {len(its)} times with conflicting labels ({where})"))
            continue
        if len(its) > 1:
            found.excluded["duplicate path"] += len(its) - 1
        unique.append(its[0])
    return unique


def items_fingerprint(items: Sequence[CXRItem], salt: bytes) -> str:
    """Keyed digest of the discovered list (paths, labels, patients, sources, order): lets a resumed run
    check it is filling the same slots, without storing any file name."""
    mac = hmac.new(salt, b"xpgan-cxr-items-v1", hashlib.sha256)
    for item in items:
        for part in (os.path.abspath(item.path), str(item.label), item.patient_key, item.source):
            mac.update(part.encode("utf-8", "surrogateescape"))
            mac.update(b"\x1f")
        mac.update(b"\x1e")
    return mac.hexdigest()[:32]


UNREAD = ("missing", "unreadable", "not-regular")  # fingerprints that say nothing about content


def one_patient_per_content(found: CXRDiscovery, items: list[CXRItem], fingerprints: list[str]
                            ) -> tuple[list[CXRItem], list[str], str]:
    """Images with identical content (the same source fingerprint: size and the first and last MiB, i.e. the
    whole file for most radiographs) in different files are one patient: every patient holding a copy is
    merged into the first one's key, so the grouped split keeps the copies on one side (no train/test
    leak) and the patient hash is shared; copies whose labels differ are counted in the line. Returns
    (items, fingerprints, a summary line or "")."""
    by_fp: dict[str, list[int]] = {}
    for i, fp in enumerate(fingerprints):
        if fp not in UNREAD:
            by_fp.setdefault(fp, []).append(i)
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    copies, conflicting = 0, 0
    for members in by_fp.values():
        if len(members) < 2:
            continue
        copies += len(members) - 1
        conflicting += len(members) if len({items[i].label for i in members}) > 1 else 0
        first = root(items[members[0]].patient_key)
        for i in members[1:]:
            other = root(items[i].patient_key)
            if other != first:
                parent[other] = first
    out = [dataclasses.replace(it, patient_key=root(it.patient_key)) if root(it.patient_key) != it.patient_key
           else it for it in items]
    note = (f"{copies} image(s) have the same content as another file (copies in several sources or folders): "
            "each set is one patient, kept on one side of the split"
            + (f"; {conflicting} of these copies carry different labels (check the sources)" if conflicting else "")
            if copies else "")
    return out, list(fingerprints), note
