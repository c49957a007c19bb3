"""An executor for Runner tests that starts no worker: every probe passes its gate, every
memory pass records the same small peak, and each timing pass returns what the test's
``timing`` function makes of the task's arguments."""

from __future__ import annotations

from typing import Any, Callable

from harness.contract.probe import GateResult, ProbeResult
from harness.contract.records import MemoryResult, TimingResult
from harness.measure.processes import Outcome


class PassingExecutor:
    def __init__(self, timing: Callable[[tuple], TimingResult]) -> None:
        self.timing = timing

    def run(self, task: str, *args: Any, timeout: float | None = None) -> Outcome:
        if task == "probe":
            gate = GateResult(True, 0.0, 1e-3, None)
            return Outcome("ok", {c: ProbeResult(True, gate=gate) for c in args[0]})
        if task == "memory":
            return Outcome("ok", MemoryResult(peak_mem_bytes=10, mem_method="x",
                                              input_bytes=100))
        return Outcome("ok", self.timing(args))
