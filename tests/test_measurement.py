"""The typed Measurement (what the worker returns) and the SpeedRecord it fills: each metric is
declared once, and the record's field is the result's field (same Field object, so the same
name, type and default), so nothing is dropped and "not measured" reads the same."""

from __future__ import annotations

import dataclasses

from harness.contract.records import (
    METRIC_FIELDS,
    METRIC_GROUPS,
    MemoryResult,
    Measurement,
    SpeedRecord,
    TimingResult,
)


def test_the_record_field_is_the_result_field():
    record_fields = {f.name: f for f in dataclasses.fields(SpeedRecord)}
    for result in (MemoryResult, TimingResult):
        for f in dataclasses.fields(result):
            if f.name in METRIC_FIELDS:
                assert record_fields[f.name] is f, (result.__name__, f.name)
            elif f.name not in ("status", "message"):
                assert f.metadata.get("to") == "extra", (result.__name__, f.name)
                assert f.name not in record_fields or f.name == "extra", (result.__name__, f.name)
    for group in METRIC_GROUPS:
        assert issubclass(SpeedRecord, group)


def test_record_values_copy_every_metric_of_the_passes_and_json_lists_the_point_first():
    timing = TimingResult(time_s=0.5, deviation_from_softmax=0.25, matmul_precision="highest")
    values, _ = Measurement(MemoryResult(peak_mem_bytes=3), timing).record_values()
    passes = {f.name for r in (MemoryResult, TimingResult) for f in dataclasses.fields(r)}
    assert set(values) == passes & set(METRIC_FIELDS)
    assert not {"gate_max_error", "tokens_per_s"} & set(values)   # not the passes' to fill
    record = SpeedRecord(impl="x", framework="torch", family="exact", device="cpu", batch=1,
                         heads=1, seq_len=8, head_dim=4, dtype="float32", causal=False,
                         pass_="forward", status="ok", **values)
    data = record.to_json()
    assert data["deviation_from_softmax"] == 0.25 and data["peak_mem_bytes"] == 3
    keys = list(data)
    assert keys[:3] == ["impl", "framework", "family"]    # the point first, then the metrics
    assert keys.index("message") < keys.index("time_s") < keys.index("hardware_id")


def test_record_values_keep_every_measured_value_including_task_wall_time():
    memory = MemoryResult(peak_mem_bytes=10, mem_method="m", input_bytes=3,
                          rss_baseline_bytes=7, task_wall_s=0.5)
    timing = TimingResult(time_samples_s=[1.0, 2.0], time_s=1.5, first_call_s=2.5,
                          task_wall_s=0.25)
    values, extra = Measurement(memory, timing).record_values()
    assert values["peak_mem_bytes"] == 10 and values["time_s"] == 1.5
    assert values["time_samples_s"] == [1.0, 2.0] and "status" not in values
    assert extra == {"rss_baseline_bytes": 7, "memory_task_wall_s": 0.5, "first_call_s": 2.5,
                     "timing_task_wall_s": 0.25}
    record = SpeedRecord(impl="x", framework="torch", family="exact", device="cpu", batch=1,
                         heads=1, seq_len=8, head_dim=4, dtype="float32", causal=False,
                         pass_="forward", status="ok", extra=extra, **values)
    assert record.to_json()["extra"]["timing_task_wall_s"] == 0.25


def test_one_statistics_helper_for_worker_report_and_compare():
    import harness.verdicts.compare
    import harness.report.data
    import harness.measure.worker
    from harness.metrics import stats

    assert harness.measure.worker.sample_stats is stats.sample_stats
    assert harness.report.data.quartiles is stats.quartiles
    assert harness.verdicts.compare.ratio_estimate is stats.ratio_estimate
    summary = stats.sample_stats([1.0, 2.0, 3.0, 4.0])
    assert summary.median == 2.5 and summary.iqr == stats.quartiles([1, 2, 3, 4])[1] - 1.75


def _events(listener) -> None:
    from harness.contract.records import Point

    record = SpeedRecord(impl="softmax_torch", framework="torch", family="exact", device="cpu",
                         batch=1, heads=2, seq_len=64, head_dim=8, dtype="float32",
                         causal=False, pass_="forward", status="ok", time_s=0.002,
                         time_iqr_s=0.0001, peak_mem_bytes=1024)
    listener("start", {"total": 2, "todo": 2, "resumed": 0})
    listener("point", Point("softmax_torch", seq_len=64, head_dim=8))
    listener("record", record)
    listener("end", None)


def test_progress_is_a_live_bar_on_a_terminal_and_a_plain_log_otherwise():
    import io

    from rich.console import Console

    from harness.measure.progress import ProgressListener

    plain = io.StringIO()
    listener = ProgressListener(Console(file=plain, force_terminal=False, width=120))
    assert not listener.live
    _events(listener)
    text = plain.getvalue()
    assert "\x1b" not in text and text.startswith("ok      softmax_torch T=64")
    assert len(text.strip().splitlines()) == 1

    tty = io.StringIO()
    listener = ProgressListener(Console(file=tty, force_terminal=True, width=120))
    assert listener.live
    columns = [type(c).__name__ for c in listener.progress.columns]
    assert {"MofNCompleteColumn", "TimeElapsedColumn", "TimeRemainingColumn"} <= set(columns)
    _events(listener)
    assert "softmax_torch T=64" in tty.getvalue()


def test_downstream_columns_derive_from_the_record_fields():
    from harness.contract.records import NUMERIC_SPEED_METRICS, SPEED_METRICS
    from harness.report.data import speed_columns, tidy_speed

    record_fields = [f.name for f in dataclasses.fields(SpeedRecord)]
    assert list(SPEED_METRICS) == [n for n in record_fields if n in SPEED_METRICS]
    assert set(SPEED_METRICS) <= set(speed_columns())
    assert {"time_s", "peak_mem_bytes", "tflops", "gate_max_error"} <= set(NUMERIC_SPEED_METRICS)
    row = SpeedRecord(impl="softmax_torch", framework="torch", family="exact", device="cpu",
                      batch=1, heads=2, seq_len=64, head_dim=8, dtype="float32", causal=False,
                      pass_="forward", status="ok", time_s=0.002, time_min_s=0.001,
                      time_samples_s=[0.001, 0.002, 0.003]).to_json()
    frame = tidy_speed([{**row, "run": "r", "hardware_tag": "h"}])
    assert frame["time_min_s"].iloc[0] == 0.001 and frame["n_samples"].iloc[0] == 3


def test_the_unsupported_table_gives_each_reason_once():
    from harness.contract.records import Point, SpeedRecord
    from harness.measure.progress import unsupported_reasons

    def record(impl, message, seq_len):
        return SpeedRecord.for_point(Point(impl=impl, seq_len=seq_len, head_dim=8),
                                     framework="torch", family="exact", status="unsupported",
                                     message=message)

    records = [record("m", "m: no layout", 16), record("m", "m: no layout; no fused", 32),
               record("m", "m: no fused", 64), record("n", "n: dtype float16 not supported", 16)]
    assert unsupported_reasons(records) == {"m": ["no layout", "no fused"],
                                            "n": ["dtype float16 not supported"]}
