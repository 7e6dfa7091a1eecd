"""The generator-follows-its-CT test (tests/model/test_generator_follows_ct.py) over several torch seeds:
how far a healthy G clears the test's thresholds, and how much the outcome depends on the seed.

    python scripts/follows_seeds.py --seeds 0 1 2 3 [--spatial-path-alone] [--steps 300]

Prints, per seed, the held-out figures the test judges: own/other L1 (threshold < 0.7), identification
(>= 0.5) and variation over the images' (>= 0.75).
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

from xpgan.model.gmetrics import identification, matched_and_other_l1, variation


def _test_module():
    path = Path(__file__).resolve().parent.parent / "tests" / "model" / "test_generator_follows_ct.py"
    spec = importlib.util.spec_from_file_location("follows_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--spatial-path-alone", action="store_true", help="without the DRR estimate")
    a = ap.parse_args(argv)
    t = _test_module()
    torch.set_num_threads(1)
    ct, img = t.toy_studies(32, seed=99)
    for seed in a.seeds:
        G = t.train_l1("projected", a.steps, not a.spatial_path_alone, seed=seed)
        with torch.no_grad():
            fake = G(ct, t.toy_beam(ct.shape[0]), noise_mode="const").flatten(1)
        target = img.flatten(1)
        own, other = matched_and_other_l1(fake, target)
        print(f"seed {seed}: own/other L1 {own / other:.3f}, identification {identification(fake, target):.3f}, "
              f"variation {variation(fake) / variation(target):.3f}", flush=True)


if __name__ == "__main__":
    main()
