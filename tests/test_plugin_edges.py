"""Edges of plug-in axes, `sweep --config` settings and the probe found by attacking issue 24:
each ends as a clear record or one line (UsageError, exit 2), never a traceback or lost data."""

from __future__ import annotations

import csv
import io
import json

import pytest

from harness.contract import axes as table
from harness.contract.probe import ProbeResult
from harness.contract.records import Point
from harness.errors import UsageError


@pytest.fixture
def tile_axis():
    """A plug-in axis registered for one test, then removed (the table is process-wide)."""
    axis = table.register_axis(table.Axis("tile", parse=lambda v: (int(v),), default=0,
                                          feature="tile", reason="no tile"))
    yield axis
    table._AXES.pop("tile", None)


# -- axis names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["message", "status", "impl", "point_id", "verdict", "run",
                                  "config", "time_s", "command"])
def test_an_axis_cannot_take_a_record_field_or_a_column_name(name):
    from harness.cli import NAMESPACE_NAMES

    table.reserve_names(NAMESPACE_NAMES)   # as harness.cli.main does before loading plug-ins
    with pytest.raises(ValueError, match="taken"):
        table.register_axis(table.Axis(name, parse=lambda v: (v,), default=0, feature=name))
    assert table.get_axis(name) is None or table.get_axis(name).field is not None


@pytest.mark.parametrize("name", ["Block Size", "block-size", "", "1st", "Tile"])
def test_an_axis_name_is_a_lower_case_identifier(name):
    with pytest.raises(ValueError, match="lower-case"):
        table.register_axis(table.Axis(name, parse=lambda v: (v,), default=0, feature="x"))
    assert table.get_axis(name) is None


def test_every_table_column_is_reserved_or_an_axis():
    from harness.report.data import speed_columns
    from harness.verdicts.writers import COLUMNS

    names = {a.name for a in table.axes()}
    columns = set(speed_columns()) | {c.name for c in COLUMNS} | {"group", "q_axis"}
    assert columns - names <= table._RESERVED


def test_an_axis_named_like_a_sweep_option_is_one_line_not_a_traceback():
    from harness.cli import build_parser

    table.register_axis(table.Axis("timeout", parse=lambda v: (int(v),), default=0,
                                   feature="timeout"))
    try:
        with pytest.raises(UsageError, match="--timeout.*choose another axis name"):
            build_parser()
    finally:
        table._AXES.pop("timeout")


# -- a plug-in's run read where the plug-in is not loaded ------------------------------------
def unloaded(point_axes: dict) -> Point:
    """A point as read from a record whose plug-in axis is not declared here."""
    data = {"impl": "x", "seq_len": 16, "head_dim": 8, "batch": 1, "heads": 2,
            "dtype": "float32", "causal": False, "pass": "forward", "device": "cpu"}
    return Point.from_dict({**data, "axes": point_axes} if point_axes else data)


def test_compare_csv_of_a_plugin_axis_not_loaded_has_a_blank_where_unset():
    from harness.verdicts.row import VerdictRow
    from harness.verdicts.writers import csv_text

    rows = [VerdictRow(unloaded({}), "time", "same"),
            VerdictRow(unloaded({"page": 4}), "time", "same")]
    read = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [r["page"] for r in read] == ["", "4"]
    assert read[0]["point_id"] != read[1]["point_id"]


def test_report_labels_a_plugin_axis_not_loaded_as_stored():
    from harness.report.data import tidy_speed

    base = {"run": "r", "impl": "softmax_torch", "framework": "torch", "family": "exact",
            "device": "cpu", "batch": 1, "heads": 2, "seq_len": 16, "head_dim": 8,
            "dtype": "float32", "causal": False, "pass": "forward", "status": "unsupported",
            "message": "no page"}
    frame = tidy_speed([base, {**base, "axes": {"page": 4}}])
    assert sorted(frame["group"]) == ["cpu float32 B=1 H=2", "cpu float32 B=1 H=2 page=4"]


def plugin_run(tmp_path, arguments: dict, modules: list[str]):
    from harness.store.run_dir import RunDir

    meta = {"kind": "speed", "grid": {"arguments": arguments},
            "settings": {"impl_modules": modules}}
    run = RunDir.create(tmp_path / "run", meta)
    return run.path


@pytest.mark.parametrize("flag", ["--resume", "--grid-from"])
def test_resume_of_a_plugin_run_without_its_module_is_refused(tmp_path, flag):
    """Without the module the stored axis would be dropped: its points never measured and the
    run read as complete."""
    from harness.store.resume import stored_grid_arguments

    path = plugin_run(tmp_path, {"impl": "softmax_torch", "seq_len": "16", "page": "1,4"},
                      ["pagemod"])
    with pytest.raises(UsageError, match=f"{flag} .*page.*--impl-module pagemod"):
        stored_grid_arguments(str(path), flag)


def test_resume_of_a_plugin_method_without_its_module_names_the_module(tmp_path):
    """The run's method comes from a module not given now: the message names the module run.json
    recorded and the command that resumes it."""
    from harness.grid.plan import SweepRequest
    from harness.store.resume import plan_sweep

    path = plugin_run(tmp_path, {"impl": "mymethod", "seq_len": "16"}, ["mymod"])
    with pytest.raises(UsageError) as caught:
        plan_sweep(SweepRequest(resume=str(path)), check_devices=False)
    message = str(caught.value)
    assert "unknown implementation 'mymethod'" in message
    assert f"run_bench.py --impl-module mymod sweep --resume {path}" in message


def test_resume_of_a_plugin_run_with_its_axis_declared_keeps_the_axis(tmp_path, tile_axis):
    from harness.store.resume import stored_grid_arguments

    path = plugin_run(tmp_path, {"impl": "softmax_torch", "seq_len": "16", "tile": "4"},
                      ["tilemod"])
    assert stored_grid_arguments(str(path), "--resume")["tile"] == "4"


# -- sweep --config settings --------------------------------------------------------------
@pytest.mark.parametrize("line,message", [
    ("out = 3", "--out: expected a folder name"),
    ('out = ["a"]', "--out: expected a folder name"),
    ('reuse_peaks = "false"', "--reuse-peaks: expected true or false"),
    ("reuse_peaks = 1", "--reuse-peaks: expected true or false"),
    ("seed = 1e30", "--seed: must be at most"),
    ("max_memory = nan", "--max-memory: cannot read"),
    ("max_memory = inf", "--max-memory: cannot read"),
    ("max_memory = [1]", "--max-memory: cannot read"),
    ("pass = []", "--pass: empty list"),
    ("dtype = []", "--dtype: empty list"),
    ("device = []", "--device: empty list"),
    ('impl = ""', "--impl: empty list"),
    ("causal = {a = 1}", "--causal: expected a list"),
    ("[sweep]\nseed = 3", "keys outside \\[sweep\\]"),
    ("sweep = 3", "'sweep' is a table"),
])
def test_a_bad_config_setting_is_one_clear_line(tmp_path, line, message):
    from harness.grid.plan import SweepRequest, plan

    config = tmp_path / "c.toml"
    given = {"impl": '"softmax_torch"', "device": '"cpu"', "seq_len": "16"}
    head = "".join(f"{key} = {value}\n" for key, value in given.items()
                   if not line.startswith(key))
    config.write_text(f"{head}{line}\n")
    with pytest.raises(UsageError, match=message):
        plan(SweepRequest(config=str(config)), check_devices=False)


def test_good_config_settings_are_taken(tmp_path):
    from harness.grid.plan import SweepRequest, plan

    config = tmp_path / "c.toml"
    config.write_text('[sweep]\nimpl = "softmax_torch"\ndevice = "cpu"\nseq_len = 16\n'
                      'reuse_peaks = true\nseed = 7\nmax_memory = "4GB"\nout = "o"\n')
    planned = plan(SweepRequest(config=str(config)), check_devices=False)
    assert planned.reuse_peaks and planned.settings.seed == 7
    assert planned.settings.max_memory_bytes == 4 * 10 ** 9 and planned.out.name == "o"


# -- the probe's reason reaches the record -------------------------------------------------
def test_a_probe_that_fails_is_recorded_with_its_reason(tmp_path):
    from harness.grid.settings import RunSettings
    from harness.measure.runner import Runner, RunSummary, combo_of
    from harness.store.run_dir import RunDir

    runner = Runner(RunDir.create(tmp_path / "run", {}), RunSettings())
    failed = Point("softmax_torch", 16, 8, heads=2)
    absent = Point("sdpa_math", 16, 8, heads=2)
    probes = {combo_of(failed): ProbeResult(False, "returned shape (1,)", failed=True),
              combo_of(absent): ProbeResult(False, "needs package x")}
    summary = RunSummary()
    runner._measure_stage([failed, absent], probes, summary)
    by = {r.impl: r for r in summary.records}
    assert (by["softmax_torch"].status, by["softmax_torch"].message) == (
        "error", "returned shape (1,)")
    assert (by["sdpa_math"].status, by["sdpa_math"].message) == ("unsupported",
                                                                 "needs package x")
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert "not probed" not in "".join(json.loads(line)["message"] for line in lines)


@pytest.mark.parametrize("output", [None, "tuple"])
def test_a_tiny_run_returning_no_tensor_is_a_failure_with_its_type(output):
    from harness.contract.frameworks import torch_fw
    from harness.contract.registry import Capabilities, Implementation

    def fn(q, k, v, *, causal=False, key_padding_mask=None):
        return (q, None) if output == "tuple" else None

    impl = Implementation(name="nothing", framework="torch", family="exact",
                          capabilities=Capabilities(), fn=fn)
    result = torch_fw.tiny_run(impl, "cpu", "float32")
    assert not result and result.failed and result.status == "error"
    assert ("tuple" if output else "NoneType") in result.reason


@pytest.mark.parametrize("argv", [["--impl-module"], ["sweep", "--impl-module"]])
def test_impl_module_without_a_value_is_one_line(argv, capsys):
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--impl-module: expected one argument" in err


def test_impl_module_may_be_a_file_path_in_the_parent_and_its_workers(tmp_path):
    """`--impl-module plug/my_attention.py`: the file is imported (not taken for a module
    name), in the sweep and in its workers; a missing file is one line naming it."""
    from pathlib import Path

    from cli_helpers import run_cli

    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "my_attention.py").write_text(
        "import torch\n"
        "from harness import Capabilities, register\n"
        "@register('file_softmax', framework='torch', family='exact',\n"
        "          capabilities=Capabilities(devices=('cpu',), dtypes=('float32',)))\n"
        "def file_softmax(q, k, v, *, causal=False, key_padding_mask=None):\n"
        "    s = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5\n"
        "    return torch.softmax(s, dim=-1) @ v\n")
    run = tmp_path / "run"
    done = run_cli("--impl-module", str(plug / "my_attention.py"), "sweep", "--impl",
                   "file_softmax", "--seq-len", "16", "--head-dim", "16", "--pass", "fwd",
                   "--min-time", "0.01",
                   "--out", str(run), "--no-report")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"], records
    missing = run_cli("--impl-module", str(Path(tmp_path, "nope.py")), "list")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
