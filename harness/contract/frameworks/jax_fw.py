"""JAX adapter: devices, dtypes, conversion, synchronisation, and the tiny availability run.

attnbench's device name for a GPU is 'cuda' in both frameworks; JAX calls the platform 'gpu'.
float64 needs JAX's x64 mode, which is switched on only around float64 calls (a context, not a
global setting).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from harness.contract.frameworks import call, device_kind  # noqa: F401 - call: the adapter's
from harness.contract.probe import TINY_SHAPE, Availability, ProbeResult
from harness.contract.probe import WrongOutput, tiny_run_result

if TYPE_CHECKING:
    from harness.contract.registry import Implementation

JAX_FLUSH_BYTES = 256 * 1024 * 1024   # the L2-flush buffer of JAX timing on a GPU


def installed() -> Availability:
    if importlib.util.find_spec("jax") is None:
        return Availability(False, "package jax not installed (pip install 'attnbench[jax]')")
    return Availability(True)


def jax_device(device: str) -> Any:
    import jax

    kind = device_kind(device)
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    platform = "gpu" if kind == "cuda" else kind
    return jax.devices(platform)[index]


def device_present(device: str) -> Availability:
    """Whether JAX can run on ``device``, asked without starting a JAX backend where none runs
    yet (the sweep's parent: a started GPU backend holds its allocator's memory for the life of
    the process): for a GPU, a CUDA plug-in installed, JAX_PLATFORMS not excluding it, and the
    device visible to NVML. Where JAX's backends already run (a worker), JAX's own list."""
    ok = installed()
    if not ok:
        return ok
    kind = device_kind(device)
    if kind not in ("cpu", "cuda"):
        return Availability(False, f"unknown device {device!r}")
    if backends_started():
        return devices_listed(device)
    # jax.devices(), even jax.devices("cpu"), starts every backend: the GPU's too
    return cpu_presence(device) if kind == "cpu" else gpu_presence(device)


def backends_started() -> bool:
    """Whether this process has started JAX's backends (jax.devices() and any computation do);
    False when that cannot be told (a JAX without the private registry)."""
    try:
        from jax._src import xla_bridge
    except Exception:  # noqa: BLE001
        return False
    return bool(getattr(xla_bridge, "_backends", None))


def devices_listed(device: str) -> Availability:
    """JAX's own device list (starts the backends where they do not run yet)."""
    try:
        jax_device(device)
    except RuntimeError:
        import jax

        platforms = sorted({d.platform for d in jax.devices()})
        return Availability(False, f"JAX sees no gpu platform (only {', '.join(platforms)})")
    except IndexError:
        return Availability(False, f"JAX has no device {device}")
    return Availability(True)


def cpu_presence(device: str) -> Availability:
    """JAX's host devices, nothing started: one, or the count XLA_FLAGS' (or JAX_NUM_CPU_DEVICES')
    emulated host devices give."""
    import re

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    flags = re.search(r"--xla_force_host_platform_device_count=(\d+)",
                      os.environ.get("XLA_FLAGS", ""))
    count = max(int(flags.group(1)) if flags else 1,
                int(os.environ.get("JAX_NUM_CPU_DEVICES", "1") or 1))
    if index >= count:
        return Availability(False, f"JAX has no device {device}")
    return Availability(True)


def gpu_presence(device: str) -> Availability:
    """A GPU for JAX, from what is installed, JAX_PLATFORMS and NVML (nothing started)."""
    from harness.contract import visible_gpus

    platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms and not {"cuda", "gpu"} & set(platforms):
        return Availability(False, f"JAX sees no gpu platform (JAX_PLATFORMS="
                                   f"{os.environ['JAX_PLATFORMS']})")
    if not cuda_plugin_installed():
        return Availability(False, "JAX sees no gpu platform (no CUDA plug-in installed: "
                                   "pip install 'jax[cuda13]')")
    count = visible_gpus.cuda_device_count()
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if count is not None and index >= count:
        return Availability(False, f"JAX has no device {device} ({count} GPU(s) visible)")
    return Availability(True)   # without NVML: the worker's tiny run tells


def cuda_plugin_installed() -> bool:
    """A JAX CUDA plug-in (jax-cuda12/13-plugin: the ``jax_plugins`` entry points and
    namespace package JAX discovers its PJRT plug-ins by), found without importing it."""
    import importlib.metadata
    import pkgutil

    try:
        names = [entry.name for entry in importlib.metadata.entry_points(group="jax_plugins")]
    except Exception:  # noqa: BLE001
        names = []
    try:
        import jax_plugins

        names += [module.name for module in pkgutil.iter_modules(jax_plugins.__path__)]
    except Exception:  # noqa: BLE001 - no namespace package: no plug-in installed that way
        pass
    return any("cuda" in name.lower() for name in names)


def jnp_dtype(name: str) -> Any:
    import jax.numpy as jnp

    fp8 = {n: getattr(jnp, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(jnp, n)}
    return {"float64": jnp.float64, "float32": jnp.float32,
            "float16": jnp.float16, "bfloat16": jnp.bfloat16, **fp8}[name]


def quantise_kv(x: Any, kv_dtype: str) -> tuple[Any, float]:
    """(x in the FP8 dtype, its per-tensor scale) as harness.contract.quant defines them
    (scale = amax / FP8 max, float32; x / scale clamped to the format's range, then cast)."""
    import jax.numpy as jnp

    from harness.contract.quant import fp8_format, scale_for

    scale = scale_for(float(jnp.abs(x).max()) if x.size else 0.0, kv_dtype)
    limit = fp8_format(kv_dtype).max
    return jnp.clip(x.astype(jnp.float32) / scale, -limit, limit).astype(
        jnp_dtype(kv_dtype)), scale


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """Enable JAX's 64-bit mode for the duration of a float64 computation only."""
    if dtype == "float64":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def from_numpy(array: np.ndarray, device: str, dtype: str | None = None) -> Any:
    import jax

    if dtype is not None and array.dtype != np.bool_:
        if dtype in ("float64", "float32", "float16"):
            array = array.astype(dtype)
        else:  # bfloat16 and FP8 have no numpy dtype: convert on device
            return jax.device_put(array.astype(np.float32), jax_device(device)).astype(
                jnp_dtype(dtype))
    return jax.device_put(array, jax_device(device))


def to_numpy(array: Any) -> np.ndarray:
    import jax.numpy as jnp

    if array.dtype in (jnp.float16, jnp.bfloat16) or (
            jnp.issubdtype(array.dtype, jnp.floating) and array.dtype.itemsize == 1):   # FP8
        array = array.astype(jnp.float32)
    return np.asarray(array)


def synchronize(device: str, value: Any = None) -> None:
    if value is not None:
        import jax

        jax.block_until_ready(value)


def tiny_run(impl: "Implementation", device: str, dtype: str) -> ProbeResult:
    """Really run a tiny input (harness.contract.probe.tiny_run_result)."""
    def run() -> tuple[tuple[int, ...], bool]:
        rng = np.random.default_rng(0)
        with precision(dtype):
            q, k, v = (from_numpy(rng.standard_normal(TINY_SHAPE, dtype=np.float32), device,
                                  dtype) for _ in range(3))
            out = impl.fn(q, k, v, causal=False, key_padding_mask=None)
            if not hasattr(out, "shape"):
                raise WrongOutput(f"returned {type(out).__name__}, not an array")
            out = to_numpy(out)
        return out.shape, bool(np.isfinite(out).all())

    return tiny_run_result(impl, device, dtype, run)


# -- workloads for the runner ------------------------------------------------------------------
def make_workload(impl: "Implementation", point: Any, *, seed: int = 0) -> Any:
    """jit-compiled pass on device-resident inputs (q, k, v ~ N(0, 1), seeded).

    The first call compiles; the runner times it separately (``first_call``) and never mixes it
    into the samples. Timing is perf_counter around the call plus block_until_ready; on a GPU
    a buffer larger than L2 is written before each sample (untimed) unless ``flush_l2`` is off.
    """
    import jax
    import jax.numpy as jnp

    from harness.contract.workload import Workload

    from harness.contract.axes import method_keywords
    from harness.contract.head_dims import value_shapes
    from harness.contract.point_masks import point_mask

    dtype = jnp_dtype(point.dtype)
    shape = (point.batch, point.heads, point.n_queries, point.head_dim)
    kv_shape = (point.batch, point.n_kv_heads, point.seq_len, point.head_dim)
    v_shape, out_shape = value_shapes(point)
    device = jax_device(point.device)
    # committed to the point's device (device_put), so that every jitted call runs there: an
    # array made under jax.default_device is uncommitted and jit would place the computation
    # on JAX's default device (the GPU for a "cpu" point, cuda:0 for "cuda:1")
    shapes = (shape, kv_shape, v_shape) + (() if point.pass_ == "forward" else (out_shape,))
    q, k, v, *rest = seeded_normal(shapes, seed, dtype, device)
    ct = rest[0] if rest else None
    extra: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if getattr(point, "kv_dtype", ""):   # FP8 keys and values, per-tensor scales
        from harness.contract.quant import scales_note

        (k, extra["k_scale"]), (v, extra["v_scale"]) = (quantise_kv(x, point.kv_dtype)
                                                        for x in (k, v))
        info["kv_scales"] = scales_note(extra["k_scale"], extra["v_scale"])
        info["unquantised_inputs"] = lambda: tuple(
            to_numpy64(x) for x in seeded_normal(shapes[:3], seed, dtype, device))
    input_bytes = sum(x.size * x.dtype.itemsize for x in (q, k, v))
    mask = point_mask(point, seed=seed)
    if "window" in mask:
        extra["window"] = mask["window"]
    if "alibi_slopes" in mask:
        extra["alibi_slopes"] = jax.device_put(mask["alibi_slopes"].astype(np.float32),
                                               device).astype(dtype)
    if "document_ids" in mask:
        extra["document_ids"] = jax.device_put(mask["document_ids"], device)
    if "softcap" in mask:
        extra["softcap"] = mask["softcap"]
    if "sinks" in mask:
        extra["sinks"] = jax.device_put(mask["sinks"].astype(np.float32), device).astype(dtype)
    extra.update(method_keywords(impl.capabilities.features, point.axis_values()))

    def attention(q_, k_, v_):
        return impl.fn(q_, k_, v_, causal=point.causal, key_padding_mask=None, **extra)

    if point.pass_ == "forward":
        compiled = jax.jit(attention)
        jitted: tuple[Any, tuple[Any, ...]] | None = (compiled, (q, k, v))

        def run() -> Any:
            return compiled(q, k, v)
        setup = _noop
    elif point.pass_ == "forward_backward":
        input_bytes += ct.size * ct.dtype.itemsize

        @jax.jit
        def forward_backward(q_, k_, v_, ct_):
            out, vjp = jax.vjp(attention, q_, k_, v_)
            return out, vjp(ct_)

        jitted = (forward_backward, (q, k, v, ct))

        def run() -> Any:
            return forward_backward(q, k, v, ct)
        setup = _noop
    else:  # backward only: the forward (and its residuals) outside the timed region
        input_bytes += ct.size * ct.dtype.itemsize
        state: dict[str, Any] = {}
        apply = jax.jit(lambda vjp, ct_: vjp(ct_))
        jitted = None

        def setup() -> None:
            if "vjp" not in state:
                _, state["vjp"] = jax.vjp(attention, q, k, v)

        def run() -> Any:
            return apply(state["vjp"], ct)

    if point.pass_ != "forward" and not getattr(point, "kv_dtype", ""):
        info["gradient_check"] = lambda: gradient_check(attention, (q, k, v), ct, seed, device)

    def block(value: Any) -> None:
        jax.block_until_ready(value)

    def check(value: Any) -> bool:
        leaves = jax.tree_util.tree_leaves(value)
        return all(bool(jnp.isfinite(leaf.astype(jnp.float32)).all()) for leaf in leaves)

    return Workload(run=run, block=block, check=check, input_bytes=int(input_bytes),
                    setup=setup, inputs=(q, k, v), info={"jitted": jitted, **info},
                    mask=mask)


def gradient_check(attention: Any, inputs: tuple[Any, Any, Any], upstream: Any, seed: int,
                   device: Any) -> list[Any]:
    """The method's gradients (its vjp) against its own forward, as torch_fw.gradient_check
    does (harness.contract.gradient_check): each part's seeded direction, the backward's
    directional derivative and the forward's central difference on the rounded steps, in
    float64 on the host. Compiled apart from the timed program, at the highest matmul precision
    on a GPU (its default float32 dot rounds through TF32, whose error is larger than the
    check's tolerance). [] for a dtype without parts."""
    import jax
    import jax.numpy as jnp

    from harness.contract import gradient_check as plan

    dtype = inputs[0].dtype
    parts = plan.parts_for(jnp.dtype(dtype).name)
    if not parts:
        return []
    precision = contextlib.nullcontext() if device.platform == "cpu" else \
        jax.default_matmul_precision("highest")
    with precision:
        @jax.jit
        def forward_backward(q_, k_, v_, ct_):
            out, vjp = jax.vjp(attention, q_, k_, v_)
            return out, vjp(ct_)

        upstream64 = to_numpy64(upstream)
        _, grads = forward_backward(*inputs, upstream)
        grads = [to_numpy64(g) for g in grads]
        x64 = [to_numpy64(x) for x in inputs]
        rng = np.random.default_rng(seed + plan.DIRECTION_SEED_OFFSET)
        randoms = [rng.standard_normal(x.shape) for x in x64]

        def direction(part: Any, i: int) -> np.ndarray:
            rms = float(np.sqrt(np.mean(np.square(grads[i])))) if part.aligned else 0.0
            return grads[i] / rms + plan.RANDOM_SHARE * randoms[i] if rms > 0 else randoms[i]

        def loss(moved: list[Any]) -> float:
            out, _ = forward_backward(*moved, upstream)
            return float(np.sum(to_numpy64(out) * upstream64))

        def one_step(part: Any, step: float) -> tuple[float, float]:
            plus, minus = list(inputs), list(inputs)
            along = 0.0
            for i in part.inputs:
                u = direction(part, i)
                plus[i] = jax.device_put(x64[i] + step * u, device).astype(dtype)
                minus[i] = jax.device_put(x64[i] - step * u, device).astype(dtype)
                along += float(np.sum(grads[i] * (to_numpy64(plus[i]) -
                                                  to_numpy64(minus[i])))) / 2
            return (loss(plus) - loss(minus)) / 2, along

        checks = plan.run_parts(parts, one_step)
    return checks


def seeded_normal(shapes: tuple[tuple[int, ...], ...], seed: int, dtype: Any,
                  device: Any) -> list[Any]:
    """N(0, 1) arrays of these shapes, seeded, on the device. On a GPU jax.random draws them
    there; on the CPU numpy draws them (jax.random compiles one program per shape: four
    compilations per point, a fifth of a small point's time in a reused worker)."""
    import jax

    if device.platform == "cpu":
        rng = np.random.default_rng(seed)
        return [jax.device_put(rng.standard_normal(s, dtype=np.float32).astype(np.dtype(dtype)),
                               device) for s in shapes]
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    with jax.default_device(device):
        return [jax.device_put(jax.random.normal(key, s, dtype=dtype), device)
                for key, s in zip(keys, shapes)]


def _noop() -> None:
    return None


def memory_workload(impl: "Implementation", point: Any, *, seed: int = 0) -> Any:
    from dataclasses import replace

    mem_point = replace(point, pass_="forward" if point.pass_ == "forward"
                        else "forward_backward")
    return make_workload(impl, mem_point, seed=seed)


def first_call_peak(work: Any, device: str) -> tuple[int, str] | None:
    """JAX on GPU: the peak of a workload's first execution above the bytes in use before it
    (None elsewhere, or where the device keeps no allocator statistics).

    XLA's allocator keeps one peak per process, never reset, so the order matters: the inputs
    are built (the workload) and the jitted call compiled ahead (``lower().compile()``: XLA's
    autotuning allocates on the device) before the baseline is read, and the execution that
    follows is the call's first (the jit cache holds the executable: nothing compiles again).
    When that execution raised the process's peak, the allocator's figure is the call's;
    otherwise (input generation, autotuning or an earlier point peaked higher) the compiled
    executable's own plan (peak_from_stats)."""
    import jax

    dev = counted_device(device)
    if dev is None:
        return None
    work.setup()
    jitted = work.info.get("jitted")
    executable = compile_ahead(jitted)
    jax.block_until_ready(work.inputs)
    return call_peak(dev, work, lambda: executable_bytes(executable))


def call_peak(dev: Any, work: Any, planned: Any) -> tuple[int, str]:
    """One call of ``work`` between two reads of the device's allocator counters: its peak
    above the bytes in use before it where it raised the process's peak, else ``planned()``
    (peak_from_stats)."""
    stats = dev.memory_stats() or {}
    before = stats.get("bytes_in_use", 0)
    peak_before = stats.get("peak_bytes_in_use", 0)
    value = work.run()
    work.block(value)
    peak_after = (dev.memory_stats() or {}).get("peak_bytes_in_use", 0)
    del value
    return peak_from_stats(before, peak_before, peak_after, planned)


def compile_ahead(jitted: tuple[Any, tuple[Any, ...]] | None) -> Any:
    """The jitted call's compiled executable (None without one): compiled now, and kept in
    JAX's cache for the call that follows."""
    if jitted is None:
        return None
    fn, args = jitted
    return fn.lower(*args).compile()


def device_peak_bytes(work: Any, device: str) -> tuple[int, str] | None:
    """JAX on GPU: the allocator's peak above the bytes in use before the call, where this call
    set the peak; else the compiled program's own plan.

    XLA's allocator keeps one peak per process (no reset): in a reused worker an earlier, larger
    point's peak hides this one's. When the peak after the call is above the peak before it (or
    no earlier peak exceeds what is in use, as in a fresh worker), the call set it and the
    allocator's figure is this call's. Otherwise the peak comes from the compiled executable's
    ``memory_analysis()`` (temporaries + outputs - aliased), what XLA planned for the call.
    """
    dev = counted_device(device)
    if dev is None:
        return None
    work.setup()
    return call_peak(dev, work, lambda: planned_bytes(work.info.get("jitted")))


def counted_device(device: str) -> Any:
    """The JAX device of a CUDA point whose allocator keeps a peak counter; None elsewhere."""
    if device_kind(device) != "cuda":
        return None
    dev = jax_device(device)
    return dev if "peak_bytes_in_use" in (dev.memory_stats() or {}) else None


def peak_from_stats(in_use_before: int, peak_before: int, peak_after: int,
                    planned: Any) -> tuple[int, str] | None:
    """(peak above the inputs, method) from the allocator's counters around one call (pure but
    for ``planned()``, the compiled plan's bytes or None, asked only when the counters cannot
    tell)."""
    if peak_after > peak_before or peak_before <= in_use_before:
        return int(peak_after - in_use_before), "jax_memory_stats_peak_above_inputs"
    plan = planned()
    if plan is None:
        return None
    return int(plan), "jax_compiled_memory_analysis"


def planned_bytes(jitted: tuple[Any, tuple[Any, ...]] | None) -> int | None:
    """Temporaries + outputs - aliased bytes of the jitted call's compiled executable."""
    try:
        return executable_bytes(compile_ahead(jitted))
    except Exception:  # noqa: BLE001 - a backend that cannot lower or compile it here
        return None


def executable_bytes(executable: Any) -> int | None:
    """Temporaries + outputs - aliased bytes of a compiled executable's memory_analysis()
    (what XLA allocates for one call besides its arguments); None without the analysis."""
    if executable is None:
        return None
    try:
        analysis = executable.memory_analysis()
    except Exception:  # noqa: BLE001 - a backend without the analysis
        return None
    if analysis is None:
        return None
    return max(0, int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes
                      - analysis.alias_size_in_bytes))


def threads() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def is_oom(exc: BaseException) -> bool:
    """XLA's RESOURCE_EXHAUSTED and the allocation failures of harness.contract.frameworks.oom
    (a cuBLAS / cuDNN handle or workspace that could not be allocated)."""
    from harness.contract.frameworks import oom

    return oom.is_oom(exc, xla=True)


def to_numpy64(array: Any) -> np.ndarray:
    return np.asarray(to_numpy(array), dtype=np.float64)


def l2_flush_bytes(device: str) -> int:
    """Device bytes of the timing pass's L2-flush buffer (harness.measure.timers.JaxFlushTimer):
    the worker raises JAX's --max-memory cap by this much, as for torch."""
    return JAX_FLUSH_BYTES
