"""The study's presets and its synthetic cohort: archives written by `xpgan.pipeline.synth.archives`, then prepped
into stores by the same `prep_drr` / `prep_cxr` functions that `xpgan prep drr` / `xpgan prep cxr` call.

The cohort mirrors the paper's premise (its Table 1): a chest X-ray collection with few COVID-19 positives
(`cxr_positive_fraction`, a few percent) and a CT archive with many positives spread over the MosMed grades
CT-0..CT-4 (`ct_grade_weights`, 77 % positive). Radiographs differ from the DRRs the way real ones do
(`simulate_radiograph`: film curve, scatter, quantum noise, blur, edge enhancement, side markers,
collimation; other source distances); the CT studies are rendered as plain DRRs by prep drr.
A second, small CT archive (`n_ct_holdout` studies, other patients) is prepped into `ct_holdout.zarr`: it
is never trained on and measures the generator (`xpgan.model.gmetrics`: does G(ct) follow its own study).

Everything is deterministic in (preset, cohort seed). `build_cohort` writes `cohort.json` last (atomically):
a cohort folder without it is incomplete and is rebuilt from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, get_args

from xpgan.errors import XPGANError

HOLDOUT_SEED_OFFSET = 7919      # the held-out CT archive's seed = cohort seed + this (other patients)


@dataclass(frozen=True)
class StudyPreset:
    name: str
    # --- cohort (frozen after the calibration in docs/study_calibration.md)
    n_cxr: int                              # frontal radiographs in the collection
    cxr_positive_fraction: float            # share of COVID-19 radiographs
    positive_grades: tuple[int, ...]        # grades of the COVID-19 radiograph patients (drawn uniformly)
    cxr_image_px: int                       # rows of the written radiographs
    cxr_phantom_shape: tuple[int, int, int]  # phantom voxels projected per radiograph
    n_ct: int                               # CT studies of the training archive
    ct_grade_weights: tuple[float, ...]     # share of CT-0..CT-4 (MosMed-like, ~77 % positive)
    ct_shape: tuple[int, int, int]          # (d, h, w) voxels of the written CT studies
    n_ct_holdout: int                       # CT studies never trained on (generator L1)
    size: int                               # store image side (DRRs and CXRs) = network resolution, px
    prep_depth: int                         # slices of the prepped volumes (volumes: depth x size x size)
    # --- training, identical for every mode
    net_preset: str                         # G/D widths (xpgan.model.networks.PRESETS); C is DenseNet121
    steps: int                              # optimisation steps = classifier updates
    cxr_batch: int                          # real CXRs per step
    ct_batch: int                           # CT items (DRRs or G(ct)) per step (modes drr, xpgan)
    lr: float                               # G and D learning rate
    c_lr: float                             # classifier learning rate
    class_balance: str                      # TrainConfig.class_balance
    val_fraction: float                     # share of CXR train patients carved out for the threshold
    amp: bool                               # bf16 autocast on CUDA
    n_boot: int                             # bootstrap resamples of the test images
    cxr_positive_share: float = 1.0         # share of the positive CXR train patients trained on (scarcity)

    def cohort_dict(self) -> dict:
        keys = ("n_cxr", "cxr_positive_fraction", "positive_grades", "cxr_image_px", "cxr_phantom_shape", "n_ct",
                "ct_grade_weights", "ct_shape", "n_ct_holdout", "size", "prep_depth")
        return {k: _plain(getattr(self, k)) for k in keys}

    def to_dict(self) -> dict:
        d = {k: _plain(v) for k, v in dataclasses.asdict(self).items()}
        if d["cxr_positive_share"] == 1.0:
            del d["cxr_positive_share"]     # every positive: the preset as it was calibrated, recorded so
        return d

    def describe(self) -> str:
        from xpgan.model.networks import PRESETS as NETS

        n = NETS[self.net_preset]
        widths = (f"encoder {list(n.enc_channels)}, z/w {n.z_dim}/{n.w_dim}, synthesis <= {n.syn_channel_max} "
                  f"and D <= {n.d_channel_max} channels")
        return (f"preset {self.name}: cohort {self.n_cxr} radiographs ({self.cxr_positive_fraction:.1%} COVID-19, "
                f"grades {list(self.positive_grades)}, written {self.cxr_image_px} px), {self.n_ct} CT studies "
                f"{'x'.join(map(str, self.ct_shape))} (grades CT-0..4 {list(self.ct_grade_weights)}) + "
                f"{self.n_ct_holdout} held out; stores {self.size} px, volumes "
                f"{self.prep_depth}x{self.size}x{self.size}\n"
                f"  training (every mode): {self.steps} steps, {self.cxr_batch} CXRs + {self.ct_batch} CT items "
                f"per step, networks G/D {self.net_preset} ({widths}) + DenseNet121 (growth 32, blocks 6-12-24-16), "
                f"lr {self.lr} (G, D), {self.c_lr} (C), "
                f"class balance {self.class_balance}, validation {self.val_fraction:.0%} of train patients, "
                f"AMP {'bf16 on CUDA' if self.amp else 'off'}; {self.n_boot} bootstrap resamples"
                + (f"\n  scarcity: the radiographs of {self.cxr_positive_share:.0%} of the positive CXR train "
                   "patients are trained on (negatives, validation and test unchanged)"
                   if self.cxr_positive_share < 1.0 else ""))


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


_MOSMED_77 = (0.23, 0.40, 0.18, 0.12, 0.07)

StudyPresetName = Literal["cpu", "gpu", "smoke"]  # the keys of PRESETS

PRESETS: dict[str, StudyPreset] = {
    # ~40 min on 2 CPU cores for 3 modes x 2 seeds, cohort and prep included (see the README)
    "cpu": StudyPreset(
        name="cpu", n_cxr=2400, cxr_positive_fraction=0.06, positive_grades=(3, 4), cxr_image_px=96,
        cxr_phantom_shape=(40, 72, 72), n_ct=240, ct_grade_weights=_MOSMED_77, ct_shape=(32, 128, 128),
        n_ct_holdout=64, size=64, prep_depth=32, net_preset="tiny", steps=250, cxr_batch=16, ct_batch=8,
        lr=0.002, c_lr=0.001, class_balance="oversample", val_fraction=0.2, amp=False, n_boot=1000),
    # the paper's sizes on one GPU (not run in CI)
    "gpu": StudyPreset(
        name="gpu", n_cxr=6000, cxr_positive_fraction=0.043, positive_grades=(3, 4), cxr_image_px=320,
        cxr_phantom_shape=(72, 160, 160), n_ct=1110, ct_grade_weights=_MOSMED_77, ct_shape=(64, 256, 256),
        n_ct_holdout=64, size=256, prep_depth=64, net_preset="paper", steps=6000, cxr_batch=16, ct_batch=16,
        lr=0.002, c_lr=0.001, class_balance="oversample", val_fraction=0.2, amp=True, n_boot=2000),
    # plumbing only (tests): every file, every mode, in about a minute
    "smoke": StudyPreset(
        name="smoke", n_cxr=40, cxr_positive_fraction=0.25, positive_grades=(3, 4), cxr_image_px=48,
        cxr_phantom_shape=(24, 40, 40), n_ct=10, ct_grade_weights=_MOSMED_77, ct_shape=(12, 48, 48),
        n_ct_holdout=5, size=32, prep_depth=16, net_preset="tiny", steps=3, cxr_batch=4, ct_batch=2,
        lr=0.002, c_lr=0.001, class_balance="oversample", val_fraction=0.2, amp=False, n_boot=200),
}
assert set(PRESETS) == set(get_args(StudyPresetName))


def ct_categories(n: int, weights) -> list[int]:
    """n grades with the shares `weights` (largest remainder), every grade present when n >= 5; sorted."""
    import numpy as np

    w = np.asarray(weights, float) / float(np.sum(weights))
    base = np.floor(w * n).astype(int)
    order = np.argsort(-(w * n - base), kind="stable")
    base[order[: n - int(base.sum())]] += 1
    if n >= 5:
        for g in np.flatnonzero(base == 0):          # borrow from the largest grade
            base[int(np.argmax(base))] -= 1
            base[g] += 1
    return [g for g in range(len(base)) for _ in range(int(base[g]))]


@dataclass
class Cohort:
    root: Path
    ct_store: Path
    ct_holdout_store: Path
    cxr_store: Path
    info: dict              # cohort.json


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def build_cohort(root: str | Path, preset: StudyPreset, *, seed: int = 0, workers: Optional[int] = None,
                 log: Callable[[str], None] = print) -> Cohort:
    """Write (or reuse) the cohort of `preset` under `root`: archives/, stores/, cohort.json."""
    from xpgan.drr import ConeGeometry
    from xpgan.pipeline.ct.prep_drr import prep_drr
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr
    from xpgan.pipeline.privacy import write_seeded_salt
    from xpgan.pipeline.synth.archives import ARCHIVE_SPACING_RANGE_MM, write_cxr_archive, write_mosmed_archive

    root = Path(root)
    stores = root / "stores"
    cohort = Cohort(root, stores / "ct.zarr", stores / "ct_holdout.zarr", stores / "cxr.zarr", {})
    want = {"preset": preset.name, "seed": int(seed), **preset.cohort_dict()}
    marker = root / "cohort.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if {k: info.get(k) for k in want} != want:
            raise XPGANError(f"{root}: holds a cohort built with other settings ({marker}); use another --out")
        log(f"[study] cohort: reusing {root} (built in {info.get('seconds', 0):.0f} s)")
        cohort.info = info
        return cohort
    if root.exists():
        shutil.rmtree(root)                       # an unfinished cohort: start again (deterministic)
    n_proc = workers if workers is not None else min(4, os.cpu_count() or 1)
    t0 = time.perf_counter()
    secs = {}
    arch = root / "archives"
    log(f"[study] cohort: writing {preset.n_ct} + {preset.n_ct_holdout} CT studies and {preset.n_cxr} "
        f"radiographs ({n_proc} processes) ...")
    t = time.perf_counter()
    write_mosmed_archive(arch / "mosmed", preset.n_ct, seed=seed, shape=preset.ct_shape, workers=n_proc,
                         categories=ct_categories(preset.n_ct, preset.ct_grade_weights))
    write_mosmed_archive(arch / "mosmed_holdout", preset.n_ct_holdout, seed=seed + HOLDOUT_SEED_OFFSET,
                         shape=preset.ct_shape, workers=n_proc,
                         categories=ct_categories(preset.n_ct_holdout, preset.ct_grade_weights))
    secs["ct archives"] = time.perf_counter() - t
    t = time.perf_counter()
    write_cxr_archive(arch / "cxr", preset.n_cxr, seed=seed, positive_fraction=preset.cxr_positive_fraction,
                      size=preset.cxr_image_px, phantom_shape=preset.cxr_phantom_shape, workers=n_proc,
                      positive_grades=preset.positive_grades)
    secs["cxr archive"] = time.perf_counter() - t

    # a seed-derived salt: the same patient hashes, hence the same split
    salt = write_seeded_salt(root / "stores" / "demo.salt", seed)
    shape = (preset.prep_depth, preset.size, preset.size)
    for name, src, dst in (("prep drr", arch / "mosmed", cohort.ct_store),
                           ("prep drr (held out)", arch / "mosmed_holdout", cohort.ct_holdout_store)):
        t = time.perf_counter()
        log(f"[study] cohort: {name} -> {dst.name}, volumes {'x'.join(map(str, shape))}, DRRs {preset.size} px")
        s = prep_drr(str(src), str(dst), shape=shape, geometry=ConeGeometry(view="pa", size=preset.size),
                     workers=workers, progress=False, processes=False, salt_file=salt,
                     spacing_range_mm=ARCHIVE_SPACING_RANGE_MM)  # phantom slices are coarse
        s.raise_on_failures(name)
        secs[name] = time.perf_counter() - t
    t = time.perf_counter()
    log(f"[study] cohort: prep cxr -> {cohort.cxr_store.name}, {preset.size} px")
    s = prep_cxr([str(arch / "cxr")], str(cohort.cxr_store), size=preset.size, seed=seed, workers=workers,
                 progress=False, processes=False, salt_file=salt)
    s.raise_on_failures("prep cxr")
    log(s.text())
    secs["prep cxr"] = time.perf_counter() - t
    info = {**want, "counts": cohort_counts(cohort, preset.val_fraction), "seconds": time.perf_counter() - t0,
            "step_seconds": secs}
    _write_json_atomic(marker, info)
    cohort.info = info
    log(f"[study] cohort: done in {info['seconds']:.0f} s; {format_counts(info['counts'])}")
    return cohort


def cohort_counts(cohort: Cohort, val_fraction: float) -> dict:
    """Items and positives per part of the CXR store (train/val/test as the trainer and the study use
    them) and per grade of the CT stores."""
    import numpy as np

    from xpgan.model.data import CXRDataset
    from xpgan.pipeline.schema import open_store

    out = {}
    for part in ("train", "val", "test"):
        ds = CXRDataset(cohort.cxr_store, part=part, val_fraction=val_fraction)
        out[f"cxr_{part}"] = [int(len(ds)), int(np.sum(ds.labels == 1))]
    for key, path in (("ct", cohort.ct_store), ("ct_holdout", cohort.ct_holdout_store)):
        g = open_store(path, "ct")
        done = np.asarray(g["done"][:], bool)
        sev = np.asarray(g["severity"][:])[done]
        out[f"{key}_grades"] = [int(np.sum(sev == k)) for k in range(5)]
    return out


def format_counts(c: dict) -> str:
    parts = [f"CXR {p} {c[f'cxr_{p}'][0]} ({c[f'cxr_{p}'][1]} positive)" for p in ("train", "val", "test")]
    ct = c["ct_grades"]
    parts.append(f"CT {sum(ct)} (CT-0..4: {', '.join(map(str, ct))}; {sum(ct[1:]) / max(1, sum(ct)):.0%} positive)")
    parts.append(f"held-out CT {sum(c['ct_holdout_grades'])}")
    return "; ".join(parts)
