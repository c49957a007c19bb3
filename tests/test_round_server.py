"""The round server (``sweep --serve-rounds``, harness/round_server.py) and how ``ab`` drives it:
the protocol in this process, and the order of a round with fake servers."""

from __future__ import annotations

import fcntl
import io
import json
from pathlib import Path

import pytest

from harness.ab_gate import rounds
from harness.ab_gate.sides import Side
from harness.plan import SweepRequest, plan
from harness.round_server import serve
from harness.records import Point

GRID = SweepRequest(impl="softmax_torch", seq_len="16,32", head_dim="8", heads="2",
                    pass_="fwd", device="cpu", min_time=0.02, max_repeats=20, warmup=1)


def _serve(lines: list[str]) -> list[dict]:
    replies = io.StringIO()
    assert serve(plan(GRID), requests=io.StringIO("\n".join(lines) + "\n"),
                 replies=replies) == 0
    return [json.loads(x) for x in replies.getvalue().splitlines()]


def test_round_server_measures_points_on_request(tmp_path):
    sweep = plan(GRID)
    ids = [p.point_id for p in sweep.points]
    out = tmp_path / "round-01"
    replies = _serve([json.dumps({"measure": ids[1], "out": str(out)}),
                      "not json",
                      json.dumps({"measure": "nosuch", "out": str(out)}),
                      json.dumps({"bogus": 1}),
                      json.dumps({"measure": ids[0], "out": str(out)}),
                      json.dumps({"close": str(out)}),
                      json.dumps({"quit": True}),
                      json.dumps({"measure": ids[0], "out": str(out)})])   # after quit: unread
    ready = replies[0]["ready"]
    assert [p["point_id"] for p in ready["points"]] == ids
    assert Point(**{("pass_" if k == "pass" else k): v
                    for k, v in ready["points"][0]["point"].items()}) == sweep.points[0]
    first, *errors, second, closed = replies[1:]
    assert first["record"]["status"] == "ok" and first["record"]["seq_len"] == 32
    assert len(first["record"]["time_samples_s"]) >= 1
    assert [list(e) for e in errors] == [["error"]] * 3
    assert "not JSON" in errors[0]["error"] and "nosuch" in errors[1]["error"]
    assert second["record"]["seq_len"] == 16 and closed == {"closed": str(out)}
    # the round directory is a normal run directory: both records, finished, not locked
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq_len"] for x in lines] == [32, 16]
    meta = json.loads((out / "run.json").read_text())
    assert meta["finished_at"] and meta["executor"]["name"] == "round server"
    with open(out / "lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)   # raises if still held


def test_round_server_closes_what_is_open_at_end_of_input(tmp_path):
    sweep = plan(GRID)
    out = tmp_path / "round-01"
    replies = _serve([json.dumps({"measure": sweep.points[0].point_id, "out": str(out)})])
    assert replies[1]["record"]["status"] == "ok"
    assert json.loads((out / "run.json").read_text())["finished_at"]


class FakeServer:
    """Stands in for SideServer: records who was asked what, in order."""

    calls: list[tuple[str, str]] = []
    started: list[str] = []

    def __init__(self, argv, side, env, log):
        self.label = side.label
        FakeServer.started.append(side.label)

    def ready(self, timeout_s):
        return [{"point_id": f"id{t}", "point": Point("x", t, 8).as_dict()} for t in (16, 32)]

    def measure(self, point_id, out, timeout_s):
        FakeServer.calls.append((self.label, point_id))
        seq_len = int(point_id[2:])
        return {**Point("x", seq_len, 8).as_dict(), "status": "ok",
                "time_samples_s": [0.002 if self.label == "head" else 0.001]}

    def close(self, out, timeout_s=60.0):
        pass

    def stop(self):
        pass


def test_served_rounds_alternate_sides_point_by_point_with_fresh_servers(tmp_path, monkeypatch):
    monkeypatch.setattr(rounds, "SideServer", FakeServer)
    monkeypatch.setattr(rounds, "has_round_server", lambda side: True)
    FakeServer.calls, FakeServer.started = [], []
    sides = {label: Side(label, label, tmp_path) for label in rounds.LABELS}
    outcome = rounds.run_rounds(rounds.Plan(sides=sides, sweep_args=(), impl_modules=(),
                                            out=tmp_path / "ab", min_rounds=2, max_rounds=2))
    # ABBA over points and rounds: each point alternates which side goes first
    assert FakeServer.calls == [("base", "id16"), ("head", "id16"),
                                ("head", "id32"), ("base", "id32"),
                                ("head", "id16"), ("base", "id16"),
                                ("base", "id32"), ("head", "id32")]
    assert FakeServer.started == ["base", "head"] * 2       # fresh processes every round
    assert outcome.mode == "round servers, point by point" and outcome.rounds == 2
    assert [j.estimate.ratio for j in outcome.judgements] == pytest.approx([2.0, 2.0])


def test_point_of_keeps_the_workload_axes():
    square = Point("x", 1024, 64, heads=8)
    decode = Point("x", 1024, 64, heads=8, kv_heads=2, q_len=1, window=128, alibi=True)
    for point in (square, decode):
        record = {**point.as_dict(), **point.workload_values()}   # as a record stores them
        assert rounds.point_of(record) == point
    old = {k: v for k, v in square.as_dict().items()}             # a side from before the axes
    assert rounds.point_of(old) == square
