"""Two CPU processes under torchrun (gloo): the run finishes, only rank 0 writes, ranks agree on weights."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from xpgan.model import checkpoint as ckpt_io

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from xpgan.model.config import TrainConfig
    from xpgan.model.train import train
    ct, cxr, out, digests = sys.argv[1:5]
    cfg = TrainConfig(ct=ct, cxr=cxr, mode="xpgan", out=out, max_steps=2, batch_size=2, cxr_batch_size=2,
                      preset="tiny", device="cpu", num_workers=0, r1_interval=2, log_every=1, sample_every=2,
                      progress=False, seed=7)
    result = train(cfg)
    rank = int(os.environ["RANK"])
    with open(os.path.join(digests, f"rank{rank}.json"), "w") as fh:
        json.dump({"digests": result.digests, "world": int(os.environ["WORLD_SIZE"]), "step": result.step}, fh)
''')


@pytest.mark.slow
def test_torchrun_two_cpu_processes(toy_stores, tmp_path):
    ct, cxr = toy_stores
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    digests = tmp_path / "digests"
    digests.mkdir()
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(ct), str(cxr), str(run), str(digests)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["step"] == 2 for r in ranks)
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert set(ranks[0]["digests"]) == {"G", "D", "C", "G_ema"}
    # rank 0's checkpoint holds the same weights
    st = ckpt_io.load(ckpt_io.list_checkpoints(run)[-1])
    assert {k: ckpt_io.weights_digest(v) for k, v in st["models"].items()} == ranks[1]["digests"]
    # one set of outputs: one log line per step, one TensorBoard event file, one checkpoint
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    assert len(list((run / "tb").iterdir())) == 1
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["step-00000002.pt"]
    assert len(st["rng"]) == 2 and not torch_equal(st["rng"][0]["torch"], st["rng"][1]["torch"])


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)
