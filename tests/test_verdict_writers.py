"""The shared verdict writers (harness/verdicts/writers.py): every writer from the same rows, and a
row from ``compare`` and a row from ``ab`` in the same columns."""

from __future__ import annotations

import csv
import io

import pytest
from rich.console import Console

from harness.contract.axes import axes
from harness.contract.records import Point, SpeedRecord
from harness.errors import UsageError
from harness.verdicts import compare, words, writers
from harness.verdicts.ab.rounds import History, judge
from harness.verdicts.row import VerdictRow, config_text, key_names, verdict_cell


def _record(point: Point, center: float, status: str = "ok") -> SpeedRecord:
    samples = [center * (1 + 0.001 * k) for k in range(9)] if status == "ok" else []
    return SpeedRecord.for_point(point, framework="torch", family="exact", status=status,
                                 time_s=center if samples else None, time_samples_s=samples,
                                 peak_mem_bytes=1 << 20 if samples else None)


def _compare_rows() -> list[VerdictRow]:
    """compare's rows: one slower (2x), one same, one newly failing (ok -> oom)."""
    slow, same, broken = Point("a", 64, 8), Point("b", 64, 8), Point("c", 64, 8, kv_heads=2)
    base = [_record(slow, 0.01), _record(same, 0.01), _record(broken, 0.01)]
    cur = [_record(slow, 0.02), _record(same, 0.01), _record(broken, 0.0, status="oom")]
    return compare.compare_records(base, cur).rows


def _ab_row(ratio: float = 1.3) -> VerdictRow:
    """ab's row of one point over four rounds at ``ratio``."""
    history = History(Point("d", 128, 16, causal=True))
    for k in range(4):
        history.statuses.append(("ok", "ok"))
        history.base_values.append(0.001)
        history.head_values.append(0.001 * ratio)
        history.ratios.append(ratio * (1 + 0.001 * k))
    return judge(history, threshold=0.10, confidence=0.95)


def _csv_rows(rows: list[VerdictRow]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(writers.csv_text(rows))))


def _markdown_rows(text: str) -> list[list[str]]:
    """The table of a markdown page, one list of cells a line (the header first)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_key_columns_are_impl_and_the_axis_table():
    rows = _compare_rows()
    names = key_names(row.point for row in rows)
    assert names == ("impl", *(axis.name for axis in axes()))
    assert writers.csv_fields(rows)[:len(names)] == names


def test_every_writer_from_the_same_rows():
    rows = _compare_rows() + words.with_failures([_ab_row()])
    failing = sum(r.fails for r in rows)
    assert failing == 3      # compare's 2x, its ok -> oom, ab's 1.3 over four tight rounds
    # CSV: every row, every declared field, failing rows first
    parsed = _csv_rows(rows)
    assert list(parsed[0]) == list(writers.csv_fields(rows))
    assert len(parsed) == len(rows)
    assert [r["fails"] for r in parsed] == ["True"] * failing + ["False"] * (
        len(rows) - failing)
    # the CSV carries the class alone (the statuses have their fields), a table the pair
    assert {r["verdict"] for r in parsed} == {words.SLOWER, words.NEWLY_FAILING, words.SAME}
    # markdown: the title, the header as a list, one table line a row, the summary line
    page = writers.markdown(rows, "attnbench test", ["baseline: here", "current: there"])
    assert page.startswith("# attnbench test\n\n- baseline: here\n- current: there\n")
    table = _markdown_rows(page)
    assert len(table) == 1 + len(rows)
    assert table[0] == [c.name for c in writers.table_columns(rows)]
    assert sum("**" in cell for line in table for cell in line) == failing
    assert "**newly failing (ok -> oom)**" in page
    summary = writers.summary_line(rows)
    assert page.rstrip().endswith(summary)
    assert summary == f"FAIL: {failing} row(s) fail (2 slower, 1 newly failing, 1 same)"
    # rich: the same columns, the same cells
    console = Console(record=True, width=400, color_system=None)
    console.print(writers.rich_table(rows, "title"))
    text = console.export_text()
    for column in writers.table_columns(rows):
        assert column.name in text
    for row in rows:
        assert config_text(row.point) in text and verdict_cell(row) in text


def test_a_compare_row_and_an_ab_row_fill_the_same_columns():
    compared = [r for r in _compare_rows() if r.point.impl == "a"][0]
    ab = _ab_row()
    assert compared.verdict == ab.verdict == words.SLOWER
    by_impl = {r["impl"]: r for r in _csv_rows([compared, ab])}
    for name in ("seq_len", "point_id", "metric", "baseline", "current", "ratio", "lo", "hi",
                 "baseline_noise", "current_noise", "verdict", "baseline_status",
                 "current_status"):
        assert by_impl["a"][name] and by_impl["d"][name], name
    assert float(by_impl["d"]["ratio"]) == pytest.approx(1.3, rel=0.01)
    assert float(by_impl["a"]["ratio"]) == pytest.approx(2.0, rel=0.01)
    assert by_impl["d"]["rounds"] == "4" and len(by_impl["d"]["round_ratios"].split(";")) == 4
    assert by_impl["d"]["causal"] == "True" and by_impl["a"]["causal"] == "False"
    table = _markdown_rows(writers.markdown([compared, ab], "t", []))
    header = table[0]
    cells = {line[header.index("impl")]: dict(zip(header, line)) for line in table[1:]}
    for name in ("config", "metric", "baseline", "current", "ratio", "interval", "noise",
                 "verdict"):
        assert cells["a"][name] and cells["d"][name], name
    assert cells["d"]["config"] == "T=128 D=16 B=1 H=8 float32 causal forward cpu"
    assert cells["a"]["baseline"].endswith("ms") and cells["d"]["baseline"].endswith("ms")


def test_status_rows_show_the_statuses_and_empty_columns_are_left_out():
    rows = [r for r in _compare_rows() if r.metric == "status"]
    assert [r.verdict for r in rows] == [words.NEWLY_FAILING]
    names = [c.name for c in writers.table_columns(rows)]
    assert "noise" not in names and "interval" not in names and "ratio" not in names
    line = _markdown_rows(writers.markdown(rows, "t", []))[1]
    assert line[names.index("baseline")] == "ok" and line[names.index("current")] == "oom"
    assert "Hkv=2" in line[names.index("config")]
    assert writers.summary_line([]) == "pass ()"


def test_exit_status_is_one_rule():
    assert words.exit_status(r.fails for r in _compare_rows()) == 1
    same = words.with_failures([_ab_row(1.0)])
    assert same[0].verdict == words.SAME and words.exit_status(r.fails for r in same) == 0


def test_fail_on_adds_classes_and_refuses_what_cannot_fail():
    assert words.parse_fail_on(None) == {words.SLOWER, words.NEWLY_FAILING}
    assert words.parse_fail_on("ambiguous, only-in-baseline") == {
        words.SLOWER, words.NEWLY_FAILING, words.AMBIGUOUS, words.ONLY_BASELINE}
    for bad in ("faster", "same", "newly-running", "reference", "worse"):
        with pytest.raises(UsageError, match="--fail-on"):
            words.parse_fail_on(bad)
    row = VerdictRow(Point("e", 64, 8), "time", words.AMBIGUOUS)
    assert not words.with_failures([row])[0].fails
    assert words.with_failures([row], words.parse_fail_on("ambiguous"))[0].fails
