"""The default sweep's points against the peaks measured on this machine: bytes moved and % of
peak in every ok record (over the peaks run.json holds), peaks in run.json, the roofline in the
report."""

from __future__ import annotations

import json

import pytest

from cli_helpers import read_records, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick preset's CPU points at its shortest T (both passes, every implementation
    available here), with the real peaks measured by the run itself."""
    out = tmp_path_factory.mktemp("roofline") / "run"
    done = run_cli("sweep", "--preset", "quick", "--device", "cpu", "--seq-len", "512",
                   "--min-time", "0.05", "--max-repeats", "3", "--out", str(out),
                   "--no-report", timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_run_json_holds_measured_cpu_peaks(quick_run):
    meta = json.loads((quick_run / "run.json").read_text())
    peaks = meta["peaks"]
    # measured at the start and at the end of the run, each until it held or its time cap,
    # with the threads the points use; the run's peak is the best of them
    measurements = peaks["measurements"]
    assert [m["role"] for m in measurements] == ["start", "end"]
    records = [r for r in read_records(quick_run) if r["status"] == "ok"]
    for m in measurements:
        assert m["started_at"] <= m["ended_at"]
        assert {r["threads"] for r in records} == {m["threads"]}
        gemm = m["matmul_flops_per_s"]["float32"]
        assert len(gemm["samples_s"]) >= 5 and isinstance(gemm["stable"], bool)
        assert gemm["value"] <= peaks["matmul_flops_per_s"]["float32"]["value"]
    assert peaks["matmul_flops_per_s"]["float32"]["source"] == "measured"
    assert peaks["matmul_flops_per_s"]["float32"]["value"] > 1e8
    assert peaks["memory_bytes_per_s"]["source"] == "measured"
    assert peaks["memory_bytes_per_s"]["value"] > 1e8
    assert "table" not in peaks                       # no GPU here
    assert meta["matmul_precision"]["torch"]["float32_matmul_precision"]
    # cached under the results folder (the run directory's parent) for --reuse-peaks
    assert list((quick_run.parent / ".peaks").glob("*-cpu.json"))


def test_every_ok_record_has_bytes_moved_and_its_percentages_of_the_start_peaks(quick_run):
    """Each ok record's % of peak is its achieved rate over the peak known when it was written
    (the start measurement), and a record above 100% of it carries the mark naming that
    measurement. Whether any point goes above depends on the machine keeping as quiet while
    the points run as while the peaks were measured: the harness marks it, a test on a shared
    machine cannot assert it does not happen."""
    peaks = json.loads((quick_run / "run.json").read_text())["peaks"]
    start = peaks["measurements"][0]
    bandwidth = start["memory_bytes_per_s"]["value"]
    records = [r for r in read_records(quick_run) if r["status"] == "ok"]
    assert {r["impl"] for r in records} >= {"softmax_torch", "sdpa_flash", "hrr_torch",
                                           "performer_torch"}
    for r in records:
        where = f"{r['impl']} {r['pass']}"
        assert r["bytes_moved"] > 0 and r["bytes_model"], where
        assert r["pct_peak_bandwidth"] == pytest.approx(
            100 * r["bytes_moved"] / r["time_s"] / bandwidth, rel=1e-6), where
        assert r["matmul_precision"], where
        assert r["l2_flush"].startswith("not flushed: CPU"), where
        assert r["peaks_against"].startswith("start measurement"), where
        if r["family"] == "exact":
            flops = start["matmul_flops_per_s"][r["dtype"]]["value"]
            assert r["pct_peak_flops"] == pytest.approx(
                100 * r["flops"] / r["time_s"] / flops, rel=1e-6), where
        else:
            assert r["pct_peak_flops"] is None, where
        over = max(r["pct_peak_bandwidth"], r["pct_peak_flops"] or 0) > 100
        assert bool(r["peak_under_measured"]) == over, where
        if over:
            assert "start measurement" in r["peak_under_measured"], where


def test_the_roofline_draws_no_unmarked_point_above_a_roof(quick_run):
    """The report's roofline, read from the figure's data: every point drawn as a result is
    under the run's best GEMM and copy ceilings; the rest are the hollow marked ones."""
    from harness.metrics.peaks import roofs
    from harness.report import figures, style
    from harness.report.data import load

    results = load([quick_run])
    speed = results.speed
    impls = sorted(set(speed["impl"]))
    run_peaks = results.runs[0].meta["peaks"]
    flop_roofs, bandwidth = roofs(run_peaks)
    fig = figures.roofline_figure(speed, impls, style.looks_for(impls), run_peaks)
    left, right = ({a.get_gid(): a for a in [*ax.collections, *ax.lines] if a.get_gid()}
                   for ax in fig.axes[:2])
    drawn = 0
    for gid, artist in left.items():
        if gid.startswith("points:"):
            for x, y in artist.get_offsets():
                assert y <= min(flop_roofs["float32"], x * bandwidth) * (1 + 1e-9), gid
                drawn += 1
    for gid, artist in right.items():
        if gid.startswith("points:"):
            for _, y in artist.get_offsets():
                assert y <= bandwidth * (1 + 1e-9), gid
                drawn += 1
    marked = sum(len(ax.get("under-measured").get_offsets()) if ax.get("under-measured")
                 else 0 for ax in (left, right))
    ok = speed[(speed["status"] == "ok") & speed["achieved_bytes_per_s"].notna()]
    exact = ok[(ok["family"] == "exact") & ok["flops"].notna()]
    assert drawn + marked == len(ok) + len(exact)   # every point drawn, once per panel


def test_report_has_the_roofline_and_percent_of_peak_tables(quick_run, tmp_path):
    done = run_cli("report", str(quick_run), "--out", str(tmp_path / "rep"))
    assert done.returncode == 0, done.stderr[-2000:]
    figures = tmp_path / "rep" / "figures"
    assert (figures / "roofline.png").stat().st_size > 0
    assert (figures / "roofline.pdf").stat().st_size > 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "figures/roofline.png" in text and "tables/pct_peak_bandwidth.csv" in text
    assert (tmp_path / "rep" / "tables" / "pct_peak_flops.csv").exists()


def test_reuse_peaks_takes_the_cached_values(quick_run):
    out = quick_run.parent / "again"
    done = run_cli("sweep", "--impl", "hrr_torch", "--device", "cpu", "--seq-len", "128",
                   "--pass", "fwd", "--min-time", "0.01", "--max-repeats", "3",
                   "--reuse-peaks", "--out", str(out), "--no-report")
    assert done.returncode == 0, done.stderr[-2000:]
    first = json.loads((quick_run / "run.json").read_text())["peaks"]
    second = json.loads((out / "run.json").read_text())["peaks"]
    assert second["cached_from"].endswith("-cpu.json")
    assert second["memory_bytes_per_s"]["value"] == first["memory_bytes_per_s"]["value"]
