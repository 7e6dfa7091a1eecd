"""CPU cost per augmented training sample (`xpgan train --drr-aug`), as a DataLoader worker pays it.

    python -m xpgan.bench.drr_aug_bench [--shape 64 256 256] [--size 256] [--n 8] [--threads 1]

Writes a one-item CT store (a synthetic chest, int16 HU, cone PA geometry) to a temp folder and times
`AugmentedCT.__getitem__` (store read included) against the plain `CTDataset` item, for
mode drr (pose; pose+intensity) and mode xpgan (pose: resample the volume + render).  --threads is the
numba thread count (workers use 1).  Prints ms/sample: median and best of --n draws after one warm-up (on a
shared machine the best is the cost with a core to itself).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def write_store(path: Path, shape, size: int) -> None:
    """A one-study CT store (a CT-2 chest phantom and its DRR), written through the store writer."""
    import numpy as np

    from xpgan.drr import ConeGeometry, render_drr
    from xpgan.pipeline import schema
    from xpgan.pipeline import store as st
    from xpgan.pipeline.synth.anatomy import chest_phantom

    ph = chest_phantom(0, shape=shape, severity=2)
    hu = np.clip(np.rint(ph.hu), -1024, 3071).astype(np.int16)
    geometry = ConeGeometry(size=size)
    arrays = schema.item_arrays("ct", {"D": shape[0], "H": shape[1], "W": shape[2], "S": size})
    g = st.create_or_open(path, kind="ct", arrays=arrays, n_items=1, identity={"bench": "drr_aug"}, overwrite=True,
                          attrs={"shape": list(shape), "drr_size": size, "geometry": geometry.to_dict()},
                          items_per_shard=1)
    st.write_items(g, {0: {"volume": hu, "drr": render_drr(hu, ph.spacing, geometry, backend="cpu"), "label": 1,
                           "severity": 2, "study_id": "phantom_0000",
                           "spacing": np.asarray(ph.spacing, np.float32)}})
    st.set_complete(g, True)


def timed_ms(fn, n: int) -> str:
    fn(0)  # warm-up: JIT load, first read
    times = []
    for k in range(1, n + 1):
        t0 = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t0)
    return f"{1000.0 * statistics.median(times):7.1f} ms/sample median, {1000.0 * min(times):7.1f} best"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("D", "H", "W"))
    ap.add_argument("--size", type=int, default=256, help="DRR side, pixels")
    ap.add_argument("--n", type=int, default=8, help="timed samples per case")
    ap.add_argument("--threads", type=int, default=1, help="numba threads (DataLoader workers use 1)")
    args = ap.parse_args(argv)

    import numba

    from xpgan.model.augment import AugmentedCT
    from xpgan.model.data import CTDataset

    numba.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "ct.zarr"
        write_store(store, tuple(args.shape), args.size)
        plain = CTDataset(store)
        print(f"volume {tuple(args.shape)} int16, DRR {args.size}x{args.size}, numba threads {args.threads}, "
              f"{args.n} samples")
        print(f"  stored sample, no augmentation (mode xpgan item): {timed_ms(lambda k: plain[0], args.n)}")
        for mode, aug in (("drr", "pose"), ("drr", "pose+intensity"), ("xpgan", "pose")):
            ds = AugmentedCT(CTDataset(store, with_volume=mode == "xpgan"), train_mode=mode, aug=aug, seed=0)
            print(f"  mode {mode:5s} --drr-aug {aug:15s}:     {timed_ms(lambda k: ds[(0, k)], args.n)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
