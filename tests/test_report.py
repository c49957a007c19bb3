"""Reports from a real tiny sweep (plus marked synthetic failures): files, values, failures,
stable styling, determinism, multi-run pairing, accuracy tables, bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from pathlib import Path

import pandas as pd

from harness.report.tables import NOISY_MARK
import pytest
from cli_helpers import read_records
from report_fixtures import make_accuracy_run, make_second_run, make_speed_run

import harness
from harness.cli import main
from harness.contract.traits import SCALINGS, Traits
from harness.report import render_report, style
from harness.report.data import load
from harness.report.published import PUBLISHED_LRA
from harness.store.run_dir import TruncatedLineWarning


@pytest.fixture(scope="session")
def speed_run(tmp_path_factory) -> Path:
    return make_speed_run(tmp_path_factory.mktemp("report") / "run-a")


@pytest.fixture(scope="session")
def report(speed_run, tmp_path_factory) -> Path:
    return render_report([speed_run], tmp_path_factory.mktemp("out") / "rep")


def test_files_exist_and_are_valid(report):
    for name in ("report.md", "report.html"):
        assert (report / name).stat().st_size > 0
    for figure in ("time_vs_seq_len", "memory_vs_seq_len", "speedup", "memory_ratio", "tflops",
                   "failure_map"):
        assert (report / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (report / "figures" / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"
    for table in ("time_ms", "peak_memory_mib", "largest_seq_len", "scaling_exponents",
                  "failures", "points", "speedup_vs_softmax_torch"):
        rows = list(csv.DictReader(io.StringIO((report / "tables" / f"{table}.csv").read_text())))
        assert rows, table
        tex = (report / "tables" / f"{table}.tex").read_text()
        assert "\\begin{tabular}" in tex and "\\end{tabular}" in tex
        assert tex.count("\\\\") == len(rows) + 1  # header + one line per row
    html = (report / "report.html").read_text()
    # the energy figure is drawn where the machine has a readable counter (RAPL as root)
    energy = (report / "figures" / "energy_vs_seq_len.png").exists()
    assert html.count("data:image/png;base64,") == 6 + energy and "<img alt" in html
    assert "src=\"figures/" not in html   # self-contained


def test_table_values_equal_the_data(report, speed_run):
    table = pd.read_csv(report / "tables" / "time_ms.csv")
    ok = [r for r in read_records(speed_run) if r["status"] == "ok"]
    assert ok
    for r in ok:
        row = table[table["impl"] == r["impl"]].iloc[0]
        # a point the loaded test machine made noisy carries the mark after its value
        cell = str(row[f"T={r['seq_len']}"]).removesuffix(NOISY_MARK)
        assert float(cell) == pytest.approx(r["time_s"] * 1e3, rel=1e-3)
    points = pd.read_csv(report / "tables" / "points.csv")
    assert len(points) == len(read_records(speed_run))
    for r in ok:
        got = points[(points["impl"] == r["impl"]) & (points["seq_len"] == r["seq_len"])].iloc[0]
        assert got["time_s"] == r["time_s"] and got["peak_mem_bytes"] == r["peak_mem_bytes"]
    largest = pd.read_csv(report / "tables" / "largest_seq_len.csv").set_index("impl")
    assert largest.loc["hrr_torch", "largest_ok_seq_len"] == 2048
    assert largest.loc["softmax_torch", "largest_ok_seq_len"] == 1024
    assert largest.loc["softmax_torch", "first_failure"] == "oom at T=2048"
    speedup = pd.read_csv(report / "tables" / "speedup_vs_softmax_torch.csv").set_index("impl")
    base = {r["seq_len"]: r["time_s"] for r in ok if r["impl"] == "softmax_torch"}
    hrr = {r["seq_len"]: r["time_s"] for r in ok if r["impl"] == "hrr_torch"}
    cell = float(str(speedup.loc["hrr_torch", "T=512"]).removesuffix(NOISY_MARK))
    assert cell == pytest.approx(base[512] / hrr[512], rel=5e-3)  # 3 digits


def test_failures_appear_in_the_report(report):
    md = (report / "report.md").read_text()
    assert "SYNTHETIC (test fixture): out of memory" in md
    assert "timeout" in md and "skipped" in md
    assert "flash_attn: does not run on cpu" in md          # unsupported, with its reason
    assert "softmax_torch ran out of memory at T=2048" in md  # headline finding
    failures = pd.read_csv(report / "tables" / "failures.csv")
    assert set(failures["status"]) == {"oom", "timeout", "skipped"}
    assert "Not plotted: " in md and "flash_attn unsupported" in md


def test_two_renders_are_identical_and_colours_are_stable(report, speed_run, tmp_path):
    again = render_report([speed_run], tmp_path / "again")
    for path in sorted(p for p in report.rglob("*") if p.is_file()):
        assert (again / path.relative_to(report)).read_bytes() == path.read_bytes(), path
    assert style.looks_for(["hrr_torch", "my_impl"])["hrr_torch"] == \
        style.looks_for(["softmax_torch", "hrr_torch"])["hrr_torch"]
    assert style.looks_for(["zz", "my_impl"])["my_impl"] == style.looks_for(["my_impl"])["my_impl"]
    colors = [look.color for look in style.BUILTIN.values()]
    assert len(set(colors)) == len(colors)


def test_multi_run_pairs_the_right_points(speed_run, tmp_path):
    second = make_second_run(speed_run, tmp_path / "run-b")
    out = render_report([speed_run, second], tmp_path / "multi")
    table = pd.read_csv(out / "tables" / "run_comparison.csv")
    ok_a = [r for r in read_records(speed_run) if r["status"] == "ok"]
    expected = {(r["impl"], r["seq_len"]) for r in ok_a} - {("hrr_torch", 256)}
    assert {(r.impl, r.seq_len) for r in table.itertuples()} == expected
    assert (table["time_ratio"] == 2.0).all()
    assert set(table["hardware"]) == {"cpu-test-b"} and set(table["reference_hardware"]) == \
        {"cpu-test-a"}
    for name in ("runs_time", "runs_memory", "runs_ratio"):
        assert (out / "figures" / f"{name}.png").exists()
    assert (out / "figures" / "time_vs_seq_len__run-a.png").exists()
    assert "2.0x slower than run-a" in (out / "report.md").read_text()


def test_accuracy_table_next_to_published(tmp_path):
    run = make_accuracy_run(tmp_path / "acc")
    out = render_report([run], tmp_path / "acc-report")
    ours = pd.read_csv(out / "tables" / "accuracy.csv").set_index(["model", "task"])
    assert float(ours.loc[("softmax_torch", "listops"), "mean"]) == 40.0
    assert float(ours.loc[("hrr_torch", "text"), "mean"]) == 62.0
    assert ours.loc[("hrr_torch", "text"), "n"] == 1                  # one seed: no spread
    assert pd.isna(ours.loc[("hrr_torch", "text"), "std"])
    assert float(ours.loc[("hrr_torch", "Avg"), "mean"]) == pytest.approx((35 + 62) / 2)
    assert ours.loc[("softmax_jax", "listops"), "status"] == "unsupported"
    assert ours.loc[("softmax_torch", "Avg"), "status"] == "over 2 of 5 LRA tasks"
    published = pd.read_csv(out / "tables" / "accuracy_published.csv")
    assert set(published["source"]) == {"published"}
    assert list(published["model"]) == list(PUBLISHED_LRA)
    assert (out / "figures" / "accuracy_vs_training_time.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "published" in md and "Hrrformer, multi layer" in md
    assert "| 40.00 (n=1) |" in md                    # single-seed cells say n=1
    assert "cannot be trained here" in md


def test_truncated_last_line_is_skipped_with_a_warning(speed_run, tmp_path):
    copy = tmp_path / "trunc"
    shutil.copytree(speed_run, copy)
    with open(copy / "results.jsonl", "a") as handle:
        handle.write('{"impl": "softmax_torch", "seq_')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = load([copy])
    assert any(issubclass(w.category, TruncatedLineWarning) for w in caught) or results.warnings
    assert "last line" in results.warnings[0]
    assert len(results.speed) == len(read_records(speed_run))


@pytest.mark.parametrize("setup,expected", [
    ("missing", "does not exist"),
    ("empty", "is empty or not a run directory"),
    ("no-records", "holds no records"),
    ("newer", "newer than this attnbench understands"),
    ("baseline", "--baseline nope: no successful points"),
])
def test_bad_input_is_one_line_exit_2(setup, expected, speed_run, tmp_path, capsys):
    run = tmp_path / setup
    if setup == "empty":
        run.mkdir()
    elif setup == "no-records":
        run.mkdir()
        shutil.copy(speed_run / "run.json", run)
        (run / "results.jsonl").write_text("")
    elif setup in ("newer", "baseline"):
        shutil.copytree(speed_run, run)
        if setup == "newer":
            text = (run / "results.jsonl").read_text().replace('"schema_version": 1',
                                                               '"schema_version": 99')
            (run / "results.jsonl").write_text(text)
    extra = ["--baseline", "nope"] if setup == "baseline" else []
    assert main(["report", str(run), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_fidelity_of_approximate_methods_is_reported(report, speed_run):
    expected = {(r["impl"], r["seq_len"]): r["deviation_from_softmax"]
                for r in read_records(speed_run)
                if r["status"] == "ok" and r.get("deviation_from_softmax") is not None}
    assert {impl for impl, _ in expected} == {"hrr_torch", "performer_torch"}
    table = pd.read_csv(report / "tables" / "deviation_from_softmax.csv").set_index("impl")
    for (impl, t), value in expected.items():
        assert float(table.loc[impl, f"T={t}"]) == pytest.approx(value, rel=2e-3)
    md = (report / "report.md").read_text()
    assert "hrr_torch: its output deviates from exact softmax attention" in md


def _renamed_copy(speed_run: Path, path: Path, names: dict[str, str]) -> Path:
    """The fixture run with only the implementations in ``names``, each recorded under its new
    name (SYNTHETIC: a plug-in's records without running one)."""
    path.mkdir(parents=True)
    shutil.copy(speed_run / "run.json", path / "run.json")
    lines = []
    for line in (speed_run / "results.jsonl").read_text().splitlines():
        data = json.loads(line)
        if data["impl"] in names:
            data["impl"] = names[data["impl"]]
            lines.append(json.dumps(data))
    (path / "results.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def plugins():
    """Two plug-in methods registered for one test: one declaring its traits (tiled memory,
    the most preferred baseline), one declaring none."""
    from harness.contract.registry import REGISTRY, Capabilities, Implementation

    added = {"plug_tiled": Traits(memory="tiled", baseline=-1), "plug_silent": Traits()}
    for name, traits in added.items():
        REGISTRY.add(Implementation(name, "torch", "exact", Capabilities(),
                                    fn=lambda q, k, v, **kw: q, traits=traits))
    try:
        yield added
    finally:
        for name in added:
            REGISTRY._impls.pop(name, None)


def test_declared_traits_give_the_claims_and_the_baseline(plugins, speed_run, tmp_path):
    run = _renamed_copy(speed_run, tmp_path / "plug", {
        "softmax_torch": "plug_tiled", "hrr_torch": "plug_silent",
        "performer_torch": "plug_unloaded", "flash_attn": "softmax_torch"})
    out = render_report([run], tmp_path / "plug-report")
    scaling = pd.read_csv(out / "tables" / "scaling_exponents.csv").set_index("impl")
    tiled = SCALINGS["tiled"]
    assert scaling.loc["plug_tiled", "time_theory"] == tiled.time_exponent
    assert scaling.loc["plug_tiled", "memory_theory"] == tiled.memory_exponent
    assert scaling.loc["plug_tiled", "basis"] == tiled.basis
    assert pd.isna(scaling.loc["plug_silent", "memory_theory"])
    assert "not declared" in scaling.loc["plug_silent", "basis"]
    assert pd.isna(scaling.loc["plug_unloaded", "memory_theory"])
    assert "--impl-module" in scaling.loc["plug_unloaded", "basis"]
    md = (out / "report.md").read_text()
    assert f"plug_tiled: {tiled.summary}" in md
    assert "plug_silent: memory scaling not declared" in md
    # the declared preference picks the baseline (softmax_torch's records here are unsupported)
    assert (out / "tables" / "speedup_vs_plug_tiled.csv").exists()
    assert "Relative to the baseline (plug_tiled)" in md


def test_baseline_follows_the_declared_preference(speed_run, tmp_path):
    from harness.report import claims

    traits = {"a": Traits(baseline=2), "b": Traits(baseline=0), "c": Traits(),
              "d": Traits(baseline=0)}
    order = ["d", "c", "b", "a"]
    assert claims.baseline_candidates(traits, order) == ["d", "b", "a"]
    assert claims.default_baseline({"a", "b", "c"}, traits, order) == "b"
    assert claims.default_baseline({"a", "c"}, traits, order) == "a"
    assert claims.default_baseline({"c"}, traits, order) is None
    # the built-ins: softmax_torch first, then sdpa_math
    registered = claims.registered_traits()
    assert claims.baseline_candidates(registered, harness.names())[:2] == ["softmax_torch",
                                                                            "sdpa_math"]
    # the Hrrformer comparison takes the first HRR method registered and the preferred baseline
    from harness.report.lra import pick_pair

    assert pick_pair(["hrr_jax", "hrr_torch", "sdpa_math", "softmax_jax"],
                     claims.registered_families(), registered, harness.names()) == \
        ("hrr_torch", "sdpa_math")
    run = _renamed_copy(speed_run, tmp_path / "none", {"hrr_torch": "hrr_torch"})
    out = render_report([run], tmp_path / "none-report")
    md = (out / "report.md").read_text()
    assert "No baseline: no implementation declared as one (softmax_torch, sdpa_math" in md


def test_every_builtin_declares_its_memory_scaling():
    builtins = [impl for impl in harness.all_implementations()
                if impl.module.startswith("implementations.")]
    assert len(builtins) >= 10
    for impl in builtins:
        assert impl.traits.memory in SCALINGS, impl.name


def test_traits_are_checked_when_declared():
    with pytest.raises(ValueError, match="memory trait"):
        Traits(memory="quadratic")
    with pytest.raises(ValueError, match="baseline trait"):
        Traits(baseline=True)


def test_plug_in_looks_are_dashed_by_framework_not_by_name():
    looks = style.looks_for(["mine", "mine_jax"], {"mine": "jax", "mine_jax": "torch"})
    assert looks["mine"].linestyle == "--" and looks["mine_jax"].linestyle == "-"


def test_scaling_exponents_of_a_fixed_token_sweep_are_per_sequence():
    """The paper and quick (CUDA) presets keep B*T fixed, and the report draws each such sweep
    as one group: exact attention there takes B*T^2 = tokens*T time, a linear method B*T =
    tokens. The claimed exponents are per sequence (at one B), so the fit is of time and
    memory per sequence: 2 and 1, not 1 and 0 (which would read as 'not as claimed')."""
    from harness.contract.registry import REGISTRY
    from harness.report import claims, tables
    from harness.report import data as report_data

    tokens = 16 * 1024
    rows = []
    for impl, power in (("softmax_torch", 2), ("performer_torch", 1)):
        for t in (512, 1024, 2048, 4096, 8192, 16384):
            b = tokens // t
            rows.append(dict(run="r", impl=impl, family=REGISTRY.get(impl).family, device="cpu", dtype="float32", batch=b,
                heads=4, head_dim=64, seq_len=t, causal=False, status="ok", timer="perf_counter",
                time_s=1e-9 * b * t ** power, peak_mem_bytes=b * t ** power,
                time_samples_s=[1e-9 * b * t ** power] * 3, **{"pass": "forward"}))
    speed = report_data.tidy_speed(rows)
    assert speed["group"].nunique() == 1 and "B*T=16384" in speed["group"].iloc[0]
    table = tables.scaling(speed, claims.registered_traits()).set_index("impl")
    assert table.loc["softmax_torch", "time_exponent"] == pytest.approx(2, abs=0.01)
    assert table.loc["softmax_torch", "memory_exponent"] == pytest.approx(2, abs=0.01)
    assert table.loc["performer_torch", "time_exponent"] == pytest.approx(1, abs=0.01)
    assert table.loc["performer_torch", "memory_exponent"] == pytest.approx(1, abs=0.01)


def test_a_fixed_token_group_keeps_its_workloads_apart():
    """Two workloads at the same B*T (here a sliding window and none) are two groups, each
    labelled with its own workload, as they are at a fixed batch."""
    from harness.contract.registry import REGISTRY
    from harness.report import data as report_data

    rows = []
    for window in (None, 256):
        for t in (1024, 4096, 16384):
            rows.append(dict(run="r", impl="softmax_torch",
                             family=REGISTRY.get("softmax_torch").family, device="cpu",
                             dtype="float32", batch=16384 // t, heads=4, head_dim=64,
                             seq_len=t, causal=True, status="ok",
                             timer="perf_counter", time_s=1e-3, peak_mem_bytes=1,
                             time_samples_s=[1e-3] * 3, **{"pass": "forward"},
                             **({"window": window} if window else {})))
    speed = report_data.tidy_speed(rows)
    groups = {window: sub["group"].unique() for window, sub in
              speed.groupby(speed["window"] == 256)}
    assert len(groups[False]) == 1 and len(groups[True]) == 1
    assert "B*T=16384" in groups[False][0] and "window" not in groups[False][0]
    assert "B*T=16384" in groups[True][0] and "window=256" in groups[True][0]


# -- peaks: points above 100% are marked in the record, the tables and the roofline -------------
def _fake_peaks_run(tmp_path, run_peaks, time_s):
    """One softmax_torch and one hrr_torch point through the Runner with a fake executor (each
    call ``time_s``) against ``run_peaks`` (device -> run.json's peaks)."""
    from harness.contract.records import Point, TimingResult
    from harness.grid.settings import RunSettings
    from harness.measure.runner import Runner
    from harness.metrics.peaks import peaks_metadata
    from harness.store.run_dir import RunDir
    from fake_executor import PassingExecutor

    def timing(_args):
        return TimingResult(time_samples_s=[time_s] * 3, time_s=time_s, time_iqr_s=0.0,
                            time_min_s=time_s, timer="perf_counter")

    run_dir = RunDir.create(tmp_path / "run", {"kind": "speed", **peaks_metadata(run_peaks)})
    runner = Runner(run_dir, RunSettings(), executor=PassingExecutor(timing), peaks=run_peaks)
    summary = runner.run([Point(impl="softmax_torch", seq_len=1024, head_dim=64),
                          Point(impl="hrr_torch", seq_len=1024, head_dim=64)])
    run_dir.release()
    return run_dir.path, {r.impl: r for r in summary.records}


def _roofline_data(fig):
    """(left, right) axes: gid -> artist for the points and the roofs."""
    out = []
    for ax in fig.axes[:2]:
        artists = {a.get_gid(): a for a in [*ax.collections, *ax.lines] if a.get_gid()}
        out.append(artists)
    return out


def _assert_no_unmarked_point_above_a_roof(fig, flop_roof, bandwidth):
    left, right = _roofline_data(fig)
    for gid, artist in left.items():
        if gid.startswith("points:"):
            for x, y in artist.get_offsets():
                assert y <= min(flop_roof, x * bandwidth) * (1 + 1e-9), gid
    for gid, artist in right.items():
        if gid.startswith("points:"):
            for _, y in artist.get_offsets():
                assert y <= bandwidth * (1 + 1e-9), gid


def test_a_point_above_the_peak_is_marked_in_record_tables_and_roofline(tmp_path):
    from harness.metrics import peaks as peaks_mod
    from harness.report import figures, style as style_mod
    from harness.report.peak_marks import MARK

    start = {"role": "start", "started_at": "2025-01-01T10:00:00", "threads": 2,
             "matmul_flops_per_s": {"float32": {"value": 1e9}},
             "memory_bytes_per_s": {"value": 1e9}}
    run_peaks = {"cpu": peaks_mod.add_measurement({}, start)}
    path, records = _fake_peaks_run(tmp_path, run_peaks, time_s=1e-3)
    softmax, hrr = records["softmax_torch"], records["hrr_torch"]
    # the record: above 100% of the start's GEMM peak, and says which measurement it beat
    assert softmax.pct_peak_flops > 100
    assert "float32 GEMM" in softmax.peak_under_measured
    assert "start measurement (2025-01-01T10:00:00)" in softmax.peak_under_measured
    assert softmax.peaks_against == "start measurement (2025-01-01T10:00:00)"
    assert hrr.pct_peak_flops is None and hrr.peaks_against   # no FLOPs: no GEMM mark
    raw = read_records(path)
    assert all("peak_under_measured" in r and r["peaks_against"] for r in raw)

    # the report: tables and points.csv carry the mark
    rep = render_report([path], tmp_path / "rep")
    flops_table = (rep / "tables" / "pct_peak_flops.csv").read_text()
    assert f"({MARK})" in flops_table
    points = pd.read_csv(rep / "tables" / "points.csv")
    row = points[points["impl"] == "softmax_torch"].iloc[0]
    assert "float32 GEMM" in row["peak_under_measured"]
    assert MARK.capitalize() in (rep / "report.md").read_text()

    # the roofline: the marked point is drawn apart, hollow, with its legend entry
    results = load([path])
    impls = sorted(set(results.speed["impl"]))
    fig = figures.roofline_figure(results.speed, impls, style_mod.looks_for(impls),
                                  results.runs[0].meta["peaks"])
    left, right = _roofline_data(fig)
    assert "points:softmax_torch" not in left and "under-measured" in left
    hollow = left["under-measured"]
    assert len(hollow.get_offsets()) == 1 and hollow.get_facecolors().size == 0
    assert MARK in [t.get_text() for t in fig.legends[0].get_texts()]
    _assert_no_unmarked_point_above_a_roof(fig, 1e9, 1e9)


def test_the_report_takes_percent_of_peak_against_the_runs_best_measurement(tmp_path):
    """Records written against a low start peak; the end measurement is higher: the report's %
    is against the best, and a point under it is neither marked nor drawn apart."""
    from harness.metrics import peaks as peaks_mod
    from harness.report import figures, style as style_mod
    from harness.store.run_dir import RunDir

    low = {"role": "start", "matmul_flops_per_s": {"float32": {"value": 1e9}},
           "memory_bytes_per_s": {"value": 1e13}}
    path, records = _fake_peaks_run(tmp_path, {"cpu": peaks_mod.add_measurement({}, low)},
                                    time_s=1e-3)
    assert records["softmax_torch"].peak_under_measured      # against the start
    flops_rate = records["softmax_torch"].flops / 1e-3
    high = {**low, "role": "end", "matmul_flops_per_s": {"float32": {"value": 2 * flops_rate}}}
    run = RunDir(path)
    run.update_metadata(peaks=peaks_mod.add_measurement(run.metadata()["peaks"], high, "end"))
    results = load([path])
    row = results.speed[results.speed["impl"] == "softmax_torch"].iloc[0]
    assert row["pct_peak_flops"] == pytest.approx(50.0)
    assert row["peak_under_measured"] == ""
    impls = sorted(set(results.speed["impl"]))
    fig = figures.roofline_figure(results.speed, impls, style_mod.looks_for(impls),
                                  results.runs[0].meta["peaks"])
    left, _ = _roofline_data(fig)
    assert "points:softmax_torch" in left and "under-measured" not in left
    _assert_no_unmarked_point_above_a_roof(fig, 2 * flops_rate, 1e13)


def test_the_roofline_draws_the_data_sheet_beside_the_measured_ceilings_on_a_gpu(tmp_path):
    """A GPU run (peaks with the data sheet's table, a fake: no GPU here): both ceilings drawn,
    the peaks table lists both."""
    from harness.metrics import peaks as peaks_mod
    from harness.report import figures, style as style_mod
    from harness.report.render import peaks_table

    measured = {"role": "start", "matmul_flops_per_s": {"float32": {"value": 1e9}},
                "memory_bytes_per_s": {"value": 1e11}}
    with_sheet = peaks_mod.with_table(peaks_mod.add_measurement({}, measured),
                                      "NVIDIA H100 80GB HBM3")
    path, _ = _fake_peaks_run(tmp_path, {"cpu": with_sheet}, time_s=1e-3)
    results = load([path])
    impls = sorted(set(results.speed["impl"]))
    fig = figures.roofline_figure(results.speed, impls, style_mod.looks_for(impls),
                                  results.runs[0].meta["peaks"])
    left, right = _roofline_data(fig)
    assert {"roof:float32", "datasheet:float32"} <= set(left)
    assert {"roof:copy", "datasheet:copy"} <= set(right)
    table = peaks_table(results)
    assert {"measured", "table"} <= set(table["source"])
