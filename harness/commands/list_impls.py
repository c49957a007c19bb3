"""``run_bench.py list``: every implementation, what it can do, and whether it runs here."""

from __future__ import annotations

import argparse
import json

from harness.registry import FAMILY_LABELS, REGISTRY, Implementation


SHORT_DTYPE = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", default=None,
                        help="device(s) to probe (default: cpu, and cuda)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


WORKLOADS = ("gqa", "q_len", "window", "alibi", "documents")


def impl_row(impl: Implementation, devices: list[str]) -> dict:
    caps = impl.capabilities
    row = {"name": impl.name, "framework": impl.framework, "family": impl.family,
           "devices": list(caps.devices), "dtypes": list(caps.dtypes), "causal": caps.causal,
           "key_padding_mask": caps.key_padding_mask, "backward": caps.backward,
           "workloads": {name: getattr(caps, name) for name in WORKLOADS},
           "reasons": dict(caps.reasons), "paths": dict(caps.paths),
           "description": impl.description, "availability": {}}
    for device in devices:
        verdict = impl.availability(device)
        row["availability"][device] = {"available": verdict.available, "reason": verdict.reason}
    return row


def run(args: argparse.Namespace) -> int:
    devices = args.device or ["cpu", "cuda"]
    rows = [impl_row(impl, devices) for impl in REGISTRY.all()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="attnbench implementations", show_lines=False)
    for column in ("name", "framework", "family", "devices", "dtypes", "causal", "mask",
                   "backward", "workloads", *devices):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = []
        for device in devices:
            a = row["availability"][device]
            reason = a["reason"].removeprefix(f"{row['name']}: ")
            status.append("[green]available[/]" if a["available"] else f"[red]no[/]: {reason}")
        table.add_row(row["name"], row["framework"], FAMILY_LABELS[row["family"]],
                      ",".join(row["devices"]), ",".join(SHORT_DTYPE[d] for d in row["dtypes"]),
                      _yes(row["causal"]), _yes(row["key_padding_mask"]), _yes(row["backward"]),
                      " ".join(n for n in WORKLOADS if row["workloads"][n]) or "-", *status)
    Console(width=max(150, Console().width)).print(table)
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
