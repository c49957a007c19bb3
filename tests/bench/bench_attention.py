"""One pytest-benchmark per registered implementation, forward pass, fixed small shapes.

CPU: B=1, H=8, T=1024, D=64, float32. CUDA (when present): B=4, H=16, T=4096, D=64, float16
(or the implementation's first supported dtype of float16, bfloat16, float32). An implementation
that cannot run here is skipped with the registry's reason. See tests/bench/conftest.py for how
to run it.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.contract import frameworks
from harness.measure.memory import peak_rss_bytes, reset_peak_rss, rss_bytes
from harness.contract.records import Point
from harness.contract.registry import REGISTRY

CPU_SHAPE = {"batch": 1, "heads": 8, "seq_len": 1024, "head_dim": 64}
CUDA_SHAPE = {"batch": 4, "heads": 16, "seq_len": 4096, "head_dim": 64}


def _device() -> str:
    from harness.contract.frameworks import torch_fw

    return "cuda" if torch_fw.device_present("cuda") else "cpu"


def _point(impl_name: str, device: str) -> Point:
    impl = REGISTRY.get(impl_name)
    if device == "cuda":
        dtype = next((d for d in ("float16", "bfloat16", "float32")
                      if d in impl.capabilities.dtypes), impl.capabilities.dtypes[0])
        return Point(impl=impl_name, device=device, dtype=dtype, pass_="forward", **CUDA_SHAPE)
    return Point(impl=impl_name, device=device, dtype="float32", pass_="forward", **CPU_SHAPE)


def peak_memory(fw: Any, impl: Any, point: Point) -> tuple[int | None, str]:
    """Peak memory of one call above the inputs: CUDA allocator, or this process's RSS peak."""
    work = fw.memory_workload(impl, point)
    result = fw.device_peak_bytes(work, point.device)
    if result is not None:
        return int(result[0]), result[1]
    work.block(work.run())  # lazy initialisation and compilation out of the way
    if not reset_peak_rss():
        return None, "unavailable (no /proc/self/clear_refs)"
    baseline = rss_bytes()
    work.setup()
    value = work.run()
    work.block(value)
    peak = peak_rss_bytes()
    del value
    if peak is None or baseline is None:
        return None, "unavailable"
    return max(0, peak - baseline), "cpu_rss_hwm_above_inputs (in the pytest process)"


@pytest.mark.parametrize("impl_name", REGISTRY.names())
def test_attention_forward(benchmark, hardware, impl_name):
    device = _device()
    point = _point(impl_name, device)
    impl = REGISTRY.get(impl_name)
    verdict = impl.supports(device=device, dtype=point.dtype)
    if not verdict:
        pytest.skip(verdict.reason)
    fw = frameworks.get(impl.framework)
    work = fw.make_workload(impl, point)
    work.block(work.run())  # first call (JAX jit, lazy init) is not timed

    def call() -> Any:
        value = work.run()
        work.block(value)
        return value

    benchmark.group = (f"forward {device} {point.dtype} B={point.batch} H={point.heads} "
                       f"T={point.seq_len} D={point.head_dim}")
    value = benchmark(call)
    assert work.check(value), f"{impl_name}: non-finite output"
    peak, method = peak_memory(fw, impl, point)
    benchmark.extra_info.update({
        "impl": impl_name, "framework": impl.framework, "family": impl.family,
        "point": point.as_dict(), "point_id": point.point_id,
        "peak_mem_bytes": peak, "mem_method": method,
        "threads": fw.threads(), "hardware": hardware,
    })
