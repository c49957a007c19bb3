"""JAX's per-point peak in a reused worker: the allocator's counters when this call set the peak,
else the compiled executable's memory_analysis() (harness.contract.frameworks.jax_fw)."""

from __future__ import annotations

import pytest

from harness.contract.records import Point

jax = pytest.importorskip("jax", reason="jax is not installed")

from harness.contract.frameworks import jax_fw  # noqa: E402
from harness.contract.registry import REGISTRY  # noqa: E402


def test_counters_used_when_the_call_set_the_peak():
    # a fresh worker: nothing before exceeded the bytes in use
    assert jax_fw.peak_from_stats(100, 100, 900, lambda: None) == \
        (800, "jax_memory_stats_peak_above_inputs")
    # a reused worker whose earlier point peaked lower than this call
    assert jax_fw.peak_from_stats(100, 500, 900, lambda: None)[0] == 800


def test_plan_used_when_an_earlier_point_holds_the_peak():
    asked = []

    def planned():
        asked.append(True)
        return 1234

    assert jax_fw.peak_from_stats(100, 5000, 5000, planned) == \
        (1234, "jax_compiled_memory_analysis")
    assert asked == [True]
    assert jax_fw.peak_from_stats(100, 5000, 5000, lambda: None) is None


@pytest.mark.parametrize("pass_", ["forward", "forward_backward"])
def test_planned_bytes_of_a_real_workload(pass_):
    point = Point(impl="softmax_jax", device="cpu", batch=1, heads=2, seq_len=128, head_dim=16,
                  dtype="float32", causal=False, pass_=pass_)
    work = jax_fw.memory_workload(REGISTRY.get("softmax_jax"), point)
    planned = jax_fw.planned_bytes(work.info["jitted"])
    output_bytes = 1 * 2 * 128 * 16 * 4
    assert planned is not None and planned >= output_bytes   # at least the output is written


def test_no_plan_without_a_jitted_call():
    assert jax_fw.planned_bytes(None) is None


def test_point_task_measures_both_passes_on_one_workload():
    """The GPU's joint task, on the CPU: the memory pass's cold call is the compilation (JAX),
    the timing pass starts warm on the same workload."""
    from harness.grid.settings import TimingSettings, WorkerContext
    from harness.measure.worker import point_task

    point = Point(impl="softmax_jax", device="cpu", batch=1, heads=2, seq_len=64, head_dim=16,
                  dtype="float32", causal=False, pass_="forward")
    settings = TimingSettings(warmup=1, min_time_s=0.01, min_repeats=2, max_repeats=3)
    measured = point_task(point, settings, WorkerContext())
    assert measured.status == "ok", (measured.memory.message, measured.timing.message)
    assert measured.memory.mem_method == "cpu_rss_hwm_above_inputs"
    timing = measured.timing
    assert timing.first_call_s >= timing.compile_time_s >= 0
    assert timing.compile_cache in ("miss", "hit", "warm")
    assert len(timing.time_samples_s) >= 2
