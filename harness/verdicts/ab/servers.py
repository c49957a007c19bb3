"""The client side of a side's round server (``run_bench.py sweep --serve-rounds``, in that side's
own tree: harness/measure/round_server.py there): start it, wait until it has planned and gated its grid,
ask it to measure points one at a time, stop it.

A side whose tree has no round server (a revision from before it existed) is measured by one
whole sweep per round instead (harness.verdicts.ab.rounds.run_side).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

from harness.verdicts.ab.sides import ENTRY, Side
from harness.errors import UsageError
from harness.measure.lockstep import CONTINUE, STOP

# where a tree keeps its round server (``sweep --serve-rounds``): the measure stage, or the top
# of harness/ in trees from before the stages were packages
SERVER_MODULES = (Path("harness") / "measure" / "round_server.py",
                  Path("harness") / "round_server.py")


def has_round_server(side: Side) -> bool:
    return any((side.root / module).is_file() for module in SERVER_MODULES)


def can_pin(side: Side) -> bool:
    """Whether the side's round server pins its lockstep worker to the CPU a request names (a
    tree from before pinning ignores the request: pinning one side only would be unequal)."""
    path = side.root / "harness" / "measure" / "lockstep.py"
    try:
        return "lockstep_cpu" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


class SideServer:
    """One side's round server process; replies are read by a thread into a queue, so that every
    wait has a timeout and a server that dies is seen at once."""

    def __init__(self, argv: list[str], side: Side, env: dict[str, str], log: Path) -> None:
        self.side = side
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(log, "w", encoding="utf-8")
        self.process = subprocess.Popen(argv, cwd=side.root, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log_handle,
                                        text=True, bufsize=1)
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._replies.put(line)
        self._replies.put(None)          # end of output: the server exited

    def _failure(self, what: str) -> UsageError:
        self.stop()
        lines = [x for x in self.log.read_text(errors="replace").splitlines() if x.strip()]
        last = lines[-1].strip() if lines else "(no output)"
        code = self.process.returncode
        why = "refused the input" if code == 2 else (
            f"exited ({code})" if code is not None else "did not answer")
        return UsageError(f"{self.side.label.upper()} {self.side.describe()}: its round server "
                          f"{why} {what}: {last} (log: {self.log})")

    def _reply(self, timeout_s: float, what: str) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise self._failure(f"{what} within {timeout_s:g} s") from None
        if line is None:
            self.process.wait(timeout=30)
            raise self._failure(what)
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise self._failure(f"{what} (not a reply: {line[:80]!r})") from None
        if "error" in reply:
            raise self._failure(f"{what}: {reply['error']}")
        return reply

    def _send(self, request: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.process.wait(timeout=30)
            raise self._failure(f"before {sorted(request)[0]}") from None

    def ready(self, timeout_s: float) -> list[dict[str, Any]]:
        """The grid as the server planned it: [{"point_id": ..., "point": {...}}, ...]."""
        return self._reply(timeout_s, "while planning and gating")["ready"]["points"]

    def ask_measure(self, point_id: str, out: Path,
                    lockstep: dict[str, Any] | None = None) -> None:
        """Send a measure request; its record comes with ``record``."""
        request: dict[str, Any] = {"measure": point_id, "out": str(out)}
        if lockstep is not None:
            request["lockstep"] = lockstep
        self._send(request)

    def record(self, timeout_s: float, point_id: str = "") -> dict[str, Any]:
        return self._reply(timeout_s, f"measuring {point_id}".strip())["record"]

    def has_reply(self) -> bool:
        return not self._replies.empty()

    def measure(self, point_id: str, out: Path, timeout_s: float) -> dict[str, Any]:
        self.ask_measure(point_id, out)
        return self.record(timeout_s, point_id)

    def close(self, out: Path, timeout_s: float = 60.0) -> None:
        self._send({"close": str(out)})
        self._reply(timeout_s, "closing its round directory")

    def stop(self) -> None:
        """Ask the server to quit; kill it if it does not within a few seconds."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write('{"quit": true}\n')
                self.process.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_handle.close()


class Batons:
    """The two FIFOs through which both sides' timing workers take turns (harness.measure.timing
    Lockstep): the worker of side X waits on ``fifo[X]`` and passes to the other's. ``ab``
    holds both open, puts the first baton in, and can stop a worker whose partner failed."""

    def __init__(self, where: Path, labels: tuple[str, str]) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.labels = labels
        self.fifo = {label: where / f"baton-{label}" for label in labels}
        self.fds = {}
        for label, path in self.fifo.items():
            if not path.exists():
                os.mkfifo(path)
            self.fds[label] = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def lockstep(self, label: str, leader: str) -> dict[str, Any]:
        other = next(x for x in self.labels if x != label)
        return {"wait": str(self.fifo[label]), "pass": str(self.fifo[other]),
                "leader": label == leader}

    def drain(self) -> None:
        for fd in self.fds.values():
            try:
                while os.read(fd, 4096):
                    pass
            except BlockingIOError:
                pass

    def start(self, leader: str) -> None:
        os.write(self.fds[leader], CONTINUE)

    def stop(self, label: str) -> None:
        """Make ``label``'s worker take one last sample and end (its partner is gone)."""
        os.write(self.fds[label], STOP)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def side_sweep_argv(python: str, side: Side, impl_modules: tuple[str, ...],
                    sweep_args: tuple[str, ...], *tail: str) -> list[str]:
    """``run_bench.py [--impl-module M ...] sweep [grid flags] TAIL`` of that side's tree."""
    modules = [arg for m in impl_modules for arg in ("--impl-module", m)]
    return [python, str(side.root / ENTRY), *modules, "sweep", *sweep_args, *tail]
