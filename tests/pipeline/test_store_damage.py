"""Store damage (deleted shard, flipped bytes, broken zarr.json) in CT and CXR stores is found by prep's resume
(items re-done), `inspect --verify` (exit 1), and train / eval / generate (one-line error, exit 2)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from xpgan.cli import app
from xpgan.pipeline import schema
from xpgan.pipeline.ct.prep_drr import prep_drr
from xpgan.pipeline.cxr.prep_cxr import prep_cxr
from xpgan.pipeline.synth.writers import write_nifti
from xpgan.pipeline.verify import scan

# every test here uses the `pristine` stores and checkpoint (prep through Dask, a training step): slow
pytestmark = pytest.mark.slow

CT_SHAPE = (8, 32, 32)
GEOM = {"kind": "cone", "size": 32}
BIG = {"ct": "volume", "cxr": "image"}  # the sharded array damaged in each kind
runner = CliRunner()


def _prep(kind: str, src: Path, out: Path):
    if kind == "ct":
        return prep_drr(src, out, shape=CT_SHAPE, geometry=GEOM, workers=0, progress=False, items_per_shard=2)
    return prep_cxr([src], out, size=32, workers=0, progress=False)


def _copy(store: Path, dst: Path) -> Path:
    shutil.copytree(store, dst)
    salt = schema.salt_path(store)
    if salt.exists():
        shutil.copy(salt, schema.salt_path(dst))
    return dst


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """{kind: (archive, store)}: 4 CT studies (2 shards of 2), 8 CXR images (one shard), and an xpgan
    checkpoint trained one step on them."""
    root = tmp_path_factory.mktemp("damage")
    rng = np.random.default_rng(7)
    for i in range(4):
        write_nifti(root / "ct_src" / "studies" / f"CT-{i % 2}" / f"study_{i:04d}.nii.gz",
                    rng.normal(-300, 300, size=(10, 30, 28)).astype(np.float32), (4.0, 1.0, 1.0))
    for i in range(8):
        img = (rng.random((40, 36)) * 255).astype(np.uint8)
        path = root / "cxr_src" / ("covid" if i % 2 else "normal") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    out = {k: (root / f"{k}_src", root / f"{k}.zarr") for k in ("ct", "cxr")}
    for kind, (src, store) in out.items():
        _prep(kind, src, store)
    res = runner.invoke(app, ["train", "--ct", str(out["ct"][1]), "--cxr", str(out["cxr"][1]), "--mode", "xpgan",
                              "--out", str(root / "run"), "--max-steps", "1", "--batch-size", "2", "--preset", "tiny",
                              "--device", "cpu", "--num-workers", "0", "--no-progress", "--sample-every", "0"])
    assert res.exit_code == 0, res.output
    out["checkpoint"] = next((root / "run" / "checkpoints").glob("step-*.pt"))
    return out


def _shard(store: Path, name: str, shard: int = 0) -> Path:
    g = schema.open_store(store)
    arr = g[name]
    return store / name / arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))


def delete_shard(store: Path, kind: str) -> list[int]:
    """Removes the first shard of the big array; returns the done items it held."""
    k = int(schema.open_store(store)[BIG[kind]].shards[0])
    _shard(store, BIG[kind]).unlink()
    return list(range(min(k, 8 if kind == "cxr" else 4)))


def flip_bytes(store: Path, kind: str) -> list[int]:
    """Flips 16 bytes in the middle of every chunk of the first shard (the index stays intact)."""
    path = _shard(store, BIG[kind])
    data = bytearray(path.read_bytes())
    k = int(schema.open_store(store)[BIG[kind]].shards[0])
    index = np.frombuffer(bytes(data[-(16 * k + 4):-4]), dtype="<u8").reshape(k, 2)
    items = []
    for j, (off, n) in enumerate(index.tolist()):
        if off != 2**64 - 1:
            mid = off + n // 2
            data[mid:mid + 16] = bytes(b ^ 0x5A for b in data[mid:mid + 16])
            items.append(j)
    path.write_bytes(bytes(data))
    return items


def break_json(store: Path, kind: str) -> list[int]:
    (store / BIG[kind] / "zarr.json").write_text('{"zarr_format": 3, "node_type": "arr')
    return []


def break_group_json(store: Path, kind: str) -> list[int]:
    path = store / "zarr.json"
    path.write_bytes(path.read_bytes()[:-40])
    return []


DAMAGE = {"deleted shard": delete_shard, "flipped bytes": flip_bytes, "broken zarr.json": break_json,
          "broken group zarr.json": break_group_json}
JSON_FILE = {"broken zarr.json": "{big}/zarr.json", "broken group zarr.json": "s.zarr/zarr.json"}
CASES = [(k, d) for k in ("ct", "cxr") for d in DAMAGE]


def _one_line_error(res, *words) -> str:
    assert "Traceback" not in res.output, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("kind,damage", CASES)
def test_prep_resume_redoes_damaged_items(pristine, tmp_path, kind, damage):
    src, clean = pristine[kind]
    store = _copy(clean, tmp_path / "s.zarr")
    items = DAMAGE[damage](store, kind)
    if damage in JSON_FILE:
        with pytest.raises(schema.StoreDamageError, match=JSON_FILE[damage].format(big=BIG[kind])) as exc:
            _prep(kind, src, store)
        assert "--overwrite" in str(exc.value) and "\n" not in str(exc.value)
        return
    summary = _prep(kind, src, store)
    assert summary.failed == 0 and summary.done == summary.total
    assert summary.skipped == summary.total - len(items)
    assert summary.redone and "re-done" in summary.text()
    g = schema.open_store(store, kind)
    assert not scan(g, store, full=True).problems
    ref = schema.open_store(clean, kind)
    for name in ref.array_keys():
        np.testing.assert_array_equal(np.asarray(g[name][...]), np.asarray(ref[name][...]), err_msg=name)


@pytest.mark.parametrize("kind,damage", CASES)
def test_inspect_verify_reports_damaged_items(pristine, tmp_path, kind, damage):
    store = _copy(pristine[kind][1], tmp_path / "s.zarr")
    items = DAMAGE[damage](store, kind)
    res = runner.invoke(app, ["inspect", str(store), "--verify"])
    if damage in JSON_FILE:
        assert res.exit_code == 2
        _one_line_error(res, JSON_FILE[damage].format(big=BIG[kind]), "damaged store metadata", "--overwrite")
        return
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    report = res.output[res.output.index("verify:"):]
    assert f"verify: {len(items)} of " in report and BIG[kind] in report
    reason = "shard file missing" if damage == "deleted shard" else "checksum mismatch"
    assert reason in report
    # without --verify, a deleted shard is still found (cheap check); flipped bytes need --verify
    res = runner.invoke(app, ["inspect", str(store)])
    assert res.exit_code == (1 if damage == "deleted shard" else 0), res.output
    if damage == "flipped bytes":  # drawing item 0 reads its damaged chunk
        res = runner.invoke(app, ["inspect", str(store), "--sheet", str(tmp_path / "sheet.png"), "--item", "0"])
        assert res.exit_code == 2
        _one_line_error(res, f"array '{BIG[kind]}' item", "damaged data (checksum mismatch)")


def _expected_words(kind: str, damage: str, store: Path) -> list[str]:
    if damage in JSON_FILE:
        return [JSON_FILE[damage].format(big=BIG[kind]), "damaged store metadata", "--overwrite"]
    if damage == "deleted shard":
        return ["marked done have missing or damaged data", "shard file missing", "inspect --verify"]
    return [f"array '{BIG[kind]}' item", f"(file {store}/{BIG[kind]}/c/0/0/0", "damaged data (checksum mismatch)"]


def _train_args(pristine, tmp_path, kind, store, workers="0"):
    ct = store if kind == "ct" else pristine["ct"][1]
    cxr = store if kind == "cxr" else pristine["cxr"][1]
    return ["train", "--ct", str(ct), "--cxr", str(cxr), "--mode", "xpgan", "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--batch-size", "2", "--preset", "tiny", "--device", "cpu",
            "--num-workers", workers, "--no-progress", "--sample-every", "0"]


@pytest.mark.parametrize("kind,damage", CASES)
def test_train_refuses_damaged_store_in_one_line(pristine, tmp_path, kind, damage):
    store = _copy(pristine[kind][1], tmp_path / "s.zarr")
    DAMAGE[damage](store, kind)
    # flipped bytes are found when read: in a DataLoader worker process, re-raised as one line
    res = runner.invoke(app, _train_args(pristine, tmp_path, kind, store,
                                         workers="1" if damage == "flipped bytes" else "0"))
    assert res.exit_code == 2, res.output
    words = _expected_words(kind, damage, store)
    _one_line_error(res, str(store), *words)


@pytest.mark.parametrize("kind,damage", CASES)
def test_eval_and_generate_refuse_damaged_store_in_one_line(pristine, tmp_path, kind, damage):
    store = _copy(pristine[kind][1], tmp_path / "s.zarr")
    DAMAGE[damage](store, kind)
    ckpt = str(pristine["checkpoint"])
    if kind == "cxr":
        args = ["eval", ckpt, "--cxr", str(store), "--split", "train", "--device", "cpu",
                "--out", str(tmp_path / "eval")]
    else:
        args = ["generate", ckpt, "--ct", str(store), "--out", str(tmp_path / "gen"), "--device", "cpu"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    words = _expected_words(kind, damage, store)
    _one_line_error(res, str(store), *words)


def test_lost_done_flags_of_a_finished_store_are_found_and_redone(pristine, tmp_path):
    src, clean = pristine["ct"]
    store = _copy(clean, tmp_path / "s.zarr")
    for f in (store / "done" / "c").rglob("*"):
        if f.is_file():
            f.unlink()
    res = runner.invoke(app, ["inspect", str(store)])
    assert res.exit_code == 1 and "neither done nor failed" in res.output
    summary = _prep("ct", src, store)
    assert summary.done == 4 and summary.skipped == 0
    assert "done flags lost" in summary.text()
    assert not scan(schema.open_store(store), store, full=True).problems


def test_damaged_small_chunk_is_found_and_redone(pristine, tmp_path):
    src, clean = pristine["cxr"]
    store = _copy(clean, tmp_path / "s.zarr")
    chunk = next(p for p in (store / "label" / "c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    res = runner.invoke(app, ["inspect", str(store)])
    assert res.exit_code == 1 and "label" in res.output and "checksum mismatch" in res.output
    assert "Traceback" not in res.output
    summary = _prep("cxr", src, store)
    assert summary.done == 8 and summary.skipped == 0
    np.testing.assert_array_equal(schema.open_store(store)["label"][:], schema.open_store(clean)["label"][:])
