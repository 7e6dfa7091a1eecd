"""The trainer's public hooks: what a run reports, and `xpgan bench gpu`'s timed training run built on them
(run here on the CPU with the tiny preset: the same code path, without a GPU)."""
import math

from xpgan.bench.gpu_check_train import compute_only_rate, train_one
from xpgan.model.train import TrainHooks, train


class Recorder(TrainHooks):
    timed = True

    def __init__(self):
        self.events = []

    def on_setup(self, seconds):
        self.events.append(("setup", seconds))

    def on_batch(self, seconds):
        self.events.append(("batch", seconds))

    def on_phase(self, phase, seconds):
        self.events.append(("phase", phase, seconds))

    def on_step(self, step, seconds):
        self.events.append(("step", step, seconds))

    def on_after_step(self, seconds):
        self.events.append(("after", seconds))

    def on_checkpoint(self, path, seconds):
        self.events.append(("checkpoint", path, seconds))


def test_hooks_see_every_part_of_every_step_in_order(toy_stores, tmp_path, xpgan_config, one_thread):
    ct, cxr = toy_stores
    rec = Recorder()
    cfg = xpgan_config(ct, cxr, tmp_path / "run")
    res = train(cfg, hooks=rec)
    kinds = [e[0] for e in rec.events]
    assert kinds[0] == "setup" and kinds[-1] == "checkpoint"
    steps = [e for e in rec.events if e[0] == "step"]
    assert [e[1] for e in steps] == list(range(1, res.step + 1))
    # per step: batch wait, the xpgan phases (Dreg on its interval), the step, the scheduler/EMA update
    first = kinds[1:kinds.index("step") + 1]
    assert first[0] == "batch" and first[-1] == "step"
    assert [e[1] for e in rec.events[2:2 + 4] if e[0] == "phase"][:2] == ["G", "D"]
    assert all(e[-1] is not None and e[-1] >= 0 and math.isfinite(e[-1]) for e in rec.events if e[0] != "checkpoint")
    assert rec.events[-1][1] is not None and str(rec.events[-1][1]) == res.checkpoint


def test_untimed_hooks_get_steps_and_checkpoints_only(toy_stores, tmp_path, xpgan_config, one_thread):
    ct, cxr = toy_stores

    class Steps(TrainHooks):
        seen: list = []

        def on_step(self, step, seconds):
            self.seen.append((step, seconds))

        def on_phase(self, phase, seconds):
            raise AssertionError("an untimed run reports no phases")

    hooks = Steps()
    res = train(xpgan_config(ct, cxr, tmp_path / "run", mode="baseline"), hooks=hooks)
    assert hooks.seen == [(k, None) for k in range(1, res.step + 1)]


def test_bench_gpu_training_run_times_phases_through_the_hooks(toy_stores, tmp_path, one_thread):
    ct, cxr = toy_stores
    stores = {"ct": ct, "cxr": cxr, "runs": tmp_path / "runs"}
    out = train_one(tmp_path, stores, "xpgan", "fp32", {"batch": 2, "preset": "tiny"}, "cpu", steps=3)
    t = out["timing"]
    assert out["steps"] == 3 and out["loss_finite"]
    assert len(t["step_s"]) == 3 and len(t["batch_s"]) == 3 and t["setup_s"] > 0
    assert all({"G", "D", "C"} <= set(p) for p in t["phase_s"])
    assert t["checkpoint_s"] > 0 and out["compute_only"]["sec_per_step"] > 0
    assert compute_only_rate.__module__ == "xpgan.bench.gpu_check_train"
