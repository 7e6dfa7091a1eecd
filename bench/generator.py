"""Benchmark of the generator architectures side by side: CPU (or GPU) seconds of G's forward + backward and
of a whole mode-xpgan training step (phases G, D, Dreg, C of `XPGANLoss`, with the optimizers' steps), for
each `--g-arch`, interleaved so that both see the same machine load. Prints medians and the ratio to the
global-vector G.

    python -m xpgan.bench.generator [--preset tiny] [--ct 32 64 64] [--img 64] [--batch 8] [--cxr-batch 16]
"""
from __future__ import annotations

import argparse
import statistics
import time

VARIANTS = {"projected": {"g_arch": "projected"},                       # the default: radiograph head
            "projected, no head": {"g_arch": "projected", "radiograph_head": False},
            "vector": {"g_arch": "vector"}}


def bench_generator(*, preset: str = "tiny", ct_shape=(32, 64, 64), img_res: int = 64, batch: int = 8,
                    cxr_batch: int = 16, repeats: int = 5, device: str = "cpu", log=print) -> dict:
    """Median seconds of G's forward + backward and of each training phase per generator variant, and of mode
    drr's classifier step, all interleaved; a whole step counts phase Dreg once per r1_interval steps, as
    training does."""
    import torch

    from xpgan.model.beam import example_beam
    from xpgan.model.config import TrainConfig
    from xpgan.model.losses import PHASES_FOR_MODE, XPGANLoss
    from xpgan.model.networks import Discriminator, Generator, build_classifier, net_config_for

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    batch_data = {"ct": torch.rand(batch, 1, *ct_shape, generator=g) * 2 - 1,
                  "beam": torch.from_numpy(example_beam(ct_shape, img_res, batch)),
                  "drr": torch.rand(batch, 1, img_res, img_res, generator=g),
                  "ct_label": torch.randint(0, 2, (batch,), generator=g),
                  "cxr": torch.rand(cxr_batch, 1, img_res, img_res, generator=g),
                  "cxr_label": torch.randint(0, 2, (cxr_batch,), generator=g)}
    batch_data = {k: v.to(dev) for k, v in batch_data.items()}
    setups = {}
    for name, over in VARIANTS.items():
        torch.manual_seed(0)
        cfg = net_config_for(preset, ct_shape, img_res, **over)
        G, D, C = Generator(cfg).to(dev), Discriminator(cfg).to(dev), build_classifier(cfg).to(dev)
        opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in (("G", G), ("D", D), ("C", C))}
        setups[name] = (G, XPGANLoss(G, D, C, mode="xpgan", r1_interval=1), opts, PHASES_FOR_MODE["xpgan"])
    torch.manual_seed(0)
    C = build_classifier(net_config_for(preset, ct_shape, img_res)).to(dev)
    setups["mode drr"] = (None, XPGANLoss(None, None, C, mode="drr"), {"C": torch.optim.Adam(C.parameters())},
                          PHASES_FOR_MODE["drr"])

    def g_only(name):
        G = setups[name][0]
        G.zero_grad(set_to_none=True)
        G(batch_data["ct"], batch_data["beam"]).mean().backward()

    def phase_fn(name, phase):
        def run(_):
            _, loss, opts, _ = setups[name]
            opt = opts["D" if phase == "Dreg" else phase]
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients(phase, batch_data)
            opt.step()
        return run

    def timed(fn, name):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(name)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    jobs = [(("g", n), g_only) for n in VARIANTS] + [((ph, n), phase_fn(n, ph)) for n, st in setups.items()
                                                     for ph in st[3]]
    times = {key: [] for key, _ in jobs}
    for (_, name), fn in jobs:                     # warm-up
        fn(name)
    for _ in range(repeats):
        for key, fn in jobs:
            times[key].append(timed(fn, key[1]))
    med = {key: statistics.median(v) for key, v in times.items()}
    r1 = TrainConfig.r1_interval
    step = {n: sum(med[(ph, n)] / (r1 if ph == "Dreg" else 1) for ph in st[3]) for n, st in setups.items()}
    out = {"preset": preset, "ct_shape": list(ct_shape), "img_res": img_res, "batch": batch, "cxr_batch": cxr_batch,
           "threads": torch.get_num_threads(), "device": str(dev), "r1_interval": r1,
           "g_s": {n: med[("g", n)] for n in VARIANTS}, "step_s": step,
           "step_ratio_over_drr": {n: step[n] / step["mode drr"] for n in VARIANTS}}
    log(f"generator bench ({preset}, CT {'x'.join(map(str, ct_shape))} -> {img_res} px, {batch} CT + {cxr_batch} "
        f"CXR per step, {out['threads']} thread(s), {dev}; median of {repeats}; Dreg once per {r1} steps):")
    for n in VARIANTS:
        log(f"  {n:20s}  G fwd+bwd {med[('g', n)]:.3f} s   mode xpgan step {step[n]:.3f} s "
            f"({out['step_ratio_over_drr'][n]:.2f}x mode drr)")
    log(f"  {'mode drr':20s}  step {step['mode drr']:.3f} s")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--ct", type=int, nargs=3, default=(32, 64, 64))
    ap.add_argument("--img", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cxr-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    bench_generator(preset=a.preset, ct_shape=tuple(a.ct), img_res=a.img, batch=a.batch, cxr_batch=a.cxr_batch,
                    repeats=a.repeats, device=a.device)


if __name__ == "__main__":
    main()
