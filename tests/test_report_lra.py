"""The report of LRA records over several seeds: mean ± std with n in every table format, the
accuracy-speed-memory figure, the tuning table and the Hrrformer comparison block.

The records here are SYNTHETIC (written directly, no training), so that the numbers the
report must show are known exactly."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
from report_fixtures import MACHINE_A

from harness.contract.records import AccuracyRecord
from harness.report import lra
from harness.report import render_report
from harness.report.published import LRA_TASKS
from harness.store.run_dir import RunDir

ACC = {"hrr_torch": [0.40, 0.42, 0.38], "softmax_torch": [0.36, 0.37, 0.35]}
RATE = {"hrr_torch": 300.0, "softmax_torch": 100.0}
MEM = {"hrr_torch": 100 * 2**20, "softmax_torch": 400 * 2**20}


def write_run(path, tasks=("listops",), seeds=(0, 1, 2), tuning=None):
    run_dir = RunDir.create(path, {"kind": "accuracy", "machine": MACHINE_A})
    for task in tasks:
        for impl, accs in ACC.items():
            for seed, acc in zip(seeds, accs):
                run_dir.append(AccuracyRecord(
                    impl=impl, task=task, status="ok", data_source="generated",
                    preset="smoke", seed=seed, test_accuracy=acc, best_val_accuracy=acc,
                    epochs=3, train_time_s=10.0, examples_per_s=RATE[impl] * (1 + seed / 10),
                    peak_mem_bytes=MEM[impl], mem_method="test memory",
                    tuning=tuning or {}))
    return path


def test_mean_std_n_in_tables_and_csv(tmp_path):
    out = render_report([write_run(tmp_path / "run")], tmp_path / "report")
    frame = pd.read_csv(out / "tables" / "accuracy.csv")
    assert {"mean", "std", "n"} <= set(frame.columns)
    row = frame[(frame["model"] == "hrr_torch") & (frame["task"] == "listops")].iloc[0]
    assert row["n"] == 3 and row["seeds"] == "0 1 2"
    assert row["mean"] == pytest.approx(40.0)
    assert row["std"] == pytest.approx(round(statistics.stdev([40, 42, 38]), 2))
    md = (out / "report.md").read_text()
    assert "40.00 ± 2.00 (n=3)" in md and "36.00 ± 1.00 (n=3)" in md
    assert "40.00 ± 2.00 (n=3)" in (out / "report.html").read_text()
    tex = (out / "tables" / "accuracy.tex").read_text()
    assert "mean & std & n" in tex
    for name in ("accuracy_speed_memory.png", "accuracy_speed_memory.pdf"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert "figures/accuracy_speed_memory.png" in md


def test_hrrformer_block_next_to_published_claims(tmp_path):
    out = render_report([write_run(tmp_path / "run")], tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "### Hrrformer comparison" in md and "arXiv:2305.19534" in md
    assert "shared/" not in md
    frame = pd.read_csv(out / "tables" / "hrrformer.csv")
    (row,) = frame.to_dict("records")
    # examples/s: mean over seeds (x1.0, x1.1, x1.2 of the base rate) -> the ratio is 3
    assert row["training_speedup"] == pytest.approx(3.0)
    assert row["memory_ratio"] == pytest.approx(0.25)
    assert row["accuracy_difference_pp"] == pytest.approx(4.0)
    se = (2.0 ** 2 / 3 + 1.0 ** 2 / 3) ** 0.5
    assert row["accuracy_difference_se"] == pytest.approx(round(se, 2))
    assert row["published_accuracy_difference_pp"] == pytest.approx(39.98 - 36.37)
    assert "3.00x" in md and "0.250x" in md and "+4.00 ± " in md


def test_no_hrrformer_block_without_softmax(tmp_path):
    run = tmp_path / "run"
    run_dir = RunDir.create(run, {"kind": "accuracy", "machine": MACHINE_A})
    run_dir.append(AccuracyRecord(impl="hrr_torch", task="listops", status="ok",
                                  test_accuracy=0.3, best_val_accuracy=0.3,
                                  examples_per_s=10.0, peak_mem_bytes=2**20))
    md = (render_report([run], tmp_path / "report") / "report.md").read_text()
    assert "Hrrformer comparison" not in md
    assert "30.00 (n=1)" in md


def test_lra_average_panel_and_per_seed_spread(tmp_path):
    run = write_run(tmp_path / "run", tasks=LRA_TASKS)
    from harness.report.data import load

    frame = load([run]).accuracy
    summary = lra.accuracy_summary(frame).set_index(["model", "task"])
    avg = summary.loc[("hrr_torch", lra.AVG)]
    assert avg["n"] == 3 and avg["mean"] == pytest.approx(40.0)
    assert avg["status"] == "over all 5 LRA tasks"
    points = lra.speed_points(frame)
    average = points[points["task"] == lra.AVG].set_index("impl")
    assert average.loc["hrr_torch", "examples_per_s"] == pytest.approx(330.0)
    out = render_report([run], tmp_path / "report")
    assert (out / "figures" / "accuracy_speed_memory.png").exists()
    block = pd.read_csv(out / "tables" / "hrrformer.csv")
    assert list(block["task"]) == ["ListOps", "Text", "Retrieval", "Image", "Path", "Avg"]


def test_tuning_table_shows_grid_and_choice(tmp_path):
    tuning = {"grid": {"lr": [0.001, 0.003]}, "chosen": {"lr": 0.003},
              "trials": [{"setting": {"lr": 0.001}, "status": "ok"},
                         {"setting": {"lr": 0.003}, "status": "ok"}]}
    out = render_report([write_run(tmp_path / "run", tuning=tuning)], tmp_path / "report")
    table = pd.read_csv(out / "tables" / "tuning.csv")
    assert set(table["grid"]) == {"lr=0.001,0.003"} and set(table["chosen"]) == {"lr=0.003"}
    assert set(table["trials_ok"]) == {"2/2"}
    assert "Every implementation used the same grid." in (out / "report.md").read_text()
