"""A reproducer per record (harness.grid.repro) and ``run_bench.py repro RUN POINT_ID``; the
``--l2`` setting from the flag to the record and the report."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
from cli_helpers import read_records, run_cli

from harness import cli
from harness.commands.sweep import request_from_args
from harness.contract.records import Point, SpeedRecord
from harness.grid import repro
from harness.grid.plan import plan

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD = FIXTURES / "old_run_speed"


def planned(argv: list[str]) -> list[Point]:
    """The points the reproducer's command plans (the global options before 'sweep' kept)."""
    args = cli.build_parser().parse_args(argv)
    return plan(request_from_args(args), check_devices=False).points


def test_every_setting_is_a_flag_of_the_reproducer_or_listed_as_none():
    """A setting added to RunSettings or TimingSettings must be given a flag here or a reason
    why the reproducer can do without it."""
    fields = set(repro.settings_fields())
    mapped, unmapped = set(repro.SETTING_FLAGS), set(repro.NOT_FLAGS)
    assert not mapped & unmapped
    assert fields - mapped - unmapped == set(), "settings the reproducer drops silently"
    assert (mapped | unmapped) - fields == set(), "entries for settings that do not exist"
    parser = cli.build_parser()
    sweep = parser._subparsers._group_actions[0].choices["sweep"]
    flags = {o for a in sweep._actions for o in a.option_strings}
    for flag, _ in repro.SETTING_FLAGS.values():
        assert flag in flags, flag


def test_old_records_get_a_reproducer_that_plans_their_point_alone():
    meta = json.loads((OLD / "run.json").read_text())
    for record in read_records(OLD):
        made = repro.reproducer(record, meta["settings"])
        assert [p.point_id for p in planned(made.argv)] == [record["point_id"]]
        assert "--warmup=1" in made.argv and "--min-time=0.05" in made.argv
        assert "--l2=cold" in made.argv and "--seed=0" in made.argv
        # the run's warm-up time cap has no flag: the reproducer says so
        assert any("warmup_time_s" in note for note in made.notes)
        # the run sampled for --min-time alone (no noise target then): the reproducer caps
        # sampling there too, not at today's default cap
        assert "--max-time=0.05" in made.argv
        args = cli.build_parser().parse_args(made.argv)
        timing = plan(request_from_args(args), check_devices=False).settings.timing
        assert timing.max_time_s == timing.min_time_s == 0.05


@pytest.mark.parametrize("values", [
    dict(causal=True, pass_="forward_backward", kv_heads=2, window=128, q_len=1),
    dict(alibi=True, documents=3, kv_dtype="float8_e4m3fn", dtype="bfloat16"),
    dict(extra_axes=(("softcap", 30.0), ("page_size", 16), ("head_dim_v", 32)))])
def test_workload_axes_and_settings_reach_the_command(values):
    point = Point(impl="softmax_torch", seq_len=256, head_dim=64, heads=4, device="cuda:1",
                  **values)
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                   timing_basis="host_sync", isolation="point").to_json()
    settings = {"timeout_s": 30.0, "seed": 7, "isolate": "worker", "impl_modules": ["mod_x"],
                "timing": {"timer": "cudagraph", "cuda_flush_l2": False, "max_repeats": 9,
                           "timing_basis": "auto"}}
    made = repro.reproducer(record, settings)
    assert made.argv[:2] == ["--impl-module", "mod_x"]
    for flag in ("--l2=warm", "--timer=cudagraph", "--timing-basis=host_sync",
                 "--isolate=point", "--seed=7", "--timeout=30", "--max-repeats=9"):
        assert flag in made.argv, (flag, made.argv)
    without_module = made.argv[2:]
    assert [p.point_id for p in planned(without_module)] == [point.point_id]
    assert shlex.split(made.command())[2:] == made.argv


def test_repro_reproduces_a_point_of_a_real_sweep(tmp_path):
    """A tiny sweep (softmax_torch, T 128, one point, --l2 warm), then repro of its point: the
    same point id, status ok, printed beside the original; the report's tables carry the
    reproducer and the L2 state."""
    run = tmp_path / "run"
    done = run_cli("sweep", "--impl", "softmax_torch", "--seq-len", "128", "--head-dim", "16",
                   "--heads", "2", "--pass", "fwd", "--device", "cpu", "--min-time", "0.01",
                   "--max-repeats", "3", "--warmup", "0", "--l2", "warm", "--out", str(run),
                   "--no-report")
    assert done.returncode == 0, done.stderr
    (record,) = read_records(run)
    assert record["status"] == "ok" and record["l2"] == "warm"   # the CPU's caches stay warm
    assert record["graph_check"] == "no graph: --timer events"
    meta = json.loads((run / "run.json").read_text())
    assert meta["settings"]["timing"]["cuda_flush_l2"] is False

    from harness.report.data import load
    from harness.report.render import l2_line, points_table

    frame = points_table(load([run]).speed)
    command = frame.loc[0, "repro"]
    assert command.startswith("python run_bench.py sweep") and "--l2=warm" in command
    assert frame.loc[0, "l2"] == "warm" and "cpu: warm" in l2_line(load([run]).speed)

    out = tmp_path / "again"
    again = run_cli("repro", str(run), record["point_id"][:8], "--out", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    (new,) = read_records(out)
    assert new["point_id"] == record["point_id"] and new["status"] == "ok"
    assert "original" in again.stdout and "ratio repro / original" in again.stdout
    assert json.loads((out / "run.json").read_text())["settings"]["timing"][
        "cuda_flush_l2"] is False


def test_repro_refuses_unknown_runs_and_points_in_one_line(tmp_path, capsys):
    assert cli.main(["repro", str(tmp_path / "nothing"), "abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    known = read_records(OLD)[0]["point_id"]
    typo = known[:-1] + ("0" if known[-1] != "0" else "1")
    assert cli.main(["repro", str(OLD), typo]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"no point {typo!r}" in err and known in err


def test_print_only_shows_the_command(capsys):
    (record,) = read_records(OLD)[:1]
    assert cli.main(["repro", str(OLD), record["point_id"], "--print-only"]) == 0
    out = capsys.readouterr().out
    assert "run_bench.py sweep --preset quick --impl sdpa_math" in out


def test_l2_flag_sets_the_flush_and_refuses_other_values():
    args = cli.build_parser().parse_args(["sweep", "--impl", "softmax_torch", "--seq-len",
                                          "128", "--device", "cpu", "--l2", "warm"])
    assert plan(request_from_args(args)).settings.timing.cuda_flush_l2 is False
    args = cli.build_parser().parse_args(["sweep", "--impl", "softmax_torch", "--seq-len",
                                          "128", "--device", "cpu"])
    assert plan(request_from_args(args)).settings.timing.cuda_flush_l2 is True
    assert cli.main(["sweep", "--l2", "tepid", "--dry-run"]) == 2


def test_old_records_read_their_l2_from_the_flush_note():
    data = read_records(OLD)[0]
    assert SpeedRecord.from_json(data).l2 == ""   # no note: unknown
    assert SpeedRecord.from_json({**data, "l2_flush": "flushed: 100 MiB"}).l2 == "cold"
    assert SpeedRecord.from_json({**data, "l2_flush": "not flushed: CPU timing"}).l2 == "warm"
    assert {f.name for f in dataclasses.fields(SpeedRecord)} >= {"l2", "graph_check"}
