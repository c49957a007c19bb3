"""Run directories written before the typed contracts (tests/fixtures: a 4-point sweep and a
one-run LRA, as today's main wrote them, unedited) still load, report, compare, merge and
resume; records written now keep every field the old ones had."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cli_helpers import read_records

from harness import cli
from harness.store.run_dir import load_results, open_run

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SPEED, LRA = FIXTURES / "old_run_speed", FIXTURES / "old_run_lra"


def copy(tmp_path: Path, source: Path) -> Path:
    target = tmp_path / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)
    return target


def test_old_runs_load():
    records = open_run(SPEED).records()
    assert len(records) == 4 and {r.status for r in records} == {"ok"}
    assert set(load_results(SPEED)["impl"]) == {"softmax_torch", "sdpa_math"}
    (accuracy,) = open_run(LRA).records()
    assert accuracy.task == "listops" and accuracy.impl == "hrr_torch"
    assert isinstance(open_run(LRA).metadata()["command"], str)   # the old LRA form


def test_old_runs_report_with_the_command_as_typed(tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["report", str(SPEED), str(LRA), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "command: run_bench.py lra --task listops --impl hrr_torch" in text
    assert "command: run_bench.py sweep --impl softmax_torch,sdpa_math" in text
    assert "r u n _" not in text


def test_old_runs_compare_and_merge(tmp_path, capsys):
    # compare writes its tables beside the current run: compare copies, never the fixtures
    base, current = copy(tmp_path / "a", SPEED), copy(tmp_path / "b", SPEED)
    assert cli.main(["compare", str(base), str(current), "--threshold", "10%"]) == 0
    assert (current / "compare" / "compare.md").exists()
    merged = tmp_path / "merged"
    assert cli.main(["merge", str(SPEED), str(LRA), "--out", str(merged)]) == 0
    assert len(read_records(merged)) == 5


def test_old_sweep_resumes_and_new_records_keep_every_old_field(tmp_path, capsys):
    run = copy(tmp_path, SPEED)
    old = read_records(run)
    # no grid flags: the stored grid; every point is there, so nothing runs
    assert cli.main(["sweep", "--resume", str(run), "--no-report"]) == 0
    assert read_records(run) == old
    # grid flags with --resume are refused (stored grid kept exactly: docs/workloads.md, "Sweeps")
    assert cli.main(["sweep", "--resume", str(run), "--seq-len", "512", "--no-report"]) == 2
    # a point lost (as by a crash before its record): measured now, appended beside the old ones
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    (run / "results.jsonl").write_text("".join(lines[:-1]))
    assert cli.main(["sweep", "--resume", str(run), "--min-time", "0.02", "--max-repeats", "3",
                     "--warmup", "1", "--no-report"]) == 0
    records = read_records(run)
    assert records[:3] == old[:3] and len(records) == 4
    new = records[3]
    assert new["status"] == "ok" and new["point_id"] == old[3]["point_id"]
    assert set(old[0]) <= set(new), set(old[0]) - set(new)
    assert set(old[0]["extra"]) <= set(new["extra"])
    assert {type(new[k]) for k in ("time_s", "peak_mem_bytes")} <= {float, int}
    meta = json.loads((run / "run.json").read_text())
    assert meta["command"] == old_command() and len(meta["resumed"]) == 2


def old_command() -> list[str]:
    return json.loads((SPEED / "run.json").read_text())["command"]
