"""``run_bench.py report``: render the report of one or more run directories."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run directories (several: compared with each other; the first "
                             "is the reference)")
    parser.add_argument("--out", metavar="DIR",
                        help="report directory (default reports/<name from the run dirs>)")
    parser.add_argument("--baseline", metavar="IMPL",
                        help="implementation the speedup and memory ratios are relative to "
                             "(default softmax_torch if present, else sdpa_math)")
    parser.add_argument("--measure-peaks", action="store_true",
                        help="measure this machine's peaks once more and add them to each "
                             "run's run.json (role 'report') before rendering: the run's peak "
                             "is the best of its measurements. Only on the machine that made "
                             "the runs (refused when the hardware id differs)")


def run(args: argparse.Namespace) -> int:
    from harness.report import render_report
    from harness.store.run_dir import TruncatedLineWarning

    if args.measure_peaks:
        measure_peaks_again([Path(p) for p in args.runs])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = render_report([Path(p) for p in args.runs],
                            Path(args.out) if args.out else None, args.baseline)
    for warning in caught:
        if issubclass(warning.category, TruncatedLineWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    print(f"report: {out / 'report.md'}  (also report.html, figures/, tables/)")
    return 0


def measure_peaks_again(paths: list[Path]) -> None:
    """One more peaks measurement (role 'report') of each device of each run, added to its
    run.json. Peaks of another machine say nothing about this one's runs: a run whose hardware
    id differs from this machine's is refused before anything is measured."""
    from harness.errors import UsageError
    from harness.metrics import peaks as peaks_mod
    from harness.grid.settings import RunSettings
    from harness.measure.runner import make_executor
    from harness.store.hardware import fingerprint
    from harness.store.run_dir import acquire_lock, open_run, release_lock

    here = fingerprint()["hardware_id"]
    runs = [open_run(p) for p in paths]
    for run in runs:
        meta = run.metadata()
        made_on = (meta.get("machine") or {}).get("hardware_id")
        if made_on == "mixed":
            machines = ", ".join(sorted(meta.get("machines") or {})) or "several machines"
            raise UsageError(f"--measure-peaks: {run.path} is a merge of records from "
                             f"{machines}; measure the peaks again in each machine's own run "
                             "(on that machine), then merge those runs again")
        if made_on != here:
            raise UsageError(f"--measure-peaks: {run.path} was made on hardware {made_on!r}, "
                             f"this machine is {here!r}; its peaks can only be measured again "
                             "on the machine that ran it")
    settings = RunSettings()
    executor = make_executor(settings.isolate)
    try:
        for run in runs:
            meta = run.metadata()
            by_device = meta.get("peaks_by_device") or (
                {meta["peaks"].get("device", "cpu"): meta["peaks"]} if meta.get("peaks") else {})
            by_device = {d: p for d, p in by_device.items() if peaks_mod.measurements(p)}
            if not by_device:
                print(f"{run.path}: no measured peaks in run.json; nothing to measure again")
                continue

            def measure(device: str):
                print(f"measuring the peaks of {device} again for {run.path} ...")
                return executor.run("peaks", device, "report", settings.worker_context(),
                                    timeout=settings.probe_timeout_s, key=("peaks", device))

            again = peaks_mod.measure_again(by_device, measure, "report")
            acquire_lock(run.path)   # one writer per run directory
            try:
                run.update_metadata(**peaks_mod.peaks_metadata(again))
            finally:
                release_lock(run.path)
    finally:
        executor.close()
