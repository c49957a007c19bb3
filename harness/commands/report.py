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


def run(args: argparse.Namespace) -> int:
    from harness.report import render_report
    from harness.store.run_dir import TruncatedLineWarning

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
