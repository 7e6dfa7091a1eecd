"""The synthetic archives built from the phantoms: a MosMedData-like CT tree and a Cohen-style CXR collection.

write_mosmed_archive(out_dir, n_studies, *, seed=0, shape=(40, 512, 512), slice_jitter=4,
                     axcodes=("L", "P", "S"), as_dicom=False, categories=None, noise_hu=12.0, workers=1)
    -> list[StudyRecord(study_id, category, path, dicom_dir, seed, shape, spacing)]
write_cxr_archive(out_dir, n_images, *, seed=0, positive_fraction=0.18, size=320, phantom_shape=(72, 128, 128),
                  z_margin_mm=35.0, dicom_fraction=0.15, n_lateral=None, n_ct_rows=None, n_missing=0, workers=1)
    -> list[CXRRecord(patientid, filename, view, modality, finding, label, fmt, seed)]
Everything is deterministic in its arguments (the worker count included); made-up patient names, IDs and
birth dates go into the files (never into a store).
"""
from __future__ import annotations

import csv
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from xpgan.pipeline.ct.validate import MIN_CT_AXIS_VOXELS
from xpgan.pipeline.synth.anatomy import chest_phantom, draw_anatomy
from xpgan.pipeline.synth.radiograph import add_marker, collimate, line_integrals, simulate_radiograph

# The spacing range to give `prep_drr` for archives written here: a small `shape` samples the same physical
# chest (about 300 mm) with few voxels on purpose, so slices can be tens of mm thick, beyond the default
# plausibility range of real CT (pipeline/ct/validate.SPACING_RANGE_MM).
ARCHIVE_SPACING_RANGE_MM = (0.1, 1000.0)

__all__ = ["ARCHIVE_SPACING_RANGE_MM", "StudyRecord", "CXRRecord", "write_mosmed_archive", "write_cxr_archive",
           "COHEN_HEADER", "MOSMED_WEIGHTS"]

_FAKE_NAMES = [("Jane", "Doe"), ("John", "Smith"), ("Maria", "Garcia"), ("Wei", "Zhang"), ("Olga", "Ivanova"),
               ("Ahmed", "Hassan"), ("Emma", "Muller"), ("Luca", "Rossi"), ("Yuki", "Tanaka"), ("Ana", "Silva")]
_LOCATIONS = ["Wuhan, China", "Milan, Italy", "Madrid, Spain", "Toronto, Canada", "Seoul, South Korea",
              "Sydney, Australia", "Tehran, Iran", "New York, USA"]
COHEN_HEADER = ["patientid", "offset", "sex", "age", "finding", "RT_PCR_positive", "survival", "intubated",
                "intubation_present", "went_icu", "in_icu", "needed_supplemental_O2", "extubated",
                "temperature", "pO2_saturation", "leukocyte_count", "neutrophil_count", "lymphocyte_count",
                "view", "modality", "date", "location", "folder", "filename", "doi", "url", "license",
                "clinical_notes", "other_notes"]


MOSMED_WEIGHTS = (0.30, 0.34, 0.16, 0.12, 0.08)  # CT-0..CT-4 (MosMed itself: 254, 684, 125, 45, 2 of 1110)


@dataclass(frozen=True)
class StudyRecord:
    study_id: str       # "study_0001"
    category: int       # MosMed grade 0..4 (0 negative)
    path: Path          # the .nii.gz file
    dicom_dir: Path | None  # the DICOM series folder when written
    seed: int           # chest_phantom seed of this patient
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def _categories(n: int, rng: np.random.Generator) -> list[int]:
    """Grades for n studies: every grade present when n >= 5, the rest drawn with MOSMED_WEIGHTS."""
    cats = list(range(5)) if n >= 5 else []
    cats += list(rng.choice(5, size=n - len(cats), p=np.asarray(MOSMED_WEIGHTS) / sum(MOSMED_WEIGHTS)))
    return sorted(int(c) for c in cats)


def _phantom_spacing(seed: int, shape) -> tuple[float, float, float]:
    """The spacing chest_phantom(seed, shape=shape) will have (it depends on the anatomy draw only)."""
    an = draw_anatomy(np.random.default_rng([int(seed), 0]))
    d, h, w = shape
    return (round(an.coverage / d, 3), round(an.fov / h, 4), round(an.fov / w, 4))


def _write_study(job: dict) -> None:
    from xpgan.pipeline.synth.writers import write_dicom_series, write_nifti

    ph = chest_phantom(job["seed"], shape=job["shape"], severity=job["severity"], noise_hu=job["noise_hu"])
    hu16 = np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16)
    write_nifti(job["path"], hu16, ph.spacing, axcodes=job["axcodes"], extra_affine_shift=job["origin"])
    if job["dicom_dir"]:
        write_dicom_series(job["dicom_dir"], hu16, ph.spacing, orientation="axial",
                           patient_name=job["patient_name"], patient_id=job["patient_id"],
                           birth_date=job["birth_date"], seed=job["seed"])


def write_mosmed_archive(
    out_dir: str | os.PathLike,
    n_studies: int,
    *,
    seed: int = 0,
    shape: Sequence[int] = (40, 512, 512),  # (d, h, w) voxels of a typical study
    slice_jitter: int = 4,                  # slice count varies by up to +-this many (>= MIN_CT_AXIS_VOXELS)
    axcodes: Sequence[str] = ("L", "P", "S"),  # on-disk orientation (MosMed files are not canonical)
    as_dicom: bool = False,                 # also write each study as a DICOM series under `dicom/`
    categories: Sequence[int] | None = None,  # grades per study; None: drawn (every grade when n >= 5)
    noise_hu: float = 12.0,                 # CT image noise, HU
    workers: int = 1,                       # processes writing studies (the result does not depend on it)
) -> list[StudyRecord]:
    """A MosMedData-like tree: `studies/CT-k/study_NNNN.nii.gz` (int16 HU) and `dataset_registry.csv`.

    Studies are numbered in grade order like the real archive; `dataset_registry.csv` has columns
    `study_id, category, study_file` (study_file relative to out_dir, category `CT-k`). With `as_dicom`,
    `dicom/study_NNNN/IMxxxx.dcm` hold the same volumes as DICOM series with made-up patient names, IDs and
    birth dates (which no store may ever contain). Deterministic in (seed, n_studies, shape, ...).
    """
    out = Path(out_dir)
    n_studies = int(n_studies)
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1, got {n_studies}")
    rng = np.random.default_rng([int(seed), 101])
    cats = _categories(n_studies, rng) if categories is None else [int(c) for c in categories]
    if len(cats) != n_studies or any(c not in range(5) for c in cats):
        raise ValueError("categories must hold one grade 0..4 per study")
    d0, h, w = (int(s) for s in shape)
    records: list[StudyRecord] = []
    rows = []
    jobs = []
    for i, cat in enumerate(cats):
        sid = f"study_{i + 1:04d}"
        p_seed = int(seed) * 100_003 + i
        d = max(MIN_CT_AXIS_VOXELS, d0 + int(rng.integers(-slice_jitter, slice_jitter + 1))) if slice_jitter else d0
        origin = (float(rng.uniform(-200, -150)), float(rng.uniform(-180, -120)), float(rng.uniform(-400, -300)))
        path = out / "studies" / f"CT-{cat}" / f"{sid}.nii.gz"
        ddir = out / "dicom" / sid if as_dicom else None
        first, last = _FAKE_NAMES[i % len(_FAKE_NAMES)]
        jobs.append(dict(seed=p_seed, shape=(d, h, w), severity=cat, noise_hu=noise_hu, path=str(path),
                         axcodes=tuple(axcodes), origin=origin, dicom_dir=str(ddir) if ddir else None,
                         patient_name=f"{last}^{first}", patient_id=f"MRN{7_000_000 + 37 * i + int(seed)}",
                         birth_date=f"19{40 + (i * 7) % 50:02d}{1 + i % 12:02d}{1 + (i * 5) % 28:02d}"))
        records.append(StudyRecord(sid, cat, path, ddir, p_seed, (d, h, w), _phantom_spacing(p_seed, (d, h, w))))
        rows.append({"study_id": sid, "category": f"CT-{cat}",
                     "study_file": path.relative_to(out).as_posix()})
    _run_groups(_write_study, jobs, workers)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "dataset_registry.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["study_id", "category", "study_file"])
        wr.writeheader()
        wr.writerows(rows)
    return records



@dataclass(frozen=True)
class CXRRecord:
    patientid: str
    filename: str
    view: str
    modality: str
    finding: str
    label: int          # 1 where finding contains COVID-19
    fmt: str            # "png8" | "png16" | "dicom_m2" | "dicom_m1" | "missing"
    seed: int


def _write_cxr_dicom(path: Path, img: np.ndarray, *, monochrome1: bool, view: str, patient: tuple[str, str],
                     patient_id: str, birth_date: str, seed: int) -> None:
    from xpgan.pipeline.cxr.readers import write_dicom_cxr

    stored = np.rint(img * 4095.0).astype(np.uint16)  # 12-bit detector values
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    write_dicom_cxr(
        path, stored, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2", window=(2048, 4096),
        rescale=(1, 0), bits_stored=12, patient_name=f"{patient[1]}^{patient[0]}", patient_id=patient_id,
        patient_birth_date=birth_date, modality="DX", uid_entropy=[str(seed), patient_id, path.name],
        extra={"PatientSex": "F" if seed % 2 else "M", "InstitutionName": "Synthetic General Hospital",
               "ReferringPhysicianName": "Who^Doctor", "StudyDate": "20200315",
               "ViewPosition": "AP" if view.startswith("AP") else view})  # CS: no "AP Supine"


def _run_groups(fn, groups: list, workers: int) -> None:
    """fn(group) for every group, in `workers` spawned processes when > 1 (results are files)."""
    workers = max(1, min(int(workers), len(groups)))
    if workers == 1:
        for g in groups:
            fn(g)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        for _ in ex.map(fn, groups):
            pass


def _render_cxr_jobs(group: list[dict]) -> None:
    """Render and save the images of one patient (one phantom, several views/exposures)."""
    from PIL import Image

    spec = group[0]["spec"]
    ph = chest_phantom(spec["seed"], shape=spec["shape"], severity=spec["severity"], pattern=spec["pattern"],
                       noise_hu=0.0, z_margin_mm=spec["z_margin_mm"])
    for jb in group:
        path = Path(jb["path"])
        if jb["kind"] == "ct_slice":
            sl = ph.hu[ph.hu.shape[0] // 2]
            Image.fromarray((np.clip((sl + 1000.0) / 1400.0, 0, 1) * 255).astype(np.uint8)).save(path)
            continue
        img_rng = np.random.default_rng(list(jb["img_seed"]))
        rows_px, cols_px = jb["rows"], jb["cols"]
        side = max(rows_px, cols_px)
        p = line_integrals(ph, jb["view"], side)
        img = simulate_radiograph(
            p, img_rng, exposure=float(np.exp(img_rng.normal(0.0, 0.35))),
            photons=float(img_rng.uniform(1500.0, 12000.0)), scatter=float(img_rng.uniform(0.2, 0.9)),
            gamma=float(img_rng.uniform(1.0, 1.6)), blur_px=float(img_rng.uniform(0.6, 1.6)),
            unsharp=float(img_rng.uniform(0.0, 0.4)))
        r0, c0 = (side - rows_px) // 2, (side - cols_px) // 2
        img = img[r0:r0 + rows_px, c0:c0 + cols_px].copy()
        if img_rng.uniform() < 0.6:
            add_marker(img, "L" if img_rng.uniform() < 0.7 else "R", img_rng)
        if img_rng.uniform() < 0.3:
            collimate(img, img_rng)
        fmt = jb["fmt"]
        if fmt == "png8":
            Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(path)
        elif fmt == "png16":
            Image.fromarray(np.rint(img * 65535).astype(np.uint16)).save(path)
        else:
            _write_cxr_dicom(path, img, monochrome1=(fmt == "dicom_m1"), view=jb["view"], **jb["dicom"])


def _cxr_patient_seed(seed: int, pi: int) -> int:
    """chest_phantom seed of CXR patient `pi` (disjoint from write_mosmed_archive's)."""
    return 10 ** 9 + int(seed) * 100_003 + pi


def _group_patients(rng: np.random.Generator, n_images: int, n_pos: int):
    """(label per patient, shuffled frontal images as (patient index, label)): patients of 1..3 images,
    positives first, then negatives."""
    frontal: list[tuple[int, int]] = []  # (patient index, label)
    patients: list[int] = []             # label per patient
    for label, count in ((1, n_pos), (0, n_images - n_pos)):
        left = count
        while left > 0:
            k = min(left, int(rng.choice([1, 1, 1, 2, 2, 3])))
            patients.append(label)
            frontal += [(len(patients) - 1, label)] * k
            left -= k
    order = rng.permutation(len(frontal))
    return patients, [frontal[i] for i in order]


def _plan_formats(rng: np.random.Generator, n_images: int, dicom_fraction: float, n_missing: int):
    """(file format per frontal image, indices of the images left unwritten)."""
    n_dicom = int(round(dicom_fraction * n_images))
    fmt_plan = ["dicom_m1" if j % 4 == 3 else "dicom_m2" for j in range(n_dicom)]
    fmt_plan += ["png16" if j % 3 == 2 else "png8" for j in range(n_images - n_dicom)]
    fmt_plan = [fmt_plan[i] for i in rng.permutation(len(fmt_plan))]
    missing = set(rng.choice(n_images, size=min(n_missing, n_images), replace=False).tolist()) if n_missing else set()
    return fmt_plan, missing


def _finding(info: dict) -> str:
    """The collection's `finding` of a patient."""
    if info["severity"] and info["pattern"] == "covid":
        return "Pneumonia/Viral/COVID-19"
    if info["pattern"] == "bacterial":
        return "Pneumonia/Bacterial/Streptococcus"
    return "No Finding"


def _dicom_patient(info: dict, pseed: int) -> dict:
    """The made-up patient fields of a CXR DICOM file (keyword arguments of _write_cxr_dicom)."""
    return dict(patient=info["name"], patient_id=f"PID{info['pid']}",
                birth_date=f"{2020 - info['age']}0{1 + pseed % 9}1{pseed % 9}", seed=pseed)


def _cohen_row(rng: np.random.Generator, info: dict, offset: int, finding: str, view: str, modality: str,
               fname: str) -> list[str]:
    """One metadata.csv row (COHEN_HEADER order) of an image taken `offset` days after the patient's first."""
    date = info["day0"] + _dt.timedelta(days=offset)
    date_s = date.strftime("%B %d, %Y") if int(info["pid"]) % 2 else date.isoformat()
    covid = "COVID-19" in finding
    vals = {
        "patientid": info["pid"], "offset": str(offset) if offset or covid else "", "sex": info["sex"],
        "age": str(info["age"]), "finding": finding, "RT_PCR_positive": "Y" if covid else "",
        "survival": "Y" if rng.uniform() < 0.8 else "", "intubated": "", "intubation_present": "",
        "went_icu": "N", "in_icu": "N", "needed_supplemental_O2": "", "extubated": "",
        "temperature": f"{rng.uniform(36.4, 39.5):.1f}" if covid else "", "pO2_saturation": "",
        "leukocyte_count": "", "neutrophil_count": "", "lymphocyte_count": "", "view": view,
        "modality": modality, "date": date_s, "location": info["location"], "folder": "images",
        "filename": fname, "doi": "10.0000/synthetic.phantom", "url": "https://example.org/synthetic",
        "license": "CC BY 4.0",
        "clinical_notes": "Synthetic patient, \"phantom\" study; fever, cough" if covid else "Synthetic patient",
        "other_notes": "",
    }
    return [vals[c] for c in COHEN_HEADER]


class _CohenCollection:
    """A CXR collection being assembled: patients' made-up details (drawn from `rng` when a patient first
    appears), the images to render per patient, the records and the metadata rows."""

    def __init__(self, rng: np.random.Generator, patients: list[int], *, seed: int, phantom_shape: Sequence[int],
                 z_margin_mm: float, positive_grades: Sequence[int]):
        self.rng = rng
        self.patients = patients              # label per patient
        self.seed = seed
        self.phantom_shape = phantom_shape
        self.z_margin_mm = z_margin_mm
        self.positive_grades = positive_grades
        self.pat_info: dict[int, dict] = {}
        self.jobs: dict[int, list[dict]] = {}  # patient index -> images to render from that patient's phantom
        self.records: list[CXRRecord] = []
        self.rows: list[list[str]] = []

    def patient(self, pi: int) -> dict:
        """Patient `pi`'s details: pid, sex, age, severity, pattern, name, location, day0."""
        if pi not in self.pat_info:
            rng = self.rng
            label = self.patients[pi]
            pattern = "covid" if label else ("bacterial" if rng.uniform() < 0.12 else "none")
            self.pat_info[pi] = dict(
                pid=str(1000 + pi * 3 + int(rng.integers(0, 3))),
                sex=str(rng.choice(["M", "F"])), age=int(rng.integers(22, 88)),
                severity=int(rng.choice(list(self.positive_grades))) if label else (2 if pattern == "bacterial" else 0),
                pattern=pattern, name=_FAKE_NAMES[pi % len(_FAKE_NAMES)],
                location=str(rng.choice(_LOCATIONS)),
                day0=_dt.date(2020, 1, 20) + _dt.timedelta(days=int(rng.integers(0, 120))))
        return self.pat_info[pi]

    def add_job(self, pi: int, **kw) -> None:
        """An image of patient `pi` to render (keywords of a _render_cxr_jobs job)."""
        info = self.patient(pi)
        spec = dict(seed=_cxr_patient_seed(self.seed, pi), shape=tuple(int(v) for v in self.phantom_shape),
                    severity=info["severity"], pattern="bacterial" if info["pattern"] == "bacterial" else "covid",
                    z_margin_mm=float(self.z_margin_mm))
        kw.setdefault("dicom", None)
        self.jobs.setdefault(pi, []).append(dict(spec=spec, **kw))

    def add_entry(self, info: dict, fname: str, view: str, modality: str, label: int, fmt: str, seed: int,
                  offset: int) -> None:
        """The record and the metadata row of one image."""
        finding = _finding(info)
        self.records.append(CXRRecord(info["pid"], fname, view, modality, finding, label, fmt, seed))
        self.rows.append(_cohen_row(self.rng, info, offset, finding, view, modality, fname))


def _add_frontal_images(col: _CohenCollection, frontal: list[tuple[int, int]], fmt_plan: list[str], missing: set,
                        img_dir: Path, size: int, seed: int) -> None:
    """The frontal radiographs: a view per visit (PA/AP/AP Supine), a file name, columns around `size`."""
    rng = col.rng
    visits: dict[int, int] = {}
    for j, (pi, label) in enumerate(frontal):
        info = col.patient(pi)
        visit = visits.get(pi, 0)
        visits[pi] = visit + 1
        views = ["PA", "PA", "AP", "AP Supine"] if visit == 0 else ["AP", "AP Supine", "PA"]
        view = str(rng.choice(views))
        fmt = fmt_plan[j]
        ext = ".dcm" if fmt.startswith("dicom") else ".png"
        if j % 11 == 5:  # a few files are named after the (made-up) patient, as some collections do
            fname = f"{info['name'][1].lower()}_{info['name'][0].lower()}_{j:04d}{ext}"
        else:
            fname = f"cxr_{j:04d}_{int(rng.integers(0, 16 ** 6)):06x}{ext}"
        rows_px = size
        cols_px = int(round(size * np.random.default_rng([int(seed), 505, j]).uniform(0.82, 1.05) / 2)) * 2
        pseed = _cxr_patient_seed(seed, pi)
        if j in missing:
            fmt = "missing"
        else:
            col.add_job(pi, kind="xray", view=view, img_seed=(int(seed), 303, j), rows=rows_px, cols=cols_px,
                        fmt=fmt, path=str(img_dir / fname),
                        dicom=_dicom_patient(info, pseed) if fmt.startswith("dicom") else None)
        col.add_entry(info, fname, view, "X-ray", label, fmt, pseed, 3 * visit)


def _add_excluded_images(col: _CohenCollection, n_lateral: int, n_ct_rows: int, img_dir: Path, size: int,
                         seed: int) -> None:
    """Rows that prep must leave out: lateral views and CT slices, of patients already in the collection."""
    rng = col.rng
    pis = sorted(col.pat_info)
    for j in range(n_lateral):
        pi = pis[int(rng.integers(0, len(pis)))]
        info = col.patient(pi)
        fname = f"lateral_{j:03d}.png"
        col.add_job(pi, kind="xray", view="L", img_seed=(int(seed), 404, j), rows=size, cols=size, fmt="png8",
                    path=str(img_dir / fname))
        col.add_entry(info, fname, "L", "X-ray", col.patients[pi], "png8", 0, 0)
    for j in range(n_ct_rows):
        pi = pis[int(rng.integers(0, len(pis)))]
        info = col.patient(pi)
        fname = f"ct_axial_{j:03d}.png"
        col.add_job(pi, kind="ct_slice", path=str(img_dir / fname))
        col.add_entry(info, fname, "Axial", "CT", col.patients[pi], "png8", 0, 0)


def _write_cohen_csv(path: Path, rows: list[list[str]]) -> None:
    """metadata.csv with the collection's trailing comma on the header and every row."""
    with open(path, "w", newline="") as fh:
        wr = csv.writer(fh, lineterminator="\n")
        # The collection's header and rows end with a comma: pandas sees an extra "Unnamed" column.
        fh.write(",".join(COHEN_HEADER) + ",\n")
        for r in rows:
            wr.writerow(r + [""])


def write_cxr_archive(
    out_dir: str | os.PathLike,
    n_images: int,
    *,
    seed: int = 0,
    positive_fraction: float = 0.18,     # share of frontal images whose finding is COVID-19
    size: int = 320,                     # radiograph rows (columns vary a little around it), pixels
    phantom_shape: Sequence[int] = (72, 128, 128),  # CT phantom projected for each patient, voxels
    z_margin_mm: float = 35.0,           # body above and below the chest in the projected phantom, mm
    dicom_fraction: float = 0.15,        # share of frontal images saved as DICOM (a few MONOCHROME1)
    n_lateral: int | None = None,        # extra lateral (L) rows, to be filtered out; None: n_images // 20
    n_ct_rows: int | None = None,        # extra modality "CT" rows (an axial slice image); None: 1 if n >= 20
    n_missing: int = 0,                  # rows whose image file is not written (reported, not fatal)
    workers: int = 1,                    # processes rendering images (the result does not depend on it)
    positive_grades: Sequence[int] = (2, 3, 3, 4),  # COVID-19 patients' grade, drawn uniformly from these
) -> list[CXRRecord]:
    """A Cohen-style chest X-ray collection: `metadata.csv` + `images/` (PNG 8/16-bit and DICOM).

    Patients are phantoms with seeds disjoint from `write_mosmed_archive`'s (offset 10**9), projected with
    radiography distances and put through `simulate_radiograph` with per-image exposure, contrast, blur,
    noise, scatter, occasional lead side markers and collimator edges. About `positive_fraction` of the
    frontal images are COVID-19 (`Pneumonia/Viral/COVID-19`, grade drawn from `positive_grades`); negatives
    are `No Finding` and a few `Pneumonia/Bacterial/Streptococcus` (one-sided consolidation). Some patients
    have 2..3 images (days apart, PA/AP/AP Supine). The CSV keeps the collection's quirks: a trailing comma on
    every line (an unnamed last column), mixed date formats, free-text columns. DICOM files carry made-up names, IDs and
    birth dates; some file names embed a made-up name.
    """
    out = Path(out_dir)
    n_images = int(n_images)
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
    if not positive_grades or any(int(g) not in range(1, 5) for g in positive_grades):
        raise ValueError(f"positive_grades must be grades 1..4, got {positive_grades}")
    rng = np.random.default_rng([int(seed), 202])
    n_lateral = max(1, n_images // 20) if n_lateral is None else int(n_lateral)
    n_ct_rows = (1 if n_images >= 20 else 0) if n_ct_rows is None else int(n_ct_rows)
    n_pos = int(round(positive_fraction * n_images))
    if positive_fraction > 0 and n_pos == 0 and n_images >= 4:
        n_pos = 1
    patients, frontal = _group_patients(rng, n_images, n_pos)

    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    fmt_plan, missing = _plan_formats(rng, n_images, dicom_fraction, n_missing)
    col = _CohenCollection(rng, patients, seed=seed, phantom_shape=phantom_shape, z_margin_mm=z_margin_mm,
                           positive_grades=positive_grades)
    _add_frontal_images(col, frontal, fmt_plan, missing, img_dir, size, seed)
    _add_excluded_images(col, n_lateral, n_ct_rows, img_dir, size, seed)

    _run_groups(_render_cxr_jobs, [col.jobs[k] for k in sorted(col.jobs)], workers)
    _write_cohen_csv(out / "metadata.csv", col.rows)
    return col.records
