"""The axis table: the built-in rows match Point and SpeedRecord, every sweep flag is a TOML
key, and an axis declared by a plug-in module (--impl-module, outside attnbench) is swept,
recorded, reported, compared, merged and resumed."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import textwrap

import pytest

from cli_helpers import read_records, run_cli
from harness.contract import axes as table
from harness.contract.records import Point, SpeedRecord
from harness.contract.registry import Capabilities, Query
from harness.grid.plan import NOT_CONFIG_KEYS, SweepRequest
from harness.grid.spec import SETTING_NAMES, grid_names, read_config

PLUGIN = textwrap.dedent('''
    """A plug-in outside attnbench: a 'block' axis and a method that reads it."""
    from harness import Capabilities, register
    from harness.contract.axes import Axis, register_axis
    from harness.contract.parsers import parse_int_list

    register_axis(Axis("block", parse=lambda v: parse_int_list(v, axis="block"), default=1,
                       feature="block", reason="no block size (plug-in axis)",
                       keyword="block", help="kernel block size"))

    @register("blocked_attn", framework="torch", family="exact",
              capabilities=Capabilities(devices=("cpu",), features={"backward", "causal",
                                                                    "block"}))
    def blocked_attn(q, k, v, *, causal=False, key_padding_mask=None, block=1):
        """Softmax attention that takes a block size (and checks it got an int)."""
        import torch
        assert isinstance(block, int)
        scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
        return torch.softmax(scores, dim=-1) @ v
''')


def test_point_and_record_fields_are_the_tables():
    fields = {f.name for f in dataclasses.fields(Point)}
    record_fields = {f.name for f in dataclasses.fields(SpeedRecord)}
    for axis in table.axes():
        if axis.field is not None:
            assert axis.field in fields and axis.field in record_fields, axis.name
    assert {a.name for a in table.workload_axes()} >= {"kv_heads", "q_len", "window", "alibi",
                                                        "documents"}


def test_default_workload_values_leave_the_point_id_unchanged():
    plain = Point("softmax_torch", 64, 16, heads=4)
    spelled = Point("softmax_torch", 64, 16, heads=4, kv_heads=4, q_len=64)
    assert plain.point_id == spelled.point_id
    assert set(plain.as_dict()) == {"impl", "seq_len", "head_dim", "batch", "heads", "dtype",
                                    "causal", "pass", "device"}
    decode = Point("softmax_torch", 64, 16, heads=4, kv_heads=1, q_len=1)
    assert decode.point_id != plain.point_id
    assert decode.workload_label() == "Hkv=1 Tq=1"
    record = SpeedRecord.for_point(decode, framework="torch", family="exact", status="ok")
    assert Point.from_dict(record.to_json()) == decode
    assert record.to_json()["kv_heads"] == 1 and "axes" not in record.to_json()


def test_capabilities_and_queries_are_feature_sets():
    caps = Capabilities(causal=True, gqa=True)
    assert caps.features == {"backward", "causal", "gqa"}
    assert caps.gqa and not caps.window
    assert Capabilities(features={"causal"}).features == {"causal"}
    assert Query(device="cuda", key_padding_mask=True).features == {"key_padding_mask"}
    assert caps.missing_reasons({"causal", "window", "alibi"}) == [
        "no sliding-window mask", "no ALiBi bias"]


def sweep_parser() -> argparse.ArgumentParser:
    from harness.commands import sweep

    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    return parser


def test_every_sweep_setting_with_a_flag_is_a_config_key(tmp_path):
    request_fields = {f.name for f in dataclasses.fields(SweepRequest)} - set(NOT_CONFIG_KEYS)
    dests = {action.dest for action in sweep_parser()._actions}
    flagged = sorted(request_fields & dests)
    assert {"cooldown", "time_budget", "timer"} <= set(flagged)
    names = {table.get_axis(n).dest: n for n in grid_names() if table.get_axis(n)}
    for dest in flagged:
        key = names.get(dest, dest)
        config = tmp_path / f"{key}.toml"
        config.write_text(f"{key} = \"x\"\n")
        assert key in read_config(config), key
    assert set(request_fields) <= set(names) | set(SETTING_NAMES) | {"impl"}


def test_ab_point_key_includes_a_plugin_axis(tmp_path, monkeypatch):
    from harness.verdicts.ab.rounds import point_of

    axis = table.Axis("tile", parse=lambda v: tuple(int(x) for x in str(v).split(",")),
                      default=0, feature="tile", reason="no tile")
    table.register_axis(axis)
    try:
        base = {"impl": "x", "seq_len": 16, "head_dim": 8, "batch": 1, "heads": 2,
                "dtype": "float32", "causal": False, "pass": "forward", "device": "cpu"}
        assert point_of({**base, "axes": {"tile": 4}}) != point_of(base)
        assert point_of({**base, "axes": {"tile": 0}}) == point_of(base)
        assert point_of({**base, "axes": {"tile": 4}}).point_id != point_of(base).point_id
    finally:
        table._AXES.pop("tile")


@pytest.fixture
def plugin(tmp_path):
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "blockmod.py").write_text(PLUGIN)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def sweep(env, out, *more):
    return run_cli("--impl-module", "blockmod", "sweep", "--impl", "blocked_attn,softmax_torch",
                   "--device", "cpu", "--pass", "forward", "--seq-len", "16,32", "--head-dim", "8",
                   "--heads", "2", "--batch", "1", "--causal", "false",
                   "--min-time", "0", "--max-repeats", "3", "--warmup", "0", "--out", str(out),
                   *more, env=env, timeout=280)


def test_a_plugin_axis_is_swept_recorded_reported_compared_merged_and_resumed(tmp_path, plugin):
    run = tmp_path / "run"
    result = sweep(plugin, run, "--block", "1,4")
    assert result.returncode == 0, result.stdout + result.stderr
    records = read_records(run)
    by = {(r["impl"], r["seq_len"], (r.get("axes") or {}).get("block", 1)): r for r in records}
    assert len(by) == 8
    assert by[("blocked_attn", 16, 4)]["status"] == "ok"
    assert by[("blocked_attn", 16, 4)]["axes"] == {"block": 4}
    assert by[("blocked_attn", 16, 4)]["point_id"] != by[("blocked_attn", 16, 1)]["point_id"]
    unsupported = by[("softmax_torch", 16, 4)]
    assert unsupported["status"] == "unsupported"
    assert "no block size (plug-in axis)" in unsupported["message"]
    assert by[("softmax_torch", 16, 1)]["status"] == "ok"
    plain = Point("softmax_torch", 16, 8, heads=2)
    assert by[("softmax_torch", 16, 1)]["point_id"] == plain.point_id

    # report: points.csv and the tables show the axis
    report = run_cli("--impl-module", "blockmod", "report", str(run), "--out",
                     str(tmp_path / "report"), env={**plugin, "MPLCONFIGDIR": str(tmp_path)},
                     timeout=280)
    assert report.returncode == 0, report.stdout + report.stderr
    points = list(csv.DictReader(open(tmp_path / "report" / "tables" / "points.csv")))
    assert {"kv_heads", "q_len", "window", "alibi", "documents", "block"} <= set(points[0])
    assert {row["block"] for row in points} == {"1", "4"}
    assert "block=4" in (tmp_path / "report" / "report.md").read_text()

    # resume: nothing left to measure, nothing measured twice
    resumed = run_cli("--impl-module", "blockmod", "sweep", "--resume", str(run), env=plugin,
                      timeout=280)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(read_records(run)) == len(records)

    # compare keys by the axis: a second run at block 4 only pairs with block-4 points
    other = tmp_path / "other"
    assert sweep(plugin, other, "--block", "4").returncode == 0
    compared = run_cli("--impl-module", "blockmod", "compare", str(run), str(other),
                       "--out", str(tmp_path / "cmp"), env=plugin, timeout=280)
    assert compared.returncode in (0, 1), compared.stdout + compared.stderr
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))
    assert "block" in rows[0]
    missing = {(r["impl"], r["block"]) for r in rows if r["verdict"] == "only in baseline"}
    assert ("blocked_attn", "1") in missing and ("blocked_attn", "4") not in missing

    # merge keeps every point of the run (point ids differ by the axis)
    merged = run_cli("--impl-module", "blockmod", "merge", str(run), "--out", str(tmp_path / "m1"),
                     env=plugin, timeout=120)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    ids = [json.loads(line)["point_id"] for line in
           (tmp_path / "m1" / "results.jsonl").read_text().splitlines()]
    assert len(set(ids)) == 8


def test_report_tables_pair_points_by_every_axis_a_plugin_one_included():
    """The baseline ratios and the run-to-run table join on every axis: two points that differ
    only by a plug-in's axis (not loaded here) are never paired with each other's baseline."""
    from harness.report import tables
    from harness.report.data import point_key_columns, tidy_speed

    def row(impl, block, run, time_s):
        point = Point(impl=impl, seq_len=64, head_dim=8,
                      extra_axes=(("blockx", block),) if block else ())
        data = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                     time_s=time_s, time_samples_s=[time_s]).to_json()
        return {**data, "run": run, "hardware_tag": "here"}

    rows = [row("base", 0, "a", 2.0), row("mine", 0, "a", 1.0), row("mine", 4, "a", 0.5),
            row("mine", 0, "b", 1.0), row("mine", 4, "b", 0.25)]
    speed = tidy_speed(rows)
    assert "blockx" in point_key_columns(speed)
    speedups = tables.ratios(speed, "base")
    assert len(speedups) == 1 and speedups.iloc[0]["speedup"] == 2.0   # block 4: no baseline
    pairs = tables.run_pairs(speed, "a")
    assert len(pairs) == 2                                              # no cross product
