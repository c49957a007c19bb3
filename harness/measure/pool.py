"""Reused workers: one long-lived worker process per key, serving task after task.

A worker is forked from the same forkserver as harness.measure.processes' one-shot workers (torch
and JAX imported, nothing run), then keeps its device context, compiled kernels and allocator
warm from one point to the next of its key (harness.measure.runner uses the implementation,
device and dtype). Isolation is paid for only when something goes wrong:

- a task that does not answer within its timeout: the worker is killed, the task is ``timeout``;
- a worker that dies (segfault, ``os._exit``, the kernel's OOM killer): the task's status comes
  from harness.measure.processes.classify_death, exactly as for a one-shot worker;
- a task that raised, or returned a result whose status is not ``ok`` (an OOM caught by the
  framework, an error, a wrong output, a sticky CUDA error): the worker is retired after it
  answers, so the next point starts in a fresh one.
In each case the next task of that key starts a fresh worker. Workers belong to a group (the
runner's (implementation, device, dtype)); only one group is alive at a time: a task of another
group retires them first (an idle worker would hold device memory, a CUDA context and cached
blocks that the measured one might need). Within a group each key has its own worker: on the
CPU the runner keeps the memory passes and the timing passes in two workers, because the timing
pass's malloc policy (freed memory held for reuse) leaves free chunks in glibc's heap that a
later memory pass in the same process would fill and count.

``ExecutorStats`` keeps what the run's overhead accounting needs: worker start-ups and their time.
"""

from __future__ import annotations

import gc
import importlib
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Hashable

from harness.measure.processes import (
    ExecutorStats,
    LocalExecutor,
    Outcome,
    classify_death,
    descendants,
    kill_pids,
    kill_tree,
    oom_kill_count,
    send_answer,
    timed_task,
    worker_signals,
)

READY_TIMEOUT_S = 300.0   # a fresh worker says it is ready (fork + the worker module's import)


def _serve(conn: Connection) -> None:
    """The worker's loop: answer ("ok", result) or ("raised", text) to each (task, args)."""
    started = time.perf_counter()
    worker_signals()
    importlib.import_module("harness.measure.worker")   # what every task needs, once
    # the imported modules' objects (torch, JAX) never become garbage: out of the collector's
    # sight, a full collection (the memory pass makes one per point) takes microseconds, not
    # the 80 ms it takes with them
    gc.freeze()

    conn.send(("ready", None, (time.perf_counter() - started, 0.0)))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, args = message
        send_answer(conn, timed_task(task, args))


@dataclass
class _Worker:
    key: Hashable
    process: Any
    conn: Connection
    tasks: int = 0
    measured: int = 0      # the points it measured (MEASURING tasks), the one running included


MEASURING = ("point", "memory", "timing")


def close_quietly(conn: Connection) -> None:
    """Close a worker's pipe; an interrupt from another thread may have closed it already."""
    try:
        conn.close()
    except OSError:
        pass


def failed(result: Any) -> bool:
    """Whether a task's result says a call failed (which retires the worker): a measurement whose
    status is not ``ok``, or a probe task's answer holding a combination whose tiny run failed
    (an exception, a wrong output) or that failed the correctness gate."""
    if isinstance(result, dict):
        return any(probe_failed(value) for value in result.values())
    status = getattr(result, "status", "ok")
    return status != "ok"


def probe_failed(result: Any) -> bool:
    if getattr(result, "available", True) is False and getattr(result, "status", "") == "error":
        return True
    gate = getattr(result, "gate", None)
    return gate is not None and not gate.passed


@dataclass
class WorkerPool:
    """Same ``run`` as LocalExecutor, plus ``key`` and ``group``: tasks of one key share one live
    worker; the workers of one group (``group`` defaults to the key) live together."""

    start_method: str | None = None
    env: dict[str, str] | None = None
    stats: ExecutorStats = field(default_factory=ExecutorStats)
    mode: str = "worker"

    def __post_init__(self) -> None:
        # the one-shot executor's set-up: environment, forkserver with its preloads
        self._spawner = LocalExecutor(start_method=self.start_method, env=self.env)
        self.context = self._spawner.context
        self._workers: dict[Hashable, _Worker] = {}
        self._group: Hashable = None
        self._last_key: Hashable = None

    # -- the executor interface ----------------------------------------------------------------
    def run(self, task: str, *args: Any, timeout: float | None = None,
            key: Hashable = None, group: Hashable = None) -> Outcome:
        worker = self._worker_for(key, key if group is None else group)
        if isinstance(worker, Outcome):
            return worker
        start = time.perf_counter()
        oom_kills = oom_kill_count()
        self.stats.tasks += 1
        worker.tasks += 1
        worker.measured += task in MEASURING
        turn = worker.measured if task in MEASURING else None
        try:
            worker.conn.send((task, args))
        except (BrokenPipeError, OSError):
            return self._death(worker, start, oom_kills, turn)
        if not worker.conn.poll(timeout):
            self._retire(key)
            return Outcome("timeout", message=f"no result after {timeout:g} s; worker killed",
                           wall_s=time.perf_counter() - start, worker_turn=turn)
        try:
            kind, payload, (task_s, compile_s) = worker.conn.recv()
        except (EOFError, OSError):
            return self._death(worker, start, oom_kills, turn)
        wall = time.perf_counter() - start
        if kind == "ok":
            if failed(payload):
                self.stats.retired_after_failure += 1
                self._retire(key)
            return Outcome("ok", result=payload, wall_s=wall, task_s=task_s,
                           compile_s=compile_s, worker_turn=turn)
        self.stats.retired_after_failure += 1
        self._retire(key)
        return Outcome("error", message=f"worker raised {str(payload).strip().splitlines()[0]}",
                       wall_s=wall, task_s=task_s, compile_s=compile_s, worker_turn=turn)

    @property
    def live_workers(self) -> int:
        return len(self._workers)

    @property
    def worker_tasks(self) -> int:
        """Tasks the last used worker has answered or is answering (0: none alive)."""
        worker = self._workers.get(self._last_key)
        return 0 if worker is None else worker.tasks

    @property
    def process(self) -> Any:
        """The last used worker's process (None: none alive)."""
        worker = self._workers.get(self._last_key)
        return None if worker is None else worker.process

    @property
    def pid(self) -> int | None:
        """The last used worker's process id (None: none alive)."""
        worker = self._workers.get(self._last_key)
        return None if worker is None else worker.process.pid

    def interrupt(self) -> None:
        """Kill the live workers (on Ctrl-C)."""
        self.retire(kill=True)

    def retire(self, kill: bool = True) -> None:
        """End every live worker (asked to exit; killed if it does not within a few seconds)."""
        for key in list(self._workers):
            self._retire(key, kill=kill)
        self._group = None

    def close(self) -> None:
        self.retire(kill=False)

    # -- workers -------------------------------------------------------------------------------
    def _retire(self, key: Hashable, kill: bool = True) -> None:
        worker = self._workers.pop(key, None)
        if worker is None:
            return
        below = descendants(worker.process.pid) if worker.process.pid is not None else []
        if not kill:
            try:
                worker.conn.send(None)
                worker.process.join(5)
            except (BrokenPipeError, OSError):
                pass
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(10)
        kill_pids(below)     # what the worker started and left running
        close_quietly(worker.conn)

    def _worker_for(self, key: Hashable, group: Hashable) -> _Worker | Outcome:
        if group != self._group:
            self.retire(kill=False)
            self._group = group
        self._last_key = key
        worker = self._workers.get(key)
        if worker is not None and not worker.process.is_alive():
            self._retire(key)
            worker = None
        if worker is not None:
            return worker
        parent_conn, child_conn = self.context.Pipe(duplex=True)
        process = self.context.Process(target=_serve, args=(child_conn,), daemon=True)
        start = time.perf_counter()
        oom_kills = oom_kill_count()
        process.start()
        child_conn.close()
        worker = _Worker(key, process, parent_conn)
        self._workers[key] = worker   # from here on, interrupt() (Ctrl-C while it starts) kills it
        try:
            ready = parent_conn.poll(READY_TIMEOUT_S)
            message = parent_conn.recv() if ready else None
        except (EOFError, OSError):
            message = None
        self.stats.start_s += time.perf_counter() - start
        if not message or message[0] != "ready":
            self._workers.pop(key, None)
            if process.is_alive():
                kill_tree(process)
            process.join(10)
            close_quietly(parent_conn)
            status, text = classify_death(process.exitcode, oom_kills, oom_kill_count())
            return Outcome("error" if status == "ok" else status,
                           message=f"worker did not start: {text}",
                           wall_s=time.perf_counter() - start)
        self.stats.workers_started += 1
        return worker

    def _death(self, worker: _Worker, start: float, oom_kills_before: int | None,
               turn: int | None) -> Outcome:
        worker.process.join(5)
        wall = time.perf_counter() - start
        status, message = classify_death(worker.process.exitcode, oom_kills_before,
                                         oom_kill_count())
        self._workers.pop(worker.key, None)
        close_quietly(worker.conn)
        return Outcome(status, message=message, wall_s=wall, worker_turn=turn)
