"""The round server (``sweep --serve-rounds``, harness/measure/round_server.py) and how ``ab`` drives it:
the protocol in this process, and the order of a round with fake servers."""

from __future__ import annotations

import fcntl
import io
import json

import pytest

from harness.verdicts.ab import rounds
from harness.verdicts.ab.sides import Side
from harness.grid.plan import SweepRequest, plan
from harness.measure.round_server import serve
from harness.contract.records import Point

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

    def ask_measure(self, point_id, out, lockstep=None):
        FakeServer.calls.append((self.label, point_id, lockstep["leader"]))
        self.pending = point_id

    def has_reply(self):
        return True

    def record(self, timeout_s, point_id=""):
        seq_len = int(self.pending[2:])
        # HEAD twice as slow per call; one burst (call 2) on both sides: paired by turn
        base = [0.001, 0.005, 0.001]
        samples = [2 * x for x in base] if self.label == "head" else base
        if self.label == "head" and seq_len == 32:
            samples = [0.002, 0.002, 0.002]       # no burst on HEAD's side here
        return {**Point("x", seq_len, 8).as_dict(), "status": "ok", "time_samples_s": samples,
                "extra": {"lockstep": "leader"}}

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
    # both sides asked at once (lockstep); the leader alternates over points and rounds (ABBA)
    assert FakeServer.calls == [("base", "id16", True), ("head", "id16", False),
                                ("base", "id32", False), ("head", "id32", True),
                                ("base", "id16", False), ("head", "id16", True),
                                ("base", "id32", True), ("head", "id32", False)]
    assert FakeServer.started == ["base", "head"] * 2       # fresh processes every round
    assert outcome.mode == "round servers, point by point" and outcome.rounds == 2
    # T=16: 2x per turn; T=32: turns 2.0, 0.4, 2.0 -> median 2.0 (the side medians agree too)
    assert [row.ratio for row in outcome.rows] == pytest.approx([2.0, 2.0])


def test_turn_ratio_pairs_calls_next_to_each_other():
    lock = {"extra": {"lockstep": "leader"}}
    base, head = [1.0, 1.0, 3.0, 3.0, 3.0], [1.1, 1.1, 3.3, 3.3, 3.3]   # load rose mid-way
    assert rounds.turn_ratio(lock, lock, base, head) == pytest.approx(1.1)
    assert rounds.turn_ratio({}, lock, base, head) is None           # not timed in lockstep
    assert rounds.turn_ratio(lock, lock, base, head[:4]) is None     # unequal counts


def test_lockstep_workers_take_turns_and_end_together(tmp_path):
    """Two processes time a call in lockstep: equal sample counts, calls alternating."""
    import multiprocessing
    import time

    from harness.verdicts.ab.servers import Batons
    from harness.grid.settings import Lockstep, TimingSettings
    from harness.contract.workload import Workload
    from harness.measure.timing import time_workload

    batons = Batons(tmp_path, ("base", "head"))
    log = tmp_path / "log"

    def side(label: str, leader: str, queue) -> None:
        def run():
            with open(log, "a") as handle:
                handle.write(label[0])
            time.sleep(0.001)
        turns = batons.lockstep(label, leader)
        settings = TimingSettings(warmup=2, min_time_s=0.02, max_repeats=50,
                                  lockstep=Lockstep(turns["wait"], turns["pass"],
                                                    turns["leader"], timeout_s=30))
        work = Workload(run=run, block=lambda v: None, check=lambda v: True, input_bytes=0)
        samples, _ = time_workload(work, settings)
        queue.put((label, len(samples), work.info["lockstep"]))

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    batons.start("head")
    procs = [ctx.Process(target=side, args=(label, "head", queue)) for label in ("base", "head")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = sorted(queue.get(timeout=5) for _ in procs)
    assert got[0][1] == got[1][1] >= 3
    assert [g[2] for g in got] == ["follower", "leader"]
    calls = log.read_text()
    assert calls == "hb" * (len(calls) // 2) and len(calls) == 2 * (2 + got[0][1])
    batons.close()


def _told_to_stop(wait: str, pass_: str, queue) -> None:
    from harness.grid.settings import Lockstep, TimingSettings
    from harness.contract.workload import Workload
    from harness.measure.timing import time_workload

    settings = TimingSettings(warmup=2, lockstep=Lockstep(wait, pass_, False, timeout_s=5))
    work = Workload(run=lambda: None, block=lambda v: None, check=lambda v: True,
                    input_bytes=0)
    samples, _ = time_workload(work, settings)
    queue.put((len(samples), work.info["warmup_calls"]))


def test_lockstep_worker_told_to_stop_takes_one_sample(tmp_path):
    import multiprocessing

    from harness.verdicts.ab.servers import Batons

    batons = Batons(tmp_path, ("base", "head"))
    batons.stop("base")            # its partner failed before taking a turn
    turns = batons.lockstep("base", "head")
    ctx = multiprocessing.get_context("fork")    # lockstep changes malloc settings: not here
    queue = ctx.Queue()
    process = ctx.Process(target=_told_to_stop, args=(turns["wait"], turns["pass"], queue))
    process.start()
    process.join(30)
    assert queue.get(timeout=5) == (1, 0)
    batons.close()


def test_point_of_keeps_the_workload_axes():
    square = Point("x", 1024, 64, heads=8)
    decode = Point("x", 1024, 64, heads=8, kv_heads=2, q_len=1, window=128, alibi=True)
    for point in (square, decode):
        record = {**point.as_dict(), **point.record_axes()[0]}   # as a record stores them
        assert rounds.point_of(record) == point
    old = dict(square.as_dict())                                   # a side from before the axes
    assert rounds.point_of(old) == square
