"""``run_bench.py`` with no command: the default benchmark on the best device, then its report.

The same flags as ``sweep`` apply (e.g. ``run_bench.py --seq-len 1K,2K``).
"""

from __future__ import annotations

import argparse

from harness.commands import sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sweep.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return sweep.run(args, default_report=True)
