"""``run_bench.py check``: the correctness gate for every available implementation.

Each implementation runs in a worker process, as in a sweep: one that crashes (segfault,
``os._exit``) or hangs fails its rows instead of killing the command. A wrong or non-finite
output is a failure (exit 1); rows the implementation cannot run here are skipped.
"""

from __future__ import annotations

import argparse
from typing import Any

from harness.errors import UsageError
from harness.registry import REGISTRY, device_kind

CHECK_TIMEOUT_S = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32",
                        help="float32, float16 (fp16), bfloat16 (bf16), float64")
    parser.add_argument("--impl", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--timeout", type=float, default=CHECK_TIMEOUT_S,
                        help=f"seconds per implementation (default {CHECK_TIMEOUT_S:g})")


def validated(args: argparse.Namespace) -> tuple[str, str]:
    """(device, dtype) as sweep spells them; one clear line for anything else."""
    from harness.frameworks import torch_fw
    from harness.sweep_spec import parse_devices, parse_dtypes

    devices, dtypes = parse_devices(args.device), parse_dtypes(args.dtype)
    if len(devices) != 1 or len(dtypes) != 1:
        raise UsageError("check: give one --device and one --dtype")
    device = devices[0]
    if device_kind(device) == "cuda":
        present = torch_fw.device_present(device)
        if not present:
            raise UsageError(f"--device {device}: {present.reason}")
    if not (args.timeout > 0 and args.timeout < float("inf")):
        raise UsageError(f"--timeout: must be a positive number of seconds, got {args.timeout}")
    return device, dtypes[0]


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    device, dtype = validated(args)
    impls = REGISTRY.resolve(args.impl.split(",")) if args.impl else REGISTRY.all()
    results = gate_results([impl.name for impl in impls], device, dtype,
                           tuple(getattr(args, "impl_module", []) or []), args.timeout)
    table = Table(title=f"correctness on {device}/{dtype} (vs float64 reference)")
    for column in ("impl", "causal", "mask", "result", "max error", "tolerance",
                   "deviation from softmax"):
        table.add_column(column)
    failed = ran = 0
    for impl in impls:
        for causal in (False, True):
            for masked in (False, True):
                result = results[(impl.name, device, dtype, causal, masked)]
                if "skipped" in result:
                    table.add_row(impl.name, str(causal), str(masked), "[yellow]skipped[/]",
                                  "", "", result["skipped"])
                    continue
                ran += 1
                failed += not result["passed"]
                table.add_row(impl.name, str(causal), str(masked),
                              "[green]ok[/]" if result["passed"]
                              else f"[red]FAIL[/] {result['message']}",
                              _fmt(result.get("max_error")), _fmt(result.get("tolerance")),
                              _fmt(result.get("deviation_from_softmax")))
    Console(width=160).print(table)
    if not ran:
        raise UsageError(f"check: no selected implementation runs on {device}/{dtype}")
    return 1 if failed else 0


def gate_results(names: list[str], device: str, dtype: str, impl_modules: tuple[str, ...],
                 timeout: float) -> dict[tuple, dict[str, Any]]:
    """The gate of every (impl, causal, masked) in worker processes: all at once, and one
    implementation per worker when that worker does not come back."""
    from harness.executor import LocalExecutor
    from harness.worker import WorkerContext

    context = WorkerContext(impl_modules=impl_modules)
    executor = LocalExecutor()

    def items(name: str) -> list[tuple[str, str, str, bool, bool]]:
        return [(name, device, dtype, c, m) for c in (False, True) for m in (False, True)]

    everything = [item for name in names for item in items(name)]
    outcome = executor.run("check", everything, context, timeout=timeout * len(names))
    if outcome.status == "ok":
        return outcome.result
    results: dict[tuple, dict[str, Any]] = {}
    for name in names:
        single = executor.run("check", items(name), context, timeout=timeout)
        if single.status == "ok":
            results.update(single.result)
            continue
        for item in items(name):
            results[item] = {"passed": False, "message": f"worker {single.status}: "
                                                         f"{single.message}"}
    return results


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"
