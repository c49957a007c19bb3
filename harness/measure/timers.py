"""GPU timing discipline beyond the plain CUDA-event timer: CUDA-graph timing, NVTX ranges,
an L2 flush for JAX on GPU, and what each record says about the flush.

- ``--timer cudagraph``: the call is captured once in a CUDA graph (after the warm-up calls,
  on a side stream as torch requires) and each sample replays it between CUDA events, so
  kernel-launch overhead is not timed. The L2 flush, when on, runs before each replay, outside
  the graph. A method that cannot be captured (host synchronisation, data-dependent shapes)
  becomes an ``unsupported`` record with the reason. JAX methods are timed as usual and say so.
- NVTX: on CUDA every timed call is wrapped in a range named after the point id, so an
  ``nsys`` trace lines up with the records.
- JAX on GPU: ``JaxFlushTimer`` writes a buffer larger than L2 (untimed) before each timed
  call, the rule torch's CUDA-event timer follows, so JAX and torch methods are timed alike.

Timing basis (``--timing-basis``; harness.contract.records.TIMING_BASES): what a sample's time
is, one for every framework of a run so that the methods of a comparison are timed alike:
- ``device_events``: CUDA events recorded on the stream around the call: the GPU's time from
  the first kernel's start to the last one's end (host dispatch only where the GPU waited for
  it). torch only: JAX offers no events on its streams, so a run that times JAX on a GPU cannot
  use it.
- ``host_sync``: perf_counter around the call and a wait for its result (torch:
  ``torch.cuda.synchronize``; JAX: ``block_until_ready``): dispatch, the GPU's work and the
  synchronisation, for every framework. The CPU is always timed this way.
Each timer says its ``basis``; the record's ``timing_basis`` is the basis of the timer that took
its samples (``timer_basis``).
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from harness.errors import UnsupportedError
from harness.contract.frameworks.jax_fw import JAX_FLUSH_BYTES
from harness.contract.records import TIMING_BASES
from harness.contract.registry import device_kind

TIMERS = ("events", "cudagraph")
CAPTURE_WARMUP = 3
DEVICE_EVENTS, HOST_SYNC = TIMING_BASES


@runtime_checkable
class Timer(Protocol):
    """What every timer does: ``time(work)`` runs ``work.run()`` once and returns (seconds,
    output); ``name`` goes into the record's ``timer``. A timer that flushes L2 first holds the
    buffer in ``flush`` (None: no flush).

    Every timed call of a point goes through one of this module's timers (the warm-up and the
    first call through WallClockTimer); harness.metrics.peaks times its GEMM and copy loops
    itself, as the metrics stage comes before measure and a peak is not a point."""

    name: str
    flush: Any

    def time(self, work: Any) -> tuple[float, Any]: ...


class WallClockTimer:
    """perf_counter around a call, waiting for the result (the CPU's timer)."""

    name = "perf_counter"
    basis = "host_sync"
    flush = None

    def time(self, work: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        value = work.run()
        work.block(value)
        return time.perf_counter() - start, value


def buffer_bytes(buffer: Any) -> int | None:
    """Size of a flush buffer (torch tensor or JAX array)."""
    if buffer is None:
        return None
    nbytes = getattr(buffer, "nbytes", None)
    if nbytes is None and hasattr(buffer, "numel"):
        nbytes = buffer.numel() * buffer.element_size()
    return int(nbytes) if nbytes is not None else None


def l2_flush_note(timer: Any, device: str) -> str:
    """The record's ``l2_flush``: flushed (and how) or not, and why not."""
    if device_kind(device) != "cuda":
        return "not flushed: CPU timing (caches stay warm between samples)"
    size = buffer_bytes(getattr(timer, "flush", None))
    if size:
        return f"flushed: {size / 2 ** 20:g} MiB buffer written before each sample (untimed)"
    if timer is None:
        return "not flushed: this framework's timer has no L2 flush"
    return "not flushed: L2 flush switched off"


class CudaEventTimer:
    """CUDA events around the call; optionally flushes L2 first (untimed) so that small shapes
    are not flattered by a warm cache. The flush buffer (``l2_flush_bytes``) is allocated
    under the same --max-memory cap as the workload; the worker raises the cap by its size."""

    name = "cuda_event"
    basis = "device_events"

    def __init__(self, device: str, flush_l2: bool = True, *, torch_module: Any = None) -> None:
        if torch_module is None:
            import torch as torch_module
        self.torch = torch_module
        self.device = device
        self.flush = None
        if flush_l2:
            from harness.contract.frameworks.torch_fw import l2_flush_bytes

            self.flush = torch_module.empty(l2_flush_bytes(device), dtype=torch_module.int8,
                                            device=device)

    def time(self, work: Any) -> tuple[float, Any]:
        torch = self.torch
        if self.flush is not None:
            self.flush.zero_()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        value = work.run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, value


class CudaSyncTimer(CudaEventTimer):
    """The ``host_sync`` basis for torch on a GPU: the L2 flush (when on) and a synchronisation
    first, untimed, then perf_counter around the call and ``torch.cuda.synchronize``: what
    JAX's timer measures (harness.measure.timers.JaxFlushTimer), for torch."""

    name = "perf_counter+cuda_sync"
    basis = "host_sync"

    def time(self, work: Any) -> tuple[float, Any]:
        torch = self.torch
        if self.flush is not None:
            self.flush.zero_()
        torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        value = work.run()
        torch.cuda.synchronize(self.device)
        return time.perf_counter() - start, value


class CudaGraphTimer:
    """Replays a CUDA graph of the call; flushes L2 first when given a buffer. ``basis``:
    between CUDA events (``device_events``), or perf_counter around the replay and a
    synchronisation (``host_sync``, after an untimed one)."""

    name = "cudagraph"

    def __init__(self, device: str, flush: Any = None, *, torch_module: Any = None,
                 basis: str = "device_events") -> None:
        if torch_module is None:
            import torch as torch_module
        self.torch = torch_module
        self.device = device
        self.flush = flush
        self.basis = basis
        self.graph: Any = None
        self.output: Any = None

    def capture(self, work: Any) -> None:
        torch = self.torch
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(stream):
                for _ in range(CAPTURE_WARMUP):
                    work.setup()
                    work.run()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            work.setup()
            with torch.cuda.graph(graph):
                self.output = work.run()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UnsupportedError(f"--timer cudagraph: the call cannot be captured in a CUDA "
                                   f"graph ({type(exc).__name__}: {first})") from exc
        self.graph = graph

    def time(self, work: Any) -> tuple[float, Any]:
        torch = self.torch
        if self.graph is None:
            self.capture(work)
            torch.cuda.synchronize(self.device)
        if self.flush is not None:
            self.flush.zero_()
        if self.basis == HOST_SYNC:
            torch.cuda.synchronize(self.device)
            began = time.perf_counter()
            self.graph.replay()
            torch.cuda.synchronize(self.device)
            return time.perf_counter() - began, self.output
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        self.graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0, self.output


class NvtxTimer:
    """Wraps a timer: each timed call inside an NVTX range (named by the point id)."""

    def __init__(self, inner: Any, label: str, *, nvtx: Any = None) -> None:
        if nvtx is None:
            import torch

            nvtx = torch.cuda.nvtx
        self.inner = inner
        self.label = label
        self.nvtx = nvtx
        self.name = inner.name
        self.basis = timer_basis(inner)
        self.flush = getattr(inner, "flush", None)

    def time(self, work: Any) -> tuple[float, Any]:
        self.nvtx.range_push(self.label)
        try:
            return self.inner.time(work)
        finally:
            self.nvtx.range_pop()


class JaxFlushTimer:
    """perf_counter around a JAX call plus block_until_ready, after an untimed write of a
    buffer larger than L2 on the same device."""

    name = "perf_counter"
    basis = "host_sync"

    def __init__(self, jax_device: Any, nbytes: int = JAX_FLUSH_BYTES) -> None:
        import jax
        import jax.numpy as jnp

        self.jax = jax
        self.flush = jax.device_put(jnp.zeros(nbytes // 4, dtype=jnp.float32), jax_device)
        self._touch = jax.jit(lambda x: x + 1.0)

    def time(self, work: Any) -> tuple[float, Any]:
        self.jax.block_until_ready(self._touch(self.flush))
        start = time.perf_counter()
        value = work.run()
        work.block(value)
        return time.perf_counter() - start, value


def timer_basis(timer: Any) -> str:
    """The timing basis of a workload's timer (None: the wall clock, ``host_sync``)."""
    return getattr(timer, "basis", HOST_SYNC) if timer is not None else HOST_SYNC


def basis_problem(basis: str, framework: str, device: str) -> str:
    """Why ``framework`` on ``device`` cannot be timed on ``basis`` ('' when it can)."""
    if basis not in TIMING_BASES:
        return f"unknown timing basis {basis!r}; valid: {', '.join(TIMING_BASES)}"
    if basis == DEVICE_EVENTS and device_kind(device) == "cuda" and framework != "torch":
        return (f"--timing-basis device_events: {framework} has no CUDA-event timer; time the "
                f"run on host_sync (every framework, wall clock with a synchronisation)")
    return ""


def device_timer(framework: str, device: str, flush_l2: bool = True,
                 basis: str = DEVICE_EVENTS) -> Timer | None:
    """The device's own timer on ``basis``: for torch on a GPU, CUDA events (device_events) or
    perf_counter with synchronisations (host_sync), after the L2 flush; for JAX on a GPU,
    perf_counter with block_until_ready after an L2 flush (host_sync only); None on the CPU
    and for JAX without the flush (wall clock, block_until_ready: host_sync)."""
    if device_kind(device) != "cuda":
        return None
    problem = basis_problem(basis, framework, device)
    if problem:
        raise UnsupportedError(problem)
    if framework == "torch":
        return CudaSyncTimer(device, flush_l2) if basis == HOST_SYNC \
            else CudaEventTimer(device, flush_l2)
    if framework == "jax" and flush_l2:
        from harness.contract.frameworks.jax_fw import jax_device

        return JaxFlushTimer(jax_device(device))
    return None


def prepare(work: Any, *, timer: str, framework: str, device: str, label: str,
            flush_l2: bool = True, basis: str = DEVICE_EVENTS) -> dict[str, Any]:
    """Give ``work`` its timer for ``--timer`` and ``--timing-basis`` on this device and return
    the record's timing conditions: ``l2_flush``, ``matmul_precision`` and, where something did
    not apply, ``timer_note``."""
    from harness.contract.precision import describe

    if work.timer is None:
        work.timer = device_timer(framework, device, flush_l2, basis)

    note = apply_timer(work, timer=timer, framework=framework, device=device, label=label,
                       basis=basis)
    out: dict[str, Any] = {"l2_flush": l2_flush_note(work.timer, device),
                           "matmul_precision": describe(framework)}
    if note:
        out["timer_note"] = note
    return out


def apply_timer(work: Any, *, timer: str, framework: str, device: str, label: str,
                torch_module: Any = None, basis: str = DEVICE_EVENTS) -> str:
    """Set up ``work.timer`` for ``--timer`` on this device; returns a note ('' when none).

    CUDA + torch + cudagraph: a CudaGraphTimer on ``basis`` reusing the event timer's flush
    buffer. On CUDA with torch, every timer is wrapped in NVTX ranges named ``label``.
    """
    if timer not in TIMERS:
        raise ValueError(f"unknown timer {timer!r}; valid: {', '.join(TIMERS)}")
    if device_kind(device) != "cuda":
        return "" if timer == "events" else "--timer cudagraph applies to CUDA only"
    note = ""
    if timer == "cudagraph":
        if framework == "torch":
            work.timer = CudaGraphTimer(device, getattr(work.timer, "flush", None),
                                        torch_module=torch_module, basis=basis)
        else:
            note = f"--timer cudagraph: not applicable to {framework} (timed with its own timer)"
    if framework == "torch" and work.timer is not None:
        nvtx = torch_module.cuda.nvtx if torch_module is not None else None
        work.timer = NvtxTimer(work.timer, label, nvtx=nvtx)
    return note
