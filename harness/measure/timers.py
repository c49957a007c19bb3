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
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from harness.errors import UnsupportedError
from harness.contract.frameworks.jax_fw import JAX_FLUSH_BYTES
from harness.contract.registry import device_kind

TIMERS = ("events", "cudagraph")
CAPTURE_WARMUP = 3


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

    def __init__(self, device: str, flush_l2: bool = True, *, torch_module: Any = None) -> None:
        if torch_module is None:
            import torch as torch_module
        self.torch = torch_module
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


class CudaGraphTimer:
    """Replays a CUDA graph of the call between CUDA events; flushes L2 first when given a
    buffer."""

    name = "cudagraph"

    def __init__(self, device: str, flush: Any = None, *, torch_module: Any = None) -> None:
        if torch_module is None:
            import torch as torch_module
        self.torch = torch_module
        self.device = device
        self.flush = flush
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


def device_timer(framework: str, device: str, flush_l2: bool = True) -> Timer | None:
    """The device's own timer: CUDA events for torch on a GPU, perf_counter after an L2 flush
    for JAX on a GPU (L2 flushed before each sample, as torch's timer does); None on the CPU
    (wall clock)."""
    if device_kind(device) != "cuda":
        return None
    if framework == "torch":
        return CudaEventTimer(device, flush_l2)
    if framework == "jax" and flush_l2:
        from harness.contract.frameworks.jax_fw import jax_device

        return JaxFlushTimer(jax_device(device))
    return None


def prepare(work: Any, *, timer: str, framework: str, device: str, label: str,
            flush_l2: bool = True) -> dict[str, Any]:
    """Give ``work`` its timer for ``--timer`` on this device and return the record's timing
    conditions: ``l2_flush``, ``matmul_precision`` and, where something did not apply,
    ``timer_note``."""
    from harness.contract.precision import describe

    if work.timer is None:
        work.timer = device_timer(framework, device, flush_l2)

    note = apply_timer(work, timer=timer, framework=framework, device=device, label=label)
    out: dict[str, Any] = {"l2_flush": l2_flush_note(work.timer, device),
                           "matmul_precision": describe(framework)}
    if note:
        out["timer_note"] = note
    return out


def apply_timer(work: Any, *, timer: str, framework: str, device: str, label: str,
                torch_module: Any = None) -> str:
    """Set up ``work.timer`` for ``--timer`` on this device; returns a note ('' when none).

    CUDA + torch + cudagraph: a CudaGraphTimer reusing the event timer's flush buffer. On CUDA
    with torch, every timer is wrapped in NVTX ranges named ``label``.
    """
    if timer not in TIMERS:
        raise ValueError(f"unknown timer {timer!r}; valid: {', '.join(TIMERS)}")
    if device_kind(device) != "cuda":
        return "" if timer == "events" else "--timer cudagraph applies to CUDA only"
    note = ""
    if timer == "cudagraph":
        if framework == "torch":
            work.timer = CudaGraphTimer(device, getattr(work.timer, "flush", None),
                                        torch_module=torch_module)
        else:
            note = f"--timer cudagraph: not applicable to {framework} (timed with its own timer)"
    if framework == "torch" and work.timer is not None:
        nvtx = torch_module.cuda.nvtx if torch_module is not None else None
        work.timer = NvtxTimer(work.timer, label, nvtx=nvtx)
    return note
