"""``ab``'s measuring defaults (harness.verdicts.ab.defaults), the CPU pinning of its lockstep
workers, and its own flags not leaking into the sides' sweep settings."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from cli_helpers import ROOT
from harness.verdicts.ab.defaults import environment_threads, resolve
from harness.verdicts.ab.rounds import Plan, pinned_cpu, side_environment
from harness.measure.round_server import lockstep_cpu


def test_cpu_grid_defaults_are_one_thread_cpu_clock_pinned():
    m = resolve(cpu_grid=True, clock=None, threads=None, pin=None, environ={})
    assert (m.clock, m.threads, m.pin) == ("cpu", 1, True)
    assert not m.warnings
    assert any("--clock cpu" in t for t in m.told) and any("--threads 1" in t for t in m.told)


def test_cuda_grid_keeps_wall_clock_and_environment_threads():
    m = resolve(cpu_grid=False, clock=None, threads=None, pin=None, environ={})
    assert (m.clock, m.threads, m.pin) == ("wall", None, False)
    assert not m.warnings


def test_wall_clock_on_a_cpu_grid_warns():
    m = resolve(cpu_grid=True, clock="wall", threads=None, pin=None, environ={})
    assert m.clock == "wall" and len(m.warnings) == 1 and "--clock wall" in m.warnings[0]


@pytest.mark.parametrize("threads, environ", [(2, {}), (None, {"OMP_NUM_THREADS": "2"})])
def test_more_than_one_thread_warns_and_is_not_pinned(threads, environ):
    m = resolve(cpu_grid=True, clock=None, threads=threads, pin=None, environ=environ)
    assert m.threads == 2 and not m.pin
    assert len(m.warnings) == 1 and "one thread per worker" in m.warnings[0]


def test_pin_on_with_threads_is_refused_with_a_warning_and_off_is_kept():
    m = resolve(cpu_grid=True, clock=None, threads=4, pin="on", environ={})
    assert not m.pin and any("--pin on: ignored" in w for w in m.warnings)
    assert not resolve(cpu_grid=True, clock=None, threads=None, pin="off", environ={}).pin


def test_environment_threads_reads_only_positive_ints():
    assert environment_threads({"OMP_NUM_THREADS": " 3 "}) == 3
    assert environment_threads({"OMP_NUM_THREADS": "0"}) is None
    assert environment_threads({"OMP_NUM_THREADS": "two"}) is None
    assert environment_threads({}) is None


def test_side_environment_sets_threads_for_both_libraries(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    env = side_environment(tmp_path, threads=1)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert side_environment(tmp_path)["OMP_NUM_THREADS"] == "4"
    assert Plan(sides={}, sweep_args=(), impl_modules=(), out=tmp_path).pin is False


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_pinned_cpu_takes_the_allowed_cpus_in_turn():
    cpus = sorted(os.sched_getaffinity(0))
    chosen = [pinned_cpu(i) for i in range(1, 2 * len(cpus) + 1)]
    assert set(chosen) == set(cpus)
    assert all(chosen[i] != chosen[i + 1] for i in range(len(chosen) - 1)) or len(cpus) == 1


@pytest.mark.parametrize("value, expected", [(0, 0), (3, 3), (-1, None), (True, None),
                                             ("1", None), (1.0, None), (None, None)])
def test_round_server_reads_only_a_cpu_number(value, expected):
    assert lockstep_cpu(value) == expected


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pin_to_pins_the_worker_and_says_where(tmp_path):
    """In a child process (pinning this one would pin the test run): a CPU it may use pins it
    and is recorded; one it may not use leaves it as it was, unrecorded."""
    code = """
import json, os
from harness.measure.lockstep import pin_to
allowed = sorted(os.sched_getaffinity(0))
ok, bad = {}, {}
pin_to(allowed[-1], ok)
after = sorted(os.sched_getaffinity(0))
pin_to(10 ** 6, bad)
print(json.dumps({"cpu": allowed[-1], "after": after, "ok": ok, "bad": bad,
                  "still": sorted(os.sched_getaffinity(0))}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    got = json.loads(done.stdout)
    assert got["after"] == [got["cpu"]] and got["ok"] == {"lockstep_cpu": got["cpu"]}
    assert got["bad"] == {} and got["still"] == [got["cpu"]]


def test_instruction_grid_ignores_abs_own_max_time():
    """ab's --max-time (its rounds' budget) is not the sweep's sampling cap: planning the grid
    for --metric instructions with it at 240 s (above the sweep's --timeout) works."""
    from harness.commands.ab import grid_points, sweep_flags

    args = argparse.Namespace(**{dest: None for dest, _ in sweep_flags()})
    args.impl, args.seq_len, args.device = "hrr_torch", "128,256", "cpu"
    args.max_time, args.out, args.threshold = 240.0, "/nonexistent/ab", "2%"
    points = grid_points(args, (), ROOT)
    assert sorted({(p.impl, p.seq_len) for p in points}) == [("hrr_torch", 128),
                                                             ("hrr_torch", 256)]
