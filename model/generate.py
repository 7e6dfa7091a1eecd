"""G_ema's X-ray for each finished CT item, as PNGs, plus a grid beside the stored DRRs."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from xpgan import bounds as B
from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model import greport
from xpgan.model.config import GenerateConfig
from xpgan.model.data import CTDataset, ct_store_info, read_strings
from xpgan.model.evaluate import jsonable
from xpgan.pipeline.schema import open_store

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
OWN_OUTPUT = re.compile(r"^(\d{6}(_[A-Za-z0-9._-]*)?|grid)\.png$")  # the names generate writes
GRID_TITLES = ("stored DRR", "G_ema(CT)")
REPORT = "g_report.json"


def row_label(label: int, grade: int) -> str:
    """A study's label and grade as grid.png's rows say them: `COVID-19 CT-3`, `negative CT-0`, `label unknown`."""
    from xpgan.pipeline.schema import LABEL_NAMES, LABEL_POSITIVE

    name = "COVID-19" if label == LABEL_POSITIVE else LABEL_NAMES.get(label, "unknown")
    name = "label unknown" if name == "unknown" else name
    return f"{name} CT-{grade}" if grade >= 0 else name


def _safe_name(study_id: str, index: int) -> str:
    stem = _SAFE.sub("_", study_id).strip("._")[:80]
    return f"{index:06d}_{stem}.png" if stem else f"{index:06d}.png"


def clear_own_outputs(out: Path) -> int:
    """Delete the PNGs an earlier generate wrote into `out` (its names only); return how many."""
    if not out.is_dir():
        return 0
    own = [p for p in out.iterdir() if p.is_file() and OWN_OUTPUT.match(p.name)]
    for p in own:
        p.unlink()
    return len(own)


@torch.no_grad()
def generate(checkpoint: str | Path, ct_store: str | Path, out_dir: str | Path, *, limit: Optional[int] = None,
             device: str = GenerateConfig.device, batch_size: int = 8, grid_items: int = 16, noise_mode: str = "const",
             allow_incomplete: bool = False, cxr_store: Optional[str | Path] = None) -> dict:
    """Write `out_dir/<index>_<study_id>.png` (G_ema(ct), [0, 1] -> 0..255 greyscale) for the finished CT
    items (the first `limit` of them), and `out_dir/grid.png`: rows of [stored DRR | G(ct)] under column
    titles, each row labelled with its study id, label and grade. The PNGs of an earlier generate in out_dir are
    deleted first, so the folder holds this run's images only (other files are left alone). Returns
    {"images": [...paths], "grid": path, "report": the generator report, "report_path"}:
    `out_dir/g_report.json` holds how well G follows each study (`xpgan.model.greport.store_report`, against
    these studies' DRRs and labels; the checkpoint's classifier gives the evidence figures) and, with
    `cxr_store`, how far G's images and the DRRs are from that store's real test radiographs (its "realism",
    `greport.realism_report`). Study ids carry
    no PHI (docs/design.md). The store is refused while prep writes it or when its last prep run did not
    finish, unless `allow_incomplete`."""
    from PIL import Image

    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.distributed import resolve_device
    from xpgan.pipeline.picture import labelled_grid, to_uint8

    if limit is not None:
        B.COUNT.check("--limit", limit)
    dev = resolve_device(device)
    state = ckpt_io.load(ckpt_io.resolve_checkpoint(checkpoint), map_location="cpu")
    G = networks_from_checkpoint(state, ("G_ema",), dev)["G_ema"]
    net = state["net"]
    info = ct_store_info(ct_store, allow_incomplete=allow_incomplete)
    if tuple(info.ct_shape) != tuple(net["ct_shape"]):
        raise XPGANError(f"{ct_store}: volumes are {info.ct_shape} but the generator was trained on "
                         f"{tuple(net['ct_shape'])}")
    ds = CTDataset(ct_store, hu_window=net["hu_window"], labelled_only=False, limit=limit)
    if len(ds) == 0:
        raise XPGANError(f"{ct_store}: no finished items")
    group = open_store(ct_store, "ct")
    study_ids = read_strings(group["study_id"], ct_store)
    ct_labels = np.asarray(group["label"][:])
    grades = np.asarray(group["severity"][:]) if "severity" in group else np.full(ct_labels.shape, -1)
    out = Path(out_dir)
    clear_own_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    imgs = greport.generate_images(G, ct_store, net["hu_window"], dev, limit=limit, batch_size=batch_size,
                                   noise_mode=noise_mode)
    fakes = imgs.fake.numpy()                                                             # [n, 1, R, R]
    images, rows, labels = [], [], []
    for k, idx in enumerate(imgs.index.tolist()):
        path = out / _safe_name(study_ids[idx], idx)
        Image.fromarray(to_uint8(fakes[k, 0])).save(path)
        images.append(str(path))
        if len(rows) < grid_items:
            rows.append([imgs.drr[k, 0].numpy(), fakes[k, 0]])
            labels.append(f"{study_ids[idx]}\n{row_label(int(ct_labels[idx]), int(grades[idx]))}")
    grid_path = out / "grid.png"
    Image.fromarray(labelled_grid(rows, col_titles=GRID_TITLES, row_labels=labels)).save(grid_path)
    C = networks_from_checkpoint(state, ("C",), dev)["C"] if "C" in state["models"] else None
    report = greport.store_report(imgs, C, dev)
    if cxr_store is not None:
        real = greport.real_images(cxr_store, "test", float(state["config"].get("val_fraction", 0.1)))
        report["realism"] = greport.realism_report(imgs, real)
    report_path = out / REPORT
    report_path.write_text(json.dumps(jsonable(report), indent=1) + "\n")
    return {"images": images, "grid": str(grid_path), "report": report, "report_path": str(report_path)}


def generate_from(cfg: GenerateConfig) -> str:
    """The `generate` command: generate() with its configuration; returns the lines it prints."""
    r = generate(cfg.checkpoint, cfg.ct, cfg.out, limit=cfg.limit, device=cfg.device,
                 allow_incomplete=cfg.allow_incomplete, cxr_store=cfg.cxr)
    realism = f"{greport.realism_line(r['report']['realism'])}\n" if "realism" in r["report"] else ""
    return (f"{greport.summary_line(r['report'])} ({r['report_path']})\n{realism}"
            f"wrote {len(r['images'])} images and {r['grid']}")
