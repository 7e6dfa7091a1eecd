"""What a training run leaves in its folder as it goes: config.json and net_config.json, the metrics of every
logged step (log.jsonl and TensorBoard under tb/), and sample sheets (samples/step-*.png: CT mid-slice, DRR,
G_ema(CT), real CXR per row). The main process writes; every rank takes part in the reductions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from xpgan.model import distributed as dist
from xpgan.model.config import TrainConfig, write_config


def image_grid(columns: dict[str, torch.Tensor], row_labels: list[str], max_rows: int = 8) -> np.ndarray:
    """Titled columns of [N, 1, R, R] images in [0, 1] -> a uint8 sheet with one labelled row per item."""
    from xpgan.pipeline.picture import labelled_grid

    cols = [c[:max_rows].detach().float().cpu()[:, 0].numpy() for c in columns.values()]   # [n, R, R]
    n = min(c.shape[0] for c in cols)
    return labelled_grid([[c[i] for c in cols] for i in range(n)], col_titles=list(columns),
                         row_labels=row_labels[:n])


def save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def drop_later_steps(log: Path, step: int) -> None:
    """log.jsonl without the records of steps after `step` (and lines that are not whole records, as a kill
    mid-write leaves); rewritten atomically, untouched when there is nothing to drop."""
    if not log.is_file():
        return
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = []
    for line in lines:
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if len(kept) == len(lines):
        return
    tmp = log.with_name(log.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    tmp.replace(log)


class RunRecord:
    """The run folder's records for one run (`parts`: the model.train.Run being trained)."""

    def __init__(self, cfg: TrainConfig, parts, device: torch.device, main: bool):
        self.cfg, self.parts, self.device, self.main = cfg, parts, device, main
        self.run_dir = Path(cfg.out)
        self.writer = None
        self._study_ids = None  # CT study ids, read for the first sample sheet

    def open(self, start_step: int = 0) -> None:
        """The run folder with its config.json and net_config.json (main process), and the TensorBoard writer.
        A run resumed at `start_step` drops the records of later steps (logged after its checkpoint by the
        run that was stopped), from log.jsonl and TensorBoard alike, so each step is logged once."""
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.cfg, self.run_dir)
        (self.run_dir / "net_config.json").write_text(json.dumps(self.parts.net_cfg.to_dict(), indent=2) + "\n")
        if start_step:
            drop_later_steps(self.run_dir / "log.jsonl", start_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboard is a dependency; keep training if it is broken
            self.writer = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def log(self, step: int, stats: dict[str, float], sec_per_step: float) -> None:
        """The step's loss terms (mean over ranks), learning rates and seconds per step."""
        stats = dist.all_reduce_mean(stats, self.device)
        if not self.main:
            return
        lrs = {f"lr/{k}": o.param_groups[0]["lr"] for k, o in self.parts.opts.items()}
        record = {"step": step, **stats, **lrs, "sec_per_step": sec_per_step}
        with open(self.run_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in {**stats, **lrs}.items():
                self.writer.add_scalar(k, v, step)
            self.writer.add_scalar("perf/sec_per_step", sec_per_step, step)

    def sample(self, step: int, batch: dict) -> None:
        """The sample sheet of `batch` at `step`."""
        grid = self._sample_grid(batch)
        if not self.main:
            return
        save_png(grid, self.run_dir / "samples" / f"step-{step:08d}.png")
        if self.writer is not None:
            self.writer.add_image("samples/ct_drr_gct_cxr", grid[None], step)

    def _sample_grid(self, batch: dict) -> np.ndarray:
        parts, cols = self.parts, {}
        with torch.no_grad():
            if "ct" in batch:
                ct = batch["ct"]                                          # [N, 1, D, H, W]
                mid = ct[:, :, ct.shape[2] // 2]                          # [N, 1, H, W] axial mid-slice
                r = parts.net_cfg.img_res
                mid = torch.nn.functional.interpolate(mid.float(), size=(r, r), mode="bilinear",
                                                      align_corners=False)
                cols["CT mid-slice"] = (mid + 1.0) / 2.0
            if "drr" in batch:
                cols[parts.ct_source.drr_title] = batch["drr"]
            if parts.G_ema is not None and "ct" in batch:
                beam = batch.get("beam")
                cols["G_ema(CT)"] = parts.G_ema(batch["ct"][:8], None if beam is None else beam[:8],
                                                noise_mode="const")
            cols["real CXR"] = batch["cxr"]
        return image_grid(cols, self._sample_labels(batch))

    def _sample_labels(self, batch: dict) -> list[str]:
        """Each sample row: the CT study id (when the row has a CT item) and the label of the (unrelated) real CXR."""
        cxr = ["CXR COVID+" if int(v) else "CXR COVID-" for v in batch["cxr_label"].tolist()]
        if "ct_index" not in batch:
            return cxr
        if self._study_ids is None:
            from xpgan.model.data import read_strings
            from xpgan.pipeline.schema import open_store

            self._study_ids = read_strings(open_store(self.cfg.ct, "ct")["study_id"], self.cfg.ct)
        studies = [str(self._study_ids[i]) for i in batch["ct_index"].tolist()]
        return [f"CT {s}, {c}" for s, c in zip(studies, cxr)]  # the CXR of a row is not of that study
