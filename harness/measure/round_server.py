"""Measure one planned sweep many times on request: the side process of ``run_bench.py ab``.

``run_bench.py sweep [grid flags] --serve-rounds`` plans the grid, starts the worker server and
runs the correctness gate of every combination once, then measures one point at a time, each
into the run directory the request names. A round of ``ab`` is then a few requests instead of a
new sweep process (Python, torch, the worker server and the gate: most of a sweep's time on a
small grid), so many more rounds fit in the same time, and the two sides can take turns point
by point. Every point is still measured by the sweep's Runner: memory and timing workers of
their own, failures as records.

Protocol, JSON lines. Replies go to the process's original stdout (everything else the sweep
prints, and whatever a worker prints, goes to stderr):

- once planned and gated: ``{"ready": {"points": [{"point_id": ..., "point": {...}}, ...],
  "hardware_id": ...}}``
- ``{"measure": POINT_ID, "out": DIR}`` -> ``{"record": {...}}``, the record also appended to
  DIR (a run directory, created with its run.json on first use and locked while open); with
  ``"lockstep": {"wait": FIFO, "pass": FIFO, "leader": bool}`` the timing worker takes turns
  call by call with another worker (harness.grid.settings.Lockstep); ``"cpu": N`` in it pins
  that worker to CPU N
- ``{"close": DIR}`` -> ``{"closed": DIR}``: run.json finished, lock released
- end of input, or ``{"quit": true}``: every directory closed, exit 0
- anything else -> ``{"error": "..."}``, and the server goes on
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from harness.console import DataSafeConsole
from harness.measure.progress import ProgressListener
from harness.measure.processes import LocalExecutor
from harness.store.hardware import fingerprint
from harness.grid.plan import SweepPlan
from harness.store.run_metadata import run_metadata
from harness.contract.probe import ProbeResult
from harness.contract.registry import REGISTRY
from harness.grid.settings import Lockstep
from harness.measure.runner import Combo, Runner
from harness.grid.settings import RunSettings
from harness.contract.registry import static_check
from harness.store.run_dir import RunDir, now_iso

# what each round directory's run.json says about how it came to be
NOTE = ("one round of run_bench.py ab: measured by a round server (planned and gated once; "
        "machine peaks not measured, so no pct_peak fields)")


class RoundServer:
    def __init__(self, sweep: SweepPlan, console: Console) -> None:
        self.sweep = sweep
        self.console = console
        self.machine = fingerprint()
        self.executor = LocalExecutor()
        self.points = {p.point_id: p for p in sweep.points}
        self.probes: dict[Combo, ProbeResult] = {}
        self.open: dict[Path, tuple[RunDir, Runner]] = {}
        self.printer = ProgressListener(console)

    def listen(self, event: str, payload: Any) -> None:
        """One line per record on stderr (the side's log); no progress bar."""
        if event == "record":
            self.printer.print_record(payload)

    def runner(self, run_dir: RunDir | None, settings: RunSettings | None = None) -> Runner:
        return Runner(run_dir, settings or self.sweep.settings,  # type: ignore[arg-type]
                      executor=self.executor,
                      hardware_id=self.machine["hardware_id"],
                      listener=self.listen,
                      probe_cache=self.probes)

    def gate(self) -> None:
        """Probe and gate every combination of the grid once (records come per round)."""
        supported = [p for p in self.sweep.points
                     if static_check(REGISTRY.get(p.impl), p) is None]
        self.runner(None).probe(supported)

    def ready_message(self) -> dict[str, Any]:
        return {"ready": {"points": [{"point_id": pid, "point": p.as_dict()}
                                     for pid, p in self.points.items()],
                          "hardware_id": self.machine["hardware_id"]}}

    def measure(self, point_id: str, out: Path,
                lockstep: dict[str, Any] | None = None) -> dict[str, Any]:
        point = self.points.get(point_id)
        if point is None:
            return {"error": f"no point {point_id!r} in this grid"}
        run_dir, runner = self.opened(out)
        if lockstep is not None:
            settings = self.sweep.settings
            turns = Lockstep(wait_path=str(lockstep["wait"]), pass_path=str(lockstep["pass"]),
                             leader=bool(lockstep["leader"]),
                             cpu=lockstep_cpu(lockstep.get("cpu")),
                             timeout_s=settings.timeout_s + settings.compile_allowance_s)
            runner = self.runner(run_dir, replace(settings, timing=replace(settings.timing,
                                                                           lockstep=turns)))
        summary = runner.run([point])
        if summary.interrupted:
            raise KeyboardInterrupt
        return {"record": summary.records[-1].to_json()}

    def opened(self, out: Path) -> tuple[RunDir, Runner]:
        out = out.resolve()
        if out not in self.open:
            metadata = run_metadata("speed", sweep=self.sweep, machine=self.machine,
                                    executor={"name": "round server", "note": NOTE})
            run_dir = RunDir.create(out, metadata.as_dict())
            self.open[out] = (run_dir, self.runner(run_dir))
        return self.open[out]

    def close(self, out: Path, *, interrupted: bool = False) -> None:
        run_dir, _ = self.open.pop(out.resolve(), (None, None))
        if run_dir is not None:
            try:
                run_dir.update_metadata(finished_at=now_iso(), interrupted=interrupted)
            finally:
                run_dir.release()

    def close_all(self, *, interrupted: bool = False) -> None:
        for out in list(self.open):
            self.close(out, interrupted=interrupted)

    def handle(self, line: str) -> dict[str, Any] | None:
        """The reply to one request line; None to stop."""
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            return {"error": f"not JSON: {exc}"}
        if not isinstance(request, dict):
            return {"error": "a request is a JSON object"}
        if request.get("quit"):
            return None
        if "measure" in request and "out" in request:
            lockstep = request.get("lockstep")
            if lockstep is not None and not (isinstance(lockstep, dict) and
                                             {"wait", "pass", "leader"} <= set(lockstep)):
                return {"error": "lockstep needs wait, pass and leader"}
            if lockstep is not None and lockstep.get("cpu") is not None and \
                    lockstep_cpu(lockstep["cpu"]) is None:
                return {"error": f"lockstep cpu: not a CPU number: {lockstep['cpu']!r}"}
            return self.measure(str(request["measure"]), Path(str(request["out"])), lockstep)
        if "close" in request:
            self.close(Path(str(request["close"])))
            return {"closed": str(request["close"])}
        return {"error": f"unknown request {sorted(request)}"}


def protocol_channel() -> TextIO:
    """The original stdout, for replies only; fd 1 then points at stderr, so that prints of this
    process and of the workers it forks cannot corrupt a reply."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def serve(sweep: SweepPlan, requests: TextIO | None = None,
          replies: TextIO | None = None) -> int:
    replies = replies or protocol_channel()
    requests = requests or sys.stdin
    console = DataSafeConsole(file=sys.stderr, width=160)
    server = RoundServer(sweep, console)
    interrupted = False
    try:
        server.gate()
        replies.write(json.dumps(server.ready_message()) + "\n")
        replies.flush()
        for line in requests:
            if not line.strip():
                continue
            try:
                reply = server.handle(line)
            except (KeyboardInterrupt, BrokenPipeError):
                raise
            except Exception as exc:   # noqa: BLE001 - answered, the log has the traceback
                traceback.print_exc()
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            if reply is None:
                break
            replies.write(json.dumps(reply, default=str) + "\n")
            replies.flush()
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:      # ab went away: nothing left to answer
        interrupted = True
    finally:
        server.close_all(interrupted=interrupted)
        server.executor.interrupt()
    return 130 if interrupted else 0


def lockstep_cpu(value: Any) -> int | None:
    """A request's lockstep CPU: a non-negative int, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
