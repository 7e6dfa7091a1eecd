"""Device check of posed DRRs and --drr-aug on a GPU (also runs on the CPU with --cpu-only, for CI).

    python bench/pose_gpu_check.py [--cpu-only] [--shape 64 256 256] [--size 256] [--batch 8] [--poses 64]

1. agreement: posed cone and parallel views (yaw/pitch/roll/offset, yaw 90) rendered by backend cuda
   against the CPU kernel on a synthetic chest: max |difference| of line integrals, relative to the max;
2. render_drr_poses: 2 volumes x --poses posed views in one launch, views/s (after a warm-up);
3. finish_on_device, as training on CUDA runs it: a batch of --batch samples (drawn by AugmentedCT with
   render_in_workers=False from a one-item store), ms per batch for mode drr and mode xpgan.
Prints one line per figure; exit code 1 when the backends disagree (relative difference > 1e-4).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _timed(fn, repeats: int = 5) -> float:
    fn()  # warm-up (compiles, first upload)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-only", action="store_true", help="CPU backend and device (a plumbing check)")
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("D", "H", "W"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--poses", type=int, default=64)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from xpgan.drr import ConeGeometry, ParallelGeometry, pose_grid, render_drr_poses, render_drr_views
    from xpgan.model.augment import AugmentedCT, finish_on_device
    from xpgan.model.data import BatchStream, CTDataset

    sys.path.insert(0, str(Path(__file__).parent))
    from drr_aug_bench import write_store

    backend = "cpu" if args.cpu_only else "cuda"
    device = torch.device("cpu" if args.cpu_only else "cuda")
    shape, size = tuple(args.shape), args.size
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "ct.zarr"
        write_store(store, shape, size)
        ds = CTDataset(store)
        hu = np.asarray(ds._a("volume")[0])
        spacing = np.asarray(ds._a("spacing")[0], np.float64)
        views = [ConeGeometry(size=size, yaw_deg=7.0, pitch_deg=-5.0, roll_deg=3.0, offset_mm=(5.0, -3.0, 8.0)),
                 ConeGeometry(size=size, yaw_deg=90.0), ParallelGeometry(size=size, yaw_deg=-20.0, pitch_deg=10.0),
                 ConeGeometry(size=size, view="ap", sid_mm=1000.0, sdd_mm=1200.0, yaw_deg=-8.0)]
        want = render_drr_views(hu, spacing, views, backend="cpu", output="line_integral")
        got = np.asarray(render_drr_views(hu, spacing, views, backend=backend, output="line_integral"))
        rel = float(np.abs(got - want).max() / want.max())
        ok &= rel <= 1e-4
        verdict = "ok" if rel <= 1e-4 else "FAIL"
        print(f"agreement {backend} vs cpu, 4 posed views: max |diff| / max = {rel:.2e} ({verdict})")

        side = max(1, int(round(args.poses ** 0.5)))
        grid = pose_grid(ConeGeometry(size=size), yaw_deg=np.linspace(-8, 8, side), pitch_deg=np.linspace(-8, 8, side))
        vols = np.stack([hu, hu[:, :, ::-1].copy()])
        sec = _timed(lambda: render_drr_poses(vols, spacing, grid, backend=backend, output="line_integral"))
        print(f"render_drr_poses: 2 volumes x {len(grid)} poses, {size}x{size}: {2 * len(grid) / sec:,.0f} views/s "
              f"({1000 * sec:.1f} ms per launch, volumes from the host)")

        for mode in ("drr", "xpgan"):
            aug = AugmentedCT(CTDataset(store, with_volume=mode == "xpgan"), train_mode=mode, aug="pose", seed=0,
                              render_in_workers=False)
            stream = BatchStream(aug, batch_size=1, seed=0)
            raw = [next(stream) for _ in range(args.batch)]
            stream.close()
            batch = {k: torch.cat([r[k] for r in raw]) for k in raw[0]}

            def step():
                out = finish_on_device(dict(batch), aug, device, backend=backend)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return out

            sec = _timed(step, repeats=3)
            print(f"finish_on_device mode {mode:5s}: batch of {args.batch}, {shape} -> {size}x{size}: "
                  f"{1000 * sec:.1f} ms per batch ({1000 * sec / args.batch:.1f} ms per sample)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
