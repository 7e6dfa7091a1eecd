"""Loader throughput: samples/s of the training streams (shuffled, shard-aware) of a CT and a CXR store."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from xpgan import bounds as B
from xpgan.errors import XPGANError
from xpgan.options import option


@dataclass(kw_only=True)
class BenchLoaderConfig:
    """`bench loader`: the stores and the loader settings."""

    ct: Optional[Path] = option(None, "CT store.")
    cxr: Optional[Path] = option(None, "CXR store.")
    batch_size: int = option(8, "Items per batch.", bound=B.BATCH)
    num_workers: int = option(2, "Loader worker processes.", bound=B.LOADER_WORKERS)
    batches: int = option(20, "Timed batches (after one warm-up batch).", bound=B.REPEATS)


@dataclass
class LoaderBench:
    name: str
    items: int            # items in the stream's dataset
    batch_size: int
    num_workers: int
    batches: int          # timed batches (after one warm-up batch)
    seconds: float
    samples_per_s: float
    mb_per_s: float       # decoded array bytes per second

    def line(self) -> str:
        return (f"{self.name}: {self.samples_per_s:.1f} samples/s, {self.mb_per_s:.1f} MB/s decoded "
                f"({self.batches} batches of {self.batch_size}, {self.num_workers} workers, "
                f"{self.items} items, {self.seconds:.2f} s)")


def _bench(name, dataset, *, batch_size, num_workers, batches, seed) -> LoaderBench:
    from xpgan.model.data import BatchStream

    stream = BatchStream(dataset, batch_size=batch_size, num_workers=num_workers, seed=seed, name=name)
    try:
        first = next(stream)                                    # worker start-up is not timed
        nbytes = sum(v.numel() * v.element_size() for k, v in first.items() if k != "index")
        t0 = time.perf_counter()
        for _ in range(batches):
            next(stream)
        dt = time.perf_counter() - t0
    finally:
        stream.close()
    return LoaderBench(name=name, items=len(dataset), batch_size=batch_size, num_workers=num_workers,
                       batches=batches, seconds=dt, samples_per_s=batches * batch_size / dt,
                       mb_per_s=batches * nbytes / dt / 1e6)


def bench_loader(*, ct: Optional[str] = None, cxr: Optional[str] = None, batch_size: int = BenchLoaderConfig.batch_size,
                 num_workers: int = BenchLoaderConfig.num_workers, batches: int = BenchLoaderConfig.batches,
                 seed: int = 0) -> list[LoaderBench]:
    """Time `batches` batches from each given store (CT: volume + DRR as in mode xpgan; CXR: train part)."""
    from xpgan.model.data import CTDataset, CXRDataset

    if ct is None and cxr is None:
        raise XPGANError("give --ct and/or --cxr")
    if batch_size < 1 or batches < 1 or num_workers < 0:
        raise XPGANError("--batch-size and --batches must be >= 1, --num-workers >= 0")
    out = []
    if ct is not None:
        out.append(_bench(f"CT {ct}", CTDataset(ct), batch_size=batch_size, num_workers=num_workers,
                          batches=batches, seed=seed))
    if cxr is not None:
        out.append(_bench(f"CXR {cxr}", CXRDataset(cxr, part="train_all"), batch_size=batch_size,
                          num_workers=num_workers, batches=batches, seed=seed))
    return out


def bench_loader_from(cfg: BenchLoaderConfig) -> list[LoaderBench]:
    """The `bench loader` command: bench_loader with its configuration."""
    return bench_loader(ct=str(cfg.ct) if cfg.ct else None, cxr=str(cfg.cxr) if cfg.cxr else None,
                        batch_size=cfg.batch_size, num_workers=cfg.num_workers, batches=cfg.batches)
