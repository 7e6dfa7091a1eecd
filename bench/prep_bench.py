"""Benchmark `xpgan prep drr` against reading the same archive (read + gunzip only).

    python bench/prep_bench.py [--n 24] [--shape 40 512 512] [--out-shape 64 256 256] [--workers 2] [--archive DIR]

The same as `xpgan bench prep`; the logic and the meaning of each figure are in xpgan.pipeline.bench_prep.
Figures, not a test: compare the CPU-time ratio on a shared machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from xpgan.pipeline.bench_prep import bench_prep, default_archive

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--shape", type=int, nargs=3, default=(40, 512, 512), metavar=("D", "H", "W"))
    ap.add_argument("--out-shape", type=int, nargs=3, default=(64, 256, 256), metavar=("D", "H", "W"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", type=int, default=3, help="volumes timed stage by stage in one process")
    ap.add_argument("--archive", type=Path, default=default_archive())
    args = ap.parse_args(argv)
    res = bench_prep(n=args.n, shape=args.shape, out_shape=args.out_shape, workers=args.workers,
                     archive=args.archive, stages=args.stages)
    print("\n".join(res.lines()))
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
