"""``run_bench.py repro RUN POINT_ID``: measure one point of a run again, alone, with the
run's settings (harness.grid.repro builds the command), into a new run directory, and print
the new record beside the original: status, time, and the ratio of the times."""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness.console import make_console
from harness.errors import UsageError
from harness.grid.repro import reproducer
from harness.store.run_dir import open_run

RUN_BENCH = Path(__file__).resolve().parents[2] / "run_bench.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="the run directory that holds the point")
    parser.add_argument("point_id", metavar="POINT_ID",
                        help="the point's id (tables/points.csv's point_id; a unique prefix "
                             "will do)")
    parser.add_argument("--out", help="the new run directory (default RUN/repro/POINT_ID-<time>)")
    parser.add_argument("--print-only", action="store_true",
                        help="print the command, run nothing")


def find_record(run: Path, wanted: str) -> dict[str, Any]:
    """The last speed record of ``wanted`` (a point id or a unique prefix of one) in ``run``,
    or one line saying why not, with the closest ids."""
    records: dict[str, dict[str, Any]] = {}
    for data in open_run(run).raw_records():
        if data.get("kind", "speed") == "speed" and data.get("point_id"):
            records[data["point_id"]] = data
    if wanted in records:
        return records[wanted]
    prefixed = [pid for pid in records if pid.startswith(wanted)] if wanted else []
    if len(prefixed) == 1:
        return records[prefixed[0]]
    if len(prefixed) > 1:
        raise UsageError(f"repro: {wanted!r} is the start of {len(prefixed)} point ids in {run} "
                         f"({', '.join(sorted(prefixed)[:5])}); give more of it")
    close = difflib.get_close_matches(wanted, list(records), n=3, cutoff=0.3)
    hint = f"; closest: {', '.join(close)}" if close else \
        f"; it holds {len(records)} speed point(s)" if records else "; it holds no speed point"
    raise UsageError(f"repro: no point {wanted!r} in {run}{hint} (ids: tables/points.csv's "
                     f"point_id)")


def run(args: argparse.Namespace) -> int:
    console = make_console()
    source = Path(args.run)
    original = find_record(source, args.point_id)
    meta = open_run(source).metadata()
    repro = reproducer(original, meta.get("settings"))
    out = Path(args.out) if args.out else \
        source / "repro" / f"{original['point_id']}-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = [*repro.argv, f"--out={out}", "--no-report"]
    console.print(f"reproducer of {original['point_id']} in {source}:\n  {repro.command()}")
    for note in repro.notes:
        console.print(f"  note: {note}")
    if args.print_only:
        return 0
    status = subprocess.call([sys.executable, str(RUN_BENCH), *argv])
    if status not in (0, 1):   # 1: the point ran and failed (a record says how)
        raise UsageError(f"repro: the sweep exited {status}; see its output above")
    try:
        again = find_record(out, original["point_id"])
    except UsageError:
        raise UsageError(f"repro: the sweep in {out} recorded no point "
                         f"{original['point_id']} (the point ids differ: the reproducer "
                         f"does not reproduce this point)") from None
    console.print(comparison(original, again, source, out))
    return 0 if again.get("status") == original.get("status") else 1


def comparison(original: dict[str, Any], again: dict[str, Any], source: Path,
               out: Path) -> str:
    """The two records side by side: run, status, median time; then the ratio."""
    def ms(data: dict[str, Any]) -> str:
        value = data.get("time_s")
        return f"{value * 1e3:.4g} ms" if isinstance(value, (int, float)) else "-"

    lines = [f"{'':10} {'status':12} {'time':>12}  run",
             f"{'original':10} {original.get('status', ''):12} {ms(original):>12}  {source}",
             f"{'repro':10} {again.get('status', ''):12} {ms(again):>12}  {out}"]
    a, b = original.get("time_s"), again.get("time_s")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0:
        lines.append(f"ratio repro / original: {b / a:.3f}")
    return "\n".join(lines)
