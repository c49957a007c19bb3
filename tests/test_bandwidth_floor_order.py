"""benchmarks/hrr/bandwidth_floor.py: one gate per (method, dtype), rows by increasing T across
dtypes (a run cut at its limit has its small T in every dtype), each row written when known."""

from __future__ import annotations

import json

from benchmarks.hrr import bandwidth_floor


def test_rows_go_by_t_across_dtypes():
    order = bandwidth_floor.row_order(["a", "b"], ["float32", "bfloat16"], [1024, 64])
    assert order[:4] == [("a", "float32", 64), ("b", "float32", 64),
                         ("a", "bfloat16", 64), ("b", "bfloat16", 64)]
    assert [t for _, _, t in order] == [64] * 4 + [1024] * 4


def test_the_gate_runs_once_per_method_and_dtype(tmp_path, monkeypatch):
    calls = []

    def admit(name, dtype, device):
        calls.append((name, dtype))
        return "failed-gate", "fake gate"

    written = []
    real_write = bandwidth_floor.write_json

    def write_json(path, device, bandwidth, rows, complete):
        written.append(len(rows))
        real_write(path, device, bandwidth, rows, complete)

    monkeypatch.setattr(bandwidth_floor, "admit", admit)
    monkeypatch.setattr(bandwidth_floor, "write_json", write_json)
    out = tmp_path / "floor.json"
    assert bandwidth_floor.main(["--device", "cpu", "--impl", "hrr_torch,hrr_jax",
                                 "--seq-len", "256,512,1K", "--dtypes", "float32,bfloat16",
                                 "--copy-mib", "1", "--repeats", "2", "--json", str(out)]) == 0
    assert sorted(calls) == sorted({(n, d) for n in ("hrr_torch", "hrr_jax")
                                    for d in ("float32", "bfloat16")})
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 12 and all(r["status"] == "failed-gate" for r in rows)
    assert [r["seq_len"] for r in rows] == sorted(r["seq_len"] for r in rows)
    assert {r["dtype"] for r in rows[:4]} == {"float32", "bfloat16"}
    assert written == [0, *range(1, 13), 12]       # empty, after each row, then complete
