"""The CT side of a training step, chosen once from (mode, drr_aug, device).

    mode baseline                       no CT source
    drr_aug none                        the stored DRRs (and in mode xpgan the volumes and their beam)
    drr_aug pose | pose+intensity       posed DRRs (model/augment.py): rendered in the loader's workers on the
                                        CPU, or on the GPU from the workers' volumes when the device is CUDA
                                        and the DRR GPU backend is usable

`CTSource` owns its stream and the part of the checkpoint that makes a resume exact (the stream position
and, for posed DRRs, the augmentation's RNG key and next draw), so the trainer never branches on these.
"""
from __future__ import annotations

from typing import Optional

import torch

from xpgan.model.config import TrainConfig
from xpgan.model.data import BatchStream, CTDataset, to_device


class CTSource:
    def __init__(self, cfg: TrainConfig, hu_window, device: torch.device, *, rank: int = 0, world_size: int = 1,
                 needs_beam: bool = False):
        # mode xpgan also learns G/D from CTs of unknown label (-1; the loss skips them in CE)
        data = CTDataset(cfg.ct, hu_window=hu_window, with_volume=cfg.mode == "xpgan",
                         labelled_only=cfg.mode == "drr")
        if needs_beam:
            data.check_beams()
        self.posed = cfg.drr_aug != "none"
        if self.posed:
            from xpgan.model.augment import AugmentedCT

            data = AugmentedCT(data, train_mode=cfg.mode, aug=cfg.drr_aug, seed=cfg.seed, rank=rank,
                               render_in_workers=not _drr_on_gpu(device))
        self.stream = BatchStream(data, batch_size=cfg.batch_size, seed=cfg.seed + 1, rank=rank,
                                  world_size=world_size, num_workers=cfg.num_workers,
                                  pin_memory=device.type == "cuda", name=str(cfg.ct))
        self.drr_title = "posed DRR" if self.posed else "DRR"   # the DRR column of the sample sheets

    def next_batch(self, device: torch.device) -> dict:
        """The next CT batch on `device` ("drr", "ct_label", and in mode xpgan "ct" and "beam"), with
        "ct_index" (store positions, on the CPU) for the sample sheets' study ids."""
        ct = next(self.stream)
        index = ct.get("index")
        if "hu" in ct:   # posed DRRs rendered here, on the GPU
            from xpgan.model.augment import finish_on_device

            ct = finish_on_device(ct, self.stream.dataset, device)
        out = to_device(ct, device)
        if torch.is_tensor(index):
            out["ct_index"] = index
        return out

    def state(self) -> dict:
        """Checkpoint entries: {"stream": position} and, for posed DRRs, {"augment": RNG key and next draw}."""
        out = {"stream": self.stream.state_dict()}
        if self.posed:
            from xpgan.model.augment import checkpoint_state

            out["augment"] = checkpoint_state(self.stream)
        return out

    def load(self, stream_state: dict, augment_state: Optional[dict]) -> None:
        """Continue from a checkpoint's entries; a posed source refuses a checkpoint of another augmentation."""
        self.stream.load_state_dict(stream_state)
        if self.posed:
            from xpgan.model.augment import check_checkpoint_state

            check_checkpoint_state(augment_state, self.stream)

    def close(self) -> None:
        self.stream.close()


def ct_source_for(cfg: TrainConfig, hu_window, device: torch.device, *, rank: int = 0, world_size: int = 1,
                  needs_beam: bool = False) -> Optional[CTSource]:
    """The run's CT source, or None in mode baseline; `needs_beam` (a projected generator) refuses a store
    without DRR geometry before training starts."""
    if cfg.mode not in ("xpgan", "drr"):
        return None
    return CTSource(cfg, hu_window, device, rank=rank, world_size=world_size, needs_beam=needs_beam)


def _drr_on_gpu(device: torch.device) -> bool:
    from xpgan.drr import cuda_available

    return device.type == "cuda" and cuda_available()
