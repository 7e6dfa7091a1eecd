"""Streaming the CT and CXR Zarr stores (docs/design.md, xpgan.pipeline.schema) into training batches.

Stores are opened with the schema's `open_store`; a store whose done items lack data (a deleted shard) is
refused at open, and a chunk that fails its checksum when read is a one-line StoreDamageError naming the
store, the array and the item. `ct_store_info` / `cxr_store_info` (what train, eval and generate call
first) also refuse a store that prep is still writing or whose last prep run did not finish, unless
`allow_incomplete`.

Datasets keep only the store path and small index arrays; the Zarr group is opened lazily in whichever
process reads items (so DataLoader workers each open their own handle and datasets pickle cleanly).
Ordering is shard-aware: `BlockShuffleSampler` shuffles blocks of consecutive store items (one block =
one shard, or one chunk when the store is not sharded), then items inside small windows of blocks, so a
shuffled epoch reads a few shards at a time instead of jumping across the whole store. Every epoch's
order is a pure function of (seed, epoch), which makes resume exact without saving loader internals.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from xpgan.errors import InputError, XPGANError
from xpgan.model.beam import study_beams
from xpgan.model.transforms import HU_WINDOW, normalize_hu
from xpgan.pipeline import schema
from xpgan.pipeline.schema import open_store
from xpgan.pipeline.verify import check_done_data, check_ready

CXR_PARTS = ("train", "val", "test", "train_all")


# ---------------------------------------------------------------------------------------------- stores
def _open_checked(path, kind: str):
    """The store, refused (one line) when a done item's data is missing or damaged."""
    g = open_store(path, kind)
    check_done_data(g, path)
    return g


def _block_size(arr) -> int:
    """Items per shard (or per chunk when unsharded) along the first axis."""
    shards = getattr(arr, "shards", None)
    if shards:
        return int(shards[0])
    return int(arr.chunks[0])


@dataclass(frozen=True)
class CTStoreInfo:
    n: int                              # items in the store (done or not)
    ct_shape: tuple[int, int, int]      # (D, H, W)
    img_res: int                        # DRR side, pixels
    block: int                          # items per shard/chunk


@dataclass(frozen=True)
class CXRStoreInfo:
    n: int
    img_res: int
    block: int


def ct_store_info(path, *, allow_incomplete: bool = False) -> CTStoreInfo:
    """Sizes of a CT store checked for training: complete and not being written (unless allow_incomplete),
    every done item's data present."""
    g = _open_checked(path, "ct")
    check_ready(g, path, allow_incomplete=allow_incomplete)
    return _ct_info(g, path)


def cxr_store_info(path, *, allow_incomplete: bool = False) -> CXRStoreInfo:
    """Sizes of a CXR store, checked as ct_store_info does."""
    g = _open_checked(path, "cxr")
    check_ready(g, path, allow_incomplete=allow_incomplete)
    return _cxr_info(g, path)


def _ct_info(g, path) -> CTStoreInfo:
    vol, drr = g["volume"], g["drr"]
    if vol.ndim != 4 or drr.ndim != 3 or drr.shape[1] != drr.shape[2] or vol.shape[0] != drr.shape[0]:
        raise InputError(path, f"unexpected shapes volume {vol.shape}, drr {drr.shape} "
                               "(want [N, D, H, W] and [N, R, R])")
    return CTStoreInfo(n=int(vol.shape[0]), ct_shape=tuple(int(s) for s in vol.shape[1:]),
                       img_res=int(drr.shape[1]), block=_block_size(vol))


def _cxr_info(g, path) -> CXRStoreInfo:
    img = g["image"]
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise InputError(path, f"unexpected image shape {img.shape} (want [N, R, R])")
    return CXRStoreInfo(n=int(img.shape[0]), img_res=int(img.shape[1]), block=_block_size(img))


def read_strings(arr, path="") -> list[str]:
    """A 1-D string array as Python str, whatever string dtype the writer used."""
    return [str(v) for v in schema.read(arr, path, arr.basename).tolist()]


def _patient_is_val(patient: str, val_fraction: float) -> bool:
    """Deterministic, order-free carve of validation patients from train (same for every run/seed)."""
    h = int.from_bytes(hashlib.sha256(("xpgan-val:" + patient).encode()).digest()[:8], "big")
    return h / 2.0 ** 64 < val_fraction


# -------------------------------------------------------------------------------------------- datasets
class _LazyStoreDataset(Dataset):
    kind = ""

    def __init__(self, path):
        self.path = str(path)
        self._group = None
        self._arrays: dict = {}

    def _g(self):
        if self._group is None:
            self._group = schema.open_group(Path(self.path), "r")
        return self._group

    def _a(self, name: str):
        """Array handle, opened once per process (reopening reads its metadata from disk each time)."""
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self._g()[name]
        return arr

    def _item(self, name: str, j: int) -> np.ndarray:
        """Item j of an array; a damaged chunk is a one-line StoreDamageError (store, array, item)."""
        return schema.read(self._a(name), self.path, name, j, item=j)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_group"], state["_arrays"] = None, {}    # each process opens its own handles
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def _select(self, keep, labels, block: int, limit: int | None) -> None:
        """Use the store items where `keep` is true (the first `limit` of them); `block`: items per shard."""
        self.indices = np.flatnonzero(keep).astype(np.int64)
        if limit is not None:
            self.indices = self.indices[:limit]
        self.labels = labels[self.indices]
        self.block = block
        self.block_ids = self.indices // self.block


class CTDataset(_LazyStoreDataset):
    """Finished, labelled CT items: {"ct": [1, D, H, W] in [-1, 1], "beam": [8, 3] (the study's beam,
    model/beam.py), "drr": [1, R, R] in [0, 1], "ct_label": long, "index": store index}. `with_volume=False`
    skips the volume and its beam (mode drr); a store that records no DRR geometry gives no beam."""

    kind = "ct"

    def __init__(self, path, *, hu_window=HU_WINDOW, with_volume: bool = True,
                 labelled_only: bool = True, limit: Optional[int] = None):
        super().__init__(path)
        g = _open_checked(path, "ct")
        info = _ct_info(g, path)
        done = schema.read(g, path, "done").astype(bool)
        labels = schema.read(g, path, "label").astype(np.int64)
        keep = done & ((labels == schema.LABEL_NEGATIVE) | (labels == schema.LABEL_POSITIVE)) if labelled_only \
            else done
        self._select(keep, labels, info.block, limit)
        self.ct_shape, self.img_res = info.ct_shape, info.img_res
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self.with_volume = with_volume
        self.beams = _study_beams(g, path, self.indices, self.ct_shape) if with_volume else None

    def check_beams(self) -> None:
        """Refuse, in one line naming the store, a store without the DRR geometry the projected generator reads
        each study's beam from."""
        if self.beams is None:
            raise InputError(self.path, "the store records no DRR geometry, which the projected generator needs "
                                        "for each study's beam (stores made by xpgan prep drr have it)")

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        out = {"drr": self._item("drr", j).astype(np.float32, copy=False)[None],    # [1, R, R]
               "ct_label": int(self.labels[i]), "index": j}
        if self.with_volume:
            out["ct"] = normalize_hu(self._item("volume", j), self.hu_window)[None]  # [1, D, H, W]
            if self.beams is not None:
                out["beam"] = self.beams[i]
        return out


def _study_beams(g, path, indices: np.ndarray, ct_shape) -> Optional[np.ndarray]:
    """[n, 8, 3] beams of the selected items (their spacing, the store's unposed geometry and mu_water), or
    None for a store that records no geometry."""
    try:
        geometry, mu_water = schema.ct_render_setup(g, path, "")
    except XPGANError:
        return None
    spacing = np.asarray(schema.read(g, path, "spacing"), dtype=np.float64)
    return study_beams(geometry, ct_shape, spacing[indices], mu_water)


class CXRDataset(_LazyStoreDataset):
    """Finished, labelled CXR items of one part: "train" (split 0 minus validation patients), "val"
    (validation patients carved deterministically from split 0), "test" (split 1), "train_all" (split 0).
    `oversample_positive` k > 1 lists every positive item k times (class-balanced epochs).
    `positive_share` < 1 (part "train" only) keeps the positive items of that share of the positive patients,
    the same patients on every machine and for every seed (the first by their salted hash, which carries no
    order of the data): the scarcity sweep.
    Items: {"cxr": [1, R, R] in [0, 1], "cxr_label": long, "index": store index}."""

    kind = "cxr"

    def __init__(self, path, *, part: str = "train", val_fraction: float = 0.1, limit: Optional[int] = None,
                 oversample_positive: int = 1, positive_share: float = 1.0):
        super().__init__(path)
        if part not in CXR_PARTS:
            raise ValueError(f"part must be one of {CXR_PARTS}, got {part!r}")
        if positive_share < 1.0 and part != "train":
            raise ValueError("positive_share applies to the train part only")
        g = _open_checked(path, "cxr")
        info = _cxr_info(g, path)
        done = schema.read(g, path, "done").astype(bool)
        labels = schema.read(g, path, "label").astype(np.int64)
        split = schema.read(g, path, "split").astype(np.int64)
        keep = done & ((labels == schema.LABEL_NEGATIVE) | (labels == schema.LABEL_POSITIVE))
        if part == "test":
            keep &= split == schema.SPLIT_TEST
        else:
            keep &= split == schema.SPLIT_TRAIN
            if part in ("train", "val"):
                patients = read_strings(g["patient"], path)
                is_val = np.array([_patient_is_val(p, val_fraction) for p in patients], bool)
                keep &= is_val if part == "val" else ~is_val
                if part == "train" and positive_share < 1.0:
                    keep &= _kept_positives(patients, keep & (labels == schema.LABEL_POSITIVE), positive_share) \
                        | (labels != schema.LABEL_POSITIVE)
        self.part = part
        self._select(keep, labels, info.block, limit)
        if oversample_positive > 1:   # class balance: each positive item appears this many times
            pos = self.indices[self.labels == 1]
            self.indices = np.sort(np.concatenate([self.indices] + [pos] * (int(oversample_positive) - 1)))
            self.labels = labels[self.indices]
            self.block_ids = self.indices // self.block
        self.img_res = info.img_res

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        return {"cxr": self._item("image", j).astype(np.float32, copy=False)[None],   # [1, R, R]
                "cxr_label": int(self.labels[i]), "index": j}


def _kept_positives(patients: list[str], positive: np.ndarray, share: float) -> np.ndarray:
    """Mask of the positive items whose patient is among the first ceil(share * n) positive patients in the
    order of their (salted-hash) ids."""
    ids = sorted({patients[i] for i in np.flatnonzero(positive)})
    kept = set(ids[:int(np.ceil(share * len(ids)))])
    return positive & np.array([p in kept for p in patients], bool)


# -------------------------------------------------------------------------------------------- sampling
class BlockShuffleSampler(Sampler[int]):
    """One epoch of dataset positions, shard-aware and partitioned across ranks.

    Blocks (positions sharing a `block_id`) are shuffled, grouped into windows of `window_blocks`
    consecutive blocks, and positions are shuffled inside each window. The permutation depends only on
    (seed, epoch). Ranks take contiguous, equal slices of it (padded by wrapping around, as
    DistributedSampler does), so each rank reads its own few shards. `set_start(k)` skips this rank's
    first k positions (resume)."""

    def __init__(self, block_ids: Sequence[int], *, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, window_blocks: int = 4):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.block_ids = np.asarray(block_ids, np.int64)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        self.window_blocks = max(1, int(window_blocks))
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        self.start = int(start)

    @property
    def per_rank(self) -> int:
        return math.ceil(len(self.block_ids) / self.world_size) if len(self.block_ids) else 0

    def full_order(self, epoch: int) -> np.ndarray:
        """Every position once, in this epoch's shard-aware order (before partitioning)."""
        n = len(self.block_ids)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch])
        uniq, inverse = np.unique(self.block_ids, return_inverse=True)
        block_order = rng.permutation(len(uniq))
        rank_of_block = np.empty(len(uniq), np.int64)
        rank_of_block[block_order] = np.arange(len(uniq))
        window = rank_of_block[inverse] // self.window_blocks       # window index of each position
        tiebreak = rng.random(n)
        return np.lexsort((tiebreak, window)).astype(np.int64)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's positions for `epoch`."""
        order = self.full_order(epoch)
        per = self.per_rank
        if per * self.world_size > len(order) and len(order):
            order = np.resize(order, per * self.world_size)        # wrap around to equal shares
        return order[self.rank * per:(self.rank + 1) * per]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order(self.epoch)[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


class _EpochChain(Sampler[int]):
    """Endless positions: epochs of `sampler` truncated to whole batches, from (epoch, batch)."""

    def __init__(self, sampler: BlockShuffleSampler, batch_size: int, epoch: int, batch: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.batch = epoch, batch

    def __iter__(self) -> Iterator[int]:
        epoch, batch = self.epoch, self.batch
        while True:
            order = self.sampler.epoch_order(epoch)
            usable = len(order) - len(order) % self.batch_size
            yield from order[batch * self.batch_size:usable].tolist()
            epoch, batch = epoch + 1, 0


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """A loader worker ignores SIGINT and SIGTERM (Ctrl-C reaches every process of the job): the trainer
    finishes its step and stops the workers itself (model/train.StopOnSignal)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class BatchStream:
    """Endless batches of a dataset, one DataLoader for the whole run.

    The position is (epoch, batches consumed in that epoch), counted where batches are handed to the
    trainer (not where workers prefetch them); `state_dict()`/`load_state_dict()` save and restore it."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, pin_memory: bool = False, shuffle: bool = True,
                 name: str = "data"):
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.sampler = BlockShuffleSampler(dataset.block_ids, seed=seed, shuffle=shuffle, rank=rank,
                                           world_size=world_size)
        self.batches_per_epoch = self.sampler.per_rank // self.batch_size
        if self.batches_per_epoch < 1:
            raise XPGANError(f"{name}: {len(dataset)} usable items ({self.sampler.per_rank} per rank) is "
                             f"fewer than one batch of {self.batch_size}; lower the batch size")
        self.num_workers, self.pin_memory, self.seed = int(num_workers), bool(pin_memory), int(seed)
        self.epoch, self.batch = 0, 0
        self._it = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def _start(self) -> None:
        chain = _EpochChain(self.sampler, self.batch_size, self.epoch, self.batch)
        keyed = getattr(self.dataset, "keyed", None)
        if keyed is not None:  # samples keyed by their draw number over the run (model/augment.py)
            chain = keyed(chain, (self.epoch * self.batches_per_epoch + self.batch) * self.batch_size)
        # A private generator keeps DataLoader's base-seed draw off the global torch RNG (exact resume).
        gen = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=chain, drop_last=False,
                            num_workers=self.num_workers, pin_memory=self.pin_memory, generator=gen,
                            persistent_workers=False, prefetch_factor=2 if self.num_workers else None,
                            worker_init_fn=ignore_stop_signals if self.num_workers else None,
                            multiprocessing_context=getattr(self.dataset, "mp_context", None) if self.num_workers
                            else None)
        self._it = iter(loader)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self._start()
        batch = next(self._it)
        self.batch += 1
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        return batch

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


def to_device(batch: dict, device: torch.device) -> dict:
    """A loader batch on `device` (store indices dropped, labels as int64)."""
    out = {}
    for k, v in batch.items():
        if k == "index":
            continue
        out[k] = v.to(device, non_blocking=True)
    for k in ("ct_label", "cxr_label"):
        if k in out:
            out[k] = out[k].long()
    return out
