"""``run_bench.py compare BASELINE CURRENT``: two runs judged point by point.

Exit status, as ``ab``'s (harness.verdicts.words): 0 no row fails, 1 a row is ``slower``,
``newly failing`` or of a class ``--fail-on`` added, 2 bad input. The rules are in
``harness/verdicts/compare.py``; this module reads the run directories, checks the hardware,
prints the table and writes it as ``compare.md`` and ``compare.csv``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.verdicts import compare as logic
from harness.verdicts import writers
from harness.verdicts.words import (
    FAIL_ON_HELP,
    NOT_COMPARABLE,
    ONLY_BASELINE,
    ONLY_CURRENT,
    exit_status,
    parse_fail_on,
    rule_line,
)
from harness.console import format_bytes, make_console
from harness.errors import UsageError
from harness.store.hardware import hardware_summary
from harness.contract.records import (
    NUMERIC_SPEED_METRICS,
    STATUSES,
    SpeedRecord,
    invalid_numbers,
)
from harness.store.run_dir import TruncatedLineWarning, open_run
from harness.contract.parsers import parse_bytes

REQUIRED_FIELDS = ("impl", "device", "batch", "heads", "seq_len", "head_dim", "dtype", "causal",
                   "pass", "status")
TITLE = "attnbench compare"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE", help="run directory of the baseline")
    parser.add_argument("current", metavar="CURRENT", help="run directory to check")
    parser.add_argument("--threshold", default="10%",
                        help="smallest change that counts, e.g. 10%% or 0.1 (default 10%%)")
    parser.add_argument("--metric", default="time", choices=logic.METRICS,
                        help="time (median of the samples), memory (peak_mem_bytes) or both")
    parser.add_argument("--relative-to", metavar="IMPL",
                        help="divide every time by IMPL's time at the same configuration in the "
                             "same run (machine speed cancels out)")
    hardware = parser.add_mutually_exclusive_group()
    hardware.add_argument("--same-hardware", dest="any_hardware", action="store_false",
                          help="refuse runs from different hardware (the default)")
    hardware.add_argument("--any-hardware", dest="any_hardware", action="store_true",
                          help="compare runs from different hardware (use with --relative-to)")
    parser.set_defaults(any_hardware=False)
    parser.add_argument("--statistic", default="median",
                        help="summary of each point's time samples: median (default), mean, min "
                             "or a percentile such as p25")
    parser.add_argument("--confidence", type=float, default=logic.DEFAULT_CONFIDENCE,
                        help="bootstrap interval of the ratio (default 0.95)")
    parser.add_argument("--mem-floor", default="1MiB",
                        help="smallest memory change that counts, whatever the threshold "
                             "(default 1MiB)")
    parser.add_argument("--fail-on", metavar="CLASSES", help=FAIL_ON_HELP)
    parser.add_argument("--out", metavar="DIR",
                        help="where compare.md and compare.csv go (default CURRENT/compare)")


@dataclass
class LoadedRun:
    path: Path
    metadata: dict[str, Any]
    records: list[SpeedRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def machine(self) -> str:
        machine = self.metadata.get("machine") or {}
        return hardware_summary(machine) if machine.get("cpu_model") else "an unrecorded machine"


def load_run(path: str | Path, label: str) -> LoadedRun:
    """Speed records of a run directory, refusing malformed ones with a one-line UsageError."""
    run = open_run(path)
    metadata = run.metadata() if run.run_path.exists() else {}
    loaded = LoadedRun(run.path, metadata)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncatedLineWarning)
        for number, data in enumerate(run.raw_records(), 1):
            if not isinstance(data, dict):
                raise UsageError(f"{label} {run.results_path}: record {number} is not an object")
            if data.get("kind", "speed") != "speed":
                continue
            loaded.records.append(_speed_record(data, f"{label} {run.results_path} record "
                                                      f"{number}"))
    loaded.warnings = [str(w.message) for w in caught
                       if issubclass(w.category, TruncatedLineWarning)]
    repeated = run.duplicate_ok_points()
    if repeated:   # rounds concatenated on purpose, or a second writer: never silently
        loaded.warnings.append(
            f"{label} {run.results_path}: {len(repeated)} point(s) have more than one ok record "
            f"(up to {max(repeated.values())}); they are compared as rounds (docs/regression.md)")
    if not loaded.records:
        raise UsageError(f"{label} {run.path}: no speed records to compare")
    return loaded


def _speed_record(data: dict[str, Any], where: str) -> SpeedRecord:
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise UsageError(f"{where} is malformed: missing field {', '.join(missing)}")
    try:
        record = SpeedRecord.from_json(data)
        point = record.point
        if not isinstance(point.seq_len, int) or not isinstance(point.head_dim, int):
            raise ValueError("seq_len and head_dim must be integers")
        if record.status not in STATUSES:
            raise ValueError(f"status {record.status!r} not in {STATUSES}")
        if not isinstance(record.time_samples_s, list) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool)
                for s in record.time_samples_s):
            raise ValueError("time_samples_s must be a list of numbers")
        for name in NUMERIC_SPEED_METRICS:
            value = getattr(record, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise ValueError(f"{name} must be a number")
        logic.samples_of(record)
        problem = invalid_numbers(data)
        if problem:
            raise ValueError(problem)
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UsageError(f"{where} is malformed: {reason}") from None
    return record


def run(args: argparse.Namespace) -> int:
    console = make_console()
    settings = logic.Settings(threshold=logic.parse_threshold(args.threshold),
                              metric=args.metric, relative_to=args.relative_to,
                              confidence=args.confidence,
                              mem_floor=parse_mem_floor(args.mem_floor),
                              fail_on=parse_fail_on(args.fail_on),
                              statistic=args.statistic)
    base = load_run(args.baseline, "baseline")
    cur = load_run(args.current, "current")
    for message in base.warnings + cur.warnings:
        print(f"warning: {message}", file=sys.stderr)
    base_ids = logic.hardware_ids(base.metadata, base.records)
    cur_ids = logic.hardware_ids(cur.metadata, cur.records)
    hardware_note = ""
    if not logic.same_hardware(base_ids, cur_ids):
        names = (f"baseline ran on {base.machine} (hardware_id {', '.join(sorted(base_ids))}), "
                 f"current on {cur.machine} (hardware_id {', '.join(sorted(cur_ids))})")
        if not args.any_hardware:
            raise UsageError(f"different hardware: {names}; pass --any-hardware to compare "
                             f"anyway (with --relative-to IMPL to cancel the machine's speed)")
        hardware_note = f"different hardware, compared anyway (--any-hardware): {names}"
    result = logic.compare_records(base.records, cur.records, settings)
    refuse_nothing_compared(result.rows, args.baseline, args.current)

    header = comparison_header(base, cur, settings, hardware_note)
    bases = logic.run_bases(base.records), logic.run_bases(cur.records)
    if bases[0] and bases[1] and bases[0] != bases[1]:
        warning = (f"warning: the runs' timing bases differ (baseline "
                   f"{', '.join(sorted(bases[0]))}; current {', '.join(sorted(bases[1]))}): "
                   f"times on different bases are not compared (verdict "
                   f"'{NOT_COMPARABLE}')")
        header.append(warning)
        print(warning, file=sys.stderr)
    for line in header:
        console.print(line, highlight=False)
    console.print(writers.rich_table(result.rows, "changes (current vs baseline)"))
    console.print(writers.summary_line(result.rows), highlight=False)
    write_outputs(result, header, args, cur.path, console)
    return exit_status(row.fails for row in result.rows)


def refuse_nothing_compared(rows: list[Any], baseline: Any, current: Any) -> None:
    """UsageError when no point is in both runs: a comparison of unrelated runs (another grid,
    the wrong directory) would otherwise pass a CI gate having judged nothing."""
    if not rows or any(row.verdict not in (ONLY_BASELINE, ONLY_CURRENT) for row in rows):
        return
    only_base = sum(row.verdict == ONLY_BASELINE for row in rows)
    raise UsageError(f"{baseline} and {current} have no point in common ({only_base} only in "
                     f"the baseline, {len(rows) - only_base} only in the current run): nothing "
                     f"was compared; compare runs of the same grid")


def parse_mem_floor(text: str) -> int:
    if str(text).strip() in ("0", "0B"):
        return 0
    try:
        return parse_bytes(text)
    except UsageError:
        raise UsageError(f"--mem-floor: cannot read {text!r} (examples: 1MiB, 512KiB, 0)") \
            from None


def comparison_header(base: LoadedRun, cur: LoadedRun, settings: logic.Settings,
                      hardware_note: str) -> list[str]:
    rule = (f"time = {settings.statistic} of the samples; interval: "
            f"{settings.confidence:.0%} bootstrap interval of the ratio; noise: each side's "
            f"bootstrap half-width, relative")
    if settings.metric != "time":
        rule += (f"; memory: interval = the difference ± {format_bytes(settings.mem_floor)} "
                 f"(--mem-floor)")
    lines = [f"baseline: {base.path} ({base.machine})",
             f"current:  {cur.path} ({cur.machine})", rule,
             rule_line(settings.threshold, settings.fail_on)]
    if settings.relative_to:
        lines.append(f"times relative to {settings.relative_to} at the same configuration in "
                     f"the same run")
    if hardware_note:
        lines.append(f"note: {hardware_note}")
    return lines


def write_outputs(result: logic.Comparison, header: list[str], args: argparse.Namespace,
                  current: Path, console) -> None:
    out = Path(args.out) if args.out else current / "compare"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(writers.markdown(result.rows, TITLE, header))
        (out / "compare.csv").write_text(writers.csv_text(result.rows))
    except OSError as exc:
        if args.out:
            raise UsageError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        print(f"warning: table not written to {out} ({exc.strerror or exc}); "
              f"choose a folder with --out", file=sys.stderr)
        return
    console.print(f"written: {out / 'compare.md'}, {out / 'compare.csv'}", highlight=False)
