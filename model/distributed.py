"""torchrun-aware helpers: rank/world size with single-process fallbacks; only rank 0 writes.

The GAN phases run G, D and C several times per step with `requires_grad` toggled per phase, which
DistributedDataParallel's reducer does not support well (it fixes the set of trainable parameters at
wrap time and expects one forward per backward). So, as StyleGAN2-ADA does, we keep plain modules
and average each phase's gradients across ranks with `all_reduce_grads` before its optimizer step;
parameters and buffers start identical (`broadcast_module`), and BatchNorm buffers are re-broadcast
from rank 0 after every step (`broadcast_buffers`, what DDP does before each forward).
"""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Join the process group torchrun described in the environment (no-op without WORLD_SIZE > 1)."""
    if is_initialized() or int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def resolve_device(choice: str) -> torch.device:
    """auto|cpu|cuda -> torch.device; under torchrun on GPUs each rank takes cuda:LOCAL_RANK."""
    from xpgan.errors import XPGANError
    from xpgan.model.config import DEVICES

    if choice not in DEVICES:
        raise XPGANError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise XPGANError("--device cuda: no CUDA device is available")
    return torch.device("cuda", local_rank() % torch.cuda.device_count())


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank src's parameters and buffers to every rank."""
    if not is_initialized():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    if not is_initialized():
        return
    with torch.no_grad():
        for b in module.buffers():
            dist.broadcast(b.data, src=src)


def all_reduce_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """Average .grad over ranks (one flat all-reduce; params without grad are skipped)."""
    if not is_initialized() or world_size() == 1:
        return
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of scalar stats over ranks (for logging)."""
    if not is_initialized() or world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if flag is True on some rank (for a coordinated stop)."""
    if not is_initialized() or world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
