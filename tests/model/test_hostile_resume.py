"""A resumed or stopped `train` does what it says: options that change the run are refused on resume (or
applied and said), a signal finishes the step and keeps a checkpoint, a full disk or a killed save leaves the
previous checkpoints usable, and a resumed run logs each step once."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import typing

import pytest
import torch
from typer.testing import CliRunner

from xpgan.errors import Interrupted, Resumable, XPGANError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.config import TrainConfig, resume_rule
from xpgan.model.resume import resume_plan
from xpgan.model.train import TrainHooks, train

SAVED = TrainConfig(ct="/s/ct.zarr", cxr="/s/cxr.zarr", mode="xpgan", out="runs/a", max_steps=10, preset="tiny",
                    device="cpu")


def _other(name: str, value, hint):
    """A valid value of field `name` other than `value`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return next(a for a in args if a != value)
    if hint is bool:
        return not value
    if name in ("ct", "cxr", "out", "classifier_weights", "resume"):
        return f"/elsewhere/{name}"
    if name in ("betas_gd", "betas_c"):
        return (0.5, 0.9)
    if value is None:
        return 0.001 if name == "c_lr" else (0.1 if name == "ema_rampup" else 3)
    return value + 1 if isinstance(value, int) else value / 2


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TrainConfig)])
def test_every_train_option_has_a_resume_rule_that_is_applied_or_refused_naming_both_values(field):
    hints = typing.get_type_hints(TrainConfig)
    old = getattr(SAVED, field)
    new = _other(field, old, hints[field])
    cfg = dataclasses.replace(SAVED, **{field: new})
    rule = resume_rule(field)
    same_store = {"ct": "id-ct", "cxr": "id-cxr"}
    ids = {"/s/ct.zarr": "id-ct", "/s/cxr.zarr": "id-cxr", "/elsewhere/ct": "id-ct", "/elsewhere/cxr": "id-cxr"}
    if rule == "refused":
        with pytest.raises(XPGANError, match=r"--resume: .* was trained with other options") as err:
            resume_plan(SAVED.to_dict(), cfg, given=frozenset({field}), stores=same_store, identity_of=ids.get)
        text = str(err.value)
        flag = dataclasses.fields(TrainConfig)[[f.name for f in dataclasses.fields(TrainConfig)].index(field)]
        assert (flag.metadata.get("flag") or "--" + field.replace("_", "-")) in text
        assert f"{new}" in text and f"the run's: {old}" in text and len(text.splitlines()) == 1
        return
    if rule == "store":
        # the same store at another path (same identity) is applied and said; another store is refused
        merged, said = resume_plan(SAVED.to_dict(), cfg, given=frozenset({field}), stores=same_store,
                                   identity_of=ids.get)
        assert getattr(merged, field) == new and any(f"moved from {old}" in x for x in said)
        with pytest.raises(XPGANError, match=r"is not the store the run was trained on"):
            resume_plan(SAVED.to_dict(), cfg, given=frozenset({field}), stores=same_store,
                        identity_of=lambda p: ids.get(p) if p.startswith("/s/") else "another")
        return
    merged, said = resume_plan(SAVED.to_dict(), cfg, given=frozenset({field}), identity_of=lambda p: None)
    assert getattr(merged, field) == new
    if rule == "length":
        assert len(said) == 1 and f"--{field.replace('_', '-')} {new}" in said[0] and "the run's: " in said[0]
        assert "cosine schedule is stretched" in said[0]
    elif field != "resume":
        assert len(said) == 1 and f"the run's: {old}" in said[0]


def test_options_not_given_come_from_the_checkpoint():
    merged, said = resume_plan(SAVED.to_dict(), TrainConfig(resume="latest", out="runs/a"),
                               given=frozenset({"resume", "out"}), identity_of=lambda p: None)
    assert merged.mode == "xpgan" and merged.cxr == "/s/cxr.zarr" and merged.max_steps == 10
    assert merged.device == "auto" and said == ["--device auto (the run's: cpu)"]  # where it runs: this command's


def test_the_rule_is_in_train_help():
    res = CliRunner().invoke(__import__("xpgan.cli", fromlist=["app"]).app, ["train", "--help"],
                             env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    assert "any other option that differs from the run's is refused" in text and "--max-steps" in text


def _cli(*args):
    from xpgan.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_resume_with_another_mode_and_lr_is_refused_and_a_new_length_said(toy_stores, tmp_path, one_thread):
    _, cxr = toy_stores
    base = ["train", "--cxr", cxr, "--mode", "baseline", "--out", tmp_path / "run", "--batch-size", "4",
            "--preset", "tiny", "--device", "cpu", "--num-workers", "0", "--no-progress", "--sample-every", "0"]
    assert _cli(*base, "--max-steps", "2").exit_code == 0
    res = _cli("train", "--out", tmp_path / "run", "--resume", "latest", "--mode", "drr", "--lr", "0.01",
               "--ct", cxr)
    text = res.output.strip()
    assert res.exit_code == 2 and len(text.splitlines()) == 1, text
    assert "--mode drr (the run's: baseline)" in text and "--lr 0.01 (the run's: 0.002)" in text
    res = _cli("train", "--out", tmp_path / "run", "--resume", "latest", "--max-steps", "3", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "UserWarning" not in res.output and "warnings.warn" not in res.output
    said = [x for x in res.output.splitlines() if x.startswith("resuming")]
    assert len(said) == 1 and "--max-steps 3 (the run's: --max-steps 2; the cosine schedule" in said[0]


class _Signal(TrainHooks):
    def __init__(self, at: int, signals=(signal.SIGINT,)):
        self.at, self.signals = at, signals

    def on_step(self, step, seconds):
        if step == self.at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(
        tiny_xpgan_run, toy_stores, xpgan_config, tmp_path, one_thread, sig):
    _, full = tiny_xpgan_run
    ct, cxr = toy_stores
    out = tmp_path / "stopped"
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}   # SIG_IGN under nohup / `&`
    with pytest.raises(Interrupted, match=r"train interrupted by .* after step 2 of 4: checkpoint .*"
                                          r"step-00000002.pt written") as err:
        train(xpgan_config(ct, cxr, out), hooks=_Signal(2, (sig,)))
    assert err.value.exit_code == 128 + sig
    assert {s: signal.getsignal(s) for s in before} == before                  # handlers restored
    second = train(xpgan_config(ct, cxr, out, resume="latest"))
    assert second.step == 4 and second.digests == full.digests
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_second_signal_stops_at_once(toy_stores, xpgan_config, tmp_path, one_thread):
    ct, cxr = toy_stores
    with pytest.raises(Interrupted, match="stopped at once by a second Ctrl-C .*no checkpoint was written"):
        train(xpgan_config(ct, cxr, tmp_path / "run"), hooks=_Signal(1, (signal.SIGINT, signal.SIGINT)))
    assert ckpt_io.list_checkpoints(tmp_path / "run") == []


def test_the_resume_command_is_printed(monkeypatch):
    from xpgan.cli_support import resume_hint

    hint = resume_hint(["train", "--cxr", "c.zarr", "--resume", "runs/x", "--out", "runs/x"])
    assert hint == "; resume with: xpgan train --cxr c.zarr --out runs/x --resume latest"


def test_a_killed_save_leaves_a_temp_file_that_the_next_run_removes_and_log_steps_are_not_repeated(
        toy_stores, xpgan_config, tmp_path, one_thread):
    ct, cxr = toy_stores
    out = tmp_path / "run"
    train(xpgan_config(ct, cxr, out, stop_at=2))
    dead = 2 ** 22 + 12345  # beyond the default pid_max: no such process
    stale = ckpt_io.checkpoint_dir(out) / f".step-00000003.pt.tmp-{dead}"
    stale.write_bytes(b"\0" * 1000)
    with open(out / "log.jsonl", "a") as fh:  # what a run killed after step 3 (no checkpoint) logged
        fh.write(json.dumps({"step": 3, "loss/C_real": 1.0}) + "\n" + '{"step": 4, "lo')
    lines = []
    train(xpgan_config(ct, cxr, out, resume="latest"), log=lines.append)
    assert not stale.exists() and any(f"removed {stale}" in x for x in lines)
    steps = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_full_disk_during_a_checkpoint_names_the_folder_and_keeps_the_previous_one(
        toy_stores, xpgan_config, tmp_path, one_thread, monkeypatch):
    ct, cxr = toy_stores
    out = tmp_path / "run"
    real_save = torch.save

    def save(state, fh):
        if state["step"] == 2:
            fh.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, fh)

    monkeypatch.setattr(ckpt_io.torch, "save", save)
    with pytest.raises(Resumable) as err:
        train(xpgan_config(ct, cxr, out, checkpoint_every=1))
    text = str(err.value)
    assert len(text.splitlines()) == 1 and text.startswith(f"{ckpt_io.checkpoint_dir(out)}: the disk is full")
    assert "step-00000001.pt is kept" in text
    assert [p.name for p in ckpt_io.checkpoint_dir(out).iterdir()] == ["step-00000001.pt"]
    assert ckpt_io.load(ckpt_io.checkpoint_path(out, 1))["step"] == 1
