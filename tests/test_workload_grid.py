"""The workload axes on points, records, grids, FLOPs, reports and compare: new axes are stored
and keyed, old run directories (records without them) still load with the defaults."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.errors import UsageError
from harness.metrics.flops import attention_flops, point_pairs
from harness.contract.masking import allowed_mask
from harness.contract.point_masks import document_ids
from harness.contract.records import Point, SpeedRecord, point_id, record_from_json
from harness.grid.spec import SweepSpec, expand, overrides_from

OLD_FIELDS = ("impl", "device", "batch", "heads", "seq_len", "head_dim", "dtype", "causal",
              "pass")


def test_default_points_keep_their_ids():
    """Points at the defaults hash exactly as before the axes existed, so runs still resume."""
    for point in (Point("softmax_torch", 1024, 64), Point("sdpa_math", 512, 32, causal=True,
                                                          heads=4, kv_heads=4, q_len=512)):
        old = {"impl": point.impl, "device": point.device, "batch": point.batch,
               "heads": point.heads, "seq_len": point.seq_len, "head_dim": point.head_dim,
               "dtype": point.dtype, "causal": point.causal, "pass": point.pass_}
        assert point.point_id == point_id("speed", old)
    assert Point("a", 1024, 64, kv_heads=2).point_id != Point("a", 1024, 64).point_id
    assert Point("a", 1024, 64, window=128).point_id != Point("a", 1024, 64).point_id


def test_record_round_trip_and_old_records_read_with_defaults():
    point = Point("sdpa_math", 1024, 64, heads=8, kv_heads=2, q_len=1, window=128, alibi=True)
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok")
    data = json.loads(json.dumps(record.to_json()))
    assert (data["kv_heads"], data["q_len"], data["window"], data["alibi"]) == (2, 1, 128, True)
    assert record_from_json(data).point == point
    assert data["point_id"] == point.point_id
    old = {name: data[name] for name in OLD_FIELDS} | {"status": "ok", "framework": "torch",
                                                        "family": "exact", "kind": "speed"}
    old_point = record_from_json(old).point
    assert old_point == Point("sdpa_math", 1024, 64, heads=8)
    assert (old_point.n_kv_heads, old_point.n_queries, old_point.window_pair) == (8, 1024, None)


def test_grid_axes_parse_and_validate():
    spec = overrides_from({"kv_heads": "2,8", "q_len": "1", "window": "128,none",
                           "alibi": "both", "documents": "4", "seq_len": "1K",
                           "heads": "8"}).apply(SweepSpec())
    points = expand([replace_docs(spec)], ["softmax_torch"])
    assert {(p.n_kv_heads, p.window, p.alibi) for p in points} == {
        (kv, w, a) for kv in (2, 8) for w in (128, -1) for a in (False, True)}
    with pytest.raises(UsageError, match="multiple of kv_heads"):
        expand([overrides_from({"kv_heads": "3", "heads": "8"}).apply(SweepSpec())], ["x"])
    with pytest.raises(UsageError, match="documents need q_len == seq_len"):
        expand([overrides_from({"q_len": "1", "documents": "2"}).apply(SweepSpec())], ["x"])


def replace_docs(spec: SweepSpec) -> SweepSpec:
    from dataclasses import replace

    return replace(spec, documents=(0,))   # documents need q_len == seq_len: tested apart


@pytest.mark.parametrize("point", [
    Point("a", 1024, 64, causal=True, window=128),
    Point("a", 1024, 64, causal=False, window=100),
    Point("a", 1024, 64, causal=True),
    Point("a", 333, 16, causal=True, q_len=7, batch=2),
    Point("a", 512, 16, causal=True, documents=5, batch=3),
    Point("a", 512, 16, causal=False, documents=3, window=20, batch=2),
])
def test_point_flops_are_the_exact_allowed_pair_count(point):
    mask = allowed_mask(point.n_queries, point.seq_len, causal=point.causal,
                        window=point.window_pair, document_ids=document_ids(point))
    brute = point.batch * point.n_queries * point.seq_len if mask is None else \
        int(np.broadcast_to(mask, (point.batch, 1, point.n_queries, point.seq_len)).sum())
    assert point_pairs(point) == brute
    assert attention_flops(point) == 4.0 * point.heads * point.head_dim * brute
    if point.causal and point.window < 0 and not point.q_len and not point.documents:
        assert point_pairs(point) == point.batch * point.seq_len * (point.seq_len + 1) // 2


def test_causal_window_128_at_1024_counts():
    point = Point("a", 1024, 64, causal=True, window=128)
    # rows 0..127 see i + 1 keys, the rest 129
    assert point_pairs(point) == sum(range(1, 129)) + (1024 - 128) * 129


def test_report_loads_old_and_new_records_together():
    from harness.report.data import tidy_speed

    new = SpeedRecord.for_point(Point("sdpa_math", 1024, 64, kv_heads=2, q_len=1),
                                framework="torch", family="exact", status="ok",
                                time_s=1e-3).to_json()
    old = {k: v for k, v in SpeedRecord.for_point(
        Point("sdpa_math", 1024, 64), framework="torch", family="exact", status="ok",
        time_s=2e-3).to_json().items() if k not in ("kv_heads", "q_len", "window", "alibi",
                                                     "documents")}
    frame = tidy_speed([{**new, "run": "r", "hardware_tag": "h"},
                        {**old, "run": "r", "hardware_tag": "h"}])
    rows = {int(r.q_len): r for r in frame.itertuples()}
    assert rows[1024].kv_heads == 8 and rows[1024].window == -1 and not rows[1024].alibi
    assert rows[1].kv_heads == 2
    assert "Hkv=2 Tq=1" in rows[1].group and "Hkv" not in rows[1024].group


def test_runner_measures_workload_points_and_refuses_with_reasons(tmp_path):
    """Real workers: GQA decode, a causal window and packed documents are measured (gate at
    the same features, FLOPs = exact pairs); HRR refuses Tq != Tk with its reason."""
    from harness.grid.settings import TimingSettings
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    run_dir = RunDir.create(tmp_path / "run", {"kind": "speed", "machine": {}})
    fast = TimingSettings(warmup=1, min_time_s=0.02, min_repeats=3, max_repeats=3)
    runner = Runner(run_dir, RunSettings(timeout_s=120, timing=fast), hardware_id="t")
    grid = [Point("sdpa_math", 128, 16, heads=4, kv_heads=2, q_len=1, causal=True),
            Point("softmax_jax", 128, 16, heads=4, causal=True, window=16, alibi=True),
            Point("softmax_torch", 128, 16, heads=2, causal=True, documents=3,
                  pass_="forward_backward"),
            Point("hrr_torch", 128, 16, heads=2, q_len=1)]
    records = {r.impl: r for r in runner.run(grid).records}
    for name in ("sdpa_math", "softmax_jax", "softmax_torch"):
        record = records[name]
        assert record.status == "ok", record.message
        assert record.gate_max_error is not None and record.gate_max_error < 2e-5
        assert record.flops == attention_flops(record.point)
        assert record.extra.get("paths")
    assert (records["sdpa_math"].kv_heads, records["sdpa_math"].q_len) == (2, 1)
    assert records["sdpa_math"].tokens_per_s == pytest.approx(1 / records["sdpa_math"].time_s)
    assert records["hrr_torch"].status == "unsupported"
    assert "every query position" in records["hrr_torch"].message
