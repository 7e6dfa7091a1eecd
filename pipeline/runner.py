"""Run one function over many items on Dask, with a single writer, progress and failure isolation.

Generic: nothing here knows about CT or CXR.

Public API
----------
Task(index, payload, path)
    One item: `index` is its slot in the store, `payload` what `process_fn` receives (picklable), `path`
    names it in failure reports.
run_items(tasks, process_fn, write_fn, *, group_size=1, workers=None, scheduler=None, processes=True,
          progress=True, desc="items", max_in_flight=None, memory_per_worker_gb=None) -> RunResult
    Calls `process_fn(payload) -> dict` on Dask workers. Each exception raised by process_fn (XPGANError
    or any other) becomes a failure of that item only: its message is recorded, the rest goes on. A worker
    that dies on an item (killed for memory, segfault) also fails just that item.
    Results travel back to this (client) process, which is the ONLY writer: `write_fn({index: result})`
    is called here, sequentially, once per complete group of `group_size` consecutive indices (use the
    store's shard size so every shard is written whole, by one writer, in one go). Failed items are left
    out of the dict. Tasks are submitted in index order, at most `max_in_flight` at a time (default:
    2 per worker thread + one group), which bounds the memory held by results waiting for their group.
    Scheduling:
      - scheduler=None: a local distributed cluster of `workers` single-threaded worker processes
        (default: one per core, fewer if `memory_per_worker_gb` says the RAM cannot hold them);
        `processes=False` uses threads in this process instead (tests).
        Worker processes start without Dask's MALLOC_TRIM_THRESHOLD_ and without the statistical profiler
        (see `local_worker_config`).
      - scheduler="ADDRESS" (e.g. "tcp://10.0.0.5:8786"): an existing cluster; its workers must be able to
        import xpgan and read the inputs.
      - workers=0 and no scheduler: run in this process without Dask (debugging).
    Numba threads: each task sets numba.set_num_threads(cores of its host // worker threads on its host),
    so numba-parallel kernels in several worker processes do not oversubscribe the cores.
    Progress (with `progress`): a tqdm bar on stderr (done/failed, rate, ETA) when stderr is a terminal, else
    a line at the start and one every PROGRESS_EVERY_S seconds (done/failed, rate, elapsed, ETA).
    Ctrl-C (SIGINT, also when a terminal sends it to every process of the job) or SIGTERM: no new item is
    started, the finished items of every incomplete group are written too (a partial shard, which a resume
    completes into the same bytes as an uninterrupted run), the cluster is closed, and errors.Interrupted is
    raised (its `result`: the RunResult so far; `exit_code` 130 or 143). Local worker processes ignore
    SIGINT and SIGTERM: the client decides how to stop. A signal during the cluster's shutdown, once every
    item is through, lets the run finish. Later signals during that writing are ignored; SIGKILL loses at
    most the items of incomplete groups (the store stays valid).
worker_environ(), local_worker_config() -> context managers
    Dask config for a LocalCluster made elsewhere (benchmarks) to get the same workers (enter around its
    constructor).
RunResult(done, failed, seconds)
    done: list of indices written; failed: {index: reason}.
PrepSummary(total, done, skipped, failed, failures, seconds, store, redone)
    What `prep drr` / `prep cxr` return; `.text()` gives the summary printed by the CLI. `redone`: lines
    saying which done items a resume found with missing or damaged data (verify.repair_for_resume) and
    re-did.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from xpgan.errors import Interrupted, XPGANError, safe_text, signal_name
from xpgan.signals import SignalCatcher


@dataclass(frozen=True)
class Task:
    index: int
    payload: Any
    path: str = ""


@dataclass
class RunResult:
    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class PrepSummary:
    total: int  # items in the store
    done: int  # items valid in the store after this run (including skipped ones)
    skipped: int  # items already done before this run
    failed: int  # items that failed in this run
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    store: str = ""
    redone: list[str] = field(default_factory=list)  # problems found on resume, one line each
    notes: list[str] = field(default_factory=list)   # what this run repaired or decided, one line each
    kept: bool = True  # False: nothing could be stored, and the store this run created was removed

    def text(self, max_failures: int = 20) -> str:
        rate = (self.done - self.skipped) / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{safe_text(self.store)}: {self.done}/{self.total} items done ({self.skipped} already done, "
                 f"{self.done - self.skipped} new in {self.seconds:.1f} s, {rate:.2f} items/s), "
                 f"{self.failed} failed"]
        lines += [f"  note: {safe_text(line)}" for line in self.notes]
        if self.redone:
            lines.append("  re-done because their stored data was missing or damaged:")
            lines += [f"    {line}" for line in self.redone]
        for path, reason in self.failures[:max_failures]:
            lines.append(f"  failed: {safe_text(path)}: {safe_text(reason)}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more (see the failures CSV)")
        if not self.kept:
            lines.append(f"  no item could be stored, so {safe_text(self.store)} was not kept (the reasons are in "
                         f"{safe_text(self.store)}.failures.csv)")
        return "\n".join(lines)

    def raise_on_failures(self, what: str, *, tool: str = "demo") -> None:
        """For runs on synthetic data, where any failed item is a bug: one line naming the first failures."""
        if self.failed:
            reasons = "; ".join(f"{p}: {r}" for p, r in list(self.failures)[:3])
            raise XPGANError(f"{tool}: {what} failed on {self.failed} item(s): {reasons}")


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(memory_per_worker_gb: float | None = None) -> int:
    """One worker per core, fewer when the machine's RAM cannot hold `memory_per_worker_gb` each."""
    n = usable_cores()
    if memory_per_worker_gb:
        try:
            import psutil

            total_gb = psutil.virtual_memory().total / 1e9
            n = min(n, max(1, int(0.8 * total_gb // memory_per_worker_gb)))
        except ImportError:
            pass
    return max(1, n)


def _set_numba_threads(host_threads: Mapping[str, int] | None, client_pid: int | None = None) -> None:
    """Share the host's cores between the worker threads on it (avoids oversubscription).

    In a worker process that has not imported numba yet, NUMBA_NUM_THREADS is set (numba reads it at import;
    an operator's own setting wins), so tasks that never use numba do not pay for importing it. Worker threads
    inside the client process (processes=False) set numba's per-thread count instead.
    """
    threads_here = 1
    if host_threads:
        try:
            from distributed import get_worker

            host = get_worker().address.rsplit(":", 1)[0]
            threads_here = int(host_threads.get(host, 1))
        except (ImportError, ValueError):
            threads_here = 1
    if host_threads is None:
        return  # in-process run without Dask: numba's defaults (all cores) are right
    n = max(1, usable_cores() // max(1, threads_here))
    if "numba" not in sys.modules and os.getpid() != client_pid:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(n))
        return
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def _call(process_fn: Callable[[Any], Any], payload: Any, host_threads: Mapping[str, int] | None,
          client_pid: int | None = None):
    """Worker side: run one item; every exception is turned into ("fail", reason)."""
    _set_numba_threads(host_threads, client_pid)
    try:
        return ("ok", process_fn(payload))
    except XPGANError as exc:
        return ("fail", str(exc))
    except MemoryError:
        return ("fail", "out of memory while processing this item")
    except Exception as exc:  # isolate any bug or library error to this item
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return ("fail", f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__)


PROGRESS_EVERY_S = 30.0  # seconds between progress lines when stderr is not a terminal


class _Progress:
    """A tqdm bar on a terminal; elsewhere (a log, a pipe) one line at the start and every PROGRESS_EVERY_S s."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.ok = self.failed = 0
        self.total, self.desc, self.every_s = total, desc, PROGRESS_EVERY_S
        self.bar = None
        self.lines = bool(enabled and total and not sys.stderr.isatty())
        self.t0 = self.t_line = time.perf_counter()
        if enabled and total and sys.stderr.isatty():
            from tqdm import tqdm

            # n/total counts processed items; the postfix splits them into ok and failed.
            self.bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1, postfix="ok=0 failed=0")
        elif self.lines:
            print(f"{desc}: {total} items to process", file=sys.stderr, flush=True)

    def update(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"ok={self.ok} failed={self.failed}", refresh=False)
            self.bar.update(1)
        elif self.lines and time.perf_counter() - self.t_line >= self.every_s:
            self.t_line = time.perf_counter()
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        n = self.ok + self.failed
        elapsed = time.perf_counter() - self.t0
        rate = n / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {_duration((self.total - n) / rate)}" if rate > 0 and n < self.total else ""
        return (f"{self.desc}: {n}/{self.total} items ({self.ok} ok, {self.failed} failed), "
                f"{rate:.2f} items/s, {_duration(elapsed)} elapsed{eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _StopSignals(SignalCatcher):
    """While entered (in the main thread): SIGINT and SIGTERM raise KeyboardInterrupt once and record which
    signal came (inside `deferred()`, at the next `check()`); later ones are ignored, so that writing the
    finished items is not cut short."""

    def __init__(self):
        super().__init__()
        self.signum: int | None = None

    _writing = False

    def _handler(self, signum, _frame):
        if self.signum is None:
            self.signum = signum
            if not self._writing:
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self):
        """A signal that comes inside is acted on by the next check(), so a write is never cut in half."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored inside (main thread): writing the finished items of a stopped run."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class _Groups:
    """Collect results per group of consecutive indices; hand a group to the writer once it is complete."""

    def __init__(self, tasks: Sequence[Task], group_size: int, write_fn, result: RunResult,
                 stop: "_StopSignals | None" = None):
        self.stop = stop if stop is not None else _StopSignals()
        self.size = max(1, int(group_size))
        self.pending: dict[int, int] = defaultdict(int)
        for t in tasks:
            self.pending[t.index // self.size] += 1
        self.buffer: dict[int, dict[int, Any]] = defaultdict(dict)
        self.write_fn = write_fn
        self.result = result

    def outcome(self, index: int, status: str, value: Any) -> None:
        """Record one item's result ("ok", payload) or failure ("fail", reason)."""
        if status == "ok":
            self.add(index, value)
        else:
            self.result.failed[index] = value
            self.add(index, None)

    def add(self, index: int, value: Any | None) -> None:
        g = index // self.size
        if value is not None:
            self.buffer[g][index] = value
        self.pending[g] -= 1
        if self.pending[g] == 0:
            batch = self.buffer.pop(g, {})
            del self.pending[g]
            if batch:
                with self.stop.deferred():  # a signal now stops the run after this write, not inside it
                    self.write_fn(batch)
                self.result.done.extend(sorted(batch))
                self.stop.check()

    def flush(self) -> None:
        """Write the finished items of every incomplete group (a partial shard, completed on resume)."""
        for g in sorted(self.buffer):
            batch = self.buffer.pop(g)
            if batch:
                self.write_fn(batch)
                self.result.done.extend(sorted(batch))


def _run_inline(tasks, process_fn, groups: _Groups, bar: _Progress) -> None:
    for t in tasks:
        status, value = _call(process_fn, t.payload, None)
        groups.outcome(t.index, status, value)
        bar.update(status == "ok")


def worker_environ():
    """Dask config context for starting local worker processes without MALLOC_TRIM_THRESHOLD_=65536.

    Dask's default worker environment (`distributed.nanny.pre-spawn-environ`) sets it so that glibc keeps
    little freed memory; it also stops glibc from raising its mmap threshold, so every large NumPy temporary
    (volumes and images of 10-100 MB) becomes a fresh mmap paying page faults on every touch: measured
    ~25 % more CPU per item in a worker. Our per-item memory is bounded (a few volumes), so the heap may keep
    it. The nannies read the setting when they are created (and reuse it when they restart a worker), so
    enter this around the LocalCluster constructor. The other defaults (OMP_NUM_THREADS=1...) are kept.
    """
    import dask

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    return dask.config.set({"distributed.nanny.pre-spawn-environ": env})


def local_worker_config():
    """Dask config context for starting a LocalCluster: `worker_environ()` plus the workers' statistical
    profiler off (it samples the task thread's stack every 10 ms for the dashboard, which our clusters do
    not serve: measured ~10 ms CPU per 150 ms item). Workers of a local cluster receive the client's config."""
    import dask

    stack = contextlib.ExitStack()
    stack.enter_context(worker_environ())
    stack.enter_context(dask.config.set({"distributed.worker.profile.enabled": False}))
    return stack


def _start_client(workers: int | None, scheduler: str | None, processes: bool,
                  memory_per_worker_gb: float | None):
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise XPGANError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None
        try:
            _check_workers(client, scheduler)
        except BaseException:
            client.close()
            raise
        return client, None
    n = workers if workers else default_workers(memory_per_worker_gb)
    # A worker killed while processing an item (e.g. out of memory) should fail that item after a few
    # tries, not be retried on every worker; items merely queued on a dying worker get the same count, so
    # allow 3 attempts to keep such bystanders alive.
    with dask.config.set({"distributed.scheduler.allowed-failures": 2}), local_worker_config(), \
            warnings.catch_warnings():
        # The scheduler's small HTTP server (health routes) moves off a busy port 8787 with a warning.
        warnings.filterwarnings("ignore", message=".*already in use", category=UserWarning)
        with _workers_ignore_stop_signals(processes):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                                   dashboard_address=None, silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


@contextlib.contextmanager
def _workers_ignore_stop_signals(processes: bool):
    """Worker processes started inside inherit SIGINT and SIGTERM ignored (Python keeps an ignored SIGINT at
    start-up): Ctrl-C at a terminal, or a SIGTERM to the whole process group, reaches every worker, and the
    client alone decides how to stop (it keeps the finished items, then closes the cluster, which stops its
    workers through the nannies, by SIGKILL if they do not answer) instead of every worker printing a
    KeyboardInterrupt or dying mid-item."""
    if not processes:
        yield
        return
    with _signals_ignored():
        yield


def _worker_xpgan_version() -> str:
    """Runs on a worker: importing this module there proves the worker can run our tasks."""
    from xpgan import __version__

    return __version__


def _check_workers(client, scheduler: str) -> None:
    """Refuse an existing cluster whose workers cannot import xpgan (or run another version of it).

    Without this check such a worker fails every task while unpickling it, which Dask may retry or leave
    pending instead of reporting; asking each worker up front turns that into one clear error.
    """
    from xpgan import __version__

    try:
        client.wait_for_workers(1, timeout=30)
    except TimeoutError:
        raise XPGANError(f"no worker joined the Dask scheduler at {scheduler} within 30 s") from None
    try:
        versions = client.run(_worker_xpgan_version)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise XPGANError(f"the Dask workers at {scheduler} cannot run xpgan ({type(exc).__name__}: {first}); "
                         f"install xpgan {__version__} in every worker's environment") from None
    if not versions:
        raise XPGANError(f"the Dask scheduler at {scheduler} has no workers")
    other = sorted({v for v in versions.values() if v != __version__})
    if other:
        raise XPGANError(f"the Dask workers at {scheduler} run xpgan {', '.join(other)}, this client runs "
                         f"{__version__}: install the same version everywhere")


def _host_threads(client) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for addr, w in client.scheduler_info(n_workers=-1).get("workers", {}).items():
        out[addr.rsplit(":", 1)[0]] += int(w.get("nthreads", 1))
    return dict(out)


def run_items(tasks: Sequence[Task], process_fn: Callable[[Any], Any],
              write_fn: Callable[[dict[int, Any]], None], *, group_size: int = 1, workers: int | None = None,
              scheduler: str | None = None, processes: bool = True, progress: bool = True,
              desc: str = "items", max_in_flight: int | None = None,
              memory_per_worker_gb: float | None = None) -> RunResult:
    """Process `tasks` on Dask and write their results from this process only (see module docstring)."""
    tasks = sorted(tasks, key=lambda t: t.index)
    result = RunResult()
    t0 = time.perf_counter()
    if not tasks:
        return result
    stop = _StopSignals()
    groups = _Groups(tasks, group_size, write_fn, result, stop)
    bar = _Progress(len(tasks), desc, progress)
    try:
        with stop:
            if workers == 0 and not scheduler:
                _run_inline(tasks, process_fn, groups, bar)
            else:
                _run_dask(tasks, process_fn, groups, bar, workers=workers, scheduler=scheduler,
                          processes=processes, max_in_flight=max_in_flight,
                          memory_per_worker_gb=memory_per_worker_gb)
    except KeyboardInterrupt:
        with _signals_ignored():  # a second Ctrl-C must not cut the writing short
            groups.flush()
        bar.close()
        result.seconds = time.perf_counter() - t0
        import signal

        exc = Interrupted(f"{desc} interrupted by {signal_name(stop.signum or signal.SIGINT)}",
                          signum=stop.signum or signal.SIGINT)
        exc.result = result
        raise exc from None
    finally:
        bar.close()
        result.seconds = time.perf_counter() - t0
    return result


def _run_dask(tasks, process_fn, groups: _Groups, bar: _Progress, *, workers, scheduler,
              processes, max_in_flight, memory_per_worker_gb) -> None:
    from distributed import as_completed

    client, cluster = _start_client(workers, scheduler, processes, memory_per_worker_gb)
    try:
        host_threads = _host_threads(client)
        total_threads = max(1, sum(host_threads.values()))
        limit = max_in_flight or (2 * total_threads + groups.size)
        by_key: dict[str, Task] = {}
        queue = iter(tasks)
        ac = as_completed()

        def submit_next() -> bool:
            t = next(queue, None)
            if t is None:
                return False
            fut = client.submit(_call, process_fn, t.payload, host_threads, os.getpid(), pure=False,
                                key=f"xpgan-item-{t.index}-{os.getpid()}-{time.monotonic_ns()}")
            by_key[fut.key] = t
            ac.add(fut)
            return True

        for _ in range(limit):
            if not submit_next():
                break
        for fut in ac:
            t = by_key.pop(fut.key)
            try:
                status, value = fut.result()
            except Exception as exc:  # the worker died on this item (KilledWorker) or the cluster failed
                first = str(exc).split(". ")[0].strip()
                status, value = "fail", f"worker failed on this item ({type(exc).__name__}: {first})"
            fut.release()
            groups.outcome(t.index, status, value)
            bar.update(status == "ok")
            submit_next()
    except KeyboardInterrupt:
        with _signals_ignored():  # keep the finished items before the (slower) cluster shutdown
            groups.flush()
        raise
    finally:
        with groups.stop.deferred():  # every item is through: a signal now does not cut the shutdown short
            client.close()
            if cluster is not None:
                cluster.close()
