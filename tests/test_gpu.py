"""CUDA paths: numerics of every implementation on the GPU, CUDA timing and memory, NVML.

Marked ``gpu``; each test skips with the reason when no CUDA device is present, so the same
file is the GPU validation suite (``pytest -m gpu``) and a no-op on CPU machines.
"""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.reference import exact_attention, hrr_attention

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUDA, reason="no CUDA device: torch.cuda.is_available() "
                                                  "is False")]
TOLERANCE = {"float32": 2e-3, "float16": 5e-3, "bfloat16": 3e-2}  # TF32 matmuls allowed in fp32


@pytest.mark.parametrize("name", [i.name for i in harness.all_implementations()
                                  if i.family in ("exact", "hrr")])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_numerics_against_float64_reference(name, dtype, causal):
    impl = harness.get(name)
    verdict = impl.supports(device="cuda", dtype=dtype, causal=causal)
    if not verdict:
        pytest.skip(verdict.reason)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 256, 64)) for _ in range(3))
    from harness.correctness import run_impl_numpy

    out = run_impl_numpy(impl, q, k, v, device="cuda", dtype=dtype, causal=causal, mask=None)
    ref = exact_attention(q, k, v, causal=causal) if impl.family == "exact" else \
        hrr_attention(q, k, v)
    np.testing.assert_allclose(out, ref, atol=TOLERANCE[dtype], rtol=0)


def test_cuda_runner_records_event_timing_and_allocator_memory(tmp_path):
    from harness.measure import TimingSettings
    from harness.records import Point
    from harness.runner import Runner, RunSettings
    from harness.store import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(timing=TimingSettings(min_time_s=0.05)))
    points = [Point(impl=name, seq_len=t, head_dim=64, heads=8, dtype="float16",
                    device="cuda") for name in ("softmax_torch", "hrr_torch") for t in (2048, 8192)]
    records = runner.run(points).records
    assert all(r.status == "ok" for r in records), [r.message for r in records]
    assert all(r.timer == "cuda_event" for r in records)
    assert all(r.mem_method == "cuda_allocator_peak_above_inputs" for r in records)
    softmax = {r.seq_len: r.peak_mem_bytes for r in records if r.impl == "softmax_torch"}
    hrr = {r.seq_len: r.peak_mem_bytes for r in records if r.impl == "hrr_torch"}
    assert softmax[8192] / softmax[2048] > 8       # ~T^2 (16x)
    assert 2 < hrr[8192] / hrr[2048] < 8           # ~T (4x)


def test_nvml_fingerprint_names_the_gpu():
    from harness.hardware import fingerprint

    info = fingerprint()
    assert info["gpu"].get("nvml") == "ok", info["gpu"]
    gpu = info["gpu"]["gpus"][0]
    assert gpu["name"] and gpu["memory_total_bytes"] > 0
    assert info["cuda"]["cuda_available"] and info["hardware_tag"]


def test_cuda_oom_is_a_record(tmp_path):
    from harness.records import Point
    from harness.runner import Runner, RunSettings
    from harness.store import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(max_memory_bytes=256 * 2 ** 20))
    records = runner.run([Point("softmax_torch", seq_len=t, head_dim=64, heads=16,
                                dtype="float16", device="cuda") for t in (1024, 16384, 32768)]
                         ).records
    status = {r.seq_len: r.status for r in records}
    assert status == {1024: "ok", 16384: "oom", 32768: "skipped"}, records


WORKLOAD_CASES = {   # (q heads, kv heads, Tq, Tk, keywords), causal unless said otherwise
    "gqa": (8, 2, 256, 256, {}),
    "mqa": (8, 1, 256, 256, {}),
    "decode": (8, 2, 1, 256, {}),
    "chunk": (8, 8, 7, 256, {}),
    "window_one_sided": (8, 8, 256, 256, {"window": (32, 0)}),
    "window_two_sided": (8, 8, 256, 256, {"window": (32, 16), "causal": False}),
    "alibi": (8, 8, 256, 256, {"alibi": True}),
    "documents": (8, 2, 256, 256, {"documents": 3}),
}


@pytest.mark.parametrize("name", [i.name for i in harness.all_implementations()
                                  if i.family == "exact"])
@pytest.mark.parametrize("case", list(WORKLOAD_CASES))
def test_cuda_workloads_against_float64_reference(name, case):
    """Every exact CUDA method on the workloads it claims (bf16; fp32 where that is all)."""
    from harness.correctness import run_impl_numpy
    from harness.masking import alibi_slopes, packed_document_ids

    hq, hkv, tq, tk, kw = WORKLOAD_CASES[case]
    kw = dict(kw)
    causal = kw.pop("causal", True)
    if kw.pop("alibi", False):
        kw["alibi_slopes"] = alibi_slopes(hq)
    docs = kw.pop("documents", None)
    if docs:
        kw["document_ids"] = packed_document_ids(2, tk, docs, seed=0)
    impl = harness.get(name)
    dtype = "bfloat16" if "bfloat16" in impl.capabilities.dtypes else "float32"
    verdict = impl.supports(device="cuda", dtype=dtype, causal=causal, gqa=hkv != hq,
                            q_len=tq != tk, window="window" in kw, alibi="alibi_slopes" in kw,
                            documents="document_ids" in kw)
    if not verdict:
        pytest.skip(verdict.reason)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, hq, tq, 64))
    k, v = (rng.standard_normal((2, hkv, tk, 64)) for _ in range(2))
    out = run_impl_numpy(impl, q, k, v, device="cuda", dtype=dtype, causal=causal, mask=None,
                         **kw)
    ref = exact_attention(q, k, v, causal=causal, **kw)
    np.testing.assert_allclose(out, ref, atol=TOLERANCE[dtype], rtol=0)
def test_cudagraph_timer_and_clock_sampling_in_records(tmp_path):
    """--timer cudagraph replays a captured call; every CUDA record carries NVML clocks."""
    from harness.measure import TimingSettings
    from harness.records import Point
    from harness.runner import Runner, RunSettings
    from harness.store import RunDir

    points = [Point(impl=name, seq_len=4096, head_dim=64, heads=16, dtype="float16",
                    device="cuda") for name in ("sdpa_flash", "hrr_torch")]
    by_timer = {}
    for timer in ("events", "cudagraph"):
        runner = Runner(RunDir.create(tmp_path / timer, {}),
                        RunSettings(timing=TimingSettings(min_time_s=0.05, timer=timer)))
        by_timer[timer] = {r.impl: r for r in runner.run(points).records}
    for timer, records in by_timer.items():
        for r in records.values():
            assert r.status == "ok", r.message
            assert r.timer == ("cuda_event" if timer == "events" else "cudagraph")
            assert r.l2_flush.startswith("flushed")
            assert "tf32" in r.matmul_precision
            if "clock_note" not in r.extra:      # nvidia-ml-py present
                assert r.sm_clock_mhz_min and r.sm_clock_mhz_max >= r.sm_clock_mhz_min
                assert r.max_sm_clock_mhz and isinstance(r.throttled, bool)
    for impl in ("sdpa_flash", "hrr_torch"):   # the same work, launch overhead removed
        assert by_timer["cudagraph"][impl].time_s < 1.5 * by_timer["events"][impl].time_s


def test_measured_gpu_peaks_stay_below_the_data_sheet():
    from harness.peaks import measure_copy, measure_gemm, table_entry

    name = torch.cuda.get_device_name(0)
    entry = table_entry(name)
    gemm = measure_gemm("cuda", "bfloat16", n=4096, repeats=5)
    copy = measure_copy("cuda", nbytes=1 << 30, repeats=5)
    assert gemm.value > 1e12 and copy.value > 1e11
    if entry is None:
        pytest.skip(f"{name} is not in the table of data-sheet peaks")
    assert gemm.value <= 1.05 * entry.matmul_flops_per_s["bfloat16"]
    assert copy.value <= 1.05 * entry.memory_bytes_per_s


def test_jax_on_gpu_flushes_l2_like_torch(tmp_path):
    pytest.importorskip("jax")
    from harness.measure import TimingSettings
    from harness.records import Point
    from harness.runner import Runner, RunSettings
    from harness.store import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(timing=TimingSettings(min_time_s=0.05)))
    record = runner.run([Point(impl="hrr_jax", seq_len=4096, head_dim=64, heads=8,
                               dtype="float16", device="cuda")]).records[0]
    if record.status == "unsupported":
        pytest.skip(record.message)
    assert record.status == "ok", record.message
    assert record.l2_flush.startswith("flushed")
