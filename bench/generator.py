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


def bench_generator(*, preset: str = "tiny", ct_shape=(32, 64, 64), img_res: int = 64, batch: int = 8,
                    cxr_batch: int = 16, repeats: int = 5, device: str = "cpu", log=print) -> dict:
    import torch

    from xpgan.model.beam import example_beam
    from xpgan.model.losses import PHASES_FOR_MODE, XPGANLoss
    from xpgan.model.networks import G_ARCHS, Discriminator, Generator, build_classifier, net_config_for

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
    for arch in G_ARCHS:
        torch.manual_seed(0)
        cfg = net_config_for(preset, ct_shape, img_res, g_arch=arch)
        G, D, C = Generator(cfg).to(dev), Discriminator(cfg).to(dev), build_classifier(cfg).to(dev)
        opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in (("G", G), ("D", D), ("C", C))}
        setups[arch] = (G, XPGANLoss(G, D, C, mode="xpgan", r1_interval=1), opts)

    def g_only(arch):
        G = setups[arch][0]
        G.zero_grad(set_to_none=True)
        G(batch_data["ct"], batch_data["beam"]).mean().backward()

    def step(arch):
        _, loss, opts = setups[arch]
        for phase in PHASES_FOR_MODE["xpgan"]:
            opt = opts["D" if phase == "Dreg" else phase]
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients(phase, batch_data)
            opt.step()

    def timed(fn, arch):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(arch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    times = {(what, arch): [] for what in ("g", "step") for arch in G_ARCHS}
    for arch in G_ARCHS:                           # warm-up
        g_only(arch)
        step(arch)
    for _ in range(repeats):
        for arch in G_ARCHS:
            times[("g", arch)].append(timed(g_only, arch))
            times[("step", arch)].append(timed(step, arch))
    med = {f"{what}_{arch}_s": statistics.median(v) for (what, arch), v in times.items()}
    out = {"preset": preset, "ct_shape": list(ct_shape), "img_res": img_res, "batch": batch, "cxr_batch": cxr_batch,
           "threads": torch.get_num_threads(), "device": str(dev), **med,
           "g_ratio_projected_over_vector": med["g_projected_s"] / med["g_vector_s"],
           "step_ratio_projected_over_vector": med["step_projected_s"] / med["step_vector_s"]}
    log(f"generator bench ({preset}, CT {'x'.join(map(str, ct_shape))} -> {img_res} px, {batch} CT + {cxr_batch} "
        f"CXR per step, {out['threads']} thread(s), {dev}; median of {repeats}):")
    for arch in G_ARCHS:
        log(f"  {arch:9s}  G fwd+bwd {med[f'g_{arch}_s']:.3f} s   whole xpgan step {med[f'step_{arch}_s']:.3f} s")
    log(f"  projected / vector: G {out['g_ratio_projected_over_vector']:.2f}x, "
        f"step {out['step_ratio_projected_over_vector']:.2f}x")
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
