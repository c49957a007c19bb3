"""``run_bench.py ab``: the statistics, and the command end to end on two tiny revisions made in a
temporary git repository (one slowed deterministically)."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import ROOT, read_records, run_cli
from harness.verdicts.ab.paired_stats import (
    base_first,
    paired_decision,
    paired_estimate,
    side_noise,
    side_value,
    t_quantile,
)
from harness.verdicts.words import AMBIGUOUS, FASTER, NEWLY_FAILING, SAME, SLOWER


def verdict(estimate, threshold: float) -> str:
    return paired_decision(estimate, threshold).verdict

# -- statistics -----------------------------------------------------------------------------


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (9, 2.2622),
                                          (30, 2.0423)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.95, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_tends_to_normal():
    assert t_quantile(0.95, 2000) == pytest.approx(1.95996, abs=2e-3)
    assert t_quantile(0.99, 5) == pytest.approx(4.0321, abs=1e-4)


def test_paired_estimate_is_geometric_mean_with_t_interval():
    ratios = [1.1, 1.2, 1.15, 1.25]
    est = paired_estimate(ratios)
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 3)
    half = t_quantile(0.95, 3) * sd / 2
    assert est.ratio == pytest.approx(math.exp(mean))
    assert (est.lo, est.hi) == pytest.approx((math.exp(mean - half), math.exp(mean + half)))
    assert est.rounds == 4 and est.ratios == tuple(ratios)


def test_one_round_cannot_decide():
    est = paired_estimate([2.0])
    assert est.hi == math.inf and verdict(est, 0.1) == AMBIGUOUS
    assert side_noise([1.0]) is None


def test_verdict_needs_whole_interval_beyond_threshold():
    assert verdict(paired_estimate([1.20, 1.21, 1.19, 1.20]), 0.10) == SLOWER
    # a mean beyond the threshold whose interval reaches back across it is ambiguous
    assert verdict(paired_estimate([1.02, 1.35, 1.05, 1.30]), 0.10) == AMBIGUOUS
    assert verdict(paired_estimate([1.0, 1.01, 0.99, 1.0]), 0.10) == SAME
    assert verdict(paired_estimate([0.8, 0.81, 0.79, 0.8]), 0.10) == FASTER


def test_side_noise_is_the_relative_t_half_width_over_rounds():
    values = [1.0, 1.1, 0.9, 1.05]
    logs = [math.log(v) for v in values]
    mean = sum(logs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 3)
    assert side_noise(values) == pytest.approx(math.expm1(t_quantile(0.95, 3) * sd / 2))
    # a side whose every round moved with the load is noisy; the paired ratio need not be
    assert side_noise([1.0, 2.0, 1.0, 2.0]) > 0.5


def test_rounds_alternate_order_and_side_value():
    assert [base_first(i) for i in range(1, 5)] == [True, False, True, False]
    assert side_value([1.0, 2.0, 3.0, 4.0, 5.0], "p25") == 2.0
    assert side_value([3.0, 1.0, 2.0], "median") == 2.0
    with pytest.raises(ValueError):
        paired_estimate([1.0, -1.0])


def test_sides_on_different_timing_bases_are_not_comparable():
    """A side timed by CUDA events (or an old record whose timer implies them) against one on
    the host's clock: no ratio, a 'not comparable' row, never a regression."""
    from harness.contract.records import Point
    from harness.verdicts.ab.rounds import add_round, judge
    from harness.verdicts.words import NOT_COMPARABLE

    def raw(timer, basis=None, value=1e-3):
        data = {"impl": "softmax_torch", "seq_len": 64, "head_dim": 16, "device": "cuda",
                "batch": 1, "heads": 8, "dtype": "float16", "causal": False,
                "pass": "forward", "status": "ok", "timer": timer, "time_samples_s": [value] * 5, "time_s": value}
        if basis:
            data["timing_basis"] = basis
        return data

    histories = {}
    for _ in range(4):
        add_round(histories, {"base": [raw("cuda_event")],          # an old record: events
                              "head": [raw("cuda_sync", "host_sync", 2e-3)]}, "median")
    (history,) = histories.values()
    row = judge(history, 0.1, 0.95)
    assert history.ratios == [] and row.verdict == NOT_COMPARABLE and not row.fails
    assert "device_events (baseline) vs host_sync (current)" in row.note
    same = {}
    for _ in range(4):
        add_round(same, {"base": [raw("cuda_event")],
                         "head": [raw("cuda_event", "device_events", 2e-3)]}, "median")
    (history,) = same.values()
    assert judge(history, 0.1, 0.95).verdict == SLOWER
    assert isinstance(next(iter(same)), Point)


def test_a_round_that_broke_the_point_makes_it_newly_failing():
    from harness.verdicts.ab.rounds import add_round, judge

    def raw(status, value=1e-3):
        return {"impl": "softmax_torch", "seq_len": 64, "head_dim": 16, "device": "cpu",
                "batch": 1, "heads": 8, "dtype": "float32", "causal": False,
                "pass": "forward", "status": status,
                "time_samples_s": [value] * 5 if status == "ok" else []}

    histories = {}
    for head in ("ok", "error", "ok", "ok"):
        add_round(histories, {"base": [raw("ok")], "head": [raw(head)]}, "median")
    row = judge(next(iter(histories.values())), 0.1, 0.95)
    assert (row.verdict, row.baseline_status, row.current_status) == \
        (NEWLY_FAILING, "ok", "error")


# -- end to end on two tiny revisions -------------------------------------------------------

SPIN_MODULE = '''"""A test implementation: exact attention, then SPIN_S seconds of CPU work (the two
revisions differ in SPIN_S only)."""
import time

from harness import Capabilities, register

SPIN_S = {spin!r}


@register("spinning", framework="torch", family="exact",
          capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), causal=False))
def spinning(q, k, v, *, causal=False, key_padding_mask=None):
    import torch

    out = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v
    start = time.thread_time()
    while time.thread_time() - start < SPIN_S:
        pass
    return out
'''
GRID = ("--impl-module", "ab_spin", "--impl", "spinning", "--seq-len", "16", "--head-dim", "8",
        "--heads", "1", "--pass", "fwd", "--device", "cpu", "--min-time", "0.05",
        "--warmup", "1")
# CPU time: on a loaded machine a sample's wall time is stretched by whatever else runs, its CPU
# time hardly (a 2 ms sample took up to 70 ms of wall time at load 14 on 2 cores)
FAST = ("--rounds", "2", "--min-rounds", "2", "--threshold", "50%", "--clock", "cpu")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository of this tree's harness with two commits of the ``spinning``
    implementation: ``fast`` (2 ms of CPU work a call) and ``slow`` (40 ms)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("abrepo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("harness", "implementations"):
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    shutil.copy(ROOT / "run_bench.py", root / "run_bench.py")
    _git(root, "init", "-q")
    for tag, spin in (("fast", 0.002), ("slow", 0.04)):
        (root / "ab_spin.py").write_text(SPIN_MODULE.format(spin=spin))
        _git(root, "add", "-A")
        _git(root, "commit", "-q", "-m", tag)
        _git(root, "tag", tag)
    # a revision from before round servers: each round is one whole sweep per side
    _git(root, "checkout", "-q", "-b", "old", "fast")
    (root / "harness" / "measure" / "round_server.py").unlink()
    _git(root, "commit", "-q", "-am", "no round server")
    _git(root, "tag", "fast-old")
    _git(root, "checkout", "-q", "slow")
    return root


def _flagged(repo: Path, base: str, head: str, out: Path) -> list[dict]:
    """``ab BASE HEAD`` on the test grid: exit 1 with the one point slower; its rows."""
    done = run_cli("ab", base, head, *GRID, *FAST, "--out", str(out), cwd=repo, timeout=1800)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = list(csv.DictReader(open(out / "ab.csv")))
    assert [r["verdict"] for r in rows] == [SLOWER]
    assert rows[0]["fails"] == "True" and float(rows[0]["baseline_noise"]) >= 0
    return rows


@pytest.mark.slow
def test_ab_flags_the_slowed_revision(repo, tmp_path):
    out = tmp_path / "ab"
    rows = _flagged(repo, "fast", "slow", out)
    assert float(rows[0]["ratio"]) > 5.0 and float(rows[0]["lo"]) > 1.5
    assert len(rows[0]["round_ratios"].split(";")) == 2
    page = (out / "ab.md").read_text()
    assert "FAIL: 1 row(s) fail" in page and "exit 1 on: slower, newly failing" in page
    # both sides' run directories, one record per round of the point
    for side in ("base", "head"):
        records = read_records(out / side)
        assert [r["status"] for r in records] == ["ok", "ok"]
    # the temporary worktrees are gone
    listed = subprocess.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True,
                            text=True).stdout.strip().splitlines()
    assert len(listed) == 1


@pytest.mark.slow
def test_ab_with_a_side_without_round_server_runs_whole_sweeps(repo, tmp_path):
    out = tmp_path / "ab"
    _flagged(repo, "fast-old", "slow", out)
    assert "one sweep per side per round" in (out / "ab.md").read_text()


@pytest.mark.slow
def test_ab_passes_a_revision_against_itself(repo, tmp_path):
    done = run_cli("ab", "fast", str(repo), *GRID, *FAST, "--out", str(tmp_path / "ab"),
                   cwd=repo, timeout=1800)   # HEAD as a path: the checkout itself (at "slow")...
    assert done.returncode == 1, done.stdout + done.stderr   # ...which is the slow one
    done = run_cli("ab", "slow", ".", *GRID, *FAST, "--out", str(tmp_path / "ab2"), cwd=repo,
                   timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = list(csv.DictReader(open(tmp_path / "ab2" / "ab.csv")))
    assert rows[0]["verdict"] in (SAME, AMBIGUOUS)


@pytest.mark.parametrize("args, message", [
    (("nosuchrev", "slow"), "BASE nosuchrev: unknown revision"),
    (("fast", "/"), "HEAD /: not an attnbench checkout"),
    (("fast", "slow", "--rounds", "1"), "--rounds and --min-rounds: at least 2"),
    (("fast", "slow", "--threshold", "10"), "ambiguous"),
    (("fast", "slow", "--fail-on", "same"), "--fail-on: 'same'"),
    (("fast", "slow", "--bogus"), "unrecognized arguments: --bogus"),
])
def test_ab_bad_input_exits_2_with_one_line(repo, tmp_path, args, message):
    done = run_cli("ab", *args, "--out", str(tmp_path / "ab"), cwd=repo)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert not (tmp_path / "ab").exists()


@pytest.mark.slow
def test_ab_side_refusing_the_grid_exits_2(repo, tmp_path):
    done = run_cli("ab", "fast", "slow", "--impl", "nosuch", "--out", str(tmp_path / "ab"),
                   cwd=repo, timeout=900)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "its round server refused the input" in lines[0] and \
        "nosuch" in lines[0]
    # the refused call's folder does not block the corrected one
    assert (tmp_path / "ab" / "rounds").is_dir() and not (tmp_path / "ab" / "ab.md").exists()
    again = run_cli("ab", "fast", "slow", *GRID, *FAST, "--out", str(tmp_path / "ab"),
                    cwd=repo, timeout=1800)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "held an unfinished ab call" in again.stderr
    assert (tmp_path / "ab" / "ab.md").exists()


def test_ab_instructions_without_valgrind_says_so(repo, tmp_path):
    done = run_cli("ab", "fast", "slow", "--metric", "instructions", "--out",
                   str(tmp_path / "ab"), cwd=repo, env={"PATH": str(tmp_path / "empty")})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs valgrind" in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
                    reason="valgrind (callgrind) is not installed")
@pytest.mark.skipif(not os.environ.get("ATTNBENCH_CALLGRIND_TEST"),
                    reason="opt-in (ATTNBENCH_CALLGRIND_TEST=1): four processes start torch "
                           "under valgrind, minutes each")
def test_ab_instructions_flags_the_extra_work(repo, tmp_path):
    out = tmp_path / "ab"
    done = run_cli("ab", "fast", "slow", *GRID, "--metric", "instructions", "--out", str(out),
                   cwd=repo, timeout=3600)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = list(csv.DictReader(open(out / "ab.csv")))
    assert rows[0]["verdict"] == SLOWER and rows[0]["metric"] == "instructions"
    assert float(rows[0]["ratio"]) > 5.0


def test_same_harness_mixes_head_harness_with_base_implementations(tmp_path):
    from harness.verdicts.ab.rounds import side_environment
    from harness.verdicts.ab.sides import Side, with_harness_of

    trees = {}
    for name in ("base", "head"):
        root = tmp_path / name
        (root / "harness").mkdir(parents=True)
        (root / "implementations").mkdir()
        (root / "harness" / "__init__.py").write_text(f"TREE = {name!r}\n")
        (root / "implementations" / "__init__.py").write_text(f"TREE = {name!r}\n")
        (root / "run_bench.py").write_text("")
        trees[name] = Side(name, name, root)
    mixed = with_harness_of(trees["base"], trees["head"], tmp_path / "mixed")
    assert mixed.root != trees["base"].root and "harness of head" in mixed.describe()
    probe = ("import harness, implementations, sys; "
             "print(harness.TREE, implementations.TREE)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=mixed.root, capture_output=True,
                          text=True, env=side_environment(mixed.root))
    assert done.stdout.split() == ["head", "base"], done.stderr


def test_intervals_widen_with_the_number_of_points():
    from harness.verdicts.ab.rounds import per_point_confidence

    assert per_point_confidence(0.95, 1) == pytest.approx(0.95)
    assert per_point_confidence(0.95, 4) == pytest.approx(0.9875)
    ratios = [1.20, 1.24, 1.18, 1.22]
    one = paired_estimate(ratios, per_point_confidence(0.95, 1))
    eight = paired_estimate(ratios, per_point_confidence(0.95, 8))
    assert eight.lo < one.lo and eight.hi > one.hi and eight.ratio == one.ratio
