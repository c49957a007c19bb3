"""compare: pairing, noise-aware verdicts, relative normalisation, status, hardware, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from harness.verdicts import compare as logic
from harness.verdicts import words
from harness.cli import main
from harness.errors import UsageError
from harness.contract.records import SCHEMA_VERSION, Point, SpeedRecord
from harness.store.run_dir import RunDir

MIB = 1 << 20
HW_A = {"hardware_id": "aaaaaaaaaaaa", "cpu_model": "Test CPU Alpha", "cpu_affinity": 2,
        "gpu": {}, "cuda": {}}
HW_B = {"hardware_id": "bbbbbbbbbbbb", "cpu_model": "Test CPU Beta", "cpu_affinity": 8,
        "gpu": {}, "cuda": {}}


def point(impl: str = "softmax_torch", seq_len: int = 512, **kw) -> Point:
    return Point(impl=impl, seq_len=seq_len, head_dim=kw.pop("head_dim", 64), **kw)


def samples(center: float, rel_spread: float = 0.01, n: int = 9, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in center * (1 + rel_spread * rng.uniform(-1, 1, n))]


def record(p: Point, times: list[float] | None = None, *, status: str = "ok",
           mem: int | None = 10 * MIB, hw: str = "aaaaaaaaaaaa", message: str = "") -> SpeedRecord:
    values = {}
    if status == "ok":
        times = times if times is not None else samples(0.01)
        values = {"time_s": float(np.median(times)) if times else None,
                  "time_samples_s": list(times), "peak_mem_bytes": mem}
    return SpeedRecord.for_point(p, framework="torch", family="exact", status=status,
                                 message=message, hardware_id=hw, **values)


def make_run(path: Path, records: list[SpeedRecord], machine: dict | None = None) -> Path:
    run = RunDir.create(path, {"kind": "speed", "machine": machine or HW_A})
    for r in records:
        run.append(r)
    return path


def grid(scale: dict[str, float] | None = None, *, seed: int = 0, spread: float = 0.01,
         hw: str = "aaaaaaaaaaaa") -> list[SpeedRecord]:
    """Three implementations x two T; ``scale`` multiplies one implementation's times."""
    scale = scale or {}
    base = {"softmax_torch": 0.010, "sdpa_math": 0.020, "hrr_torch": 0.005}
    out = []
    for i, (impl, t) in enumerate(base.items()):
        for j, seq_len in enumerate((512, 1024)):
            center = t * seq_len / 512 * scale.get(impl, 1.0) * scale.get("*", 1.0)
            out.append(record(point(impl, seq_len), samples(center, spread, seed=seed + 10 * i + j),
                              hw=hw))
    return out


def compare_cli(tmp_path: Path, base: Path, cur: Path, *args: str) -> int:
    return main(["compare", str(base), str(cur), "--out", str(tmp_path / "cmp"), *args])


# -- the rules, as pure functions -------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("10%", 0.10), ("2.5%", 0.025), ("0.1", 0.1),
                                        (" 50 % ", 0.5), ("150%", 1.5)])
def test_parse_threshold(text, value):
    assert logic.parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "ten", "-5%", "0", "0%", "10", "1.5", "nan%"])
def test_parse_threshold_refuses(text):
    with pytest.raises(UsageError, match="--threshold"):
        logic.parse_threshold(text)


def test_parse_statistic():
    assert logic.parse_statistic("median")[0] == "median"
    name, fn = logic.parse_statistic("p25")
    assert name == "p25" and fn(np.arange(5.0)) == pytest.approx(1.0)
    for bad in ("p0", "p100", "average", "q25"):
        with pytest.raises(UsageError, match="--statistic"):
            logic.parse_statistic(bad)


def verdict_of(est, threshold: float = 0.10) -> str:
    return logic.time_decision(est, threshold).verdict


def test_tight_samples_beyond_threshold_are_slower():
    est = logic.ratio_estimate(np.array(samples(1.0)), np.array(samples(1.3, seed=1)))
    assert est.ratio == pytest.approx(1.3, rel=0.02)
    assert est.lo > 1.1
    assert verdict_of(est) == words.SLOWER


def test_a_change_hidden_by_the_noise_is_ambiguous():
    # 30% slower medians, but each run spreads +-60%: the interval reaches back below 1.1
    base, cur = np.array(samples(1.0, 0.6, n=5)), np.array(samples(1.3, 0.6, n=5, seed=1))
    est = logic.ratio_estimate(base, cur)
    assert est.ratio > 1.1 and est.lo < 1.1
    decision = logic.time_decision(est, 0.10)
    assert decision.verdict == words.AMBIGUOUS and "straddles 1.1" in decision.reason
    # the same medians without the noise are decided
    assert verdict_of(logic.ratio_estimate(np.array(samples(1.0, 0.01, n=5)),
                                           np.array(samples(1.3, 0.01, n=5, seed=1)))) == \
        words.SLOWER


def test_small_change_is_same_and_big_speedup_is_faster():
    base = np.array(samples(1.0))
    assert verdict_of(logic.ratio_estimate(base, np.array(samples(1.05, seed=2)))) == words.SAME
    assert verdict_of(logic.ratio_estimate(base, np.array(samples(0.5, seed=2)))) == words.FASTER


def test_noise_wider_than_the_threshold_is_never_same():
    """Both runs at the same median, each spread +-50% over 5 samples: the interval is wider
    than the threshold band, so 'same' cannot be claimed."""
    base, cur = np.array(samples(1.0, 0.5, n=5)), np.array(samples(1.0, 0.5, n=5, seed=3))
    decision = logic.time_decision(logic.ratio_estimate(base, cur), 0.10)
    assert decision.verdict == words.AMBIGUOUS and "exceeds the threshold" in decision.reason


def test_single_samples_fall_back_to_the_threshold():
    est = logic.ratio_estimate(np.array([1.0]), np.array([1.2]))
    assert est.single_sample and est.lo == pytest.approx(1.2) == est.hi
    assert verdict_of(est, 0.10) == words.SLOWER
    assert verdict_of(est, 0.25) == words.SAME


def test_bootstrap_is_deterministic():
    base, cur = np.array(samples(1.0, 0.3)), np.array(samples(1.2, 0.3, seed=1))
    assert logic.ratio_estimate(base, cur) == logic.ratio_estimate(base, cur)


def test_memory_rule_has_a_floor():
    def memory(baseline: int, current: int) -> str:
        return logic.memory_decision(baseline, current, 0.10, MIB).verdict
    # +50%, but the floor (1 MiB) is half the value: the change cannot be resolved
    assert memory(2 * MIB, 3 * MIB - 1) == words.AMBIGUOUS
    assert memory(100 * MIB, 105 * MIB) == words.SAME                       # +5%
    assert memory(100 * MIB, 120 * MIB) == words.SLOWER                     # more memory
    assert memory(120 * MIB, 100 * MIB) == words.FASTER
    decision = logic.memory_decision(100 * MIB, 120 * MIB, 0.10, MIB)
    assert (decision.lo, decision.hi) == pytest.approx((1.19, 1.21))
    assert decision.baseline_noise == pytest.approx(0.01)


# -- pairing and statuses ---------------------------------------------------------------------
def test_pairing_is_by_full_configuration():
    base = [record(point("a", 512)), record(point("a", 512, dtype="float16")),
            record(point("a", 1024))]
    cur = [record(point("a", 512)), record(point("a", 512, dtype="float16")),
           record(point("a", 512, causal=True))]
    rows = {(r.point, r.verdict) for r in logic.compare_records(base, cur).rows}
    assert (point("a", 1024), words.ONLY_BASELINE) in rows
    assert (point("a", 512, causal=True), words.ONLY_CURRENT) in rows
    assert (point("a", 512), words.SAME) in rows
    assert (point("a", 512, dtype="float16"), words.SAME) in rows
    assert not logic.compare_records(base, cur).failures


def test_only_in_baseline_fails_only_when_asked():
    base, cur = [record(point("a"))], [record(point("b"))]
    assert not logic.compare_records(base, cur).failures
    result = logic.compare_records(base, cur, logic.Settings(
        fail_on=words.parse_fail_on("only-in-baseline")))
    assert [r.verdict for r in result.failures] == [words.ONLY_BASELINE]


def test_repeated_records_are_pooled_rounds():
    p = point("a")
    base = [record(p, samples(1.0))]
    # three rounds, one of them hit by a load burst: the pooled median stays put
    cur = [record(p, samples(1.0, seed=3)), record(p, samples(3.0, seed=4)),
           record(p, samples(1.0, seed=5))]
    row = logic.compare_records(base, cur).rows[0]
    assert row.verdict == words.SAME and row.rounds == "1/3"
    assert logic.index_records(cur)[p].extra["rounds"] == 3
    assert len(logic.index_records(cur)[p].time_samples_s) == 27


def test_rounds_are_normalised_within_the_round():
    """A load burst that slows a point and its reference together in one round cancels there;
    pooling all rounds' samples before dividing would have mixed the rounds' loads."""
    p, ref = point("a"), point("ref")
    base = [record(p, samples(1.0)), record(ref, samples(1.0, seed=1))]
    cur = []
    for load_p, load_ref, seed in ((1.0, 1.0, 2), (3.0, 1.0, 4), (3.0, 3.0, 6)):
        cur += [record(p, samples(load_p, seed=seed)), record(ref, samples(load_ref, seed=seed + 1))]
    rows = logic.compare_records(base, cur, logic.Settings(relative_to="ref")).rows
    row = [r for r in rows if r.point == p][0]
    assert row.ratio == pytest.approx(1.0, abs=0.03) and row.verdict == words.SAME
    assert row.rounds == "1/3"


def test_last_status_of_repeated_records_wins():
    p = point("a")
    cur = [record(p), record(p, status="oom")]
    (row,) = logic.compare_records([record(p)], cur).rows
    assert (row.verdict, row.current_status) == (words.NEWLY_FAILING, "oom")
    cur = [record(p, status="timeout"), record(p)]
    assert logic.compare_records([record(p)], cur).rows[0].verdict == words.SAME


@pytest.mark.parametrize("before,after,verdict,fails", [
    ("ok", "oom", words.NEWLY_FAILING, True),
    ("ok", "timeout", words.NEWLY_FAILING, True),
    ("ok", "unsupported", words.NEWLY_FAILING, True),
    ("oom", "ok", words.NEWLY_RUNNING, False),
    ("oom", "timeout", words.NOT_MEASURED, False),
    ("oom", "oom", words.NOT_MEASURED, False),
])
def test_status_changes(before, after, verdict, fails):
    p = point("a")
    rows = logic.compare_records([record(p, status=before)], [record(p, status=after)]).rows
    assert [(r.verdict, r.fails) for r in rows] == [(verdict, fails)]
    assert (rows[0].baseline_status, rows[0].current_status) == (before, after)
    assert words.verdict_text(verdict, before, after) == f"{verdict} ({before} -> {after})"


# -- relative normalisation -------------------------------------------------------------------
def test_uniformly_slower_machine_is_no_regression_relative_to_a_reference():
    base, cur = grid(), grid({"*": 2.0}, seed=100)
    assert logic.compare_records(base, cur).failures  # absolute: everything doubled
    result = logic.compare_records(base, cur, logic.Settings(relative_to="sdpa_math"))
    assert not result.failures
    judged = [r for r in result.rows if r.verdict != words.REFERENCE]
    assert judged and all(r.ratio == pytest.approx(1.0, abs=0.05) for r in judged)
    assert {r.verdict for r in result.rows if r.point.impl == "sdpa_math"} == {words.REFERENCE}


def test_relative_catches_one_slower_implementation_on_a_faster_machine():
    base, cur = grid(), grid({"*": 0.5, "hrr_torch": 2.0}, seed=100)
    result = logic.compare_records(base, cur, logic.Settings(relative_to="sdpa_math"))
    assert {(r.point.impl, r.point.seq_len) for r in result.failures} == \
        {("hrr_torch", 512), ("hrr_torch", 1024)}
    assert all(r.ratio == pytest.approx(2.0, rel=0.05) for r in result.failures)
    assert all(r.verdict == words.SLOWER for r in result.failures)


def test_relative_noise_includes_the_reference_samples():
    p, ref = point("a"), point("ref")
    base = [record(p, samples(1.0)), record(ref, samples(1.0))]
    tight = [record(p, samples(1.3, seed=1)), record(ref, samples(1.0, seed=2))]
    noisy_ref = [record(p, samples(1.3, seed=1)), record(ref, samples(1.0, 0.7, n=5, seed=2))]
    settings = logic.Settings(relative_to="ref")
    assert logic.compare_records(base, tight, settings).failures
    row = [r for r in logic.compare_records(base, noisy_ref, settings).rows if r.point == p][0]
    assert row.verdict == words.AMBIGUOUS and row.lo < 1.1 < row.ratio
    assert row.current_noise > row.baseline_noise   # the reference's noise counts on its side


def test_reference_not_measured_at_a_configuration():
    base = [record(point("a")), record(point("ref"))]
    cur = [record(point("a")), record(point("ref"), status="oom")]
    result = logic.compare_records(base, cur, logic.Settings(relative_to="ref"))
    verdicts = {r.point.impl: (r.verdict, r.fails) for r in result.rows}
    assert verdicts == {"a": (words.NOT_MEASURED, False), "ref": (words.NEWLY_FAILING, True)}


def test_unknown_reference_is_bad_input():
    with pytest.raises(UsageError, match="--relative-to nope"):
        logic.compare_records([record(point("a"))], [record(point("a"))],
                              logic.Settings(relative_to="nope"))


# -- the command ------------------------------------------------------------------------------
def test_compare_a_run_with_itself(tmp_path, capsys):
    run = make_run(tmp_path / "run", grid(spread=0.5))
    for args in ([], ["--relative-to", "sdpa_math"], ["--metric", "both"],
                 ["--statistic", "min"]):
        assert compare_cli(tmp_path, run, run, *args) == 0
    out = capsys.readouterr().out
    assert "pass (" in out and "FAIL" not in out


def test_command_exit_1_and_writes_markdown_and_csv(tmp_path, capsys):
    base = make_run(tmp_path / "base", grid())
    cur = make_run(tmp_path / "cur", grid({"hrr_torch": 2.0}, seed=7))
    assert compare_cli(tmp_path, base, cur, "--relative-to", "sdpa_math") == 1
    out = capsys.readouterr().out
    assert "FAIL: 2 row(s) fail" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.count("**slower**") == 2 and "| impl |" in md
    assert "exit 1 on: slower, newly failing" in md
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert len(rows) == 6
    assert {r["impl"] for r in rows if r["fails"] == "True"} == {"hrr_torch"}
    slower = [r for r in rows if r["verdict"] == words.SLOWER]
    assert len(slower) == 2 and all(float(r["lo"]) > 1.1 and float(r["baseline_noise"]) > 0
                                    and float(r["current_noise"]) > 0 for r in slower)
    assert rows[0]["point_id"] == point("hrr_torch", 512).point_id or \
        rows[0]["point_id"] == point("hrr_torch", 1024).point_id


def test_command_default_out_is_inside_current(tmp_path):
    base = make_run(tmp_path / "base", grid())
    cur = make_run(tmp_path / "cur", grid(seed=5))
    assert main(["compare", str(base), str(cur)]) == 0
    assert (cur / "compare" / "compare.md").exists()


def test_memory_metric_from_the_command(tmp_path):
    p = point("a")
    base = make_run(tmp_path / "base", [record(p, mem=100 * MIB)])
    cur = make_run(tmp_path / "cur", [record(p, mem=130 * MIB)])
    assert compare_cli(tmp_path, base, cur) == 0                       # time only: same
    assert compare_cli(tmp_path, base, cur, "--metric", "memory") == 1
    assert compare_cli(tmp_path, base, cur, "--metric", "both") == 1
    assert compare_cli(tmp_path, base, cur, "--metric", "memory", "--mem-floor", "64MiB") == 0


def test_status_regression_from_the_command(tmp_path, capsys):
    base = make_run(tmp_path / "base", [record(point("a")), record(point("a", 4096))])
    cur = make_run(tmp_path / "cur", [record(point("a")),
                                      record(point("a", 4096), status="oom",
                                             message="CUDA out of memory")])
    assert compare_cli(tmp_path, base, cur) == 1
    assert "newly failing (ok -> oom)" in capsys.readouterr().out


def test_different_hardware_is_refused_naming_both(tmp_path, capsys):
    base = make_run(tmp_path / "base", grid(), HW_A)
    cur = make_run(tmp_path / "cur", grid(hw="bbbbbbbbbbbb"), HW_B)
    assert compare_cli(tmp_path, base, cur) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Test CPU Alpha (2 cores)" in err and "Test CPU Beta (8 cores)" in err
    assert "--any-hardware" in err
    assert compare_cli(tmp_path, base, cur, "--any-hardware", "--relative-to", "sdpa_math") == 0
    assert "different hardware" in capsys.readouterr().out
    assert compare_cli(tmp_path, base, cur, "--same-hardware", "--any-hardware") == 2


def test_per_record_hardware_id_is_checked_too(tmp_path, capsys):
    base = make_run(tmp_path / "base", grid(), HW_A)
    cur = make_run(tmp_path / "cur", grid(hw="cccccccccccc"), HW_A)  # e.g. a merged run
    assert compare_cli(tmp_path, base, cur) == 2
    assert "cccccccccccc" in capsys.readouterr().err


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("seq_len"), "missing field"),
    (lambda d: d.update(time_samples_s="fast"), "time_samples_s"),
    (lambda d: d.update(time_samples_s=[0.1, -1.0]), "positive"),
    (lambda d: d.update(status="exploded"), "status"),
    (lambda d: d.update(peak_mem_bytes="big"), "peak_mem_bytes"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer"),
])
def test_malformed_records_exit_2_in_one_line(tmp_path, capsys, mutate, message):
    good = make_run(tmp_path / "good", [record(point("a"))])
    bad = tmp_path / "bad"
    make_run(bad, [record(point("a"))])
    data = json.loads((bad / "results.jsonl").read_text())
    mutate(data)
    (bad / "results.jsonl").write_text(json.dumps(data) + "\n")
    assert compare_cli(tmp_path, good, bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_bad_input_exits_2(tmp_path, capsys):
    good = make_run(tmp_path / "good", [record(point("a"))])
    empty = make_run(tmp_path / "empty", [])
    cases = [
        [str(tmp_path / "nope"), str(good)],
        [str(good), str(empty)],
        [str(good), str(good), "--threshold", "lots"],
        [str(good), str(good), "--metric", "speed"],
        [str(good), str(good), "--relative-to", "sdpa_math"],
        [str(good), str(good), "--mem-floor", "huge"],
        [str(good), str(good), "--confidence", "1.5"],
        [str(good), str(good), "--fail-on", "faster"],
        [str(good)],
    ]
    for args in cases:
        assert main(["compare", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, (args, err)


def test_truncated_last_line_is_a_warning(tmp_path, capsys):
    run = make_run(tmp_path / "run", [record(point("a")), record(point("b"))])
    with open(run / "results.jsonl", "a") as handle:
        handle.write('{"impl": "c", "seq_l')
    assert compare_cli(tmp_path, run, run) == 0
    assert "truncated" in capsys.readouterr().err


def test_accuracy_records_are_ignored(tmp_path):
    from harness.contract.records import AccuracyRecord

    run = make_run(tmp_path / "run", [record(point("a"))])
    RunDir(run).append(AccuracyRecord(impl="a", task="listops", status="ok"))
    assert compare_cli(tmp_path, run, run) == 0


def test_slowed_hrr_module_replaces_the_registered_one():
    """tests/impls_slow.py (the gate's injected slowdown) keeps name and outputs, doubles work."""
    import importlib
    import sys

    import torch

    from harness.contract.registry import REGISTRY

    original = REGISTRY.get("hrr_torch")
    calls = []
    real = original.fn
    try:
        sys.modules.pop("impls_slow", None)
        module = importlib.import_module("impls_slow")
        slowed = REGISTRY.get("hrr_torch")
        assert slowed.fn is module.hrr_torch_slowed and slowed.capabilities == original.capabilities
        module._real_fn = lambda *a, **k: calls.append(1) or real(*a, **k)
        q = torch.randn(1, 2, 16, 8)
        torch.testing.assert_close(slowed.fn(q, q, q), real(q, q, q))
        assert len(calls) == module.SLOWDOWN == 2
    finally:
        REGISTRY.add(original, replace=True)
        sys.modules.pop("impls_slow", None)


def test_committed_gate_baseline_compares_with_itself(tmp_path):
    """results/baselines/ci-cpu (the perf gate's baseline) is readable, with the gate's options."""
    baseline = Path(__file__).resolve().parent.parent / "results" / "baselines" / "ci-cpu"
    if not (baseline / "results.jsonl").exists():
        pytest.skip("no committed gate baseline")
    assert main(["compare", str(baseline), str(baseline), "--relative-to", "sdpa_math",
                 "--statistic", "p25", "--threshold", "50%", "--any-hardware",
                 "--fail-on", "only-in-baseline", "--out", str(tmp_path / "cmp")]) == 0
    rows = list(csv.DictReader((tmp_path / "cmp" / "compare.csv").open()))
    assert {r["impl"] for r in rows} == {"softmax_torch", "sdpa_math", "hrr_torch",
                                         "performer_torch"}
    assert all(r["rounds"] == "3/3" for r in rows)


def test_a_slowdown_measured_on_a_busy_machine_is_ambiguous_not_slower():
    """A current record marked noisy (other processes took its CPUs) cannot show a slowdown:
    its samples can be close together and many times the quiet value; a speed-up against a
    noisy baseline likewise. The other direction stands."""
    from harness.verdicts.compare import Settings, compare_records
    from harness.verdicts.words import AMBIGUOUS, FASTER, SLOWER

    def rec(impl: str, median: float, noisy: bool) -> SpeedRecord:
        samples = [median * f for f in (0.99, 1.0, 1.01, 0.995, 1.005)]
        return SpeedRecord.for_point(
            Point(impl=impl, seq_len=256, head_dim=32), framework="torch", family="exact",
            status="ok", time_s=median, time_samples_s=samples, noisy=noisy,
            noise_reason="other processes used 0.70 of 2 CPUs" if noisy else "")

    base = [rec("a", 1.0, False), rec("b", 1.0, True), rec("c", 1.0, False)]
    cur = [rec("a", 3.0, True), rec("b", 0.3, False), rec("c", 0.3, True)]
    rows = {r.point.impl: r for r in compare_records(base, cur, Settings(threshold=0.1)).rows}
    assert rows["a"].verdict == AMBIGUOUS and "current side was marked noisy" in rows["a"].note
    assert "0.70 of 2 CPUs" in rows["a"].note
    assert rows["b"].verdict == AMBIGUOUS and "baseline side was marked noisy" in rows["b"].note
    assert rows["c"].verdict == FASTER   # noise does not speed a point up
    quiet = compare_records([rec("a", 1.0, False)], [rec("a", 3.0, False)],
                            Settings(threshold=0.1)).rows
    assert quiet[0].verdict == SLOWER


def test_runs_with_no_point_in_common_are_refused_not_passed(tmp_path, capsys):
    """Unrelated runs (another grid, the wrong directory): every row is only in one run, so a
    pass would have judged nothing; one line, exit 2."""
    base = make_run(tmp_path / "base", grid())
    other = make_run(tmp_path / "other", [record(point("hrr_torch", 2048),
                                                 samples(0.02, 0.01, seed=3))])
    assert compare_cli(tmp_path, base, other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no point in common (6 only in the baseline, 1 only in" in err[0]
