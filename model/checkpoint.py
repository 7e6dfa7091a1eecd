"""Checkpoints as plain state_dicts, written atomically (temp file in the same folder + os.replace).

A checkpoint holds: "config" (TrainConfig as a dict), "net" (NetConfig as a dict), "models"
{"G", "D", "C", "G_ema"} state_dicts, "optimizers", "schedulers", "scalers" (GradScaler per phase),
"step", "streams" (data positions), "rng" (python, numpy, torch CPU and CUDA states) and "version".
It contains tensors, numbers, strings, lists and dicts only, so it loads with `weights_only=True`.
"""
from __future__ import annotations

import errno
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xpgan.errors import InputError, Resumable, XPGANError

CHECKPOINT_VERSION = 1
# What every checkpoint of this program holds (key: type), and the network fields its readers use.
REQUIRED_KEYS = {"config": dict, "net": dict, "models": dict, "step": int}
REQUIRED_NET_KEYS = ("ct_shape", "img_res", "hu_window")
NOT_A_CHECKPOINT = "not a checkpoint of this program"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (or its checkpoints/ folder): its newest checkpoint."""
    p = Path(path)
    if p.is_dir():
        found = list_checkpoints(p.parent if p.name == "checkpoints" else p)
        if not found:
            raise InputError(p, "a folder without checkpoints (give a run folder or a checkpoints/step-*.pt file)")
        return found[-1]
    return p


def resolve_resume(resume: str, run_dir: str | Path) -> Path:
    """`latest` -> newest checkpoint of run_dir; a run directory -> its newest; else the file itself."""
    if resume == "latest" or Path(resume).is_dir():
        where = run_dir if resume == "latest" else resume
        found = list_checkpoints(where)
        if not found:
            raise InputError(checkpoint_dir(where), "no checkpoint to resume from")
        return found[-1]
    p = Path(resume)
    if not p.is_file():
        raise InputError(p, "no such checkpoint")
    return p


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """Write to `.NAME.tmp-PID` beside it, fsync, then rename over `path` (never a half-written file). A full
    disk (ENOSPC, a quota: EDQUOT) is errors.Resumable naming the folder; the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        if not _disk_full(exc):
            raise
        raise Resumable(f"{path.parent}: the disk is full ({os.strerror(errno.ENOSPC)}); the checkpoint "
                        f"{path.name} was not written") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _disk_full(exc: BaseException) -> bool:
    """An OSError of a full disk or quota, also when torch wraps it in a RuntimeError."""
    for e in (exc, exc.__cause__, exc.__context__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("No space left" in text or "Disk quota" in text)


_TEMP = re.compile(r"^\.step-\d{8}\.pt\.tmp-(\d+)$")


def remove_stale_temps(run_dir: str | Path) -> list[str]:
    """Remove the temp files of checkpoint saves whose process is gone (killed while saving); one line each."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    lines = []
    for p in sorted(folder.iterdir()):
        m = _TEMP.match(p.name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue
        lines.append(f"removed {p} ({size / 2**20:.1f} MiB), left by a checkpoint save that was killed")
    return lines


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process saves nothing yet: a file of this pid is left by an earlier process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch's messages run over many lines; what matters is that the file is not ours
        raise InputError(path, f"{NOT_A_CHECKPOINT} (not a PyTorch file of tensors, numbers and strings)") from None
    if not isinstance(state, dict):
        raise InputError(path, f"{NOT_A_CHECKPOINT} (holds a {type(state).__name__}, not a dict)")
    missing = [k for k, kind in REQUIRED_KEYS.items() if not isinstance(state.get(k), kind)]
    missing += [f"net.{k}" for k in REQUIRED_NET_KEYS if not missing and k not in state["net"]]
    if missing:
        raise InputError(path, f"{NOT_A_CHECKPOINT} (missing or wrong: {', '.join(missing)})")
    return state


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0: keep all)."""
    if keep <= 0:
        return
    for p in list_checkpoints(run_dir)[:-keep]:
        p.unlink(missing_ok=True)


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over a state_dict's keys and raw tensor bytes (to compare weights across ranks/runs)."""
    import hashlib

    h = hashlib.sha256()
    for key, t in state_dict.items():
        h.update(key.encode())
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def net_config_from_dict(d: dict):
    from xpgan.model.networks import NetConfig

    return NetConfig.from_dict(dict(d))


def networks_from_checkpoint(state: dict, names: tuple[str, ...], device: torch.device) -> dict[str, torch.nn.Module]:
    """Rebuild the named networks (architecture from the checkpoint's config) and load their weights.
    "G_ema" is built as a Generator."""
    from xpgan.model.networks import Generator, build_classifier

    net_cfg = net_config_from_dict(state["net"])
    out = {}
    for name in names:
        if name not in state["models"]:
            mode = state["config"].get("mode")
            raise XPGANError(f"this checkpoint (mode {mode}) has no {name} network")
        if name in ("G", "G_ema"):
            m = Generator(net_cfg)
        elif name == "D":
            from xpgan.model.networks import Discriminator
            m = Discriminator(net_cfg)
        else:
            m = build_classifier(net_cfg, None)
        try:
            m.load_state_dict(state["models"][name])
        except (RuntimeError, TypeError, AttributeError) as exc:  # torch lists every mismatched tensor
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise XPGANError(f"{NOT_A_CHECKPOINT}: its {name} weights do not fit the network it describes "
                             f"({first.rstrip(':')})") from None
        out[name] = m.to(device).eval().requires_grad_(False)
    return out
