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


# ---- issue 26, item 10: the GPU peak is the call's, not compilation's or input generation's --

class FakeAllocator:
    """A JAX GPU device whose memory_stats() follow a scripted allocator: one process peak,
    never reset (XLA's BFC allocator)."""

    platform = "gpu"

    def __init__(self, inputs: int) -> None:
        self.in_use = self.peak = 0
        self.events: list[str] = []
        self.allocate(inputs)      # input generation leaves the inputs allocated

    def allocate(self, size: int, *, freed: bool = False) -> None:
        self.peak = max(self.peak, self.in_use + size)
        if not freed:
            self.in_use += size

    def memory_stats(self) -> dict:
        self.events.append("stats")
        return {"bytes_in_use": self.in_use, "peak_bytes_in_use": self.peak}


class FakeCompiled:
    def __init__(self, temp: int, output: int) -> None:
        self.temp, self.output = temp, output

    def memory_analysis(self):
        import types

        return types.SimpleNamespace(temp_size_in_bytes=self.temp,
                                     output_size_in_bytes=self.output, alias_size_in_bytes=0)


def fake_workload(dev: FakeAllocator, *, autotune: int, call: int, plan: int):
    """A workload whose compilation (autotuning) allocates ``autotune`` bytes for a while and
    whose every execution ``call`` bytes (temporaries and output)."""
    from harness.contract.workload import Workload

    compiled: list[bool] = []   # jit's cache

    class Jitted:
        def lower(self, *args):
            return self

        def compile(self):
            dev.events.append("compile")
            dev.allocate(autotune, freed=True)
            compiled.append(True)
            return FakeCompiled(plan, 0)

    def run():
        if not compiled:   # jit's first call compiles, unless compiled ahead
            Jitted().compile()
        dev.events.append("run")
        dev.allocate(call, freed=True)
        return "out"

    return Workload(run=run, block=lambda value: None, check=lambda value: True,
                    input_bytes=1000, info={"jitted": (Jitted(), ())})


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(**sizes):
        dev = FakeAllocator(inputs=1000)
        monkeypatch.setattr(jax_fw, "jax_device", lambda device: dev)
        return dev, fake_workload(dev, **sizes)
    return install


def test_first_execution_is_measured_after_compilation(fake_gpu):
    dev, work = fake_gpu(autotune=300, call=800, plan=777)
    assert jax_fw.first_call_peak(work, "cuda") == (800, "jax_memory_stats_peak_above_inputs")
    # compiled before the baseline was read; the run compiled nothing more
    assert dev.events == ["stats", "compile", "stats", "run", "stats"]


def test_compilation_peaking_higher_gives_the_plan(fake_gpu):
    dev, work = fake_gpu(autotune=5000, call=800, plan=777)
    assert jax_fw.first_call_peak(work, "cuda") == (777, "jax_compiled_memory_analysis")


def test_the_cold_call_then_a_warm_call_never_sees_the_call_peak(fake_gpu):
    """What a warm call after the cold one reads: the cold call set the same peak, so the
    counters cannot say whether the warm call reached it."""
    dev, work = fake_gpu(autotune=0, call=800, plan=777)
    work.run()                                   # the cold call
    assert jax_fw.device_peak_bytes(work, "cuda") == (777, "jax_compiled_memory_analysis")


def test_cold_memory_call_measures_jax_gpu_on_its_first_execution(fake_gpu):
    from harness.measure import worker

    dev, work = fake_gpu(autotune=300, call=800, plan=777)
    point = Point(impl="softmax_jax", device="cuda", seq_len=64, head_dim=16)
    seconds, cache, memory = worker.cold_memory_call(work, jax_fw, REGISTRY.get("softmax_jax"),
                                                     point)
    assert (memory.peak_mem_bytes, memory.mem_method) == (800, "jax_memory_stats_peak_above_inputs")
    assert memory.input_bytes == 1000 and seconds >= 0
    assert dev.events.count("compile") == 1 and dev.events.count("run") == 1


def test_no_first_call_peak_off_a_gpu():
    assert jax_fw.first_call_peak(object(), "cpu") is None


def test_compiling_ahead_leaves_nothing_to_compile_for_the_call():
    """The premise of first_call_peak on this JAX: jit(f).lower(...).compile() fills the cache
    the jitted call uses."""
    from harness.measure import compile_cache

    point = Point(impl="softmax_jax", device="cpu", batch=1, heads=2, seq_len=32, head_dim=16,
                  dtype="float32", causal=True, pass_="forward_backward")
    work = jax_fw.memory_workload(REGISTRY.get("softmax_jax"), point)
    executable = jax_fw.compile_ahead(work.info["jitted"])
    assert jax_fw.executable_bytes(executable) is not None
    with compile_cache.watch("jax") as watch:
        work.block(work.run())
    assert watch.compiled == 0 and watch.hits == 0
