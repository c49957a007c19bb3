"""``run_bench.py check``: the correctness gate for every available implementation.

Each implementation runs in a worker process, as in a sweep: one that crashes (segfault,
``os._exit``) or hangs fails its rows instead of killing the command. A wrong or non-finite
output is a failure (exit 1); rows the implementation cannot run here are skipped.

``--workloads`` checks the built-in workloads (GQA, MQA, Tq != Tk causal, windows, ALiBi,
documents, padding + window, softcap, sinks; harness.grid.workload_cases) instead of the four
plain cases; the sweep's workload flags (``--kv-heads --q-len --window --alibi --documents
--softcap --sinks``, parsed as sweep
parses them) check every combination of the values given, with and without causal.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from harness.contract.probe import GateResult, ProbeResult
from harness.errors import UsageError
from harness.contract.parsers import parse_names
from harness.contract.registry import REGISTRY, Implementation, device_kind
from harness.grid.workload_cases import (WorkloadCase, builtin_cases, flag_cases,
                                         gate_built_axes)

CHECK_TIMEOUT_S = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="float32",
                        help="float32, float16 (fp16), bfloat16 (bf16), float64")
    parser.add_argument("--impl", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--timeout", type=float, default=CHECK_TIMEOUT_S,
                        help=f"seconds per implementation (default {CHECK_TIMEOUT_S:g})")
    work = parser.add_argument_group("workloads (instead of the four plain cases)")
    work.add_argument("--workloads", action="store_true",
                      help="check the built-in workloads: GQA, MQA, decode Tq=1 and chunk Tq=7 "
                           "causal, windows one- and two-sided, ALiBi, documents, padding + "
                           "window, softcap, sinks, D_v != D and the MLA shapes (192/128, 576/512)")
    for axis in workload_flag_axes():
        work.add_argument(axis.flag, dest=axis.dest, default=None,
                          help=axis.help + " (as sweep; every combination, causal and not)")


def workload_flag_axes() -> tuple:
    """The workload axes ``check`` takes as flags: those of the table whose inputs the gate
    builds (harness.grid.workload_cases.gate_built_axes)."""
    return gate_built_axes()


def validated(args: argparse.Namespace) -> tuple[str, str]:
    """(device, dtype) as sweep spells them; one clear line for anything else."""
    from harness.contract.frameworks import torch_fw
    from harness.contract.parsers import parse_devices, parse_dtypes

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


def workload_cases(args: argparse.Namespace) -> list[WorkloadCase] | None:
    """The cases --workloads and the workload flags ask for; None: the plain gate."""
    from harness.grid.spec import overrides_from

    raw = {axis.name: getattr(args, axis.dest, None) for axis in workload_flag_axes()}
    raw = {k: v for k, v in raw.items() if v is not None}
    cases = builtin_cases() if getattr(args, "workloads", False) else []
    if raw:
        axes = overrides_from(raw).values      # the sweep's parsers: bad values exit 2 there
        try:
            cases += flag_cases(axes)
        except ValueError as exc:
            raise UsageError(f"check: {exc} (check's workloads have 64 keys)") from None
    return cases or None


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from harness.console import DataSafeConsole

    device, dtype = validated(args)
    impls = (REGISTRY.resolve(list(parse_names(args.impl))) if args.impl is not None
             else REGISTRY.all())
    cases = workload_cases(args)
    if cases is not None:
        return run_workloads(impls, cases, device, dtype, args)
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
                gate = row_gate(result)
                if gate is None:
                    table.add_row(escape(impl.name), str(causal), str(masked),
                                  "[yellow]skipped[/]", "", "", escape(result.reason or ""))
                    continue
                ran += 1
                failed += not gate.passed
                table.add_row(escape(impl.name), str(causal), str(masked),
                              "[green]ok[/]" if gate.passed
                              else f"[red]FAIL[/] {escape(gate.message or '')}",
                              _fmt(gate.max_error), _fmt(gate.tolerance),
                              _fmt(gate.deviation_from_softmax))
    DataSafeConsole(width=160).print(table)
    if not ran:
        raise UsageError(f"check: no selected implementation runs on {device}/{dtype}")
    return 1 if failed else 0


def run_workloads(impls: list[Implementation], cases: list[WorkloadCase], device: str, dtype: str,
                  args: argparse.Namespace) -> int:
    """One row per (implementation, workload): max error, tolerance, pass, or unsupported with
    the capability's reason. Exit 1 when a claimed combination fails."""
    from rich.markup import escape
    from rich.table import Table

    from harness.console import DataSafeConsole

    names = [impl.name for impl in impls]
    items = {name: [(name, case.for_impl(name, device, dtype)) for case in cases]
             for name in names}
    results = worker_results("check_workloads", items,
                             tuple(getattr(args, "impl_module", []) or []), args.timeout,
                             key=lambda item: (item[0], item[1].name))
    table = Table(title=f"workloads on {device}/{dtype} (vs float64 reference; "
                        f"{shared_shape(cases)})")
    for column in ("impl", "workload", "result", "max error", "tolerance",
                   "deviation from softmax"):
        table.add_column(column)
    failed = ran = 0
    for name in names:
        for case in cases:
            result = results[(name, case.name)]
            gate = row_gate(result)
            if gate is None or gate.unsupported:
                reason = result.reason if gate is None else gate.message
                table.add_row(escape(name), case.name,
                              f"[yellow]unsupported[/]: {escape(reason or '')}", "", "", "")
                continue
            ran += 1
            failed += not gate.passed
            table.add_row(escape(name), case.name, "[green]ok[/]" if gate.passed
                          else f"[red]FAIL[/] {escape(gate.message or '')}",
                          _fmt(gate.max_error), _fmt(gate.tolerance),
                          _fmt(gate.deviation_from_softmax))
    DataSafeConsole(width=200).print(table)
    if not ran:
        raise UsageError(f"check: no selected implementation runs these workloads on "
                         f"{device}/{dtype}")
    return 1 if failed else 0


def shared_shape(cases: list[WorkloadCase]) -> str:
    """The shape the cases run, as built (the query heads --kv-heads made included): 'B=2,
    Hq=6, T=64, D=32', each field all cases share; a field that differs is named in the
    workloads' names."""
    fields = (("B", lambda p: p.batch), ("Hq", lambda p: p.heads),
              ("T", lambda p: p.seq_len), ("D", lambda p: p.head_dim))
    shared = []
    for label, get in fields:
        values = {get(case.point) for case in cases}
        if len(values) == 1:
            shared.append(f"{label}={values.pop()}")
    text = ", ".join(shared)
    return f"{text} unless the workload names it" if text else "shapes in the workloads' names"


def worker_results(task: str, items: dict[str, list], impl_modules: tuple[str, ...],
                   timeout: float, key: Callable[[Any], tuple]) -> dict[tuple, ProbeResult]:
    """Run ``task`` over every implementation's items in worker processes: all at once, and
    one implementation per worker when that worker does not come back (its rows then fail
    with the worker's fate; ``key`` is an item's key in the task's answer)."""
    from harness.measure.processes import LocalExecutor
    from harness.measure.worker import WorkerContext

    context = WorkerContext(impl_modules=impl_modules)
    executor = LocalExecutor()
    everything = [item for name in items for item in items[name]]
    outcome = executor.run(task, everything, context, timeout=timeout * len(items))
    if outcome.status == "ok":
        return outcome.result
    results: dict[tuple, ProbeResult] = {}
    for name, own in items.items():
        single = executor.run(task, own, context, timeout=timeout)
        if single.status == "ok":
            results.update(single.result)
            continue
        for item in own:
            results[key(item)] = ProbeResult(False, f"worker {single.status}: {single.message}",
                                             crashed=True)
    return results


def row_gate(result: ProbeResult) -> GateResult | None:
    """The gate a row shows; None: the implementation cannot run it here (skipped). A worker
    that did not come back fails its rows with its fate."""
    if result.crashed:
        return GateResult(False, None, None, None, result.reason)
    return result.gate if result else None


def gate_results(names: list[str], device: str, dtype: str, impl_modules: tuple[str, ...],
                 timeout: float) -> dict[tuple, ProbeResult]:
    """The gate of every (impl, causal, masked) in worker processes."""
    items = {name: [(name, device, dtype, c, m) for c in (False, True) for m in (False, True)]
             for name in names}
    return worker_results("check", items, impl_modules, timeout, key=lambda item: item)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2e}"
