"""Realism of each xpgan run of a study against the validation part of train (never the test split): the
figures a choice between generator variants may read.

    python scripts/realism_on_validation.py STUDY_DIR --modes xpgan xpgan:plain [--seed 0]

Prints, per run, `greport.realism_report` of G_ema's images of the held-out CT studies against the
validation radiographs, beside the DRRs'.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from xpgan.model import checkpoint as ckpt_io
from xpgan.model import greport
from xpgan.model.checkpoint import networks_from_checkpoint
from xpgan.study.runs import run_name


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--modes", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    stores = a.study / "cohort" / "stores"
    dev = torch.device("cpu")
    for mode in a.modes:
        result = json.loads((a.study / "runs" / run_name(mode, a.seed) / "result.json").read_text())
        state = ckpt_io.load(result["checkpoint"], map_location="cpu")
        G = networks_from_checkpoint(state, ("G_ema",), dev)["G_ema"]
        imgs = greport.generate_images(G, stores / "ct_holdout.zarr", state["net"]["hu_window"], dev)
        real = greport.real_images(stores / "cxr.zarr", "val", float(result["config"]["val_fraction"]))
        print(f"{mode} seed {a.seed}: {greport.realism_line(greport.realism_report(imgs, real))}", flush=True)


if __name__ == "__main__":
    main()
