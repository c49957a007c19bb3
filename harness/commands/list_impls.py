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


def impl_row(impl: Implementation, devices: list[str]) -> dict:
    caps = impl.capabilities
    row = {"name": impl.name, "framework": impl.framework, "family": impl.family,
           "devices": list(caps.devices), "dtypes": list(caps.dtypes), "causal": caps.causal,
           "key_padding_mask": caps.key_padding_mask, "backward": caps.backward,
           "description": impl.description, "availability": {}}
    for device in devices:
        row["availability"][device] = device_availability(impl, device)
    return row


def device_availability(impl: Implementation, device: str) -> dict:
    """Availability on a device per dtype the method declares (a method may run on a GPU in
    fp16/bf16 only, e.g. sdpa_flash): ``available`` if any dtype runs, ``dtypes`` those that do,
    ``reason`` why the others do not (the first such reason)."""
    by_dtype = {}
    for dtype in impl.capabilities.dtypes:
        verdict = impl.supports(device=device, dtype=dtype)
        by_dtype[dtype] = {"available": verdict.available, "reason": verdict.reason}
    ok = [d for d, v in by_dtype.items() if v["available"]]
    refused = [v["reason"] for v in by_dtype.values() if not v["available"]]
    return {"available": bool(ok), "dtypes": ok, "reason": refused[0] if refused else "",
            "by_dtype": by_dtype}


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
                   "backward", *devices):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = []
        for device in devices:
            a = row["availability"][device]
            reason = a["reason"].removeprefix(f"{row['name']}: ")
            if not a["available"]:
                status.append(f"[red]no[/]: {reason}")
            elif len(a["dtypes"]) == len(row["dtypes"]):
                status.append("[green]available[/]")
            else:
                status.append(f"[green]{','.join(SHORT_DTYPE[d] for d in a['dtypes'])}[/] "
                              f"only ({reason})")
        table.add_row(row["name"], row["framework"], FAMILY_LABELS[row["family"]],
                      ",".join(row["devices"]), ",".join(SHORT_DTYPE[d] for d in row["dtypes"]),
                      _yes(row["causal"]), _yes(row["key_padding_mask"]), _yes(row["backward"]),
                      *status)
    Console(width=max(150, Console().width)).print(table)
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
