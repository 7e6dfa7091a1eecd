"""The life cycle both prep commands share, once the store is locked and created or opened.

`prep drr` and `prep cxr` each own what is particular to them (discovery, identity, attributes, the item
reader and writer, how a failure is named); `run_store_items` does the rest, the same way for both:

  1. repair items whose done flag is set but whose data are not (an interrupted write), so they are redone;
  2. mark the store incomplete, run every item not done (pipeline/runner.run_items: Dask, one writer);
  3. merge the failure records: an item done now has none; an item that failed in this run gets this run's
     reason; an item that is still not done keeps the record of an earlier run; the records go to the store
     attributes and the CSV beside it (pipeline/store.set_failures);
  4. interrupted (Ctrl-C, SIGTERM): the finished items are kept and the command raises with the resume line;
     otherwise the store is marked complete;
  5. a store this run created (`fresh`) that ends with no item stored (every item failed, or the cluster
     could not be reached) is removed, so no empty store is left behind.

`prep_salt` gives both commands the store's salt: a store records a check of its salt (an HMAC that reveals
nothing of it), so a store moved without its `.salt` file, or given another salt, is refused with advice that
keeps the finished items (copy the salt beside it, or name it with --salt-file).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xpgan.errors import Interrupted, XPGANError
from xpgan.pipeline.runner import RunResult, Task, run_items


@dataclass
class StoreRun:
    result: RunResult              # the runner's result of this invocation (failed: index -> reason)
    done_before: np.ndarray        # [n] bool, done when the invocation started (after repair)
    done_now: np.ndarray           # [n] bool
    failures: list[dict] = field(default_factory=list)   # the merged records written to the store
    redone: list[str] = field(default_factory=list)      # one line per item repaired for redoing
    kept: bool = True                                    # False: a fresh store with nothing stored, removed


def run_store_items(group, out: str | Path, *, n: int, task: Callable[[int], Task], process, write,
                    failure: Callable[[int, str, bool], dict], desc: str, workers=None, scheduler=None,
                    processes: bool = True, progress: bool = True, memory_per_worker_gb: float = 2.0,
                    paths_in_store: bool = True, csv_only: Sequence[Mapping[str, Any]] = (),
                    prefailed: Mapping[int, str] | None = None, fresh: bool = False) -> StoreRun:
    """Run the items of an open store that are not done (module docstring). `task(i)` builds item i's task;
    `failure(i, reason, fresh)` its failure record ({"index", "id", "path", "reason"}), for a reason of this
    run (fresh, as the runner gave it) or the reason an earlier run recorded. `prefailed`: items known to fail
    without reading them (their file is missing), failed with that reason and never sent to a worker. `fresh`:
    the store was created by this invocation (removed again when it ends with nothing stored)."""
    from xpgan.pipeline import store as st
    from xpgan.pipeline.verify import repair_for_resume

    redone = repair_for_resume(group, out)
    done_before = st.done_mask(group)
    earlier = {int(f["index"]): f for f in st.get_failures(group, out)}
    st.set_complete(group, False)
    prefailed = {i: r for i, r in (prefailed or {}).items() if not done_before[i]}
    tasks = [task(i) for i in range(n) if not done_before[i] and i not in prefailed]
    try:
        result, stopped = run_items(tasks, process, write, group_size=st.items_per_shard(group), workers=workers,
                                    scheduler=scheduler, processes=processes, progress=progress, desc=desc,
                                    memory_per_worker_gb=memory_per_worker_gb), None
    except Interrupted as exc:   # the finished items are written; record this run's failures, then stop
        result, stopped = exc.result, exc
    except BaseException:        # e.g. a scheduler that cannot be reached: a store made for nothing goes again
        if fresh and not st.done_mask(group).any():
            st.discard_empty(out)
        raise
    result.failed.update(prefailed)
    done_now = st.done_mask(group)
    records = []
    for i in range(n):
        if done_now[i]:
            continue
        if i in result.failed:
            records.append(failure(i, result.failed[i], True))
        elif i in earlier:
            records.append(failure(i, earlier[i].get("reason", ""), False))
    st.set_failures(group, out, records, paths_in_store=paths_in_store, csv_only=csv_only)
    if stopped is not None:
        raise st.interrupted(stopped, desc, out, int(done_now.sum()), n)
    st.set_complete(group, True)
    kept = not (fresh and not done_now.any())
    if not kept:
        st.discard_empty(out)
    return StoreRun(result, done_before, done_now, records, [p.line() for p in redone], kept)


SALT_CHECK = "salt_check"   # key of the "xpgan" attributes


def salt_attrs(salt: bytes) -> dict:
    """The attribute by which a store knows its salt again (nothing that depends on where the store is, so
    the same command makes the same bytes anywhere)."""
    return {SALT_CHECK: _salt_check(salt)}


def _salt_check(salt: bytes) -> str:
    return hmac.new(salt, b"xpgan-salt-check", hashlib.sha256).hexdigest()[:16]


def _existing_meta(out) -> dict | None:
    from xpgan.pipeline import schema

    if not (Path(out) / "zarr.json").is_file():
        return None
    try:
        group = schema.open_group(Path(out), "r")
        meta = group.attrs.get(schema.META)
        done = int(np.asarray(group["done"][...]).sum())
    except Exception:  # damaged or foreign: create_or_open reports it
        return None
    return {**meta, "_done": done} if isinstance(meta, dict) else None


@contextlib.contextmanager
def prep_salt(out: str | os.PathLike, salt_file: str | os.PathLike | None = None):
    """privacy.store_salt for a prep run (yields the salt). An existing store whose `.salt` is not beside it
    (moved without it) is refused, saying which file to copy beside it or to name with --salt-file, before
    any new key is made; a salt that is not the store's (its check differs) is refused too: a new key could
    not reproduce the stored patient hashes. `--overwrite` is named last, with what it would delete."""
    from xpgan.pipeline.privacy import salt_path, store_salt

    meta = _existing_meta(out)
    check = (meta or {}).get(SALT_CHECK)
    here = salt_path(out)
    keep = (f"only --overwrite starts again without it, deleting its {meta['_done']} finished item(s)"
            if meta else "")
    if meta is not None and meta["_done"] and salt_file is None and not here.exists():
        raise XPGANError(f"{out}: its salt file {here} (the key of its patient hashes) is missing: a store moved "
                         f"without it? Copy the {here.name} that was beside the store where it was made to "
                         f"{here.parent}, or name it with --salt-file; {keep}")
    with store_salt(out, salt_file) as salt:
        if check and _salt_check(salt) != check:
            raise XPGANError(f"{salt_file or here}: is not the salt this store was made with (its patient hashes "
                             f"need the same key); give the store's own .salt file with --salt-file; {keep}")
        yield salt
