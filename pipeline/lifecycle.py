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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from xpgan.errors import Interrupted
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
                    fresh: bool = False) -> StoreRun:
    """Run the items of an open store that are not done (module docstring). `task(i)` builds item i's task;
    `failure(i, reason, fresh)` its failure record ({"index", "id", "path", "reason"}), for a reason of this
    run (fresh, as the runner gave it) or the reason an earlier run recorded. `fresh`: the store was created
    by this invocation (removed again when it ends with nothing stored)."""
    from xpgan.pipeline import store as st
    from xpgan.pipeline.verify import repair_for_resume

    redone = repair_for_resume(group, out)
    done_before = st.done_mask(group)
    earlier = {int(f["index"]): f for f in st.get_failures(group)}
    st.set_complete(group, False)
    tasks = [task(i) for i in range(n) if not done_before[i]]
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
