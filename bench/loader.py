"""Loader throughput: samples/s of the training streams (shuffled, shard-aware) of a CT and a CXR store."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from xpgan.errors import XPGANError
from xpgan.model.data import BatchStream, CTDataset, CXRDataset


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


def bench_loader(*, ct: Optional[str] = None, cxr: Optional[str] = None, batch_size: int = 8,
                 num_workers: int = 2, batches: int = 20, seed: int = 0) -> list[LoaderBench]:
    """Time `batches` batches from each given store (CT: volume + DRR as in mode xpgan; CXR: train part)."""
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
