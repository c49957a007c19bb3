"""The report's energy: the figure of energy per token beside time, the energy columns of the
point table, the headline comparison, and the reason when no point has energy."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from harness.contract.escape import md_text
from report_fixtures import ENERGY_WATTS, SHORT_WINDOW, make_energy_run

from harness.report import findings, render_report
from harness.report.data import load


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory):
    return make_energy_run(tmp_path_factory.mktemp("energy") / "run")


def test_energy_figure_table_and_points_columns(energy_run, tmp_path):
    out = render_report([energy_run], tmp_path / "rep")
    png = out / "figures" / "energy_vs_seq_len.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## Energy per token" in md
    # the point not drawn, and why (as markdown writes it: '<' as an entity)
    assert md_text(SHORT_WINDOW) in md and "&lt; 2 updates" in md
    points = list(csv.DictReader(io.StringIO((out / "tables" / "points.csv").read_text())))
    by_key = {(r["impl"], int(r["seq_len"])): r for r in points}
    soft = by_key[("softmax_torch", 1024)]
    assert float(soft["mean_power_w"]) == ENERGY_WATTS["softmax_torch"]
    assert float(soft["energy_j_per_call"]) == pytest.approx(300.0 * 2e-3)
    assert soft["energy_source"] == "nvml_total_energy"
    short = by_key[("hrr_torch", 256)]
    assert short["energy_j_per_call"] == "" and short["energy_reason"] == SHORT_WINDOW
    table = csv.DictReader(io.StringIO((out / "tables" / "energy_uj_per_token.csv").read_text()))
    (row,) = [r for r in table if r["impl"] == "hrr_torch"]
    assert row["T=256"] == "n/a"
    assert float(row["T=1024"]) == pytest.approx(200.0 * 6e-4 / 1024 * 1e6, rel=5e-3)   # 3 digits


def test_headline_states_the_energy_ratio_beside_the_speed_ratio(energy_run, tmp_path):
    results = load([energy_run])
    items = findings.headline(results.speed, "softmax_torch", pd.DataFrame())
    (line,) = [i for i in items if "hrr_torch is" in i]
    # T=1024: hrr 0.6 ms at 200 W against softmax 2 ms at 300 W: 5x less energy per token
    assert "faster than softmax_torch" in line
    assert "5.0x less energy per token than softmax_torch" in line


def test_energy_comparison_needs_a_difference_beyond_the_counters_bound():
    base = pd.Series({"energy_j_per_token": 1.0e-6, "energy_error_max": 0.1})
    near = pd.Series({"energy_j_per_token": 0.85e-6, "energy_error_max": 0.1})
    assert findings.energy_comparison(near, base, "b").startswith("about the same")
    far = pd.Series({"energy_j_per_token": 0.5e-6, "energy_error_max": 0.1})
    assert findings.energy_comparison(far, base, "b").startswith("2.0x less energy")
    assert findings.energy_comparison(pd.Series({"energy_j_per_token": None}), base, "b") == ""


def test_no_energy_anywhere_says_why_and_draws_no_figure(tmp_path):
    import json

    run = make_energy_run(tmp_path / "run")
    reason = ("RAPL not readable: /sys/class/powercap absent (a virtual machine or container "
              "usually hides it)")
    lines = []
    for line in (run / "results.jsonl").read_text().splitlines():
        data = json.loads(line)
        for name in ("energy_j_per_call", "energy_j_per_token", "mean_power_w",
                     "energy_error_max", "energy_source"):
            data[name] = None if name != "energy_source" else ""
        data["energy_reason"] = reason
        lines.append(json.dumps(data))
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    out = render_report([run], tmp_path / "rep")
    assert not (out / "figures" / "energy_vs_seq_len.png").exists()
    md = (out / "report.md").read_text()
    assert "Energy per call not measured: no energy counter on this machine: RAPL not " \
           "readable" in md
    assert "(6 of 6 ok points)" in md
