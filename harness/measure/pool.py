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
In each case the next task of any key starts a fresh worker. One worker is alive at a time:
asking for another key retires the current one first (an idle worker would hold device memory,
a CUDA context and cached blocks that the measured one might need).

``ExecutorStats`` keeps what the run's overhead accounting needs: worker start-ups and their time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Hashable

from harness.measure.processes import (
    ExecutorStats,
    LocalExecutor,
    Outcome,
    classify_death,
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
    import harness.measure.worker  # noqa: F401 - what every task needs, imported once

    conn.send(("ready", None, time.perf_counter() - started))
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


def failed(result: Any) -> bool:
    """Whether a task's result says the call failed (which retires the worker)."""
    status = getattr(result, "status", "ok")
    return status != "ok"


@dataclass
class WorkerPool:
    """Same ``run`` as LocalExecutor, plus ``key``: tasks of one key share one live worker."""

    start_method: str | None = None
    env: dict[str, str] | None = None
    stats: ExecutorStats = field(default_factory=ExecutorStats)
    mode: str = "worker"

    def __post_init__(self) -> None:
        # the one-shot executor's set-up: environment, forkserver with its preloads
        self._spawner = LocalExecutor(start_method=self.start_method, env=self.env)
        self.context = self._spawner.context
        self._worker: _Worker | None = None

    # -- the executor interface ----------------------------------------------------------------
    def run(self, task: str, *args: Any, timeout: float | None = None,
            key: Hashable = None) -> Outcome:
        worker = self._worker_for(key)
        if isinstance(worker, Outcome):
            return worker
        start = time.perf_counter()
        oom_kills = oom_kill_count()
        self.stats.tasks += 1
        worker.tasks += 1
        try:
            worker.conn.send((task, args))
        except (BrokenPipeError, OSError):
            return self._death(worker, start, oom_kills)
        if not worker.conn.poll(timeout):
            self.retire()
            return Outcome("timeout", message=f"no result after {timeout:g} s; worker killed",
                           wall_s=time.perf_counter() - start)
        try:
            kind, payload, task_s = worker.conn.recv()
        except (EOFError, OSError):
            return self._death(worker, start, oom_kills)
        wall = time.perf_counter() - start
        if kind == "ok":
            if failed(payload):
                self.stats.retired_after_failure += 1
                self.retire()
            return Outcome("ok", result=payload, wall_s=wall, task_s=task_s)
        self.stats.retired_after_failure += 1
        self.retire()
        return Outcome("error", message=f"worker raised {str(payload).strip().splitlines()[0]}",
                       wall_s=wall, task_s=task_s)

    @property
    def worker_tasks(self) -> int:
        """Tasks the live worker has answered or is answering (0: none alive)."""
        return 0 if self._worker is None else self._worker.tasks

    @property
    def pid(self) -> int | None:
        """The live worker's process id (None: none alive)."""
        return None if self._worker is None else self._worker.process.pid

    def interrupt(self) -> None:
        """Kill the live worker (on Ctrl-C)."""
        self.retire(kill=True)

    def retire(self, kill: bool = True) -> None:
        """End the live worker (asked to exit; killed if it does not within a few seconds)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if not kill:
            try:
                worker.conn.send(None)
                worker.process.join(5)
            except (BrokenPipeError, OSError):
                pass
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(10)
        worker.conn.close()

    def close(self) -> None:
        self.retire(kill=False)

    # -- workers -------------------------------------------------------------------------------
    def _worker_for(self, key: Hashable) -> _Worker | Outcome:
        if self._worker is not None and (self._worker.key != key
                                         or not self._worker.process.is_alive()):
            self.retire(kill=False)
        if self._worker is not None:
            return self._worker
        parent_conn, child_conn = self.context.Pipe(duplex=True)
        process = self.context.Process(target=_serve, args=(child_conn,), daemon=True)
        start = time.perf_counter()
        oom_kills = oom_kill_count()
        process.start()
        child_conn.close()
        worker = _Worker(key, process, parent_conn)
        self._worker = worker   # from here on, interrupt() (Ctrl-C while it starts) kills it
        try:
            ready = parent_conn.poll(READY_TIMEOUT_S)
            message = parent_conn.recv() if ready else None
        except (EOFError, OSError):
            message = None
        self.stats.start_s += time.perf_counter() - start
        if not message or message[0] != "ready":
            self._worker = None
            if process.is_alive():
                process.kill()
            process.join(10)
            parent_conn.close()
            status, text = classify_death(process.exitcode, oom_kills, oom_kill_count())
            return Outcome("error" if status == "ok" else status,
                           message=f"worker did not start: {text}",
                           wall_s=time.perf_counter() - start)
        self.stats.workers_started += 1
        return worker

    def _death(self, worker: _Worker, start: float, oom_kills_before: int | None) -> Outcome:
        worker.process.join(5)
        wall = time.perf_counter() - start
        status, message = classify_death(worker.process.exitcode, oom_kills_before,
                                         oom_kill_count())
        self._worker = None
        worker.conn.close()
        return Outcome(status, message=message, wall_s=wall)
