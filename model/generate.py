"""G_ema's X-ray for each finished CT item, as PNGs, plus a grid beside the stored DRRs."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from xpgan.errors import XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.data import CTDataset, ct_store_info, open_store, read_strings

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(study_id: str, index: int) -> str:
    stem = _SAFE.sub("_", study_id).strip("._")[:80]
    return f"{index:06d}_{stem}.png" if stem else f"{index:06d}.png"


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@torch.no_grad()
def generate(checkpoint: str | Path, ct_store: str | Path, out_dir: str | Path, *, limit: Optional[int] = None,
             device: str = "auto", batch_size: int = 8, grid_items: int = 16, noise_mode: str = "const",
             allow_incomplete: bool = False) -> dict:
    """Write `out_dir/<index>_<study_id>.png` (G_ema(ct), [0, 1] -> 0..255 greyscale) for the finished CT
    items (the first `limit` of them), and `out_dir/grid.png`: rows of [stored DRR | G(ct)]. Returns
    {"images": [...paths], "grid": path}. Study ids carry no PHI (docs/design.md). The store is refused
    while prep writes it or when its last prep run did not finish, unless `allow_incomplete`."""
    from PIL import Image

    from xpgan.model.checkpoint import networks_from_checkpoint
    from xpgan.model.distributed import resolve_device

    if limit is not None and limit < 1:
        raise XPGANError(f"--limit must be >= 1, got {limit}")
    dev = resolve_device(device)
    state = ckpt_io.load(checkpoint, map_location="cpu")
    G = networks_from_checkpoint(state, ("G_ema",), dev)["G_ema"]
    net = state["net"]
    info = ct_store_info(ct_store, allow_incomplete=allow_incomplete)
    if tuple(info.ct_shape) != tuple(net["ct_shape"]):
        raise XPGANError(f"{ct_store}: volumes are {info.ct_shape} but the generator was trained on "
                         f"{tuple(net['ct_shape'])}")
    ds = CTDataset(ct_store, hu_window=net["hu_window"], labelled_only=False, limit=limit)
    if len(ds) == 0:
        raise XPGANError(f"{ct_store}: no finished items")
    study_ids = read_strings(open_store(ct_store, "ct")["study_id"], ct_store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, drrs, fakes = [], [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        fake = G(batch["ct"].to(dev).float(), noise_mode=noise_mode).float().cpu().numpy()   # [N, 1, R, R]
        for j, idx in enumerate(batch["index"].tolist()):
            path = out / _safe_name(study_ids[idx], idx)
            Image.fromarray(_to_uint8(fake[j, 0])).save(path)
            images.append(str(path))
            if len(fakes) < grid_items:
                fakes.append(fake[j, 0])
                drrs.append(batch["drr"][j, 0].numpy())
    grid = np.concatenate([np.concatenate([d, f], axis=1) for d, f in zip(drrs, fakes)], axis=0)
    grid_path = out / "grid.png"
    Image.fromarray(_to_uint8(grid)).save(grid_path)
    return {"images": images, "grid": str(grid_path)}
