"""The local executor: each task in its own worker process, with a timeout, never fatal.

Workers are forked from a multiprocessing *forkserver* that has imported torch (and JAX, when
installed) but never run anything: starting a worker costs a fork, not an import, and no worker
inherits threads, CUDA contexts or allocator state from the parent or from another worker.
A worker that raises, hangs, is killed by the kernel, or aborts becomes an ``Outcome`` with a
status and a message.
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
from typing import Any

PRELOAD = ("numpy", "torch", "jax", "harness.worker")


@dataclass(frozen=True)
class Outcome:
    status: str            # "ok" (the task returned), "timeout", "oom", "error"
    result: Any = None
    message: str = ""
    wall_s: float = 0.0


def _child(conn: Connection, task: str, args: tuple[Any, ...]) -> None:
    try:
        from harness.worker import run_task

        result = run_task(task, *args)
        conn.send(("ok", result))
    except BaseException as exc:  # noqa: BLE001
        conn.send(("raised", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"))
    finally:
        conn.close()


class LocalExecutor:
    """Runs worker tasks one at a time, each in a fresh process."""

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

    def run(self, task: str, *args: Any, timeout: float | None = None) -> Outcome:
        parent_conn, child_conn = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_child, args=(child_conn, task, args), daemon=True)
        start = time.perf_counter()
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
                kind, payload = parent_conn.recv()
            except EOFError:  # the worker died before it could answer
                process.join(5)
                return self._death(process, start)
            process.join(30)
            if process.is_alive():
                self._kill(process)
            wall = time.perf_counter() - start
            if kind == "ok":
                return Outcome("ok", result=payload, wall_s=wall)
            return Outcome("error", message=f"worker raised {payload.strip().splitlines()[0]}",
                           wall_s=wall)
        finally:
            self._current = None
            parent_conn.close()

    def interrupt(self) -> None:
        """Kill a running worker (on Ctrl-C)."""
        if self._current is not None and self._current.is_alive():
            self._kill(self._current)

    @staticmethod
    def _kill(process: multiprocessing.process.BaseProcess) -> None:
        process.kill()
        process.join(10)

    @staticmethod
    def _death(process: multiprocessing.process.BaseProcess, start: float) -> Outcome:
        wall = time.perf_counter() - start
        code = process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            if name == "SIGKILL":
                return Outcome("oom", message="worker killed by SIGKILL (most likely the "
                                              "kernel's out-of-memory killer)", wall_s=wall)
            return Outcome("error", message=f"worker died with {name}", wall_s=wall)
        return Outcome("error", message=f"worker exited with status {code} without a result",
                       wall_s=wall)
