"""`xpgan bench gpu` (and bench/gpu_check.sh): the GPU path end to end, in one command, on one machine.

Sections run one after the other, each in its own process under a time limit, so a failing or hung
section records a one-line error and the next one still runs.  Results go to one JSON file (plus a
log) in the output folder, and a summary is printed.

    env       versions, the GPU, and the packages the check needs (stops with a one-line reason if missing)
    agree     CUDA vs CPU on a chest phantom (cone PA int16, cone AP float32, parallel): max abs difference of
              the line integrals, numpy and torch-CUDA inputs; first call vs later calls and compile counts,
              and a replay of a stride-0 per-call path (a `vol[None]` upload to a lazy dispatcher)
    rates     DRR/s end to end: batch 1, 256 and 1024 views of one volume, 256 volumes from host int16 and
              from GPU tensors, and the kernel alone; the upload strategy each size chose and this machine's
              transfer rates (pinned/pageable DMA, cuMemHostRegister, threaded memcpy, first touch)
    prep      synthetic archives (pipeline.synth), `prep drr --backend cuda` and `prep cxr`
    train     the paper preset in bf16, modes xpgan / drr / baseline, a few steps each: samples/s (of the last
              steps), peak GPU memory, finite losses, and where the wall time went (setup, first batch, first
              step per phase, steady step, checkpoint: bench/gpu_check_train.py)
    evalgen   `eval` and `generate` on the xpgan checkpoint
    torchrun  `torchrun --standalone --nproc_per_node=<GPUs>` with NCCL, a few steps
    loader    `bench loader` samples/s for 0..12 workers against what the GPU consumes (xpgan bf16)
    train_amp as train, in fp16 (GradScaler) and fp32

Focused runs: `--sections env,prep,rates,train` with `--train-modes xpgan,baseline --amp fp32` (which runs
of a train section; train_amp defaults to fp16,fp32), `--cudnn-benchmark off` or `on,off` (cuDNN
autotuning, XPGAN_CUDNN_BENCHMARK) and `--limits train=200` (seconds per section).
`--cpu-only` skips the GPU parts and runs the rest at tiny sizes on the CPU (a CI test).
Needs: numpy < 2.5 with numba-cuda (numba-cuda 0.30 calls np.row_stack), torch, zarr, numcodecs, dask,
distributed, nibabel, pydicom, isal.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from xpgan.bench import gpu_check_probes as probes

SECTIONS = ("env", "agree", "rates", "prep", "train", "evalgen", "torchrun", "loader", "train_amp")
GPU_ONLY = ("agree", "rates", "torchrun", "train_amp")
BUDGET_S = {"env": 45, "agree": 90, "rates": 75, "prep": 90, "train": 150, "evalgen": 45, "torchrun": 75,
            "loader": 60, "train_amp": 150}
REQUIRED = ("numpy", "torch", "numba", "zarr", "numcodecs", "dask", "distributed", "nibabel", "pydicom", "isal",
            "typer", "PIL", "skimage", "tqdm")


def _sizes(tiny: bool) -> dict:
    if tiny:
        return {"shape": (8, 32, 32), "det": 32, "views": (4, 8), "volumes": 4, "kernel_batches": (4,),
                "ct_shape": (10, 48, 48), "n_ct": 3, "n_cxr": 10, "store_shape": (8, 32, 32), "img": 32,
                "preset": "tiny", "steps": 2, "batch": 2, "repeats": 2}
    return {"shape": (64, 256, 256), "det": 256, "views": (256, 1024), "volumes": 256, "kernel_batches": (64, 512),
            "ct_shape": (40, 256, 256), "n_ct": 20, "n_cxr": 64, "store_shape": (64, 256, 256), "img": 256,
            "preset": "paper", "steps": 8, "batch": 16, "repeats": 5}


def _timed(fn, repeats: int):
    """(first call s, best later call s, median later call s, last result)."""
    import numpy as np

    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return first, min(times), float(np.median(times)), out


def _torch_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ sections
def section_env(args, work: Path) -> dict:
    import importlib.util
    import platform

    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"missing Python packages: {', '.join(missing)} (carry them as wheels)")
    import numba
    import numpy as np
    import torch

    out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpus": torch.cuda.device_count()}
    try:
        from importlib.metadata import version

        out["numba_cuda"] = version("numba-cuda")
    except Exception as exc:  # noqa: BLE001
        out["numba_cuda"] = f"unknown ({exc})"
    out["cuda_simulator"] = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if not args.cpu_only and not out["cuda_simulator"]:
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA GPU (use --cpu-only on a machine without one)")
        if tuple(int(x) for x in np.__version__.split(".")[:2]) >= (2, 5):
            raise RuntimeError(f"numpy {np.__version__} is too new for numba-cuda (np.row_stack removed in 2.5); "
                               "put numpy<2.5 first on PYTHONPATH")
        from numba import cuda

        if not cuda.is_available():
            raise RuntimeError("numba.cuda finds no usable GPU/driver/NVVM")
        out["gpu"] = torch.cuda.get_device_name(0)
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
        out["numba_device"] = cuda.get_current_device().name.decode() if isinstance(
            cuda.get_current_device().name, bytes) else str(cuda.get_current_device().name)
    return out


def _phantom(shape, dtype="int16", seed=0):
    from xpgan.pipeline.synth.simple import simple_chest

    return simple_chest(shape, seed=seed).astype(dtype)


def section_agree(args, work: Path) -> dict:
    import numpy as np

    from xpgan.drr import ConeGeometry, ParallelGeometry, render_drr, siddon_cuda

    sz = _sizes(args.tiny)
    sp = (5.0, 1.4, 1.4)
    cases = {"cone_pa_int16": (_phantom(sz["shape"]), ConeGeometry(view="pa", size=sz["det"])),
             "cone_ap_float32": (_phantom(sz["shape"], "float32"), ConeGeometry(view="ap", size=sz["det"])),
             "parallel_int16": (_phantom(sz["shape"]), ParallelGeometry(size=sz["det"]))}
    out: dict = {"overloads_before": siddon_cuda.kernel_overload_counts()}
    for name, (vol, g) in cases.items():
        want = render_drr(vol, sp, g, backend="cpu", output="line_integral")
        first, best, _, got = _timed(lambda: render_drr(vol, sp, g, backend="cuda", output="line_integral"), 3)
        out[name] = {"max_abs_diff": float(np.abs(got - want).max()), "max_value": float(want.max()),
                     "first_call_s": first, "later_call_s": best,
                     "overloads": siddon_cuda.kernel_overload_counts()}
    if _torch_cuda_ok(args):
        import torch

        vol, g = cases["cone_pa_int16"]
        want = render_drr(vol, sp, g, backend="cpu", output="line_integral")
        t = torch.from_numpy(vol).cuda()
        got = render_drr(t, sp, g, backend="cuda", output="line_integral")
        img = render_drr(t, sp, g, backend="cuda", output="image")
        out["torch_cone_pa_int16"] = {
            "returns": f"{type(got).__name__} on {got.device}",
            "max_abs_diff": float(np.abs(got.cpu().numpy() - want).max()),
            "image_max_abs_diff": float(np.abs(img.cpu().numpy() - render_drr(vol, sp, g, backend="cpu")).max())}
    out["overloads_after"] = siddon_cuda.kernel_overload_counts()
    out["signatures"] = siddon_cuda.kernel_signatures()
    vol, g = cases["cone_pa_int16"]
    later = out["cone_pa_int16"]["later_call_s"]
    if later > 0.2:  # the per-call cost is still there: where does it go?
        out["profile_of_a_later_call"] = probes.profile_top(lambda: render_drr(vol, sp, g, backend="cuda"))
    small = np.ascontiguousarray(vol[: max(1, vol.shape[0] // 4)])  # the stride-0 cost grows with the voxel count
    out["old_path_replay"] = probes.old_path_replay(small, g, sp)
    out["old_path_replay_control"] = probes.old_path_replay(small, g, sp, broadcast=False)
    return out


def _torch_cuda_ok(args) -> bool:
    if args.cpu_only:
        return False
    import torch

    return torch.cuda.is_available()


def section_rates(args, work: Path) -> dict:
    import numpy as np

    from xpgan.bench.drr import cuda_kernel_only_rate
    from xpgan.drr import ConeGeometry, render_drr, render_drr_batch, render_drr_views

    sz = _sizes(args.tiny)
    sp = (5.0, 1.4, 1.4)
    g = ConeGeometry(view="pa", size=sz["det"])
    vol = _phantom(sz["shape"])
    out: dict = {}

    def rate(name, n, fn):
        first, best, med, _ = _timed(fn, sz["repeats"])
        out[name] = {"drrs": n, "first_call_s": first, "best_call_s": best, "median_call_s": med,
                     "drrs_per_s": n / best}

    rate("batch1", 1, lambda: render_drr(vol, sp, g, backend="cuda", output="line_integral"))
    for nv in sz["views"]:
        rate(f"views{nv}", nv,
             lambda nv=nv: render_drr_views(vol, sp, [g] * nv, backend="cuda", output="line_integral"))
    nb = sz["volumes"]
    rng = np.random.default_rng(1)
    vols = np.empty((nb,) + vol.shape, np.int16)
    for i in range(nb):  # different volumes: the phantom with a per-item offset
        np.add(vol, np.int16(rng.integers(-20, 20)), out=vols[i])
    rate(f"volumes{nb}_host_int16", nb, lambda: render_drr_batch(vols, sp, g, backend="cuda", output="line_integral"))
    from xpgan.drr import siddon_cuda

    st = siddon_cuda._state()
    out["upload_strategies"] = {f"{1 << (k - 1) >> 20}+ MiB": v for k, v in st.upload_times.items()}
    out["upload_last"] = st.last_upload
    out["result_pool_mib"] = [round(b.nbytes / 2 ** 20) for b in st.out_pool]
    try:
        out["transfer_probe"] = probes.transfer_probe(vols)
    except Exception as exc:  # noqa: BLE001 - a probe, not a result
        out["transfer_probe"] = {"error": _one_line(exc)}
    if _torch_cuda_ok(args):
        import torch

        tv = torch.from_numpy(vols).cuda()

        def gpu_batch():
            r = render_drr_batch(tv, sp, g, backend="cuda", output="line_integral")
            torch.cuda.synchronize()
            return r
        rate(f"volumes{nb}_gpu_tensors", nb, gpu_batch)
        del tv
    for b in sz["kernel_batches"]:
        out[f"kernel_only_batch{b}"] = {"drrs_per_s": cuda_kernel_only_rate(vol, sp, g, b, sz["repeats"])}
    out["overloads"] = siddon_cuda.kernel_overload_counts()
    return out


def _stores(work: Path) -> dict:
    return {"ct": work / "stores" / "ct.zarr", "cxr": work / "stores" / "cxr.zarr", "runs": work / "runs"}


def section_prep(args, work: Path) -> dict:
    from xpgan.drr import ConeGeometry
    from xpgan.pipeline.ct.prep_drr import prep_drr
    from xpgan.pipeline.cxr.prep_cxr import prep_cxr
    from xpgan.pipeline.schema import open_store
    from xpgan.pipeline.synth.archives import ARCHIVE_SPACING_RANGE_MM, write_cxr_archive, write_mosmed_archive

    sz = _sizes(args.tiny)
    st = _stores(work)
    nproc = 1 if args.tiny else min(8, os.cpu_count() or 1)
    t = time.perf_counter()
    write_mosmed_archive(work / "archives" / "mosmed", sz["n_ct"], seed=0, shape=sz["ct_shape"], workers=nproc)
    write_cxr_archive(work / "archives" / "cxr", sz["n_cxr"], seed=0, size=max(64, sz["img"]), workers=nproc)
    out: dict = {"archives_s": time.perf_counter() - t}
    backend = "cpu" if args.cpu_only else "cuda"
    t = time.perf_counter()
    s = prep_drr(str(work / "archives" / "mosmed"), str(st["ct"]), shape=sz["store_shape"],
                 geometry=ConeGeometry(view="pa", size=sz["img"]), backend=backend, workers=0 if args.tiny else 2,
                 progress=False, overwrite=True, salt_file=work / "salt",
                 spacing_range_mm=ARCHIVE_SPACING_RANGE_MM)  # phantom slices are coarse
    out["prep_drr"] = {"backend": backend, "seconds": time.perf_counter() - t, "summary": s.text().splitlines()[:3],
                       "failures": len(s.failures),
                       "store_backend_attr": open_store(st["ct"]).attrs["xpgan"].get("backend")}
    if s.failures:
        raise RuntimeError(f"prep drr --backend {backend}: {len(s.failures)} failures, first: {s.failures[0]}")
    t = time.perf_counter()
    c = prep_cxr([str(work / "archives" / "cxr")], str(st["cxr"]), size=sz["img"], workers=0, progress=False,
                 overwrite=True)
    out["prep_cxr"] = {"seconds": time.perf_counter() - t, "failures": len(c.failures)}
    return out


DEFAULT_AMP = {"train": ("bf16",), "train_amp": ("fp16", "fp32")}


def _csv(text, allowed, what: str) -> tuple:
    items = tuple(x for x in (text or "").split(",") if x)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise SystemExit(f"error: unknown {what} {bad}; allowed: {', '.join(allowed)}")
    return items


def _train_plan(args, section: str) -> list:
    """(mode, amp, cudnn_benchmark) of each run of a train section (--train-modes, --amp, --cudnn-benchmark)."""
    if args.cpu_only:
        return [(m, "fp32", True) for m in (args.train_modes or ("xpgan",))]
    from xpgan.model.config import MODES

    modes = args.train_modes or MODES
    amps = args.amp or DEFAULT_AMP[section]
    benches = [b == "on" for b in (args.cudnn_benchmark or ("on",))]
    return [(m, a, b) for b in benches for a in amps for m in modes]   # --cudnn-benchmark off,on: all "off" first


def section_train(args, work: Path) -> dict:
    return _train_runs(args, work, _train_plan(args, "train"), "train")


def section_train_amp(args, work: Path) -> dict:
    return _train_runs(args, work, _train_plan(args, "train_amp"), "train_amp")


def _train_runs(args, work: Path, runs, section: str) -> dict:
    from xpgan.bench.gpu_check_train import train_one

    sz = _sizes(args.tiny)
    out: dict = {}
    for mode, amp, bench in runs:
        tag = f"{mode}-{amp}" + ("" if bench else "-nobench")
        try:
            out[tag] = train_one(work, _stores(work), mode, amp, sz, "cpu" if args.cpu_only else "cuda", sz["steps"],
                                 cudnn_benchmark=bench)
        except Exception as exc:  # noqa: BLE001 - one failing run must not hide the others
            out[tag] = {"error": _one_line(exc)}
        _write_partial(args, section, out)
    return out


def section_evalgen(args, work: Path) -> dict:
    from xpgan.model.evaluate import evaluate
    from xpgan.model.generate import generate

    st = _stores(work)
    ckpts = sorted((st["runs"]).glob("xpgan-*/checkpoints/*.pt"))
    if not ckpts:
        raise RuntimeError("no checkpoint of an xpgan training run (run the train section first)")
    device = "cpu" if args.cpu_only else "cuda"
    t = time.perf_counter()
    m = evaluate(ckpts[-1], st["cxr"], split="test", out_dir=work / "eval", device=device)
    t_eval = time.perf_counter() - t
    t = time.perf_counter()
    g = generate(ckpts[-1], st["ct"], work / "generated", device=device, limit=8)
    return {"eval_s": t_eval, "auroc": m.get("auroc"), "items": m.get("counts", {}).get("items"),
            "generate_s": time.perf_counter() - t, "images": len(g["images"])}


def section_loader(args, work: Path) -> dict:
    from xpgan.bench.loader import bench_loader

    sz = _sizes(args.tiny)
    st = _stores(work)
    done = {**_read_partial(args, "train_amp"), **_read_partial(args, "train")}
    run = next((v for k, v in done.items() if k.startswith("xpgan-") and "error" not in v), {})
    consume = (run.get("compute_only") or run).get("ct_samples_per_s")
    out: dict = {"gpu_ct_samples_per_s": consume, "workers": {}}
    for w in ((0, 2) if args.tiny else (0, 2, 4, 8, 12)):
        r = bench_loader(ct=str(st["ct"]), batch_size=sz["batch"], num_workers=w, batches=3 if args.tiny else 12)[0]
        out["workers"][str(w)] = r.samples_per_s
        if consume and r.samples_per_s >= 2 * consume:
            out["workers_for_2x"] = w
            break
    if consume and "workers_for_2x" not in out:
        out["workers_for_2x"] = None
    return out


def section_torchrun(args, work: Path) -> dict:
    import torch

    st = _stores(work)
    n = torch.cuda.device_count()
    run = st["runs"] / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "xpgan.cli",
           "train", "--ct", str(st["ct"]), "--cxr", str(st["cxr"]), "--mode", "drr", "--preset", "paper",
           "--max-steps", "4", "--batch-size", "8", "--num-workers", "2", "--log-every", "2", "--sample-every", "0",
           "--no-progress", "--out", str(run)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S["torchrun"] - 10)
    if p.returncode != 0:
        raise RuntimeError(f"torchrun rc {p.returncode}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    out = {"gpus": n, "seconds": time.perf_counter() - t, "stdout_tail": p.stdout.strip()[-300:],
           "process_group": "nccl" if n > 1 else "none: world size 1 (xpgan creates no process group for one "
                                                 "process; NCCL needs one GPU per rank)"}
    out["nccl_smoke"] = _nccl_smoke()
    return out


def _nccl_smoke() -> dict:
    """NCCL on this GPU: a one-rank process group and an all_reduce."""
    import torch
    import torch.distributed as tdist

    t = time.perf_counter()
    tdist.init_process_group("nccl", init_method="tcp://127.0.0.1:29517", rank=0, world_size=1)
    try:
        x = torch.arange(4, dtype=torch.float32, device="cuda")
        tdist.all_reduce(x)
        torch.cuda.synchronize()
        ok = x.tolist() == [0.0, 1.0, 2.0, 3.0]
    finally:
        tdist.destroy_process_group()
    return {"all_reduce_ok": ok, "nccl_version": ".".join(map(str, torch.cuda.nccl.version())),
            "seconds": time.perf_counter() - t}


# -------------------------------------------------------------------------------------------- driver
def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:400]


def _part_path(args, name: str) -> Path:
    return Path(args.work) / f"section-{name}.json"


def _write_partial(args, name: str, data: dict) -> None:
    p = _part_path(args, name)
    p.write_text(json.dumps(data, indent=1, default=str))


def _read_partial(args, name: str) -> dict:
    p = _part_path(args, name)
    return json.loads(p.read_text()) if p.exists() else {}


def run_section(args) -> int:
    """Child process: run one section, write its JSON (a failure as {"error": one line})."""
    fn = globals()[f"section_{args.section}"]
    work = Path(args.work)
    try:
        data = fn(args, work)
        rc = 0
    except Exception as exc:  # noqa: BLE001 - recorded, the driver goes on
        traceback.print_exc()
        data = {"error": _one_line(exc), **_read_partial(args, args.section)}
        rc = 1
    _write_partial(args, args.section, data)
    return rc


def _rounded(x):
    if isinstance(x, float):
        return round(x, 2)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _summary_lines(res: dict) -> list[str]:
    lines = []
    for name, data in res["sections"].items():
        if not isinstance(data, dict):
            continue
        head = f"[{name}] {data.get('status', '?')} in {data.get('seconds', 0):.0f} s"
        if "error" in data:
            head += f": {data['error']}"
        lines.append(head)
        r = data.get("result", {})
        if name == "agree":
            for k, v in r.items():
                if isinstance(v, dict) and "max_abs_diff" in v:
                    lines.append(f"  {k}: max |cuda - cpu| = {v['max_abs_diff']:.3g}"
                                 + (f", first call {v['first_call_s']:.2f} s, later {v['later_call_s'] * 1e3:.1f} ms"
                                    if "first_call_s" in v else ""))
            for key in ("old_path_replay", "old_path_replay_control"):
                for c in r.get(key, {}).get("calls", []):
                    lines.append(f"  {key}: upload {c['upload_s']:.3f} s, prefix {c['prefix_s']:.3f} s, "
                                 f"render {c['render_s']:.3f} s, [specialisations, compiles] {c['counts']}")
        elif name == "rates":
            for k, v in r.items():
                if isinstance(v, dict) and "drrs_per_s" in v:
                    median = f" (median call {v['median_call_s'] * 1e3:.1f} ms)" if "median_call_s" in v else ""
                    lines.append(f"  {k}: {v['drrs_per_s']:.0f} DRR/s" + median)
            lines.append(f"  uploads (best s per strategy): {r.get('upload_strategies')}")
            probe = r.get("transfer_probe") or {}
            lines.append("  transfer probe: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                         for k, v in probe.items()))
        elif name in ("train", "train_amp"):
            for k, v in r.items():
                if isinstance(v, dict):
                    lines.append(f"  {k}: " + (v["error"] if "error" in v else
                                 f"{v['samples_per_s']:.1f} samples/s with the loader"
                                 + (f", {v['compute_only']['samples_per_s']:.1f} compute only"
                                    if v.get("compute_only") else "")
                                 + f", peak {v['peak_gpu_gib']} GiB, loss finite {v['loss_finite']}"))
                    tm = v.get("timing") if isinstance(v, dict) else None
                    if tm:
                        lines.append(f"    setup {tm['setup_s']:.1f} s, first batch {tm['first_batch_s']:.1f} s, "
                                     f"first step {tm['first_step_s']:.1f} s {_rounded(tm['phase_s'][:1])}, "
                                     f"steady step {tm['steady_step_s']:.2f} s, checkpoint {tm['checkpoint_s']:.1f} s, "
                                     f"wall {v.get('wall_s', 0):.0f} s, cudnn.benchmark {v.get('cudnn_benchmark')}")
        elif name == "loader":
            lines.append(f"  {r}")
    return lines


def _seconds(text: str) -> float:
    """--max-seconds: a number within xpgan.bounds.SECONDS (argparse prints the refusal)."""
    from xpgan import bounds as B
    from xpgan.errors import XPGANError

    try:
        return B.SECONDS.check("--max-seconds", float(text))
    except (ValueError, XPGANError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def drive(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="xpgan bench gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for gpu_check.json + log")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    ap.add_argument("--cpu-only", action="store_true", help="skip GPU parts; tiny sizes on the CPU")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (implied by --cpu-only)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    ap.add_argument("--max-seconds", type=_seconds, default=450.0, help="hard cap on the whole check, s")
    ap.add_argument("--train-modes", default="", help="train sections: comma-separated modes (xpgan,drr,baseline)")
    ap.add_argument("--amp", default="", help="train sections: comma-separated precisions (bf16,fp16,fp32); "
                                              "default bf16 for train, fp16,fp32 for train_amp")
    ap.add_argument("--cudnn-benchmark", default="", help="train sections: on, off or on,off (default on)")
    ap.add_argument("--limits", default="", help="per-section time limits, e.g. train=240,rates=60")
    ap.add_argument("--section", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.tiny = args.tiny or args.cpu_only
    raw = {"train_modes": args.train_modes, "amp": args.amp, "cudnn_benchmark": args.cudnn_benchmark}
    from xpgan.model.config import MODES

    args.train_modes = _csv(args.train_modes, MODES, "train modes")
    args.amp = _csv(args.amp, ("bf16", "fp16", "fp32"), "amp precisions")
    args.cudnn_benchmark = _csv(args.cudnn_benchmark, ("on", "off"), "cudnn-benchmark values")
    limits, explicit = dict(BUDGET_S), set()
    for item in (x for x in args.limits.split(",") if x):
        name, _, sec = item.partition("=")
        if name not in SECTIONS or not sec.replace(".", "", 1).isdigit():
            print(f"error: bad --limits item {item!r}; use NAME=SECONDS with NAME in {', '.join(SECTIONS)}",
                  file=sys.stderr)
            return 2
        limits[name] = float(sec)
        explicit.add(name)
    if args.section:
        return run_section(args)
    import tempfile

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="xpgan_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    args.work = str(work)
    wanted = [s for s in args.sections.split(",") if s]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"error: unknown sections {unknown}; allowed: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    res = {"cpu_only": args.cpu_only, "tiny": args.tiny, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "sections": {}}
    t0 = time.perf_counter()
    log = open(out / "gpu_check.log", "w")
    rc = 0
    for name in wanted:
        if args.cpu_only and name in GPU_ONLY:
            res["sections"][name] = {"status": "skipped (--cpu-only)"}
            continue
        left = args.max_seconds - (time.perf_counter() - t0)
        if left < 15:
            res["sections"][name] = {"status": "skipped (time cap)"}
            continue
        limit = min(limits[name] * (0.5 if args.tiny and name not in explicit else 1.0), left)
        cmd = [sys.executable, "-m", "xpgan.bench.gpu_check", "--section", name, "--work", str(work)]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in raw.items() if v]
        cmd += ["--cpu-only"] if args.cpu_only else []
        cmd += ["--tiny"] if args.tiny else []
        print(f"[{name}] running (limit {limit:.0f} s) ...", flush=True)
        log.write(f"===== {name}\n")
        log.flush()
        ts = time.perf_counter()
        env = dict(os.environ)
        if args.cpu_only:  # tiny CPU work: one thread each avoids oversubscribing a small shared machine
            env.setdefault("OMP_NUM_THREADS", "1")
        try:
            p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=limit, env=env)
            status = "ok" if p.returncode == 0 else f"failed (rc {p.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit:.0f} s"
        data = _read_partial(args, name)
        entry = {"status": status, "seconds": time.perf_counter() - ts, "result": data}
        if "error" in data:
            entry["error"] = data.pop("error")
        elif status.startswith("timed out"):
            entry["error"] = status
        res["sections"][name] = entry
        if status != "ok":
            rc = 1
        if name == "env" and status != "ok":
            print(f"gpu check stopped: {entry.get('error', status)}", file=sys.stderr)
            res["stopped"] = entry.get("error", status)
            break
        (out / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
    res["seconds"] = time.perf_counter() - t0
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
    log.close()
    for line in _summary_lines(res):
        print(line)
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.log'} ({res['seconds']:.0f} s)")
    return rc


if __name__ == "__main__":
    sys.exit(drive())
