"""``run_bench.py list``: every implementation, what it can do, and whether it runs here.

The availability probes (a real tiny run) happen in a worker process, as in a sweep: an
implementation that crashes or hangs is listed as not available, with the reason.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.contract.axes import workload_feature_names
from harness.contract.probe import ProbeResult
from harness.errors import UsageError
from harness.contract.registry import FAMILY_LABELS, REGISTRY, Implementation

LIST_TIMEOUT_S = 300.0


SHORT_DTYPE = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", default=None,
                        help="device(s) to probe (default: cpu, and cuda)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def impl_row(impl: Implementation, devices: list[str],
             probed: dict[tuple[str, str], Any]) -> dict:
    caps = impl.capabilities
    row = {"name": impl.name, "framework": impl.framework, "family": impl.family,
           "devices": list(caps.devices), "dtypes": list(caps.dtypes), "causal": caps.has("causal"),
           "key_padding_mask": caps.has("key_padding_mask"), "backward": caps.has("backward"),
           "workloads": {name: caps.has(name) for name in workload_feature_names()},
           "reasons": dict(caps.reasons), "paths": dict(caps.paths),
           "description": impl.description, "availability": {}}
    for device in devices:
        row["availability"][device] = summarise_dtypes(probed[(impl.name, device)])
    return row


def device_availability(impl: Implementation, device: str) -> dict:
    """Availability on a device per dtype the method declares, probed in this process."""
    from harness.measure.worker import dtype_availability

    return summarise_dtypes(dtype_availability(impl, device))


def summarise_dtypes(probed: dict[str, ProbeResult] | ProbeResult) -> dict:
    """``available`` if any dtype runs, ``dtypes`` those that do, ``reason`` why the others do
    not (the first such reason), ``by_dtype`` each. One ProbeResult: the probe worker itself
    failed."""
    if isinstance(probed, ProbeResult):
        return {"available": False, "dtypes": [], "reason": probed.reason, "by_dtype": {}}
    ok = [d for d, result in probed.items() if result]
    refused = [result.reason for result in probed.values() if not result]
    return {"available": bool(ok), "dtypes": ok, "reason": refused[0] if refused else "",
            "by_dtype": {d: {"available": r.available, "reason": r.reason}
                         for d, r in probed.items()}}


def run(args: argparse.Namespace) -> int:
    from harness.contract.parsers import parse_devices

    devices = list(parse_devices(args.device)) if args.device else ["cpu", "cuda"]
    impls = REGISTRY.all()
    probed = probe_all([impl.name for impl in impls], devices,
                       tuple(getattr(args, "impl_module", []) or []))
    rows = [impl_row(impl, devices, probed) for impl in impls]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from harness.console import DataSafeConsole

    table = Table(title="attnbench implementations", show_lines=False)
    # the name column is as wide as the longest name and never wraps, whatever the width
    # (`run_bench.py list | grep NAME` finds every name whole); the other columns fold
    name_width = max(len("name"), *(len(row["name"]) for row in rows))
    table.add_column("name", no_wrap=True, min_width=name_width, width=name_width)
    for column in ("framework", "family", "devices", "dtypes", "causal", "mask",
                   "backward", "workloads", *devices):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = []
        for device in devices:
            a = row["availability"][device]
            reason = a["reason"].removeprefix(f"{row['name']}: ")
            if not a["available"]:
                status.append(f"[red]no[/]: {escape(reason)}")
            elif len(a["dtypes"]) == len(row["dtypes"]):
                status.append("[green]available[/]")
            else:
                status.append(f"[green]{','.join(SHORT_DTYPE[d] for d in a['dtypes'])}[/] "
                              f"only ({escape(reason)})")
        table.add_row(escape(row["name"]), row["framework"], FAMILY_LABELS[row["family"]],
                      ",".join(row["devices"]), ",".join(SHORT_DTYPE[d] for d in row["dtypes"]),
                      _yes(row["causal"]), _yes(row["key_padding_mask"]), _yes(row["backward"]),
                      " ".join(n for n, has in row["workloads"].items() if has) or "-", *status)
    DataSafeConsole(width=max(150, Console().width)).print(table)
    return 0


def probe_all(names: list[str], devices: list[str], impl_modules: tuple[str, ...],
              timeout: float = LIST_TIMEOUT_S) -> dict[tuple[str, str], Any]:
    """{dtype: ProbeResult} of each (implementation, device), probed one implementation per
    task in a reused worker (harness.measure.pool): an implementation whose probe kills or
    hangs its worker holds the worker's fate as one ProbeResult on each device, and the next
    implementation is probed in a fresh worker."""
    from harness.measure.pool import WorkerPool
    from harness.measure.worker import WorkerContext

    if not names:
        raise UsageError("list: no implementation registered")
    context = WorkerContext(impl_modules=impl_modules)
    executor = WorkerPool()
    results: dict[tuple[str, str], Any] = {}
    try:
        for name in names:
            items = [(name, device) for device in devices]
            single = executor.run("availability", items, context, timeout=timeout, key="list")
            if single.status == "ok":
                results.update(single.result)
            else:
                results.update({item: ProbeResult(False, f"{name}: probe worker {single.status}: "
                                                         f"{single.message}", crashed=True)
                                for item in items})
    finally:
        executor.close()
    return results


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
