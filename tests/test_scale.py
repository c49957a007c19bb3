"""Scale-out on the CPU: shards, merge, the per-GPU local executor's logic, Slurm options.

The Slurm executor against a real Slurm cluster is tests/test_slurm_integration.py (opt-in).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest
from cli_helpers import read_records, run_cli

from harness.errors import UsageError
from harness.contract.records import Point
from harness.grid.cost import expected_cost_s
from harness.store.merge import merge_runs
from harness.grid.sharding import assign_shards, parse_shard, points_cost_s
from harness.store.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
FAMILY = {"softmax_torch": "exact", "sdpa_math": "exact", "hrr_torch": "hrr",
          "performer_torch": "kernel"}.get


def family(name: str) -> str:
    return FAMILY(name) or "exact"


def paper_grid() -> list[Point]:
    return [Point(impl=impl, seq_len=2 ** e, head_dim=d, heads=16, dtype=dt, device="cuda",
                  pass_=p)
            for impl in ("softmax_torch", "sdpa_math", "hrr_torch", "performer_torch")
            for e in range(10, 19) for d in (64, 128) for dt in ("float16", "bfloat16")
            for p in ("forward", "forward_backward")]


# -- shards -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("1/4", (1, 4)), (" 4 / 4 ", (4, 4)),
                                            ("1/1", (1, 1))])
def test_parse_shard(text, expected):
    spec = parse_shard(text)
    assert (spec.index, spec.count) == expected and str(spec) == f"{spec.index}/{spec.count}"


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "1-4", ""])
def test_parse_shard_rejects(text):
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


@pytest.mark.parametrize("count", [1, 3, 8, 40])
def test_shards_partition_the_grid_deterministically(count):
    grid = paper_grid()
    shards = assign_shards(grid, count, family)
    ids = [p.point_id for shard in shards for p in shard]
    assert len(ids) == len(set(ids)) == len(grid)              # disjoint, nothing lost
    assert set(ids) == {p.point_id for p in grid}              # union is the grid
    shuffled = grid[:]
    random.Random(1).shuffle(shuffled)
    again = assign_shards(shuffled, count, family)             # same membership, any order
    assert [{p.point_id for p in s} for s in again] == [{p.point_id for p in s} for s in shards]


def test_shards_keep_series_whole_and_are_balanced_by_cost():
    grid = paper_grid()
    count = 8
    shards = assign_shards(grid, count, family)
    owner = {p.point_id: i for i, shard in enumerate(shards) for p in shard}
    for series in {p.series_key() for p in grid}:   # OOM/timeout skipping stays within a shard
        assert len({owner[p.point_id] for p in grid if p.series_key() == series}) == 1
    costs = [points_cost_s(shard, family) for shard in shards]
    series_costs = {}
    for p in grid:
        series_costs[p.series_key()] = series_costs.get(p.series_key(), 0) + \
            expected_cost_s(p, family(p.impl))
    assert max(costs) <= sum(costs) / count + max(series_costs.values()) + 1e-9  # LPT bound
    # a split by count alone (round robin over series) is far less even on this grid
    by_count = [0.0] * count
    for i, key in enumerate(sorted(series_costs)):
        by_count[i % count] += series_costs[key]
    assert max(costs) / min(costs) < max(by_count) / min(by_count)
    assert max(costs) / min(costs) < 1.35


def test_cost_model_orders_quadratic_above_linear():
    from harness.grid.cost import expected_work

    at_64k = dict(seq_len=65536, head_dim=64, heads=16, device="cuda")
    assert expected_work(Point("softmax_torch", **at_64k), "exact") == pytest.approx(
        65536 / 64 * expected_work(Point("hrr_torch", **at_64k), "hrr"))   # T^2 D vs T D^2
    long = {**at_64k, "seq_len": 2 ** 19}       # where work, not worker start-up, dominates
    assert expected_cost_s(Point("softmax_torch", **long), "exact") > \
        10 * expected_cost_s(Point("hrr_torch", **long), "hrr")
    fwd = expected_cost_s(Point("softmax_torch", pass_="forward", **long), "exact")
    both = expected_cost_s(Point("softmax_torch", pass_="forward_backward", **long), "exact")
    assert both > 3 * fwd * 0.9


def test_more_shards_than_series_split_points():
    grid = [Point("hrr_torch", seq_len=t, head_dim=16) for t in (64, 128, 256)]
    shards = assign_shards(grid, 3, family)
    assert sorted(len(s) for s in shards) == [1, 1, 1]


# -- shards through the CLI, and merge ------------------------------------------------------------
GRID = ["--impl", "softmax_torch,hrr_torch,sdpa_math", "--seq-len", "64,128", "--head-dim",
        "16,32", "--heads", "2", "--pass", "fwd", "--min-time", "0.01", "--max-repeats", "3",
        "--device", "cpu"]


@pytest.mark.slow
def test_merge_of_shards_equals_a_single_run(tmp_path):
    for i in (1, 2, 3):
        result = run_cli("sweep", *GRID, "--shard", f"{i}/3", "--out", str(tmp_path / f"s{i}"))
        assert result.returncode == 0, result.stderr
        assert f"shard {i}/3 of 12" in result.stdout
    single = run_cli("sweep", *GRID, "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    merged = run_cli("merge", *(str(tmp_path / f"s{i}") for i in (1, 2, 3)), "--out",
                     str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    assert "12 record(s)" in merged.stdout
    got = {r["point_id"]: r["status"] for r in read_records(tmp_path / "merged")}
    want = {r["point_id"]: r["status"] for r in read_records(tmp_path / "single")}
    assert got == want
    merged_meta = json.loads((tmp_path / "merged" / "run.json").read_text())
    shard_grid = json.loads((tmp_path / "s1" / "run.json").read_text())["grid"]
    assert merged_meta["grids"] is None                   # the shards of one sweep: one grid
    assert merged_meta["grid"]["overrides"] == shard_grid["overrides"]
    assert "shard" not in merged_meta["grid"]["arguments"]
    shard_meta = json.loads((tmp_path / "s2" / "run.json").read_text())
    assert shard_meta["shard"]["index"] == 2 and shard_meta["shard"]["count"] == 3
    # a shard resumes on its own: nothing is measured twice
    again = run_cli("sweep", "--resume", str(tmp_path / "s2"))
    assert again.returncode == 0 and "already recorded" in again.stdout
    assert len(read_records(tmp_path / "s2")) == shard_meta["points"]


def fake_run(path: Path, hardware: str, time_s: float, *, status: str = "ok") -> Path:
    """A run directory with one record of a fixed point (measured on `hardware`)."""
    from harness.contract.records import SpeedRecord

    run = RunDir.create(path, {"kind": "speed", "machine": {"hardware_id": hardware,
                                                            "hardware_tag": f"box-{hardware}"}})
    point = Point("hrr_torch", seq_len=64, head_dim=16)
    run.append(SpeedRecord.for_point(point, framework="torch", family="hrr", status=status,
                                     hardware_id=hardware, time_s=time_s, started_at="t0"))
    other = Point("hrr_torch", seq_len=128 if hardware == "a" else 256, head_dim=16)
    run.append(SpeedRecord.for_point(other, framework="torch", family="hrr", status="ok",
                                     hardware_id=hardware, time_s=1e-3, started_at="t0"))
    return path


def test_merge_refuses_conflicting_duplicates_and_writes_nothing(tmp_path):
    """Two results for one point from one machine: refused, naming both, nothing written."""
    a = fake_run(tmp_path / "a", "a", 1e-3)
    b = fake_run(tmp_path / "b", "a", 2e-3)
    with pytest.raises(UsageError, match="conflicting records for hrr_torch T=64") as info:
        merge_runs([a, b], tmp_path / "out")
    assert "1 ms" in str(info.value) and "2 ms" in str(info.value)
    assert "on a:" in str(info.value) and "same machine" in str(info.value)
    assert not (tmp_path / "out").exists()
    result = run_cli("merge", str(a), str(b), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "conflicting records" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_one_point_measured_on_two_machines_is_merged_and_reported_per_machine(tmp_path,
                                                                               monkeypatch):
    """The same point timed on two machines (1 ms on a, 2 ms on b) is two results: both kept;
    the report shows each machine's as its own run, neither taken for the other's."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    from harness.report.data import load

    a = fake_run(tmp_path / "a", "a", 1e-3)
    b = fake_run(tmp_path / "b", "b", 2e-3)
    result = run_cli("merge", str(a), str(b), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    merged = read_records(tmp_path / "out")
    assert len(merged) == 4
    results = load([tmp_path / "out"])
    assert [run.label for run in results.runs] == ["out [box-a]", "out [box-b]"]
    t64 = results.speed[results.speed["seq_len"] == 64].set_index("hardware_tag")["time_s"]
    assert t64.to_dict() == {"box-a": 1e-3, "box-b": 2e-3}
    assert not any("more than one ok record" in m for m in results.warnings)
    report = run_cli("report", str(tmp_path / "out"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "box-a" in text and "box-b" in text


def test_merge_keeps_each_records_hardware_and_agreeing_duplicates_once(tmp_path):
    a = fake_run(tmp_path / "a", "a", 1e-3)
    b = fake_run(tmp_path / "b", "b", 1e-3)      # same point, same result, another machine...
    data = read_records(b)
    data[0]["hardware_id"] = "a"                 # ...recorded identically (a copied record)
    data[0]["started_at"] = "t1"                 # bookkeeping differs: still agreeing
    (b / "results.jsonl").write_text("".join(json.dumps(d) + "\n" for d in data))
    gatherer = merge_runs([a, b, a], tmp_path / "out")
    merged = read_records(tmp_path / "out")
    assert len(merged) == 3 and gatherer.identical_duplicates == 3
    assert sorted(r["hardware_id"] for r in merged) == ["a", "a", "b"]
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert set(meta["machines"]) == {"a", "b"}
    assert meta["machine"]["hardware_tag"] == "mixed (2 machines)"
    assert meta["records_by_hardware"] == {"a": 2, "b": 1}


def test_merge_of_different_grids_keeps_each_and_the_report_lists_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    for name, seq_len in (("short", "64"), ("long", "128")):
        result = run_cli("sweep", *GRID[:2], "--seq-len", seq_len, *GRID[4:], "--no-report",
                         "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    merged = run_cli("merge", str(tmp_path / "short"), str(tmp_path / "long"), "--out",
                     str(tmp_path / "both"))
    assert merged.returncode == 0, merged.stderr
    meta = json.loads((tmp_path / "both" / "run.json").read_text())
    assert meta["grid"] is None
    assert [g["overrides"]["seq_len"] for g in meta["grids"]] == [[64], [128]]
    report = run_cli("report", str(tmp_path / "both"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "merged from: " in text and str(tmp_path / "long") in text
    assert "'seq_len': [64]" in text and "'seq_len': [128]" in text
    for flag in ("--resume", "--grid-from"):
        refused = run_cli("sweep", flag, str(tmp_path / "both"), "--out", str(tmp_path / "o"))
        assert refused.returncode == 2 and "merges 2 different grids" in refused.stderr


def test_merge_bad_input(tmp_path):
    result = run_cli("merge", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "missing" in result.stderr
    a = fake_run(tmp_path / "a", "a", 1e-3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    result = run_cli("merge", str(a), "--out", str(tmp_path / "full"))
    assert result.returncode == 2 and "already exists" in result.stderr


# -- local executor: one process per GPU ----------------------------------------------------------
@pytest.mark.slow
def test_local_executor_pins_one_shard_process_per_device_and_gathers(tmp_path):
    """The multi-GPU path, exercised on CPU points with two stand-in device ids."""
    from harness.console import make_console
    from harness.scale.local import run_shards_in_parallel
    from harness.scale.sharded import gather, missing_points, plan_shards

    grid = [Point(impl, seq_len=t, head_dim=16, heads=2)
            for impl in ("hrr_torch", "softmax_torch") for t in (64, 128)]
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "grid": {"arguments": {
        "impl": "hrr_torch,softmax_torch", "seq_len": "64,128", "head_dim": "16",
        "heads": "2", "pass": "fwd", "device": "cpu", "min_time": 0.01, "max_repeats": 3}}})
    shards = plan_shards(grid, 2, run.path, family)
    codes = run_shards_in_parallel(run, shards, ["0", "1"], (), make_console(), poll_s=0.5)
    assert codes == {1: 0, 2: 0}
    pinned = sorted(json.loads((Path(s.path) / "run.json").read_text())["shard"]
                    ["cuda_visible_devices"] for s in shards)
    assert pinned == ["0", "1"]
    gathered = gather(run, shards)
    assert all(missing_points(s, gathered) == 0 for s in shards)
    assert {r["point_id"] for r in read_records(run.path)} == {p.point_id for p in grid}


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from harness.scale import local

    pytest.importorskip("torch")
    from harness.contract.frameworks import torch_fw

    # two visible GPUs, counted without a device context (NVML; faked here)
    monkeypatch.setattr(torch_fw, "cuda_device_count", lambda torch: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert local.visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local.visible_gpus() == ["0", "1"]
    assert local.gpus_for([Point("hrr_torch", seq_len=64, head_dim=16, device="cuda")]) == \
        ["0", "1"]
    # a pinned device, or CPU points, run in this process as usual
    assert local.gpus_for([Point("hrr_torch", seq_len=64, head_dim=16, device="cuda:1")]) == []
    assert local.gpus_for([Point("hrr_torch", seq_len=64, head_dim=16)]) == []


# -- slurm executor: options and bookkeeping (the real thing: test_slurm_integration.py) --------
def test_slurm_options_become_submitit_parameters():
    from harness.cli import build_parser
    from harness.scale.slurm import SlurmOptions

    args = build_parser().parse_args(
        ["sweep", "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-account", "lab",
         "--slurm-time", "90", "--slurm-mem-gb", "64", "--slurm-array-parallelism", "4",
         "--slurm-setup", "module load cuda"])
    params = SlurmOptions.from_args(args).submitit_parameters()
    assert params["partition"] == "gpu" and params["account"] == "lab"
    assert params["time"] == 90 and params["mem"] == "64G" and params["gpus_per_task"] == 1
    assert params["array_parallelism"] == 4 and params["setup"] == ["module load cuda"]
    # every key is one submitit knows, and renders into the sbatch script; checked without
    # constructing submitit.SlurmExecutor, which needs `srun` on the PATH (a Slurm machine)
    pytest.importorskip("submitit")
    import submitit
    from submitit.slurm import slurm as submitit_slurm

    assert set(params) <= submitit.SlurmExecutor._valid_parameters()
    script = submitit_slurm._make_sbatch_string(command="true", folder="/tmp/never-used",
                                                **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --time=90",
                 "#SBATCH --mem=64G", "#SBATCH --gpus-per-task=1", "module load cuda"):
        assert line in script


def test_slurm_without_sbatch_is_a_clear_error(tmp_path):
    result = run_cli("sweep", "--executor", "slurm", "--impl", "hrr_torch", "--out",
                     str(tmp_path / "r"), env={"PATH": os.path.dirname(sys.executable)})
    assert result.returncode == 2 and "sbatch not found" in result.stderr


def test_failure_message_prefers_the_shards_own_line():
    from harness.scale.slurm import JobInfo, failure_message

    exc = RuntimeError("Traceback ...\nRuntimeError: shard 2/4 exited with status -15: x\n"
                       "  - /logs/1_0_log.out")
    assert failure_message(exc).startswith("RuntimeError: shard 2/4 exited with status -15")
    assert JobInfo("CANCELLED by 0").base == "CANCELLED"
    assert JobInfo("").base == "UNKNOWN"
