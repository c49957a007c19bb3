"""``run_bench.py merge RUN_DIR ... --out DIR``: join run directories (e.g. shards) into one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.console import make_console
from harness.store.merge import merge_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to join")
    parser.add_argument("--out", required=True, type=Path, help="new run directory to write")


def run(args: argparse.Namespace) -> int:
    console = make_console()
    gatherer = merge_runs(args.runs, args.out, command=sys.argv)
    meta = gatherer.metadata()
    duplicates = gatherer.identical_duplicates
    machines = ", ".join(f"{hw or 'unrecorded'} ({n})" for hw, n in
                         meta["records_by_hardware"].items())
    console.print(f"merged {len(args.runs)} run(s) -> {args.out}: {meta['records']} record(s)"
                  + (f", {duplicates} agreeing duplicate(s) kept once" if duplicates else "")
                  + f"; records by machine: {machines}", highlight=False)
    return 0
