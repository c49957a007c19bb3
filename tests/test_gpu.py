"""CUDA paths: numerics of every implementation on the GPU, CUDA timing and memory, NVML.

Marked ``gpu``; each test skips with the reason when no CUDA device is present, so the same
file is the GPU validation suite (``pytest -m gpu``) and a no-op on CPU machines.
"""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.contract.reference import exact_attention, hrr_attention

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
    from harness.measure.gate import run_impl_numpy

    out = run_impl_numpy(impl, q, k, v, device="cuda", dtype=dtype, causal=causal, mask=None)
    ref = exact_attention(q, k, v, causal=causal) if impl.family == "exact" else \
        hrr_attention(q, k, v)
    np.testing.assert_allclose(out, ref, atol=TOLERANCE[dtype], rtol=0)


def test_cuda_runner_records_event_timing_and_allocator_memory(tmp_path):
    from harness.grid.settings import TimingSettings
    from harness.contract.records import Point
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(timing=TimingSettings(min_time_s=0.05)))
    points = [Point(impl=name, seq_len=t, head_dim=64, heads=8, dtype="float16",
                    device="cuda") for name in ("softmax_torch", "hrr_torch") for t in (2048, 8192)]
    records = runner.run(points).records
    assert all(r.status == "ok" for r in records), [r.message for r in records]
    assert all(r.timer == "cuda_event" for r in records)
    assert all(r.timing_basis == "device_events" for r in records)
    assert all(r.mem_method == "cuda_allocator_peak_above_inputs" for r in records)
    softmax = {r.seq_len: r.peak_mem_bytes for r in records if r.impl == "softmax_torch"}
    hrr = {r.seq_len: r.peak_mem_bytes for r in records if r.impl == "hrr_torch"}
    assert softmax[8192] / softmax[2048] > 8       # ~T^2 (16x)
    assert 2 < hrr[8192] / hrr[2048] < 8           # ~T (4x)


def test_nvml_fingerprint_names_the_gpu():
    from harness.store.hardware import fingerprint

    info = fingerprint()
    assert info["gpu"].get("nvml") == "ok", info["gpu"]
    # finding 12: torch's device UUIDs matched NVML's, so gpus[N] is cuda:N
    assert info["gpu"]["cuda_order"] == "uuid", info["gpu"]
    assert len(info["gpu"]["gpus"]) == torch.cuda.device_count()
    gpu = info["gpu"]["gpus"][0]
    assert gpu["name"] and gpu["memory_total_bytes"] > 0
    assert info["cuda"]["cuda_available"] and info["hardware_tag"]


def test_cuda_oom_is_a_record(tmp_path):
    from harness.contract.records import Point
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(max_memory_bytes=256 * 2 ** 20))
    records = runner.run([Point("softmax_torch", seq_len=t, head_dim=64, heads=16,
                                dtype="float16", device="cuda") for t in (1024, 16384, 32768)]
                         ).records
    status = {r.seq_len: r.status for r in records}
    assert status == {1024: "ok", 16384: "oom", 32768: "skipped"}, records


# ---- the CUDA-path fixes (tests/test_cuda_paths.py checks their logic on the CPU) ------------

def _run_points(tmp_path, points, **settings):
    from harness.grid.settings import TimingSettings
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    settings.setdefault("timing", TimingSettings(min_time_s=0.02, max_repeats=5))
    runner = Runner(RunDir.create(tmp_path / "run", {}), RunSettings(**settings))
    return runner.run(points).records


def _jax_gpu():
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError as exc:
        pytest.skip(f"JAX sees no GPU: {exc}")


def test_max_memory_on_device_cuda_caps_torch_and_jax(tmp_path):
    """Finding 1: 'cuda' without an index, and JAX points (XLA_CLIENT_MEM_FRACTION)."""
    from harness.contract.records import Point

    _jax_gpu()
    points = [Point(name, seq_len=t, head_dim=64, heads=16, dtype="float16", device="cuda")
              for name in ("softmax_torch", "softmax_jax") for t in (1024, 16384)]
    records = _run_points(tmp_path, points, max_memory_bytes=512 * 2 ** 20)
    status = {(r.impl, r.seq_len): r.status for r in records}
    # 16K: 8 GiB of fp16 scores, far over the 512 MiB cap (and far under the GPU's memory)
    assert status == {("softmax_torch", 1024): "ok", ("softmax_torch", 16384): "oom",
                      ("softmax_jax", 1024): "ok", ("softmax_jax", 16384): "oom"}, records


def test_l2_flush_buffer_is_sized_from_the_l2_and_outside_the_workloads_cap(tmp_path):
    """Finding 2: a point that fits the cap in the memory pass also fits in the timing pass."""
    from harness.contract.frameworks import torch_fw
    from harness.contract.records import Point

    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    assert l2 > 0 and torch_fw.l2_flush_bytes("cuda") == 2 * l2
    (record,) = _run_points(tmp_path, [Point("hrr_torch", seq_len=4096, head_dim=64, heads=8,
                                             dtype="float16", device="cuda")],
                            max_memory_bytes=96 * 2 ** 20)
    assert record.status == "ok", record.message
    used = record.peak_mem_bytes + record.input_bytes
    assert used < 96 * 2 ** 20 < 2 * l2 + used     # the flush buffer alone would not fit


def test_memory_pass_excludes_one_off_library_workspaces(tmp_path):
    """Finding 3: at a tiny shape the cuBLAS workspace (32 MiB on Hopper) would dominate."""
    from harness.contract.records import Point

    records = _run_points(tmp_path, [Point(name, seq_len=256, head_dim=64, heads=1,
                                           dtype="float16", device="cuda")
                                     for name in ("softmax_torch", "sdpa_math")])
    for record in records:
        assert record.status == "ok", record.message
        assert record.peak_mem_bytes < 4 * 2 ** 20, (record.impl, record.peak_mem_bytes)


@pytest.mark.parametrize("name", [i.name for i in harness.all_implementations()
                                  if i.family in ("exact", "hrr")])
def test_float32_passes_the_float32_gate(name):
    """Finding 5: no TF32 in float32 (softmax_jax's einsums at HIGHEST); the gate's 2e-5."""
    from harness.measure.gate import check

    impl = harness.get(name)
    verdict = impl.supports(device="cuda", dtype="float32")
    if not verdict:
        pytest.skip(verdict.reason)
    gate = check(impl, device="cuda", dtype="float32")
    assert gate.passed, gate.message


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hrr_at_head_dim_256(dtype):
    """Finding 6: hrr_triton's K loop compiles and is right at D = 256 (and hrr_torch's
    batched CUDA path, finding 8)."""
    from harness.measure.gate import run_impl_numpy

    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 4, 1000, 256)) for _ in range(3))
    ref = hrr_attention(q, k, v)
    for name in ("hrr_torch", "hrr_triton"):
        impl = harness.get(name)
        verdict = impl.supports(device="cuda", dtype=dtype)
        if not verdict:
            continue
        out = run_impl_numpy(impl, q, k, v, device="cuda", dtype=dtype, causal=False, mask=None)
        error = np.abs(out - ref).max() / np.abs(ref).max()
        assert error <= {"float32": 2e-5, "bfloat16": 3e-2}[dtype], (name, error)


@pytest.mark.parametrize("name", ["hrr_torch", "hrr_triton", "hrr_jax"])
def test_hrr_gqa_shares_key_value_heads_on_cuda(name):
    """GQA (Hq 8, Hkv 2) and MQA (Hkv 1) with key padding: hrr_torch's batched CUDA loops,
    hrr_triton's kernel (key/value head h // group) and hrr_jax against the float64 reference."""
    impl = harness.get(name)
    verdict = impl.supports(device="cuda", dtype="float32", key_padding_mask=True, gqa=True)
    if not verdict:
        pytest.skip(verdict.reason)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, 8, 300, 64)).astype(np.float32)
    keep = rng.random((2, 300)) > 0.2
    for kv_heads in (2, 1):
        k, v = (rng.standard_normal((2, kv_heads, 300, 64)).astype(np.float32)
                for _ in range(2))
        out = harness.attention(name, q, k, v, key_padding_mask=keep, device="cuda")
        ref = hrr_attention(q, k, v, key_padding_mask=keep)
        assert np.abs(out - ref).max() / np.abs(ref).max() <= 2e-5, (name, kv_heads)


@pytest.mark.skipif(CUDA and torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices (cuda:1)")
def test_points_on_cuda_1_are_timed_on_cuda_1(tmp_path):
    """Finding 7: events and Triton launches on the point's device, not the current one."""
    from harness.contract.records import Point

    names = ["softmax_torch", "hrr_torch"] + (["hrr_triton"] if harness.get(
        "hrr_triton").supports(device="cuda:1", dtype="float16") else [])
    records = _run_points(tmp_path, [Point(n, seq_len=16384, head_dim=64, heads=16,
                                           dtype="float16", device="cuda:1") for n in names])
    for record in records:
        assert record.status == "ok", record.message
        # events on an idle GPU 0 would measure ~ nothing; the work takes > 50 microseconds
        assert record.time_s > 5e-5, (record.impl, record.time_s)


def test_kernel_limits_are_unsupported_not_errors():
    """Finding 10: head dims a fused kernel has no kernel for: UnsupportedError with reasons."""
    from harness.errors import UnsupportedError

    for name in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flash_attn"):
        impl = harness.get(name)
        if not impl.supports(device="cuda", dtype="float16"):
            continue
        for dim in (100, 512):
            q = torch.randn(1, 2, 128, dim, device="cuda", dtype=torch.float16)
            try:
                out = impl.fn(q, q, q, causal=False, key_padding_mask=None)
            except UnsupportedError as exc:
                assert str(exc), name
                continue
            assert out.shape == q.shape
    q = torch.randn(1, 2, 128, 512, device="cuda", dtype=torch.float16)
    with pytest.raises(UnsupportedError, match="FLASH_ATTENTION has no kernel"):
        harness.get("sdpa_flash").fn(q, q, q)


def test_list_shows_sdpa_flash_available_in_half_precision_on_cuda():
    """Finding 10: `run_bench.py list` probes each dtype, not only float32."""
    from harness.commands.list_impls import device_availability

    got = device_availability(harness.get("sdpa_flash"), "cuda")
    assert got["available"] and set(got["dtypes"]) >= {"float16", "bfloat16"}, got
    assert "float32" not in got["dtypes"]


def test_jax_cpu_point_runs_on_the_cpu_beside_a_gpu():
    """Finding 4: with JAX's CUDA build a "cpu" point stays on the CPU (committed inputs)."""
    _jax_gpu()
    from harness.contract.frameworks import jax_fw
    from harness.contract.records import Point

    for device, platform in (("cpu", "cpu"), ("cuda", "gpu")):
        point = Point("softmax_jax", seq_len=64, head_dim=16, heads=2, device=device)
        work = jax_fw.make_workload(harness.get("softmax_jax"), point)
        out = work.run()
        assert {d.platform for d in out.devices()} == {platform}, (device, out.devices())



WORKLOAD_CASES = {   # (q heads, kv heads, Tq, Tk, keywords), causal unless said otherwise
    "gqa": (8, 2, 256, 256, {}),
    "mqa": (8, 1, 256, 256, {}),
    "decode": (8, 2, 1, 256, {}),
    "chunk": (8, 8, 7, 256, {}),
    "window_one_sided": (8, 8, 256, 256, {"window": (32, 0)}),
    "window_two_sided": (8, 8, 256, 256, {"window": (32, 16), "causal": False}),
    "alibi": (8, 8, 256, 256, {"alibi": True}),
    "documents": (8, 2, 256, 256, {"documents": 3}),
    # the varlen / bias-object paths of flash_attn and xformers (LIBRARY_CASES: only those two
    # run them, to keep the suite's GPU time bounded; the CPU suite covers the others)
    "documents_window": (8, 2, 256, 256, {"documents": 3, "window": (32, 0)}),
    "documents_alibi": (8, 8, 256, 256, {"documents": 3, "alibi": True}),
    "documents_two_sided": (8, 8, 256, 256, {"documents": 2, "window": (16, 8),
                                             "alibi": True, "causal": False}),
    "window_chunk": (8, 2, 7, 256, {"window": (32, 0)}),
    "window_left_unbounded": (8, 8, 256, 256, {"window": (-1, 16), "causal": False}),
    "decode_alibi_gqa": (8, 2, 1, 256, {"alibi": True, "window": (64, 0)}),
    "padding": (8, 2, 256, 256, {"padding": True, "causal": False}),
    "padding_chunk": (8, 8, 7, 256, {"padding": True, "causal": False}),
}

LIBRARY_CASES = {"documents_window", "documents_alibi", "documents_two_sided", "window_chunk",
                 "window_left_unbounded", "decode_alibi_gqa", "padding", "padding_chunk"}


@pytest.mark.parametrize("name", [i.name for i in harness.all_implementations()
                                  if i.family == "exact"])
@pytest.mark.parametrize("case", list(WORKLOAD_CASES))
def test_cuda_workloads_against_float64_reference(name, case):
    """Every exact CUDA method on the workloads it claims (bf16; fp32 where that is all)."""
    if case in LIBRARY_CASES and name not in ("flash_attn", "xformers"):
        pytest.skip("a flash_attn / xformers path case")
    from harness.measure.gate import run_impl_numpy
    from harness.contract.masking import alibi_slopes, packed_document_ids

    hq, hkv, tq, tk, kw = WORKLOAD_CASES[case]
    kw = dict(kw)
    causal = kw.pop("causal", True)
    if kw.pop("alibi", False):
        kw["alibi_slopes"] = alibi_slopes(hq)
    docs = kw.pop("documents", None)
    if docs:
        kw["document_ids"] = packed_document_ids(2, tk, docs, seed=0)
    mask = None
    if kw.pop("padding", False):      # kept keys a prefix of each row (the varlen form)
        mask = np.ones((2, tk), dtype=bool)
        mask[0, tk - tk // 4:] = False
        mask[1, 5:] = False
    impl = harness.get(name)
    dtype = "bfloat16" if "bfloat16" in impl.capabilities.dtypes else "float32"
    verdict = impl.supports(device="cuda", dtype=dtype, causal=causal, gqa=hkv != hq,
                            q_len=tq != tk, window="window" in kw, alibi="alibi_slopes" in kw,
                            documents="document_ids" in kw, key_padding_mask=mask is not None)
    if not verdict:
        pytest.skip(verdict.reason)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, hq, tq, 64))
    k, v = (rng.standard_normal((2, hkv, tk, 64)) for _ in range(2))
    out = run_impl_numpy(impl, q, k, v, device="cuda", dtype=dtype, causal=causal, mask=mask,
                         **kw)
    ref = exact_attention(q, k, v, causal=causal, key_padding_mask=mask, **kw)
    np.testing.assert_allclose(out, ref, atol=TOLERANCE[dtype], rtol=0)
def test_cudagraph_timer_and_clock_sampling_in_records(tmp_path):
    """--timer cudagraph replays a captured call; every CUDA record carries NVML clocks."""
    from harness.grid.settings import TimingSettings
    from harness.contract.records import Point
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

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
            assert r.timing_basis == "device_events"      # torch-only run: auto
            if "clock_note" not in r.extra:      # nvidia-ml-py present
                # sampled around the samples only: at least the entry and exit samples
                assert r.extra["clock_samples"] >= 2
                if r.extra.get("clock_samples_used"):
                    assert r.sm_clock_mhz_min and r.sm_clock_mhz_max >= r.sm_clock_mhz_min
                    assert r.max_sm_clock_mhz and isinstance(r.throttled, bool)
    for impl in ("sdpa_flash", "hrr_torch"):   # the same work, launch overhead removed
        assert by_timer["cudagraph"][impl].time_s < 1.5 * by_timer["events"][impl].time_s


def test_host_sync_basis_times_torch_and_jax_alike_on_the_gpu(tmp_path):
    """--timing-basis host_sync (auto with a JAX method on CUDA): both frameworks' records
    on host_sync, torch's timer the synchronising one."""
    pytest.importorskip("jax")
    from harness.contract.records import Point
    from harness.grid.settings import RunSettings, TimingSettings
    from harness.measure.runner import Runner
    from harness.store.run_dir import RunDir

    points = [Point(impl=name, seq_len=1024, head_dim=64, heads=8, dtype="float32",
                    device="cuda") for name in ("softmax_torch", "softmax_jax")]
    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(timing=TimingSettings(min_time_s=0.05)))
    records = {r.impl: r for r in runner.run(points).records}
    assert all(r.status == "ok" for r in records.values()), \
        [r.message for r in records.values()]
    assert {r.timing_basis for r in records.values()} == {"host_sync"}
    assert records["softmax_torch"].timer == "perf_counter+cuda_sync"


def test_measured_gpu_peaks_stay_below_the_data_sheet():
    from harness.metrics.peaks import measure_copy, measure_gemm, table_entry

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
    from harness.grid.settings import TimingSettings
    from harness.contract.records import Point
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(timing=TimingSettings(min_time_s=0.05)))
    record = runner.run([Point(impl="hrr_jax", seq_len=4096, head_dim=64, heads=8,
                               dtype="float16", device="cuda")]).records[0]
    if record.status == "unsupported":
        pytest.skip(record.message)
    assert record.status == "ok", record.message
    assert record.l2_flush.startswith("flushed")


@pytest.mark.parametrize("name", ["flash_attn", "xformers"])
def test_cuda_library_paths_refuse_what_they_cannot_express(name):
    """Per input: documents whose id comes back (and, for flash_attn, key padding that is not
    a prefix of the row) are UnsupportedError before the library is called."""
    from harness.errors import UnsupportedError

    impl = harness.get(name)
    verdict = impl.supports(device="cuda", dtype="float16", documents=True)
    if not verdict:
        pytest.skip(verdict.reason)
    q = torch.randn(1, 2, 8, 64, device="cuda", dtype=torch.float16)
    ids = torch.tensor([[0, 0, 1, 1, 0, 0, 2, 2]], device="cuda")
    with pytest.raises(UnsupportedError, match="reappears"):
        impl.fn(q, q, q, causal=True, document_ids=ids)
    if name == "flash_attn":
        holes = torch.tensor([[True, False] * 4], device="cuda")
        with pytest.raises(UnsupportedError, match="not a prefix"):
            impl.fn(q, q, q, key_padding_mask=holes)


def test_flash_attn_varlen_padding_backward_matches_sdpa():
    """Key padding through flash_attn_varlen_func, forward and backward, against SDPA's math
    backend on the same bf16 inputs (flash_attn's gradients reach the packed k and v)."""
    impl = harness.get("flash_attn")
    verdict = impl.supports(device="cuda", dtype="bfloat16", key_padding_mask=True,
                            backward=True)
    if not verdict:
        pytest.skip(verdict.reason)
    import torch.nn.functional as F

    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 128, 64, device="cuda", dtype=torch.bfloat16, generator=gen)
               .requires_grad_() for _ in range(3))
    keep = torch.ones(2, 128, dtype=torch.bool, device="cuda")
    keep[0, 100:] = False
    out = impl.fn(q, k, v, key_padding_mask=keep)
    out.float().square().sum().backward()
    grads = [x.grad.float() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                         attn_mask=keep[:, None, None, :])
    ref.square().sum().backward()
    assert (out.float() - ref).abs().max().item() < 3e-2
    for got, x in zip(grads, (q, k, v)):
        scale = max(1.0, x.grad.abs().max().item())
        assert (got - x.grad.float()).abs().max().item() < 5e-2 * scale
