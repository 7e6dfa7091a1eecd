"""`xpgan demo`: the whole pipeline on built-in synthetic data, in a few minutes on a laptop CPU.

Steps (plain function calls, the same ones the commands make):
  1. archives  `write_mosmed_archive` (NIfTI, MosMed tree) + `write_cxr_archive` (Cohen-style collection)
  2. prep drr  archives/mosmed -> stores/ct.zarr   (resized volumes + cone-beam PA DRRs)
  3. prep cxr  archives/cxr    -> stores/cxr.zarr  (letterboxed images, patient-grouped 80:20 split)
  4. inspect   contact sheets of both stores and one CT item (DRR beside axial/coronal/sagittal slices)
  5. train     `--mode xpgan --preset tiny` on the CPU for a short while
  6. eval      metrics.json + ROC/PR curves on the CXR test split
  7. generate  G's X-rays for the CT studies, and a grid beside their DRRs

Sizes are chosen so the whole run stays under about 2 minutes on 2 idle cores; they are fields of DemoConfig.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from xpgan import bounds as B
from xpgan.errors import XPGANError, check_output_folder
from xpgan.model.metrics import metrics_line
from xpgan.options import check_bounds, option

MARKER = ".xpgan-demo"
Log = Callable[[str], None]
_PARTS = ("archives", "stores", "sheets", "runs")


@dataclass
class DemoConfig:
    out: str = option("demo_out", "Output folder (created; a previous demo's folder is cleared, any other "
                      "non-empty folder is refused).", path=True)
    seed: int = option(0, "Seed of the synthetic patients and of training.", bound=B.SEED)
    size: int = option(64, "DRR and CXR store size, pixels per side: the networks' resolution, a power of two >= "
                           f"{B.CLASSIFIER_MIN_IMAGE} (128 looks nicer and trains about 3x slower).",
                       bound=B.model_image_size(B.DEMO_SIZE))
    n_ct: int = option(16, "Synthetic CT studies (512x512x~40 voxels each).", bound=B.DEMO_CT, flag="--ct")
    ct_shape: tuple[int, int, int] = (40, 512, 512)   # (d, h, w) of the written studies, voxels (d varies +-4)
    prep_depth: int = 32                        # slices of the store's volumes (volumes are depth x size x size)
    n_cxr: int = option(160, "Synthetic frontal chest X-rays (30 percent COVID-19).", bound=B.DEMO_CXR,
                        flag="--cxr")                # plus a few lateral / CT rows
    cxr_positive_fraction: float = 0.3
    cxr_positive_grades: tuple[int, ...] = (4,)  # grade of the COVID-19 radiographs: the most visible lesions,
                                                # so that a minute of training learns them (with 3..4 it did not)
    cxr_image_px: int = 256                     # rows of the written radiographs, pixels
    cxr_phantom_shape: tuple[int, int, int] = (64, 112, 112)  # phantom projected per radiograph, voxels
    train_steps: int = option(60, "Training steps (tiny networks on the CPU; 2 CT items and 16 CXRs per step).",
                              bound=B.STEPS, flag="--steps")
    batch_size: int = 2                         # CT items per step
    cxr_batch_size: int = 16                    # real CXRs per step (the classifier needs real batches)
    workers: Optional[int] = None               # Dask workers for prep (None: the machine's cores)
    processes: bool = False                     # Dask worker processes (True) or threads (False: starts faster)
    progress: bool = option(True, "Progress bars on stderr (tty only).", flag="--progress/--no-progress")

    @property
    def prep_shape(self) -> tuple[int, int, int]:
        return (self.prep_depth, self.size, self.size)


@dataclass
class DemoResult:
    out: str
    paths: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    generator: dict = field(default_factory=dict)     # generate's report (model/greport.py)

    def text(self) -> str:
        lines = [f"demo finished in {sum(self.seconds.values()):.0f} s "
                 f"({', '.join(f'{k} {v:.0f} s' for k, v in self.seconds.items())})", "outputs:"]
        w = max(len(k) for k in self.paths) if self.paths else 0
        lines += [f"  {k:<{w}}  {v}" for k, v in self.paths.items()]
        m = self.metrics
        if m:
            lines.append(f"test {metrics_line(m)}")
            lines.append(verdict(m.get("auroc")))
        if self.generator:
            from xpgan.model.greport import summary_line

            lines.append(summary_line(self.generator) + " (on the studies it trained on, not held out)")
            if "realism" in self.generator:
                from xpgan.model.greport import realism_line

                lines.append(realism_line(self.generator["realism"]) + " (the CXR store's test split)")
        return "\n".join(lines)


def verdict(auroc) -> str:
    """One line saying whether the demo's classifier learned something, from its test AUROC."""
    if not isinstance(auroc, (int, float)) or auroc != auroc:
        return "the test split has a single class: AUROC undefined, nothing to judge"
    if auroc >= 0.75:
        return f"the classifier learned: test AUROC {auroc:.3f}, well above chance (0.5)"
    return (f"the classifier has NOT learned much in this short run (test AUROC {auroc:.3f}, chance is 0.5): "
            "train longer (--steps) or run `xpgan study` for the calibrated comparison")


def _prepare_out(out: Path) -> None:
    """Create `out`, or clear the parts a previous demo left there; refuse any other non-empty folder."""
    check_output_folder(out, MARKER, "demo")
    if out.exists():
        for part in _PARTS:
            p = out / part
            if p.is_dir():
                shutil.rmtree(p)
        for p in out.glob("stores/*.salt"):
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by xpgan demo; the folder is cleared on the next run\n")


def run_demo(cfg: DemoConfig, *, log: Callable[[str], None] = print) -> DemoResult:
    """Run every step of the demo into cfg.out; returns where each output is and how long each step took."""
    check_bounds(cfg)
    out = Path(cfg.out)
    _prepare_out(out)
    res = DemoResult(out=str(out))
    mosmed, cxr_src = _write_archives(cfg, out, res, log)
    ct_store, salt = _prep_ct_store(cfg, out, mosmed, res, log)
    cxr_store = _prep_cxr_store(cfg, out, cxr_src, salt, res, log)
    _inspect_sheets(out, ct_store, cxr_store, res, log)
    run_dir, checkpoint = _train_tiny(cfg, out, ct_store, cxr_store, res, log)
    _evaluate_test_split(checkpoint, cxr_store, run_dir, res, log)
    _generate_xrays(checkpoint, ct_store, cxr_store, run_dir, res, log)
    (out / "demo_summary.json").write_text(json.dumps({"paths": res.paths, "seconds": res.seconds}, indent=2))
    res.paths["summary"] = str(out / "demo_summary.json")
    return res


@contextlib.contextmanager
def _step(res: DemoResult, name: str, what: str, log: Log) -> Iterator[None]:
    """Log `[demo] what ...`; when the step's body finishes, its wall-clock seconds go to res.seconds[name]."""
    log(f"[demo] {what} ...")
    t = time.perf_counter()
    yield
    res.seconds[name] = time.perf_counter() - t


def _write_archives(cfg: DemoConfig, out: Path, res: DemoResult, log: Log) -> tuple[Path, Path]:
    """Step 1: the synthetic MosMed-style CT archive and Cohen-style CXR collection under out/archives."""
    from xpgan.pipeline.synth.archives import write_cxr_archive, write_mosmed_archive

    with _step(res, "archives", f"writing synthetic archives ({cfg.n_ct} CT studies {cfg.ct_shape[2]}x"
               f"{cfg.ct_shape[1]}x~{cfg.ct_shape[0]}, {cfg.n_cxr} radiographs)", log):
        mosmed, cxr_src = out / "archives" / "mosmed", out / "archives" / "cxr"
        n_proc = cfg.workers if cfg.workers is not None else min(4, os.cpu_count() or 1)
        write_mosmed_archive(mosmed, cfg.n_ct, seed=cfg.seed, shape=cfg.ct_shape, workers=n_proc)
        write_cxr_archive(cxr_src, cfg.n_cxr, seed=cfg.seed, positive_fraction=cfg.cxr_positive_fraction,
                          size=cfg.cxr_image_px, phantom_shape=cfg.cxr_phantom_shape, workers=n_proc,
                          positive_grades=cfg.cxr_positive_grades)
        res.paths["CT archive"], res.paths["CXR archive"] = str(mosmed), str(cxr_src)
    return mosmed, cxr_src


def _prep_ct_store(cfg: DemoConfig, out: Path, mosmed: Path, res: DemoResult, log: Log) -> tuple[Path, Path]:
    """Step 2, prep drr: the CT archive -> out/stores/ct.zarr (resized volumes and cone-beam PA DRRs), with
    the seed's salt for patient hashes written beside it; returns the store and the salt file."""
    from xpgan.drr import ConeGeometry
    from xpgan.pipeline.ct.prep_drr import prep_drr
    from xpgan.pipeline.privacy import write_seeded_salt
    from xpgan.pipeline.synth.archives import ARCHIVE_SPACING_RANGE_MM

    with _step(res, "prep drr", f"prep drr -> volumes {'x'.join(map(str, cfg.prep_shape))}, "
               f"DRRs {cfg.size}x{cfg.size}", log):
        ct_store = out / "stores" / "ct.zarr"
        salt = write_seeded_salt(out / "stores" / "demo.salt", cfg.seed)
        s = prep_drr(str(mosmed), str(ct_store), shape=cfg.prep_shape,
                     geometry=ConeGeometry(view="pa", size=cfg.size), workers=cfg.workers, progress=cfg.progress,
                     processes=cfg.processes, salt_file=salt, spacing_range_mm=ARCHIVE_SPACING_RANGE_MM)
        s.raise_on_failures("prep drr")
        log(s.text() if hasattr(s, "text") else str(s))
        res.paths["CT store"] = str(ct_store)
    return ct_store, salt


def _prep_cxr_store(cfg: DemoConfig, out: Path, cxr_src: Path, salt: Path, res: DemoResult, log: Log) -> Path:
    """Step 3, prep cxr: the CXR collection -> out/stores/cxr.zarr (letterboxed images, patient-grouped
    80:20 train/test split, patients hashed with the CT store's salt)."""
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr

    with _step(res, "prep cxr", f"prep cxr -> images {cfg.size}x{cfg.size}", log):
        cxr_store = out / "stores" / "cxr.zarr"
        s = prep_cxr([str(cxr_src)], str(cxr_store), size=cfg.size, seed=cfg.seed, workers=cfg.workers,
                     progress=cfg.progress, processes=cfg.processes, salt_file=salt)
        s.raise_on_failures("prep cxr")
        log(s.text() if hasattr(s, "text") else str(s))
        res.paths["CXR store"] = str(cxr_store)
    return cxr_store


def _inspect_sheets(out: Path, ct_store: Path, cxr_store: Path, res: DemoResult, log: Log) -> None:
    """Step 4, inspect: contact sheets of both stores and of the most severe CT item (its DRR beside axial,
    coronal and sagittal slices) in out/sheets, logging the head of each store's summary."""
    from xpgan.pipeline.inspection import inspect_store

    with _step(res, "inspect", "inspect: contact sheets", log):
        sheets = out / "sheets"
        sheets.mkdir(parents=True, exist_ok=True)
        log(_head(inspect_store(ct_store, sheet=sheets / "ct_sheet.png")))
        log(_head(inspect_store(cxr_store, sheet=sheets / "cxr_sheet.png")))
        item = _most_severe_item(ct_store)
        inspect_store(ct_store, sheet=sheets / "ct_item.png", item=item)
        res.paths["CT contact sheet"] = str(sheets / "ct_sheet.png")
        res.paths["CXR contact sheet"] = str(sheets / "cxr_sheet.png")
        res.paths[f"CT item {item} sheet"] = str(sheets / "ct_item.png")


def _train_tiny(cfg: DemoConfig, out: Path, ct_store: Path, cxr_store: Path, res: DemoResult,
                log: Log) -> tuple[Path, str]:
    """Step 5, train: `--mode xpgan --preset tiny` on the CPU for cfg.train_steps steps into out/runs/xpgan,
    one checkpoint at the end; returns the run folder and that checkpoint."""
    from xpgan.model.config import TrainConfig
    from xpgan.model.train import train

    with _step(res, "train", f"train --mode xpgan --preset tiny, {cfg.train_steps} steps on the CPU", log):
        run_dir = out / "runs" / "xpgan"
        tcfg = TrainConfig(ct=str(ct_store), cxr=str(cxr_store), mode="xpgan", out=str(run_dir),
                           max_steps=cfg.train_steps, batch_size=cfg.batch_size,
                           cxr_batch_size=min(cfg.cxr_batch_size, _train_items(cxr_store)), seed=cfg.seed,
                           preset="tiny", device="cpu", num_workers=0, checkpoint_every=cfg.train_steps,
                           keep_checkpoints=1, log_every=max(1, cfg.train_steps // 6),
                           sample_every=cfg.train_steps, progress=cfg.progress).validate()
        tr = train(tcfg)
        if not tr.checkpoint:
            raise XPGANError("demo: training wrote no checkpoint")
        res.paths["run dir (TensorBoard logs, samples)"] = str(run_dir)
        res.paths["checkpoint"] = str(tr.checkpoint)
    return run_dir, tr.checkpoint


def _evaluate_test_split(checkpoint: str, cxr_store: Path, run_dir: Path, res: DemoResult, log: Log) -> None:
    """Step 6, eval: the checkpoint's classifier on the CXR store's test split -> run_dir/eval-test
    (metrics.json, ROC and PR curves); the metrics go to res.metrics."""
    from xpgan.model.evaluate import evaluate

    with _step(res, "eval", "eval on the CXR test split", log):
        eval_dir = run_dir / "eval-test"
        res.metrics = evaluate(checkpoint, cxr_store, split="test", out_dir=eval_dir, device="cpu")
        res.paths["metrics"] = str(eval_dir / "metrics.json")
        for name in ("roc.png", "pr.png"):
            if (eval_dir / name).exists():
                res.paths[name] = str(eval_dir / name)


def _generate_xrays(checkpoint: str, ct_store: Path, cxr_store: Path, run_dir: Path, res: DemoResult,
                    log: Log) -> None:
    """Step 7, generate: G's X-rays for the CT store's studies -> run_dir/generated, with the generator
    report (res.generator; its realism against the CXR store's test radiographs) and a grid of DRRs beside
    G(ct)."""
    from xpgan.model.generate import generate

    with _step(res, "generate", "generate X-rays from the CT store", log):
        gen_dir = run_dir / "generated"
        g = generate(checkpoint, ct_store, gen_dir, device="cpu", cxr_store=cxr_store)
        res.paths["generated images"] = str(gen_dir)
        res.paths["generator report"] = g["report_path"]
        res.generator = g["report"]
        if g.get("grid"):
            res.paths["generated grid (DRR | G(ct))"] = str(g["grid"])


def _train_items(cxr_store: Path) -> int:
    """Finished, labelled items of the CXR store's train part (the largest CXR batch that fits)."""
    from xpgan.model.data import CXRDataset

    return max(1, len(CXRDataset(cxr_store, part="train")))


def _head(text: str, n: int = 5) -> str:
    """The first lines of an inspect summary (counts), and the line naming the sheet."""
    lines = text.splitlines()
    keep = lines[:n] + [ln for ln in lines[n:] if ln.startswith("sheet:")]
    return "\n".join(keep)


def _most_severe_item(ct_store: Path) -> int:
    """Index of a done item with the highest severity (a visibly positive study), else 0."""
    from xpgan.pipeline.schema import open_store

    g = open_store(ct_store)
    import numpy as np

    done = np.asarray(g["done"][:], bool)
    sev = np.where(done, np.asarray(g["severity"][:]), -99)
    return int(np.argmax(sev)) if done.any() else 0
