"""The kv_dtype axis: FP8 keys and values with per-tensor scales, their gate, their error beside
the speed, their bytes and the methods that refuse them (with reasons)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from harness.contract import quant
from harness.contract.records import Measurement, MemoryResult, Point, SpeedRecord
from harness.contract.registry import REGISTRY
from harness.errors import UsageError

FORMATS = ("float8_e4m3fn", "float8_e5m2")


def small_point(impl: str = "softmax_torch", **axes) -> Point:
    base = dict(impl=impl, seq_len=64, head_dim=32, batch=2, heads=4, causal=True)
    return Point(**{**base, **axes})


# -- quantise / dequantise ----------------------------------------------------------------------
@pytest.mark.parametrize("kv_dtype", FORMATS)
def test_rounding_to_the_fp8_grid_is_torchs_cast(kv_dtype):
    torch = pytest.importorskip("torch")
    fmt = quant.fp8_format(kv_dtype)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(4000) * s for s in (1e-4, 1e-2, 1, 30, fmt.max)])
    x = np.concatenate([x, [0.0, fmt.max, -fmt.max, 2 * fmt.max, -3 * fmt.max]])
    # float32 values: torch casts a float64 through float32 (rounding twice), the workloads
    # quantise float32 values
    x = x.astype(np.float32).astype(np.float64)
    ours = quant.round_to_fp8(x, kv_dtype)
    clamped = torch.from_numpy(np.clip(x, -fmt.max, fmt.max))
    theirs = clamped.to(getattr(torch, kv_dtype)).double().numpy()
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("kv_dtype", FORMATS)
def test_quantise_round_trip_and_per_tensor_scale(kv_dtype):
    fmt = quant.fp8_format(kv_dtype)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 50, 16)) * 3.0
    codes, scale = quant.quantise(x, kv_dtype)
    amax = np.abs(x).max()
    assert scale == float(np.float32(amax / fmt.max))          # one scale, float32
    assert np.abs(codes).max() == pytest.approx(fmt.max, rel=2 ** -fmt.mantissa_bits)
    assert np.array_equal(quant.round_to_fp8(codes, kv_dtype), codes)   # on the grid
    back = quant.dequantise(codes, scale)
    # a normal value is within half a step (2^-(m+1) relative); subnormals within half the
    # smallest step
    step_floor = 2.0 ** (fmt.min_exponent - fmt.mantissa_bits) * scale
    bound = np.maximum(np.abs(x) * 2.0 ** -(fmt.mantissa_bits + 1), step_floor / 2)
    assert np.all(np.abs(back - x) <= bound * (1 + 1e-6))
    assert quant.quantise(np.zeros(4), kv_dtype)[1] == 1.0      # all-zero: scale 1


@pytest.mark.parametrize("kv_dtype", FORMATS)
def test_framework_quantisers_give_the_contracts_codes(kv_dtype):
    torch = pytest.importorskip("torch")
    from harness.contract.frameworks import torch_fw

    x = np.random.default_rng(3).standard_normal((2, 2, 40, 8)).astype(np.float32)
    codes, scale = quant.quantise(x.astype(np.float64), kv_dtype)
    t_codes, t_scale = torch_fw.quantise_kv(torch.from_numpy(x), kv_dtype)
    assert t_scale == scale and t_codes.dtype == getattr(torch, kv_dtype)
    # float32 division vs float64 division may round a tie differently: one step at most
    assert np.mean(torch_fw.to_numpy64(t_codes) == codes) > 0.99
    pytest.importorskip("jax")
    from harness.contract.frameworks import jax_fw

    j_codes, j_scale = jax_fw.quantise_kv(jax_fw.from_numpy(x, "cpu"), kv_dtype)
    assert j_scale == scale and j_codes.dtype.itemsize == 1
    assert np.array_equal(jax_fw.to_numpy64(j_codes), torch_fw.to_numpy64(t_codes))


# -- the axis -----------------------------------------------------------------------------------
def test_axis_parses_labels_and_keeps_old_point_ids():
    assert quant.parse_kv_dtypes("fp8,e5m2,none") == ("float8_e4m3fn", "float8_e5m2", "")
    with pytest.raises(UsageError, match="--kv-dtype"):
        quant.parse_kv_dtypes("int4")
    plain = small_point()
    assert "kv_dtype" not in plain.as_dict()                 # id as before the axis
    fp8 = small_point(kv_dtype="float8_e4m3fn")
    assert fp8.point_id != plain.point_id
    assert fp8.workload_label() == "kv=fp8e4m3"
    assert "fp8_kv" in fp8.features()
    record = SpeedRecord.for_point(fp8, framework="torch", family="exact", status="ok")
    data = record.to_json()
    assert data["kv_dtype"] == "float8_e4m3fn" and data["point_id"] == fp8.point_id
    assert SpeedRecord.from_json(data).point == fp8
    assert SpeedRecord.for_point(plain, framework="torch", family="exact",
                                 status="ok").to_json()["kv_dtype"] is None


def test_fp8_kv_is_forward_only():
    method = REGISTRY.get("softmax_torch")
    for pass_ in ("backward", "forward_backward"):
        point = small_point(kv_dtype="float8_e4m3fn", pass_=pass_)
        assert point.workload_problem() is None     # a grid may hold it: a record says why
        verdict = method.supports(features=point.all_features(), run_probe=False)
        assert not verdict and "forward pass only" in verdict.reason
    assert method.supports(features=small_point(kv_dtype="float8_e4m3fn").all_features(),
                           run_probe=False)


# -- the gate and the error ---------------------------------------------------------------------
CLAIMING = ["softmax_torch", "sdpa_math", "softmax_jax", "flex_attention"]


@pytest.mark.parametrize("impl", CLAIMING)
def test_claiming_methods_pass_the_gate_on_dequantised_inputs(impl):
    from harness.measure.gate import check_point

    method = REGISTRY.get(impl)
    if not method.availability("cpu", "float32"):
        pytest.skip(f"{impl} does not run here")
    dtypes = ("float32",) if impl == "flex_attention" else ("float32", "bfloat16")
    for dtype in dtypes:
        for kv_dtype in FORMATS:
            point = small_point(impl, dtype=dtype, kv_heads=2, kv_dtype=kv_dtype)
            gate = check_point(method, point)
            assert gate.passed, (dtype, kv_dtype, gate)
            # the deviation is against the unquantised inputs: FP8 costs more than the
            # compute dtype's own rounding
            plain = check_point(method, replace(point, kv_dtype=""))
            assert gate.deviation_from_softmax > plain.deviation_from_softmax, (dtype, kv_dtype)
            # and more than the gate's own error (which excludes the quantisation)
            assert gate.deviation_from_softmax > gate.max_error


def test_e5m2_costs_more_than_e4m3():
    from harness.measure.gate import check_point

    method = REGISTRY.get("softmax_torch")
    e4, e5 = (check_point(method, small_point(dtype="bfloat16", kv_dtype=k))
              .deviation_from_softmax for k in FORMATS)
    assert e5 > e4 > 0   # 2 mantissa bits against 3


def test_quant_error_recorded_beside_the_time():
    from harness.contract.frameworks import torch_fw
    from harness.grid.settings import TimingSettings, WorkerContext
    from harness.measure.output_checks import fidelity
    from harness.measure.worker import timing_task

    settings = TimingSettings(warmup=0, min_time_s=0.0, min_repeats=1, max_repeats=1)
    point = small_point(dtype="bfloat16", kv_dtype="float8_e4m3fn", seq_len=128)
    result = timing_task(point, settings, WorkerContext())
    assert result.status == "ok", result.message
    assert result.time_s is not None and result.quant_error is not None
    assert result.kv_scales["granularity"] == "per_tensor"
    assert result.kv_scales["k_scale"] > 0 and result.kv_scales["v_scale"] > 0
    values, notes = Measurement(MemoryResult(), result).record_values()
    assert values["quant_error"] == result.quant_error and "kv_scales" in notes
    # the same inputs in bfloat16 alone: its own error against float64 is smaller
    plain = replace(point, kv_dtype="")
    work = torch_fw.make_workload(REGISTRY.get("softmax_torch"), plain)
    bf16_error, _ = fidelity(work.run(), work, plain, torch_fw)
    assert result.quant_error > bf16_error > 0
    assert result.quant_error < 0.1


def test_workload_holds_fp8_kv_and_the_bytes_say_so():
    torch = pytest.importorskip("torch")
    from harness.contract.frameworks import torch_fw

    impl = REGISTRY.get("softmax_torch")
    point = small_point(dtype="bfloat16", kv_dtype="float8_e5m2")
    work = torch_fw.make_workload(impl, point)
    q, k, v = work.inputs
    assert k.dtype == v.dtype == torch.float8_e5m2 and q.dtype == torch.bfloat16
    assert work.input_bytes == q.numel() * 2 + k.numel() + v.numel()
    q64, k64, v64 = work.info["unquantised_inputs"]()
    plain = torch_fw.make_workload(impl, replace(point, kv_dtype=""))
    assert np.array_equal(k64, torch_fw.to_numpy64(plain.inputs[1]))


# -- bytes ----------------------------------------------------------------------------------------
def test_traffic_counts_fp8_kv_at_one_byte_and_the_dequantised_copy():
    from harness.metrics import traffic

    plain = small_point(dtype="bfloat16")
    fp8 = replace(plain, kv_dtype="float8_e4m3fn")
    kv = plain.batch * plain.n_kv_heads * plain.seq_len * plain.head_dim
    saved = traffic.compulsory(plain).bytes_moved - traffic.compulsory(fp8).bytes_moved
    assert saved == 2 * kv * (2 - 1)                 # k and v read at 1 byte, not 2
    model = traffic.dequant_copy(traffic.tiled_exact)
    assert model(plain) == traffic.tiled_exact(plain)
    assert model(fp8).bytes_moved == traffic.tiled_exact(fp8).bytes_moved + 4 * kv * 2
    assert "dequantised" in model(fp8).model


# -- who refuses, and why ---------------------------------------------------------------------
@pytest.mark.parametrize("impl, words", [
    ("sdpa_flash", "SDPA takes no FP8"), ("sdpa_efficient", "SDPA takes no FP8"),
    ("flash_attn", "FlashAttention-2"), ("hrr_torch", "HRR"), ("hrr_jax", "HRR"),
    ("hrr_triton", "HRR"), ("performer_torch", "Performer"), ("xformers", "xFormers"),
])
def test_methods_without_fp8_say_why(impl, words):
    if impl not in REGISTRY.names():
        pytest.skip(f"{impl} not registered here")
    method = REGISTRY.get(impl)
    reasons = method.capabilities.missing_reasons({"fp8_kv"})
    assert len(reasons) == 1 and words in reasons[0]


def test_claiming_methods_declare_their_path():
    for impl in CLAIMING:
        caps = REGISTRY.get(impl).capabilities
        assert caps.has("fp8_kv") and "fp8_kv" in dict(caps.paths), impl


# -- check --workloads and the report ---------------------------------------------------------
def test_check_workloads_has_fp8_cases_and_they_pass():
    from harness.grid.settings import WorkerContext
    from harness.grid.workload_cases import builtin_cases
    from harness.measure.worker import check_workloads_task

    cases = [c for c in builtin_cases() if c.point.kv_dtype]
    assert {c.point.kv_dtype for c in cases} == set(FORMATS)
    items = [(impl, c.for_impl(impl, "cpu", "float32")) for impl in ("softmax_torch", "sdpa_math")
             for c in cases]
    out = check_workloads_task(items, WorkerContext())
    assert all(r.gate is not None and r.gate.passed for r in out.values()), out
    # a method without the feature is unsupported with its reason, not gated
    hrr = check_workloads_task([("hrr_torch", cases[0].for_impl("hrr_torch", "cpu",
                                                                  "float32"))], WorkerContext())
    (result,) = hrr.values()
    assert not result and "FP8" in result.reason


def test_report_shows_speed_and_error_side_by_side():
    from harness.report import tables
    from harness.report.data import tidy_speed
    from harness.report.render import points_table

    rows = []
    for kv_dtype, time_s, error in (("", 2e-3, None), ("float8_e4m3fn", 3e-3, 0.03)):
        point = small_point(dtype="bfloat16", kv_dtype=kv_dtype)
        record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                       time_s=time_s, time_samples_s=[time_s],
                                       quant_error=error)
        rows.append({**record.to_json(), "run": "r", "hardware_tag": "cpu"})
    speed = tidy_speed(rows)
    table = tables.kv_dtype_table(speed)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["kv_dtype"] == "float8_e4m3fn" and row["quant_error"] == 0.03
    assert row["time_ms"] == 3.0 and row["time_ms_unquantised"] == 2.0
    assert row["time_ratio"] == 1.5
    columns = list(points_table(speed).columns)
    assert columns[columns.index("time_s") + 1] == "quant_error" and "kv_dtype" in columns


# -- on a GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
def test_fp8_kv_gate_and_error_on_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    from harness.grid.settings import TimingSettings, WorkerContext
    from harness.measure.gate import check_point
    from harness.measure.worker import timing_task

    for impl in ("softmax_torch", "sdpa_math", "flex_attention"):
        for kv_dtype in FORMATS:
            point = small_point(impl, device="cuda", dtype="bfloat16", kv_heads=2,
                                kv_dtype=kv_dtype)
            gate = check_point(REGISTRY.get(impl), point)
            assert gate.passed, (impl, kv_dtype, gate)
    settings = TimingSettings(warmup=0, min_time_s=0.0, min_repeats=1, max_repeats=1)
    result = timing_task(small_point(device="cuda", dtype="bfloat16",
                                     kv_dtype="float8_e4m3fn"), settings, WorkerContext())
    assert result.status == "ok", result.message
    assert 0 < result.quant_error < 0.1


@pytest.mark.parametrize("impl", ["softmax_torch", "flex_attention", "sdpa_math"])
@pytest.mark.parametrize("extra", [(("head_dim_v", 16), ("lengths", "uniform:8-64"),
                                    ("page_size", 16)),
                                   (("lengths", "uniform:8-64"),)])
def test_fp8_keys_and_values_combine_with_pages_lengths_and_value_dims(impl, extra):
    """An FP8 paged, ragged decode step with D_v != D: the sweep's workload builds and runs
    (pools at each tensor's own head dim, FP8 codes paged), and the gate passes against the
    dequantised inputs."""
    from harness.contract import frameworks
    from harness.contract.records import Point
    from harness.contract.registry import REGISTRY, static_check
    from harness.measure.gate import check_point

    point = Point(impl, seq_len=64, head_dim=32, heads=4, batch=2, causal=True, q_len=1,
                  kv_dtype="float8_e4m3fn", extra_axes=extra)
    method = REGISTRY.get(impl)
    assert static_check(method, point) is None
    work = frameworks.get("torch").make_workload(method, point)
    out = work.run()
    assert tuple(out.shape) == (2, 4, 1, dict(extra).get("head_dim_v", 32))
    assert work.check(out)
    result = check_point(method, point)
    assert result.passed, result.message
