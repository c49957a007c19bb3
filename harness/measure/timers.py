"""GPU timing discipline beyond the plain CUDA-event timer: CUDA-graph timing, NVTX ranges,
an L2 flush for JAX on GPU, and what each record says about the flush.

- ``--timer cudagraph``: the call is captured once in a CUDA graph (after the warm-up calls,
  on a side stream as torch requires) and each sample replays it between CUDA events, so
  kernel-launch overhead is not timed. The L2 flush, when on, runs before each replay, outside
  the graph. A method that cannot be captured (host synchronisation, data-dependent shapes)
  becomes an ``unsupported`` record with the reason. A captured graph is checked before it
  times anything (its work nodes against an eager call's GPU kernels, a replay on fresh inputs
  against an eager call on them); a graph that fails is dropped and the point is timed with
  CUDA events, the record's ``graph_check`` saying why. JAX methods are timed as usual and say
  so.
- ``--l2 cold|warm`` (TimingSettings.cuda_flush_l2): cold writes a buffer larger than L2
  before each sample, untimed; warm writes nothing. The record's ``l2`` says which the samples
  had (``l2_state``); CPU samples are warm (no CPU cache is flushed).
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
from dataclasses import dataclass
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


def l2_state(timer: Any) -> str:
    """The record's ``l2`` (harness.contract.records.L2_STATES): 'cold' when the timer writes a
    flush buffer before each sample, 'warm' otherwise (the CPU's timer, a flush switched off
    with --l2 warm, a framework's timer without a flush)."""
    return "cold" if buffer_bytes(getattr(timer, "flush", None)) else "warm"


def graph_check_text(timer: Any, requested: str, device: str) -> str:
    """The record's ``graph_check``: the CUDA-graph timer's verdict, or why no graph was
    captured."""
    verdict = getattr(timer, "graph_check", "") if timer is not None else ""
    if verdict:
        return verdict
    if requested != "cudagraph":
        return f"no graph: --timer {requested}"
    if device_kind(device) != "cuda":
        return "no graph: CUDA graphs apply to CUDA devices only"
    return "no graph: this framework is timed with its own timer"


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


# graph node types that do work (CUgraphNodeType: kernel, memcpy, memset), the kinds an eager
# call's profile lists as GPU activity
WORK_NODE_TYPES = (0, 1, 2)
GRAPH_CHECK_SEED = 0x5EED


@dataclass
class GraphCheck:
    """What the check after capture found: the graph's work nodes (None: not countable here,
    with ``count_note`` saying why), an eager call's GPU kernels (None: not counted), the
    largest difference between a replay on fresh inputs and an eager call on the same inputs
    (relative to the output's scale, as the correctness gate measures it), the tolerance, and
    why the graph is refused ('' when it is kept)."""
    nodes: int | None = None
    eager_kernels: int | None = None
    max_error: float | None = None
    tolerance: float | None = None
    refused: str = ""
    count_note: str = ""

    def text(self, fallback: str) -> str:
        """The record's ``graph_check``."""
        if self.refused:
            return f"refused: {self.refused} (timed with {fallback})"
        counted = (f"{self.nodes} work nodes >= {self.eager_kernels} eager GPU kernels"
                   if self.nodes is not None and self.eager_kernels is not None else
                   f"{self.nodes} work nodes (eager kernels not counted: {self.count_note})"
                   if self.nodes is not None else f"nodes not counted ({self.count_note})")
        return (f"kept: {counted}; a replay on fresh inputs matched an eager call "
                f"(max error {self.max_error:.3g} <= {self.tolerance:.3g})")


def graph_refusal(nodes: int | None, eager_kernels: int | None, max_error: float | None,
                  tolerance: float) -> str:
    """Why a captured graph cannot time the method ('' when it can): it holds no work, fewer
    work nodes than an eager call launches GPU kernels (work launched outside the captured
    stream runs once during capture and never on replay), or its replay on fresh inputs does
    not reproduce an eager call on them (stale outputs)."""
    if nodes is not None and nodes == 0:
        return "the captured graph holds no kernel: the call's work ran outside the capture"
    if nodes is not None and eager_kernels is not None and nodes < eager_kernels:
        return (f"the captured graph holds {nodes} work nodes, an eager call launches "
                f"{eager_kernels} GPU kernels: part of the call ran outside the capture")
    if max_error is None or not max_error <= tolerance:
        shown = "not finite" if max_error is None or max_error != max_error \
            else f"{max_error:.3g} > {tolerance:.3g}"
        return (f"a replay on fresh inputs does not reproduce an eager call on them (max "
                f"error {shown}): the graph misses work or returns a stale output")
    return ""


def output_tensors(value: Any) -> list[Any]:
    """The tensors of a call's output (a tensor, or a tuple/list of them)."""
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in output_tensors(item)]
    return [value] if hasattr(value, "detach") else []


def to_host(value: Any) -> list[Any]:
    return [t.detach().to("cpu", copy=True) for t in output_tensors(value)]


def max_relative_error(got: list[Any], want: list[Any]) -> float | None:
    """max |got - want| / max(1, max |want|) over the outputs (the gate's measure); None when
    the outputs do not pair up."""
    if len(got) != len(want) or not want:
        return None
    worst = 0.0
    for a, b in zip(got, want):
        if tuple(a.shape) != tuple(b.shape):
            return None
        a, b = a.double(), b.double()
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        diff = float((a - b).abs().max()) if b.numel() else 0.0
        if diff != diff or scale != scale:   # NaN: no match
            return float("nan")
        worst = max(worst, diff / scale)
    return worst


def poison(tensors: list[Any]) -> None:
    """NaN into floating tensors (zero into others)."""
    import torch

    with torch.no_grad():
        for tensor in tensors:
            tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor.zero_()


def floating(tensors: Any) -> list[Any]:
    return [t for t in tensors if hasattr(t, "is_floating_point") and t.is_floating_point()]


def fresh_values(tensors: list[Any], seed: int = GRAPH_CHECK_SEED) -> list[Any]:
    """N(0, 1) values of each tensor's shape and dtype, on the host (drawn in float32 and
    converted: FP8 has no random generator)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(t.shape), generator=gen).to(t.dtype) for t in tensors]


def write_into(tensors: list[Any], values: list[Any]) -> None:
    """Copy host values into the buffers the call reads (no autograd history)."""
    import torch

    with torch.no_grad():
        for tensor, value in zip(tensors, values):
            tensor.copy_(value)


class GraphInspector:
    """Counts a captured graph's work nodes (the CUDA driver's cuGraphGetNodes and
    cuGraphNodeGetType on ``CUDAGraph.raw_cuda_graph()``, torch >= 2.7 with
    ``keep_graph=True``) and an eager call's GPU kernels (torch.profiler's CUDA activity).
    Each returns None with a reason where the API is missing; the check then rests on the
    replay's output."""

    def __init__(self) -> None:
        self.note = ""

    def graph_nodes(self, graph: Any) -> int | None:
        raw = getattr(graph, "raw_cuda_graph", None)
        if raw is None:
            self.note = "this torch has no CUDAGraph.raw_cuda_graph()"
            return None
        try:
            import ctypes

            handle = raw()
            handle = int(handle.getPtr()) if hasattr(handle, "getPtr") else int(handle)
            driver = ctypes.CDLL("libcuda.so.1")
            count = ctypes.c_size_t(0)
            if driver.cuGraphGetNodes(ctypes.c_void_p(handle), None, ctypes.byref(count)):
                raise RuntimeError("cuGraphGetNodes failed")
            nodes = (ctypes.c_void_p * max(count.value, 1))()
            if driver.cuGraphGetNodes(ctypes.c_void_p(handle), nodes, ctypes.byref(count)):
                raise RuntimeError("cuGraphGetNodes failed")
            work = 0
            for i in range(count.value):
                kind = ctypes.c_int(-1)
                if driver.cuGraphNodeGetType(ctypes.c_void_p(nodes[i]), ctypes.byref(kind)):
                    raise RuntimeError("cuGraphNodeGetType failed")
                work += kind.value in WORK_NODE_TYPES
            return work
        except Exception as exc:  # noqa: BLE001 - no driver API here: the output check decides
            self.note = f"graph nodes not readable: {type(exc).__name__}: {exc}"
            return None

    def eager_call(self, work: Any, torch: Any, device: str) -> tuple[Any, int | None]:
        """One eager call under torch.profiler: (its output, its GPU activities)."""
        try:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                value = work.run()
                torch.cuda.synchronize(device)
            kernels = sum(1 for e in prof.events()
                          if str(getattr(e, "device_type", "")).endswith("CUDA"))
            return value, kernels
        except Exception as exc:  # noqa: BLE001 - no CUPTI: the call is made without it
            self.note = f"eager kernels not counted: {type(exc).__name__}: {exc}"
            value = work.run()
            torch.cuda.synchronize(device)
            return value, None


class CudaGraphTimer:
    """Replays a CUDA graph of the call; flushes L2 first when given a buffer. ``basis``:
    between CUDA events (``device_events``), or perf_counter around the replay and a
    synchronisation (``host_sync``, after an untimed one).

    After capture the graph is checked (``check``): it must hold work nodes, at least as many
    as an eager call launches GPU kernels, and a replay with fresh values in the inputs the
    call reads (``work.call_inputs``) must reproduce an eager call on those values within the
    correctness gate's ``tolerance``. A kernel launched outside the captured stream runs once
    during capture and never on replay: such a graph times nothing and returns a stale output
    (flashinfer-bench issue 414). A refused graph is dropped and the point is timed by the
    CUDA-event timer of the same basis instead; ``graph_check`` says which, and why."""

    def __init__(self, device: str, flush: Any = None, *, torch_module: Any = None,
                 basis: str = "device_events", tolerance: float = 2e-5,
                 inspector: Any = None) -> None:
        if torch_module is None:
            import torch as torch_module
        self.torch = torch_module
        self.device = device
        self.flush = flush
        self._basis = basis
        self.tolerance = tolerance
        self.inspector = inspector if inspector is not None else GraphInspector()
        self.graph: Any = None
        self.output: Any = None
        self.fallback: Any = None     # the event timer used once the graph is refused
        self.checked: GraphCheck | None = None

    @property
    def name(self) -> str:
        return self.fallback.name if self.fallback is not None else "cudagraph"

    @property
    def basis(self) -> str:
        return self._basis

    @property
    def graph_check(self) -> str:
        """The record's ``graph_check`` ('' before the first sample)."""
        if self.checked is None:
            return ""
        return self.checked.text(self.fallback.name if self.fallback is not None else "")

    def new_graph(self) -> Any:
        """A CUDAGraph that keeps its cudaGraph_t for counting (instantiated after capture)."""
        try:
            return self.torch.cuda.CUDAGraph(keep_graph=True), True
        except TypeError:   # a torch without keep_graph: no node count
            return self.torch.cuda.CUDAGraph(), False

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
            graph, kept = self.new_graph()
            work.setup()
            with torch.cuda.graph(graph):
                self.output = work.run()
            if kept and hasattr(graph, "instantiate"):
                graph.instantiate()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UnsupportedError(f"--timer cudagraph: the call cannot be captured in a CUDA "
                                   f"graph ({type(exc).__name__}: {first})") from exc
        self.graph = graph

    def check(self, work: Any, captured_with: list[Any], fresh: list[Any]) -> GraphCheck:
        """The check after capture (see the class docstring); ``captured_with`` holds the
        inputs' values at capture, ``fresh`` other values (host tensors)."""
        torch = self.torch
        inputs = floating(getattr(work, "call_inputs", ()) or ())
        result = GraphCheck(tolerance=self.tolerance)
        result.nodes = self.inspector.graph_nodes(self.graph)
        write_into(inputs, fresh)
        work.setup()
        reference, result.eager_kernels = self.inspector.eager_call(work, torch, self.device)
        reference = to_host(reference)
        # the graph's output poisoned first: a method that writes into a buffer of its own gets
        # it written by the eager call too, and a replay that does nothing must not pass on it
        poison(output_tensors(self.output))
        work.setup()
        self.graph.replay()
        torch.cuda.synchronize(self.device)
        result.max_error = max_relative_error(to_host(self.output), reference) \
            if inputs else None
        result.count_note = self.inspector.note
        write_into(inputs, captured_with)
        result.refused = graph_refusal(result.nodes, result.eager_kernels, result.max_error,
                                       self.tolerance) if inputs else \
            "the workload names no inputs to refresh: a replay cannot be checked"
        return result

    def start(self, work: Any) -> None:
        """Capture, check, and keep the graph or fall back to events."""
        inputs = floating(getattr(work, "call_inputs", ()) or ())
        captured_with = to_host(inputs)
        self.capture(work)
        self.torch.cuda.synchronize(self.device)
        try:
            self.checked = self.check(work, captured_with, fresh_values(inputs))
        except Exception as exc:  # noqa: BLE001 - a check that cannot run keeps no graph
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.checked = GraphCheck(refused=f"the graph check failed ({type(exc).__name__}: "
                                              f"{first})", tolerance=self.tolerance)
            try:
                write_into(inputs, captured_with)
            except Exception:  # noqa: BLE001 - the timed samples then say what is wrong
                pass
        if self.checked.refused:
            self.graph = self.output = None
            fallback = CudaSyncTimer if self._basis == HOST_SYNC else CudaEventTimer
            self.fallback = fallback(self.device, flush_l2=False, torch_module=self.torch)
            self.fallback.flush = self.flush

    def time(self, work: Any) -> tuple[float, Any]:
        torch = self.torch
        if self.graph is None and self.fallback is None:
            self.start(work)
        if self.fallback is not None:
            return self.fallback.time(work)
        if self.flush is not None:
            self.flush.zero_()
        if self._basis == HOST_SYNC:
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
        self.flush = getattr(inner, "flush", None)

    # the inner timer's, read when asked: a CUDA-graph timer that refuses its graph at the first
    # sample names the event timer it fell back to
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def basis(self) -> str:
        return timer_basis(self.inner)

    @property
    def graph_check(self) -> str:
        return getattr(self.inner, "graph_check", "")

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
            flush_l2: bool = True, basis: str = DEVICE_EVENTS,
            tolerance: float = 2e-5) -> dict[str, Any]:
    """Give ``work`` its timer for ``--timer`` and ``--timing-basis`` on this device and return
    the record's timing conditions: ``l2_flush``, ``matmul_precision`` and, where something did
    not apply, ``timer_note``."""
    from harness.contract.precision import describe

    if work.timer is None:
        work.timer = device_timer(framework, device, flush_l2, basis)

    note = apply_timer(work, timer=timer, framework=framework, device=device, label=label,
                       basis=basis, tolerance=tolerance)
    out: dict[str, Any] = {"l2_flush": l2_flush_note(work.timer, device),
                           "matmul_precision": describe(framework)}
    if note:
        out["timer_note"] = note
    return out


def apply_timer(work: Any, *, timer: str, framework: str, device: str, label: str,
                torch_module: Any = None, basis: str = DEVICE_EVENTS,
                tolerance: float = 2e-5, inspector: Any = None) -> str:
    """Set up ``work.timer`` for ``--timer`` on this device; returns a note ('' when none).

    CUDA + torch + cudagraph: a CudaGraphTimer on ``basis`` reusing the event timer's flush
    buffer, checking its graph against an eager call within ``tolerance`` (the gate's). On CUDA with torch, every timer is wrapped in NVTX ranges named ``label``.
    """
    if timer not in TIMERS:
        raise ValueError(f"unknown timer {timer!r}; valid: {', '.join(TIMERS)}")
    if device_kind(device) != "cuda":
        return "" if timer == "events" else "--timer cudagraph applies to CUDA only"
    note = ""
    if timer == "cudagraph":
        if framework == "torch":
            work.timer = CudaGraphTimer(device, getattr(work.timer, "flush", None),
                                        torch_module=torch_module, basis=basis,
                                        tolerance=tolerance, inspector=inspector)
        else:
            note = f"--timer cudagraph: not applicable to {framework} (timed with its own timer)"
    if framework == "torch" and work.timer is not None:
        nvtx = torch_module.cuda.nvtx if torch_module is not None else None
        work.timer = NvtxTimer(work.timer, label, nvtx=nvtx)
    return note
