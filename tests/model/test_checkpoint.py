import random

import numpy as np
import pytest
import torch

from xpgan.errors import InputError
from xpgan.model import checkpoint as ckpt_io
from xpgan.model.train import train


def _weights(path):
    return ckpt_io.load(path)["models"]


@pytest.mark.slow
def test_resume_is_bit_identical(tiny_xpgan_run, toy_stores, xpgan_config, tmp_path, one_thread):
    cfg_full, full = tiny_xpgan_run
    ct, cxr = toy_stores
    out = tmp_path / "split"
    first = train(xpgan_config(ct, cxr, out, stop_at=2))
    assert first.step == 2 and first.checkpoint.endswith("step-00000002.pt")
    second = train(xpgan_config(ct, cxr, out, resume="latest"))
    assert second.step == 4 == full.step
    a, b = _weights(full.checkpoint), _weights(second.checkpoint)
    assert set(a) == {"G", "D", "C", "G_ema"} == set(b)
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs after resume"
    # control: training moved the weights, so equality above is not trivially true
    mid = _weights(first.checkpoint)["G"]
    assert any(not torch.equal(mid[k], a["G"][k]) for k in mid)
    sa, sb = ckpt_io.load(full.checkpoint), ckpt_io.load(second.checkpoint)
    assert sa["streams"] == sb["streams"]
    assert torch.equal(sa["optimizers"]["D"]["state"][0]["exp_avg"], sb["optimizers"]["D"]["state"][0]["exp_avg"])


def test_checkpoint_contents(tiny_xpgan_run):
    cfg, full = tiny_xpgan_run
    st = ckpt_io.load(full.checkpoint)
    assert st["step"] == 4 and st["config"]["mode"] == "xpgan" and st["net"]["img_res"] == 32
    assert set(st["optimizers"]) == {"G", "D", "C"} == set(st["schedulers"])
    assert {"python", "numpy", "torch", "cuda"} <= set(st["rng"][0])
    # cosine annealing reaches zero at the end of the run
    assert st["schedulers"]["C"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)


def test_save_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "c" / "x.pt"
    net = {"ct_shape": [8, 32, 32], "img_res": 32, "hu_window": [-1000.0, 1000.0]}
    ckpt_io.save_atomic({"models": {}, "config": {"a": 1}, "net": net, "step": 1}, path)
    ckpt_io.save_atomic({"models": {}, "config": {"a": 2}, "net": net, "step": 2}, path)
    assert ckpt_io.load(path)["config"] == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]


def test_resolve_latest_and_missing(tmp_path):
    for step in (5, 20, 100):
        ckpt_io.save_atomic({"models": {}, "config": {}}, ckpt_io.checkpoint_path(tmp_path, step))
    assert ckpt_io.resolve_resume("latest", tmp_path).name == "step-00000100.pt"
    ckpt_io.prune(tmp_path, keep=2)
    assert [p.name for p in ckpt_io.list_checkpoints(tmp_path)] == ["step-00000020.pt", "step-00000100.pt"]
    with pytest.raises(InputError, match="no checkpoint"):
        ckpt_io.resolve_resume("latest", tmp_path / "empty")


def test_rng_state_round_trip():
    state = ckpt_io.rng_state()
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt_io.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=f"^{bad}: not a checkpoint of this program \\(not a PyTorch file"):
        ckpt_io.load(bad)


@pytest.mark.parametrize("key", ["config", "net", "models", "step", "net.img_res"])
def test_a_checkpoint_lacking_a_key_is_not_a_checkpoint_of_this_program(tiny_xpgan_run, tmp_path, key):
    state = ckpt_io.load(tiny_xpgan_run[1].checkpoint)
    if key.startswith("net."):
        del state["net"][key[4:]]
    else:
        del state[key]
    crafted = ckpt_io.save_atomic(state, tmp_path / "crafted.pt")
    want = f"^{crafted}: not a checkpoint of this program \\(missing or wrong: {key}\\)$"
    with pytest.raises(InputError, match=want):
        ckpt_io.load(crafted)


def test_weights_that_do_not_fit_the_network_are_one_line(tiny_xpgan_run, tmp_path):
    from xpgan.errors import XPGANError

    state = ckpt_io.load(tiny_xpgan_run[1].checkpoint)
    state["models"]["C"] = {"w": torch.zeros(2)}
    with pytest.raises(XPGANError, match="its C weights do not fit") as err:
        ckpt_io.networks_from_checkpoint(state, ("C",), torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_a_run_folder_resolves_to_its_newest_checkpoint(tmp_path):
    for step in (2, 10):
        ckpt_io.save_atomic({"step": step}, ckpt_io.checkpoint_path(tmp_path / "run", step))
    newest = ckpt_io.checkpoint_path(tmp_path / "run", 10)
    assert ckpt_io.resolve_checkpoint(tmp_path / "run") == newest
    assert ckpt_io.resolve_checkpoint(tmp_path / "run" / "checkpoints") == newest
    assert ckpt_io.resolve_checkpoint(newest) == newest
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="a folder without checkpoints"):
        ckpt_io.resolve_checkpoint(tmp_path / "empty")
