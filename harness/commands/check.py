"""``run_bench.py check``: the correctness gate for every available implementation."""

from __future__ import annotations

import argparse

from harness import correctness
from harness.registry import REGISTRY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--impl", default=None, help="comma-separated names (default: all)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    impls = REGISTRY.resolve(args.impl.split(",")) if args.impl else REGISTRY.all()
    table = Table(title=f"correctness on {args.device}/{args.dtype} (vs float64 reference)")
    for column in ("impl", "causal", "mask", "result", "max error", "tolerance",
                   "deviation from softmax"):
        table.add_column(column)
    failed = 0
    for impl in impls:
        for causal in (False, True):
            for masked in (False, True):
                verdict = impl.supports(device=args.device, dtype=args.dtype, causal=causal,
                                        key_padding_mask=masked)
                if not verdict:
                    table.add_row(impl.name, str(causal), str(masked), "[yellow]skipped[/]",
                                  "", "", verdict.reason)
                    continue
                result = correctness.check(impl, device=args.device, dtype=args.dtype,
                                           causal=causal, masked=masked)
                failed += not result.passed
                table.add_row(impl.name, str(causal), str(masked),
                              "[green]ok[/]" if result.passed else f"[red]FAIL[/] {result.message}",
                              _fmt(result.max_error), _fmt(result.tolerance),
                              _fmt(result.deviation_from_softmax))
    Console(width=160).print(table)
    return 1 if failed else 0


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"
