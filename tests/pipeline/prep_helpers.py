"""Helpers of the prep interrupt/resume tests (a module next to the tests, like markers.py)."""
from __future__ import annotations

import numpy as np

from xpgan.pipeline.synth.writers import write_nifti


def noise_ct_archive(root, n: int, seed: int):
    """`n` NIfTI studies of Gaussian-noise HU (10x30x28 voxels, 4x1x1 mm) in CT-0..CT-4 folders under
    root/studies: a small archive whose items take measurable time to prep. Returns root."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        vol = rng.normal(-300, 300, size=(10, 30, 28)).astype(np.float32)
        write_nifti(root / "studies" / f"CT-{i % 5}" / f"study_{i:04d}.nii.gz", vol, (4.0, 1.0, 1.0))
    return root


def slowed_cli(module: str, attr: str, seconds: float) -> str:
    """A `python -c` script running the real `xpgan` CLI (its arguments are the script's) with the item
    function `module.attr` slowed by `seconds` and printing `item` after each item, so that a signal lands
    while items of an unfinished shard are done."""
    return f"""
import sys, time
import {module} as p
real = p.{attr}
def slow(*args, **kwargs):
    time.sleep({seconds})
    out = real(*args, **kwargs)
    print("item", flush=True)
    return out
p.{attr} = slow
sys.argv = ["xpgan", *sys.argv[1:]]
from xpgan.cli import main
main()
"""
