"""The local executor: each task in its own worker process, with a timeout, never fatal.

Workers are forked from a multiprocessing *forkserver* that has imported torch (and JAX, when
installed) but never run anything: starting a worker costs a fork, not an import, and no worker
inherits threads, CUDA contexts or allocator state from the parent or from another worker.
A worker that raises, hangs, is killed by the kernel, or aborts becomes an ``Outcome`` with a
status and a message.

A worker killed by a signal is ``oom`` only when the kernel's OOM killer did it: SIGKILL and the
kernel's ``oom_kill`` counter (the cgroup's ``memory.events``, else ``/proc/vmstat``) rose while
the task ran. Any other death by signal (a SIGKILL from a user or a scheduler, SIGSEGV, SIGABRT,
...) is ``error`` naming the signal.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PRELOAD = ("numpy", "torch", "jax", "harness.measure.worker")
CGROUP_EVENTS = Path("/sys/fs/cgroup/memory.events")
VMSTAT = Path("/proc/vmstat")
PR_SET_PDEATHSIG = 1   # linux/prctl.h


def _cgroup_events() -> Path:
    """memory.events of this process's cgroup (v2), else the root one."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                candidate = CGROUP_EVENTS.parent / line[3:].lstrip("/") / "memory.events"
                if candidate.exists():
                    return candidate
    except OSError:
        pass
    return CGROUP_EVENTS


def oom_kill_count() -> int | None:
    """The kernel's count of OOM kills (this cgroup's, else the machine's); None if unreadable."""
    for path, prefix in ((_cgroup_events(), "oom_kill "), (VMSTAT, "oom_kill ")):
        try:
            for line in path.read_text().splitlines():
                if line.startswith(prefix):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return None


def classify_death(exitcode: int | None, oom_kills_before: int | None,
                   oom_kills_after: int | None) -> tuple[str, str]:
    """(status, message) of a worker that died without a result (pure: the rule in one place)."""
    if exitcode is None or exitcode >= 0:
        return "error", f"worker exited with status {exitcode} without a result"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    if name != "SIGKILL":
        return "error", f"worker died with {name}"
    if oom_kills_before is None or oom_kills_after is None:
        return "error", ("worker killed by SIGKILL; the kernel's oom_kill counter is unreadable "
                         "here, so it is not counted as out of memory")
    if oom_kills_after > oom_kills_before:
        return "oom", ("worker killed by the kernel's out-of-memory killer (SIGKILL; oom_kill "
                       f"count {oom_kills_before} -> {oom_kills_after})")
    return "error", ("worker killed by SIGKILL, not by the kernel's out-of-memory killer "
                     "(its oom_kill count did not change)")


@dataclass(frozen=True)
class Outcome:
    status: str            # "ok" (the task returned), "timeout", "oom", "error"
    result: Any = None
    message: str = ""
    wall_s: float = 0.0    # the parent's wall time for the task (process start included here)
    task_s: float | None = None   # the task's own time inside the worker, when it answered
    compile_s: float = 0.0        # of which compiling (torch.compile, JAX), as they time it
    worker_turn: int | None = None  # the worker's how-many-th measured point this was (1: fresh)


def timed_task(task: str, args: tuple[Any, ...]) -> tuple[str, Any, tuple[float, float]]:
    """Run a task in this (worker) process: ("ok", result, times) or ("raised", text, times),
    times = (the task's seconds, of which compiling: harness.measure.compile_cache)."""
    from harness.measure.compile_cache import compile_seconds

    start, compiled = time.perf_counter(), compile_seconds()
    try:
        from harness.measure.worker import run_task

        result = run_task(task, *args)
        return "ok", result, (time.perf_counter() - start, compile_seconds() - compiled)
    except BaseException as exc:  # noqa: BLE001
        return ("raised", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}",
                (time.perf_counter() - start, max(0.0, compile_seconds() - compiled)))


def send_answer(conn: Connection, answer: tuple[str, Any, tuple[float, float]]) -> None:
    """Send a task's answer; one that cannot be pickled is sent as what went wrong."""
    try:
        conn.send(answer)
    except (TypeError, AttributeError, ValueError, RecursionError) as exc:  # pickling failed
        conn.send(("raised", f"{type(exc).__name__}: the task's result could not be sent: {exc}",
                   answer[2]))   # the same (seconds, compiling) pair


def worker_signals() -> None:
    """A worker's signals, set first thing in every worker process (one-shot or reused).

    SIGINT is ignored: Ctrl-C reaches the whole process group, and the parent owns it (it kills
    the live worker and records nothing for the point in progress; a worker that turned its
    KeyboardInterrupt into an error result could otherwise have it recorded as the point's).
    SIGKILL when the worker's parent dies (Linux's PR_SET_PDEATHSIG), so that a sweep killed
    with SIGKILL leaves no worker measuring (or hanging) on after it. A forkserver's worker has
    the forkserver for a parent, which exits when no process holds its "alive" pipe: its client
    (the sweep) and, as multiprocessing hands it to each child, every worker. Workers start no
    processes of their own, so each closes its copy: the forkserver then exits with the sweep.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from multiprocessing import forkserver

        alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
        if alive is not None:
            forkserver._forkserver._forkserver_alive_fd = None
            os.close(alive)
    except (ImportError, AttributeError, OSError):
        pass
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):   # not Linux: a killed sweep's worker ends with its task
        pass


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (its children, theirs, ...), read from /proc ([] where it
    cannot be read). A method may start processes of its own (a compiler's helpers, a plug-in's
    server); killing the worker alone would leave them running, holding the sweep's output
    pipe (a `| grep` waits on them) or a GPU."""
    parents: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue    # gone meanwhile, or unreadable
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` that still runs (an orphan left by a killed worker)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(process: multiprocessing.process.BaseProcess) -> None:
    """Kill a worker and every process below it (collected first: once the worker is dead its
    children belong to init and can no longer be told apart)."""
    below = descendants(process.pid) if process.pid is not None else []
    process.kill()
    process.join(10)
    kill_pids(below)


def _child(conn: Connection, task: str, args: tuple[Any, ...]) -> None:
    worker_signals()
    try:
        send_answer(conn, timed_task(task, args))
    finally:
        conn.close()


@dataclass
class ExecutorStats:
    """What the run's overhead accounting reads from an executor (harness.measure.overhead)."""
    workers_started: int = 0
    start_s: float = 0.0     # worker start-ups not already inside a task's wall time
    retired_after_failure: int = 0
    tasks: int = 0


class LocalExecutor:
    """Runs worker tasks one at a time, each in a fresh process (``--isolate point``)."""

    mode = "point"

    def __init__(self, *, start_method: str | None = None, env: dict[str, str] | None = None):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        for key, value in (env or {}).items():
            os.environ[key] = value
        method = start_method or ("forkserver" if "forkserver" in
                                  multiprocessing.get_all_start_methods() else "spawn")
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            self.context.set_forkserver_preload(
                [m for m in PRELOAD if importlib.util.find_spec(m.split(".")[0]) is not None])
        self._current: multiprocessing.process.BaseProcess | None = None
        self.stats = ExecutorStats()

    def run(self, task: str, *args: Any, timeout: float | None = None,
            key: Any = None, group: Any = None) -> Outcome:
        """``key`` and ``group`` are the reused pool's (harness.measure.pool); every task here
        has a process of its own."""
        self.stats.tasks += 1
        self.stats.workers_started += 1
        parent_conn, child_conn = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_child, args=(child_conn, task, args), daemon=True)
        start = time.perf_counter()
        oom_kills = oom_kill_count()
        process.start()
        self._current = process
        child_conn.close()
        try:
            ready = parent_conn.poll(timeout)
            if not ready:
                self._kill(process)
                return Outcome("timeout", message=f"no result after {timeout:g} s; worker killed",
                               wall_s=time.perf_counter() - start)
            try:
                kind, payload, (task_s, compile_s) = parent_conn.recv()
            except EOFError:  # the worker died before it could answer
                process.join(5)
                return self._death(process, start, oom_kills)
            process.join(30)
            if process.is_alive():
                self._kill(process)
            wall = time.perf_counter() - start
            if kind == "ok":
                return Outcome("ok", result=payload, wall_s=wall, task_s=task_s,
                               compile_s=compile_s, worker_turn=1)
            return Outcome("error", message=f"worker raised {payload.strip().splitlines()[0]}",
                           wall_s=wall, task_s=task_s, compile_s=compile_s)
        finally:
            self._current = None
            parent_conn.close()

    def retire(self, kill: bool = True) -> None:
        """Nothing to retire: no worker outlives its task."""

    def close(self) -> None:
        """Nothing to close (the pool's interface)."""

    def interrupt(self) -> None:
        """Kill a running worker (on Ctrl-C)."""
        if self._current is not None and self._current.is_alive():
            self._kill(self._current)

    @staticmethod
    def _kill(process: multiprocessing.process.BaseProcess) -> None:
        kill_tree(process)

    @staticmethod
    def _death(process: multiprocessing.process.BaseProcess, start: float,
               oom_kills_before: int | None) -> Outcome:
        wall = time.perf_counter() - start
        status, message = classify_death(process.exitcode, oom_kills_before, oom_kill_count())
        return Outcome(status, message=message, wall_s=wall)
