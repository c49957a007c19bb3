"""``run_bench.py profile``: a Chrome trace with aten:: ops and an ops table for one point."""

from __future__ import annotations

import csv
import json

import pytest

from harness.cli import main
from harness.measure.profiling import ops_from_trace


def test_ops_from_trace_gives_self_time_per_name():
    events = [
        {"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 10, "name": "outer"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 1, "dur": 4, "name": "mm"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 2, "dur": 1, "name": "inner"},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 6, "dur": 3, "name": "mm"},
        {"ph": "X", "pid": 1, "tid": 2, "ts": 0, "dur": 5, "name": "mm"},   # another thread
        {"ph": "M", "pid": 1, "name": "process_name"},
    ]
    rows = {r.name: r for r in ops_from_trace(events)}
    assert rows["outer"].self_time_us == 3 and rows["outer"].total_time_us == 10
    assert rows["mm"].calls == 3 and rows["mm"].self_time_us == 3 + 3 + 5
    assert rows["inner"].self_time_us == 1
    assert sum(r.share for r in rows.values()) == pytest.approx(1.0)
    assert list(rows)[0] == "mm"   # sorted by self time


def test_profile_hrr_torch_writes_a_chrome_trace_with_aten_ops_and_ops_csv(tmp_path, capsys):
    out = tmp_path / "prof"
    assert main(["profile", "--impl", "hrr_torch", "--seq-len", "256", "--head-dim", "64",
                 "--device", "cpu", "--out", str(out), "--calls", "2"]) == 0
    trace = json.loads((out / "trace.json").read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any(n.startswith("aten::") for n in names)
    assert any(n.startswith("attnbench:") and n.endswith(":call1") for n in names)
    with open(out / "ops.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"name", "calls", "self_time_us", "total_time_us", "share"}
    assert any(r["name"] == "aten::mm" for r in rows)
    assert sum(float(r["share"]) for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert "top ops: hrr_torch" in capsys.readouterr().out


def test_profile_takes_the_workload_axes_of_the_table(tmp_path, capsys):
    """A decode step with grouped key/value heads: the flags are the axis table's."""
    out = tmp_path / "prof"
    assert main(["profile", "--impl", "softmax_torch", "--seq-len", "256", "--head-dim", "32",
                 "--heads", "4", "--kv-heads", "2", "--q-len", "1", "--causal", "true",
                 "--device", "cpu", "--out", str(out), "--calls", "1"]) == 0
    assert "Hkv=2 Tq=1" in capsys.readouterr().out
    assert (out / "ops.csv").read_text().startswith("name,calls,self_time_us")


def test_profile_jax_method_uses_the_jax_profiler(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "prof"
    assert main(["profile", "--impl", "softmax_jax", "--seq-len", "128", "--head-dim", "32",
                 "--device", "cpu", "--out", str(out), "--calls", "1"]) == 0
    trace = json.loads((out / "trace.json").read_text())
    assert trace["traceEvents"]
    assert (out / "ops.csv").read_text().startswith("name,calls,self_time_us")


@pytest.mark.parametrize("argv, message", [
    (["--impl", "nope"], "unknown implementation"),
    (["--impl", "hrr_torch", "--seq-len", "1K,2K"], "one value"),
    (["--impl", "hrr_torch", "--causal", "true"], "no causal mode"),
    (["--impl", "hrr_torch", "--window", "8"], "HRR attention has no mask but key padding"),
    (["--impl", "softmax_torch", "--heads", "4", "--kv-heads", "3"], "not a multiple"),
])
def test_profile_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["profile", *argv, "--device", "cpu", "--out", str(tmp_path / "p")]) == 2
    assert message in capsys.readouterr().err


def test_profile_out_naming_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    """--out names a file: refused before anything runs, the file untouched."""
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert main(["profile", "--impl", "softmax_torch", "--seq-len", "64", "--head-dim", "16",
                 "--device", "cpu", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]
    assert target.read_text() == "mine\n"


def test_profile_of_a_call_that_runs_out_of_memory_is_one_line_and_exit_2(tmp_path, capsys):
    """profile runs in this process: an allocation failure is one line naming it, not a
    traceback."""
    assert main(["--impl-module", "impls_faults", "profile", "--impl", "fault_memory_error",
                 "--seq-len", "64", "--head-dim", "16", "--device", "cpu",
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0] and "fault_memory_error" in err[0], err
