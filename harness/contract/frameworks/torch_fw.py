"""torch adapter: devices, dtypes, conversion, synchronisation, and the tiny availability run."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from harness.contract import visible_gpus
from harness.contract.frameworks import call, device_kind  # noqa: F401 - call: the adapter's
from harness.contract.probe import TINY_SHAPE, Availability, ProbeResult
from harness.contract.probe import WrongOutput, tiny_run_result

if TYPE_CHECKING:
    from harness.contract.registry import Implementation


def installed() -> Availability:
    if importlib.util.find_spec("torch") is None:
        return Availability(False, "package torch not installed")
    return Availability(True)


def torch_dtype(name: str) -> Any:
    import torch

    fp8 = {n: getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}
    return {"float64": torch.float64, "float32": torch.float32,
            "float16": torch.float16, "bfloat16": torch.bfloat16, **fp8}[name]


def quantise_kv(x: Any, kv_dtype: str) -> tuple[Any, float]:
    """(x in the FP8 dtype, its per-tensor scale) as harness.contract.quant defines them:
    scale = amax / FP8 max (float32), codes = x / scale clamped to the format's range, cast with
    torch's round-to-nearest-even."""
    from harness.contract.quant import fp8_format, scale_for

    scale = scale_for(float(x.detach().abs().max()) if x.numel() else 0.0, kv_dtype)
    limit = fp8_format(kv_dtype).max
    codes = (x.detach().float() / scale).clamp_(-limit, limit).to(torch_dtype(kv_dtype))
    return codes, scale


def device_present(device: str) -> Availability:
    ok = installed()
    if not ok:
        return ok
    import torch

    kind = device_kind(device)
    if kind == "cpu":
        return Availability(True)
    if kind == "cuda":
        count = cuda_device_count(torch)
        if not count:
            return Availability(False, "torch.cuda.is_available() is False"
                                + ("" if torch.backends.cuda.is_built()
                                   else " (torch is built without CUDA)"))
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= count:
            return Availability(False, f"no CUDA device {index} ({count} visible)")
        return Availability(True)
    return Availability(False, f"unknown device {device!r}")


def cuda_device_count(torch: Any) -> int:
    """The CUDA devices this process would see, no device context created
    (harness.contract.visible_gpus.torch_device_count)."""
    return visible_gpus.torch_device_count(torch)


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """Nothing to switch in torch (JAX needs its x64 mode for float64)."""
    yield


def from_numpy(array: np.ndarray, device: str, dtype: str | None = None) -> Any:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    if dtype is not None and array.dtype != np.bool_:
        tensor = tensor.to(torch_dtype(dtype))
    return tensor


def to_numpy(tensor: Any) -> np.ndarray:
    import torch

    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16) or (
            tensor.is_floating_point() and tensor.element_size() == 1):   # FP8: no numpy dtype
        tensor = tensor.float()
    return tensor.cpu().numpy()


def synchronize(device: str) -> None:
    if device_kind(device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def tiny_run(impl: "Implementation", device: str, dtype: str) -> ProbeResult:
    """Really run a tiny input (harness.contract.probe.tiny_run_result)."""
    import torch

    def run() -> tuple[tuple[int, ...], bool]:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(TINY_SHAPE, generator=gen).to(device=device,
                                                                 dtype=torch_dtype(dtype))
                   for _ in range(3))
        out = impl.fn(q, k, v, causal=False, key_padding_mask=None)
        synchronize(device)
        if not isinstance(out, torch.Tensor):
            raise WrongOutput(f"returned {type(out).__name__}, not a tensor")
        return tuple(out.shape), bool(torch.isfinite(out.float()).all())

    return tiny_run_result(impl, device, dtype, run)


# -- workloads for the runner ------------------------------------------------------------------
L2_FLUSH_MULTIPLE = 2          # the flush buffer is this many times the device's L2 cache
L2_FLUSH_FALLBACK_BYTES = 256 * 1024 * 1024  # when torch does not report the L2 size


def l2_flush_bytes(device: str) -> int:
    """Size of the buffer written before each timed call to evict L2: twice the L2 cache
    (``get_device_properties().L2_cache_size``: 50 MiB on an H100 SXM, so 100 MiB)."""
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    l2 = getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 0) or 0
    return L2_FLUSH_MULTIPLE * int(l2) if l2 > 0 else L2_FLUSH_FALLBACK_BYTES


def paged_torch(k: Any, v: Any, page_size: int, kv_lengths: Any = None) -> tuple[Any, Any, dict]:
    """Dense right-aligned k (B, Hkv, Tk, D), v (..., D_v) -> (k pool, v pool, {page_table,
    kv_lengths})
    on their device (layout and page order: harness.contract.paging)."""
    import numpy as np
    import torch

    from harness.contract.paging import page_table, slot_index

    batch, heads, t_k, _ = k.shape
    lengths = np.full(batch, t_k, dtype=np.int64) if kv_lengths is None \
        else np.asarray(kv_lengths, dtype=np.int64)
    table, num_pages = page_table(lengths, page_size)
    rows, cols, slots = (torch.from_numpy(a).to(k.device)
                         for a in slot_index(lengths, t_k, page_size, table))
    pools = []
    for x in (k, v):   # each at its own head dim (v's is D_v)
        dim = x.shape[-1]
        pool = torch.zeros(num_pages * page_size, heads, dim, dtype=x.dtype, device=x.device)
        pool[slots] = x[rows, :, cols]
        pools.append(pool.view(num_pages, page_size, heads, dim))
    return pools[0], pools[1], {
        "page_table": torch.from_numpy(table).to(k.device),
        "kv_lengths": torch.from_numpy(lengths.astype(np.int32)).to(k.device)}


def make_workload(impl: "Implementation", point: Any, *, seed: int = 0) -> Any:
    """Inputs on the device (q, k, v ~ N(0, 1), seeded) and a callable for the point's pass."""
    import torch

    from harness.contract.workload import Workload

    import time

    from harness.contract.axes import method_keywords
    from harness.contract.head_dims import value_shapes
    from harness.contract.point_masks import point_mask

    dtype = torch_dtype(point.dtype)
    shape = (point.batch, point.heads, point.n_queries, point.head_dim)
    kv_shape = (point.batch, point.n_kv_heads, point.seq_len, point.head_dim)
    v_shape, out_shape = value_shapes(point)
    gen = torch.Generator(device=point.device).manual_seed(seed)
    needs_grad = point.pass_ != "forward"
    q, k, v = (torch.randn(s, generator=gen, device=point.device, dtype=dtype)
               .requires_grad_(needs_grad) for s in (shape, kv_shape, v_shape))
    info: dict[str, Any] = {}
    scales = fp8_kv(point, k, v, seed, info) if getattr(point, "kv_dtype", "") else {}
    if scales:
        k, v = scales.pop("k"), scales.pop("v")
    input_bytes = sum(x.numel() * x.element_size() for x in (q, k, v))
    mask = point_mask(point, seed=seed)
    extra = {"window": mask.get("window"),
             "alibi_slopes": None if mask.get("alibi_slopes") is None else
             torch.from_numpy(mask["alibi_slopes"]).to(device=point.device, dtype=dtype),
             "document_ids": None if mask.get("document_ids") is None else
             torch.from_numpy(mask["document_ids"]).to(point.device),
             "softcap": mask.get("softcap"),
             "sinks": None if mask.get("sinks") is None else
             torch.from_numpy(mask["sinks"]).to(device=point.device, dtype=dtype)}
    extra = {name: value for name, value in extra.items() if value is not None}
    for name in ("q_lengths", "kv_lengths"):   # a ragged batch (harness.contract.ragged)
        if mask.get(name) is not None:
            extra[name] = torch.from_numpy(mask[name]).to(point.device)
    k_in, v_in = k, v
    if point.value("page_size"):   # the method reads k, v from a paged cache
        k_in, v_in, paged = paged_torch(k.detach(), v.detach(), point.value("page_size"),
                                        mask.get("kv_lengths"))
        extra.update(paged)
        input_bytes += sum(x.numel() * x.element_size() for x in (k_in, v_in)) - \
            sum(x.numel() * x.element_size() for x in (k, v))
    extra.update(scales)
    extra.update(method_keywords(impl.capabilities.features, point.axis_values()))
    if impl.prepare is not None:   # per-shape set-up (a block mask), timed apart
        start = time.perf_counter()
        prepared = impl.prepare(q, k_in, v_in, causal=point.causal, **extra)
        synchronize(point.device)
        info["mask_build_s"] = time.perf_counter() - start
        # a prepared call may report the parts of its set-up (FlashInfer: plan_s)
        info.update(getattr(prepared, "prepare_timings", None) or {})

        def forward() -> Any:
            return prepared(q, k_in, v_in)
    else:
        def forward() -> Any:
            return impl.fn(q, k_in, v_in, causal=point.causal, key_padding_mask=None, **extra)

    def block(value: Any) -> None:
        synchronize(point.device)

    def check(value: Any) -> bool:
        return bool(torch.isfinite(value.detach().float()).all())

    def clear_grads() -> None:
        for tensor in (q, k, v):
            tensor.grad = None

    if point.pass_ == "forward":
        def run() -> Any:
            with torch.no_grad():
                return forward()
        setup = clear_grads
    else:
        grad = torch.randn(out_shape, generator=gen, device=point.device, dtype=dtype)
        input_bytes += grad.numel() * grad.element_size()
        if point.pass_ == "forward_backward":
            def run() -> Any:
                out = forward()
                out.backward(grad)
                return q.grad
            setup = clear_grads
        else:  # backward only: one forward outside the timed region, graph kept
            state: dict[str, Any] = {}

            def setup() -> None:
                clear_grads()
                if "out" not in state:
                    state["out"] = forward()

            def run() -> Any:
                state["out"].backward(grad, retain_graph=True)
                return q.grad
        if not point.value("page_size") and not getattr(point, "kv_dtype", ""):
            info["gradient_check"] = lambda: gradient_check(forward, (q, k, v), grad,
                                                            clear_grads, seed, keep=info)
    # what the call reads that may be overwritten between calls: q, k, v as the method takes
    # them for the passes that run a forward each call; the upstream gradient for a backward
    # alone (its forward's saved tensors must not change)
    call_inputs = (q, k_in, v_in) if point.pass_ in ("forward", "forward_backward") else (grad,)
    # varied before every call: q where each call runs the forward; the upstream gradient for a
    # backward alone (its forward's saved tensors must not change)
    vary = permuting(q) if point.pass_ in ("forward", "forward_backward") else permuting(grad)
    return Workload(run=run, block=block, check=check, input_bytes=input_bytes, setup=setup,
                    # the dense q, k, v (a paged cache holds the same values): the
                    # output checks and fidelity compare against them
                    inputs=(q, k, v), info=info, mask=mask, call_inputs=call_inputs,
                    vary=vary)


# q's elements are permuted in runs of this many (or fewer where the head dim is not a multiple)
VARY_RUN = 8


def permuting(q: Any) -> Any:
    """A function that permutes q's elements in place, in runs of VARY_RUN, by
    long_cycle_permutation: the same work on values the method has not seen lately (the
    multiset of values is kept: same distribution, same magnitudes). Its index costs 8 bytes
    per run, at most a byte per element."""
    import torch

    run = next(n for n in (VARY_RUN, 4, 2, 1) if q.shape[-1] % n == 0)
    order = torch.from_numpy(long_cycle_permutation(q.numel() // run)).to(q.device)

    def vary() -> None:
        runs = q.data.view(-1, run)
        runs.copy_(runs[order])
    return vary



def long_cycle_permutation(n: int) -> np.ndarray:
    """A permutation of range(n) made of cycles of distinct prime lengths (2, 3, 5, 7, ...; the
    rest fixed): applied again and again it comes back to the start only after the product of
    those primes (2310 for n = 32, 510510 for 64, over 10^8 from 100), so that a method
    caching its outputs by its inputs' contents meets new inputs call after call."""
    perm = np.arange(n)
    start, prime = 0, 2
    while start + prime <= n:
        cycle = np.arange(start, start + prime)
        perm[cycle] = np.roll(cycle, 1)
        start += prime
        prime = next(p for p in range(prime + 1, 2 * prime + 1)
                     if all(p % d for d in range(2, int(p ** 0.5) + 1)))
    return perm


def gradient_check(forward: Any, inputs: tuple[Any, Any, Any], upstream: Any,
                   clear_grads: Any, seed: int, keep: dict[str, Any] | None = None) -> list[Any]:
    """The method's gradients against its own forward (harness.contract.gradient_check): for
    L = <upstream, f(q, k, v)>, each part's seeded direction, the backward's directional
    derivative and the forward's central difference on the rounded steps (two steps,
    extrapolated). One forward+backward and four forwards per part, outside the timed region;
    the inputs are restored exactly (their storage is swapped back, not subtracted). ``keep``
    gets the fresh forward+backward's dq (float64) as "fresh_q_grad". [] for a dtype without
    parts."""
    import torch

    from harness.contract import gradient_check as plan

    parts = plan.parts_for(str(inputs[0].dtype).removeprefix("torch."))
    if not parts:
        return []
    gen = torch.Generator(device=inputs[0].device).manual_seed(
        seed + plan.DIRECTION_SEED_OFFSET)
    randoms = [torch.randn(x.shape, generator=gen, device=x.device, dtype=torch.float64)
               for x in inputs]
    clear_grads()
    forward().backward(upstream)
    grads = [x.grad.detach().double() for x in inputs]
    clear_grads()
    if keep is not None:
        keep["fresh_q_grad"] = grads[0]

    def direction(part: Any, i: int) -> Any:
        if not part.aligned:
            return randoms[i]
        rms = float(grads[i].square().mean().sqrt())
        return grads[i] / rms + plan.RANDOM_SHARE * randoms[i] if rms > 0 else randoms[i]

    upstream64 = upstream.detach().double()

    def loss(moved: list[Any]) -> float:
        saved = [x.data for x in inputs]
        try:
            for x, data in zip(inputs, moved):
                x.data = data
            with torch.no_grad():
                return float((forward().double() * upstream64).sum())
        finally:
            for x, data in zip(inputs, saved):
                x.data = data

    def one_step(part: Any, step: float) -> tuple[float, float]:
        plus, minus = list(x.data for x in inputs), list(x.data for x in inputs)
        along = 0.0
        for i in part.inputs:
            x, u = inputs[i].data, direction(part, i)
            plus[i] = (x.double() + step * u).to(x.dtype)
            minus[i] = (x.double() - step * u).to(x.dtype)
            along += float((grads[i] * (plus[i].double() - minus[i].double())).sum()) / 2
        return (loss(plus) - loss(minus)) / 2, along

    return plan.run_parts(parts, one_step)


def fp8_kv(point: Any, k: Any, v: Any, seed: int, info: dict[str, Any]) -> dict[str, Any]:
    """k and v of a kv_dtype point quantised to FP8 ("k", "v") and their scales ("k_scale",
    "v_scale"); ``info`` gets the scales' note and ``unquantised_inputs``, which draws q, k, v
    again from the seed (float64 numpy) for the error against the unquantised inputs, so that
    the workload holds no second copy of k and v."""
    from harness.contract.quant import scales_note

    k8, k_scale = quantise_kv(k, point.kv_dtype)
    v8, v_scale = quantise_kv(v, point.kv_dtype)
    info["kv_scales"] = scales_note(k_scale, v_scale)
    info["unquantised_inputs"] = lambda: unquantised_inputs(point, seed)
    return {"k": k8, "v": v8, "k_scale": k_scale, "v_scale": v_scale}


def unquantised_inputs(point: Any, seed: int) -> tuple[np.ndarray, ...]:
    """q, k, v of a point as make_workload draws them (before any FP8 quantisation), float64."""
    import torch

    dtype = torch_dtype(point.dtype)
    gen = torch.Generator(device=point.device).manual_seed(seed)
    from harness.contract.head_dims import value_shapes

    shapes = ((point.batch, point.heads, point.n_queries, point.head_dim),
              (point.batch, point.n_kv_heads, point.seq_len, point.head_dim),
              value_shapes(point)[0])
    return tuple(to_numpy64(torch.randn(s, generator=gen, device=point.device, dtype=dtype))
                 for s in shapes)


def memory_workload(impl: "Implementation", point: Any, *, seed: int = 0) -> Any:
    """The memory pass runs forward, or forward and backward for the passes with a backward."""
    from dataclasses import replace

    mem_point = replace(point, pass_="forward" if point.pass_ == "forward"
                        else "forward_backward")
    return make_workload(impl, mem_point, seed=seed)


def device_peak_bytes(work: Any, device: str) -> tuple[int, str] | None:
    """CUDA: the allocator's peak above the allocation before the call. None on CPU.

    One untimed warm-up call first (output freed, synchronised), as on the CPU: the first call
    makes one-off allocations through the caching allocator (cuBLAS's workspace, 32 MiB on
    Hopper; cuDNN's plans) that would otherwise count as the method's memory.
    """
    if device_kind(device) != "cuda":
        return None
    import torch

    work.setup()
    value = work.run()
    synchronize(device)
    del value
    work.setup()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    value = work.run()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del value
    return peak, "cuda_allocator_peak_above_inputs"


def threads() -> int:
    import torch

    return torch.get_num_threads()


def is_oom(exc: BaseException) -> bool:
    """An allocation failure (harness.contract.frameworks.oom): torch's OutOfMemoryError, the
    CUDA runtime's and the CUDA libraries' (cuBLAS, cuDNN, cuFFT, cuSOLVER ...) allocation
    failures, the CPU allocator's; Triton's shared-memory limit is not one."""
    from harness.contract.frameworks import oom

    import torch

    return oom.is_oom(exc, types=(torch.cuda.OutOfMemoryError,))


def to_numpy64(tensor: Any) -> np.ndarray:
    return tensor.detach().double().cpu().numpy()
