"""Whether an implementation runs here: the one probe and its typed result.

``probe`` is the only code that decides availability on a machine: packages installed, device
present, the implementation's own ``probe`` (if it has one) and, with ``run``, a tiny input
really run on the device and dtype. The registry's ``Implementation.availability`` caches it;
the measure stage's workers call it in their own processes (so that a crash stays there) and
add the correctness gate (harness.measure.gate) to the result.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from harness.contract import frameworks
from harness.contract.frameworks import device_kind
from harness.errors import first_line


TINY_SHAPE = (1, 2, 16, 16)   # (B, H, T, D) of the probe's tiny run


@dataclass(frozen=True)
class Availability:
    """Whether an implementation can run on a device/dtype here, and if not, why (``reasons``:
    every one that applies; ``reason``: them all in one line)."""

    available: bool
    reason: str = ""
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.reasons and self.reason:
            object.__setattr__(self, "reasons", (self.reason,))

    def __bool__(self) -> bool:
        return self.available


@dataclass(frozen=True)
class GateResult:
    """The correctness gate of one combination (harness.measure.gate)."""

    passed: bool
    max_error: float | None      # against the family's reference (None: approximate family)
    tolerance: float | None
    deviation_from_softmax: float | None  # relative Frobenius error vs exact attention
    message: str = ""
    # the method refused these inputs when called (UnsupportedError: a limit only the shapes
    # show, e.g. a kernel's head dims): not a wrong answer; ``message`` is its reason
    unsupported: bool = False


@dataclass(frozen=True)
class ProbeResult(Availability):
    """What probing one combination found.

    Not ``available`` is ``unsupported`` unless ``failed`` (it should run here, but its tiny run
    returned a wrong-shaped or non-finite output) or ``crashed`` (the probe's worker process
    died): both are errors; or ``timed_out`` (the probe's worker gave no answer within
    --timeout and was killed): a timeout, as a point's would be. ``gate``: the correctness
    gate, when one was run.
    """

    failed: bool = False
    crashed: bool = False
    gate: GateResult | None = None
    timed_out: bool = False

    @classmethod
    def of(cls, verdict: Availability) -> "ProbeResult":
        """A verdict (capabilities, constraints, an implementation's own probe) as a result."""
        if isinstance(verdict, ProbeResult):
            return verdict
        return cls(verdict.available, verdict.reason, verdict.reasons)

    @property
    def status(self) -> str:
        """The record status of a combination that is not available."""
        if self.timed_out:
            return "timeout"
        return "error" if self.failed or self.crashed else "unsupported"

    def with_gate(self, gate: GateResult) -> "ProbeResult":
        return dataclasses.replace(self, gate=gate)

    def gate_fields(self) -> dict[str, float | None]:
        """The record's gate fields (None where no gate ran)."""
        gate = self.gate
        return {"gate_max_error": None if gate is None else gate.max_error,
                "gate_tolerance": None if gate is None else gate.tolerance}


def presence(impl: Any, device: str) -> ProbeResult:
    """Packages installed and device present, without running anything."""
    for package in impl.requires:
        if importlib.util.find_spec(package) is None:
            return ProbeResult(False, f"{impl.name}: package {package} not installed")
    present = frameworks.get(impl.framework).device_present(device)
    if not present:
        installed = " installed, but" if impl.requires else ""
        kind = "CUDA" if device_kind(device) == "cuda" else device_kind(device)
        return ProbeResult(False, f"{impl.name}:{installed} needs a {kind} device; "
                                  f"{present.reason}")
    return ProbeResult(True)


def probe(impl: Any, device: str, dtype: str, *, run: bool = True) -> ProbeResult:
    """Can ``impl`` run on ``device``/``dtype`` here: packages, device, its own probe, then
    (``run``) a tiny input really run by its framework's adapter. Never raises."""
    try:
        present = presence(impl, device)
        if not present:
            return present
        if impl.probe is not None:
            verdict = impl.probe(device, dtype)
            if not verdict:
                return ProbeResult.of(verdict)
        if not run:
            return ProbeResult(True)
        return ProbeResult.of(frameworks.get(impl.framework).tiny_run(impl, device, dtype))
    except Exception as exc:  # noqa: BLE001 - a probe must never raise
        return ProbeResult(False, f"{impl.name}: probe failed: {type(exc).__name__}: "
                                  f"{first_line(str(exc))}")


class WrongOutput(Exception):
    """Raised by an adapter's tiny run for an output that is no array at all (None, a tuple)."""


def tiny_run_result(impl: Any, device: str, dtype: str,
                    run: Callable[[], tuple[tuple[int, ...], bool]]) -> ProbeResult:
    """The verdict of a tiny run: ``run()`` (a framework adapter's) calls the method once on
    q, k, v of TINY_SHAPE on the device and dtype and returns the output's shape and whether
    every value is finite. Raising means it cannot run here (unsupported); a wrong shape or a
    non-finite value means it runs wrong (``failed``: an error)."""
    try:
        shape, finite = run()
    except WrongOutput as wrong:
        return ProbeResult(False, f"{impl.name}: {wrong}", failed=True)
    except Exception as exc:  # noqa: BLE001 - whatever the method raises is the reason
        return ProbeResult(False, f"{impl.name}: fails on {device}/{dtype}: "
                                  f"{type(exc).__name__}: {first_line(str(exc))}")
    if tuple(shape) != TINY_SHAPE:
        return ProbeResult(False, f"{impl.name}: returned shape {tuple(shape)} for input "
                                  f"{TINY_SHAPE}", failed=True)
    if not finite:
        return ProbeResult(False, f"{impl.name}: non-finite output on a tiny input", failed=True)
    return ProbeResult(True)
