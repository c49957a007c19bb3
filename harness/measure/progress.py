"""What a running sweep shows on the console: per-point progress, the run's summary tables,
and ``--dry-run``'s plan."""

from __future__ import annotations


from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from harness.contract.records import Point, SpeedRecord
from harness.contract.registry import REGISTRY
from harness.contract.registry import static_check
from harness.store.run_dir import RunDir, open_run

if TYPE_CHECKING:
    from harness.grid.plan import SweepPlan

from harness.console import STATUS_STYLE, describe_point, format_bytes, format_seconds
from rich.markup import escape
from harness.console import make_console

class ProgressListener:
    """Receives runner events; prints a line per record, under a live progress bar (points
    done/total, elapsed, ETA) on a terminal; a plain line log when output is not a terminal
    (CI logs: no bar, no control codes)."""

    def __init__(self, console: Console | None = None, *, quiet_unsupported: bool = False):
        self.console = console or make_console()
        self.quiet_unsupported = quiet_unsupported
        self.live = self.console.is_terminal
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console, transient=True, disable=not self.live)
        self.task: Any = None
        self.unsupported = 0

    def __call__(self, event: str, payload: Any) -> None:
        if event == "start":
            if payload["resumed"]:
                self.console.print(f"resuming: {payload['resumed']} point(s) already recorded")
            self.progress.start()
            self.task = self.progress.add_task("starting", total=payload["todo"])
        elif event == "probing":
            self.progress.update(self.task, description=f"probing {payload} combination(s)")
        elif event == "point":
            self.progress.update(self.task, description=describe_point(payload))
        elif event == "record":
            self.progress.advance(self.task)
            self.print_record(payload)
        elif event in ("end", "interrupted"):
            self.progress.stop()

    def print_record(self, record: SpeedRecord) -> None:
        style = STATUS_STYLE.get(record.status, "")
        if record.status == "ok":
            iqr = f" ±{format_seconds(record.time_iqr_s)}" if record.time_iqr_s else ""
            self.console.print(f"[{style}]ok[/]      {describe_point(record)}: "
                               f"{format_seconds(record.time_s)}{iqr}, "
                               f"peak {format_bytes(record.peak_mem_bytes)}")
        elif record.status == "unsupported" and self.quiet_unsupported:
            self.unsupported += 1
        else:
            self.console.print(f"[{style}]{record.status:<8}[/] {describe_point(record)}: "
                               f"{escape(record.message or '')}", highlight=False)


def summary_tables(records: list[SpeedRecord]) -> list[Table]:
    """One table per configuration (D, B, H, dtype, causal, pass, device): impl x seq_len."""
    groups: dict[tuple, list[SpeedRecord]] = {}
    for record in records:
        if record.status == "unsupported":
            continue
        key = (record.device, record.head_dim, record.batch, record.heads, record.dtype,
               record.causal, record.pass_, record.point.workload_label())
        groups.setdefault(key, []).append(record)
    tables = []
    for (device, head_dim, batch, heads, dtype, causal, pass_, workload), items in \
            sorted(groups.items()):
        seq_lens = sorted({r.seq_len for r in items})
        title = (f"median time (peak memory) — {device} D={head_dim} B={batch} H={heads} "
                 f"{dtype}{' causal' if causal else ''} {pass_}" +
                 (f" {workload}" if workload else ""))
        table = Table(title=title, title_justify="left")
        table.add_column("impl")
        for t in seq_lens:
            table.add_column(f"T={t}", justify="right")
        by_impl: dict[str, dict[int, SpeedRecord]] = {}
        for r in items:
            by_impl.setdefault(r.impl, {})[r.seq_len] = r
        for impl, cells in by_impl.items():
            row = []
            for t in seq_lens:
                r = cells.get(t)
                if r is None:
                    row.append("")
                elif r.status == "ok":
                    row.append(f"{format_seconds(r.time_s)} ({format_bytes(r.peak_mem_bytes)})")
                else:
                    row.append(f"[{STATUS_STYLE.get(r.status, '')}]{r.status}[/]")
            table.add_row(escape(impl), *row)
        tables.append(table)
    return tables


def unsupported_reasons(records: list[SpeedRecord]) -> dict[str, list[str]]:
    """impl -> every distinct reason its unsupported records give, in order of first sight (a
    record's message is 'impl: reason; reason', one reason per missing capability)."""
    reasons: dict[str, dict[str, None]] = {}
    for r in records:
        if r.status == "unsupported":
            message = r.message.removeprefix(f"{r.impl}: ")
            for reason in message.split("; "):
                reasons.setdefault(r.impl, {})[reason] = None
    return {impl: list(found) for impl, found in reasons.items()}


def unsupported_table(records: list[SpeedRecord]) -> Table | None:
    reasons = unsupported_reasons(records)
    if not reasons:
        return None
    table = Table(title="not run here, and why", title_justify="left")
    table.add_column("impl")
    table.add_column("reason")
    for impl, found in reasons.items():
        table.add_row(impl, "; ".join(found))
    return table


def print_run_summary(run_dir: RunDir, console: Console) -> None:
    """The end-of-run tables (median time per implementation x T) and counts per status."""
    all_records = [r for r in run_dir.records() if r.kind == "speed"]
    for table in summary_tables(all_records):
        console.print(table)
    table = unsupported_table(all_records)
    if table is not None:
        console.print(table)
    counts = {s: sum(r.status == s for r in all_records)
              for s in ("ok", "oom", "timeout", "error", "unsupported", "skipped")}
    console.print("records: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) +
                  f"  ->  {run_dir.results_path}")


def dry_run(sweep: SweepPlan, console: Console, costs_from: str | None = None) -> int:
    from harness.grid import presets
    from harness.grid.cost import device_kind

    preset = sweep.description.get("preset")
    note = presets.note(preset, {p.device for p in sweep.points}) if preset else ""
    if note:
        console.print(f"preset {preset}: {note}")
    sweep = without_recorded(sweep, console)
    here = present_kinds({p.device for p in sweep.points})
    absent = sorted({device_kind(p.device) for p in sweep.points} - here)
    if absent:
        console.print(f"{', '.join(absent)}: not present here; its points are those the methods' "
                      f"capabilities allow, as if every optional package were installed there "
                      f"(a run there checks again)", highlight=False)
    table = Table(title=f"dry run: {len(sweep.points)} point(s) (probes and the correctness "
                        f"gate run at run time)", title_justify="left")
    for column in ("impl", "device", "dtype", "causal", "pass", "B", "H", "D", "workload",
                   "seq_len", "plan"):
        table.add_column(column)
    groups: dict[tuple, list[Point]] = {}
    for p in sweep.points:
        groups.setdefault(p.series_key(), []).append(p)
    will_run = 0
    for items in groups.values():
        first = items[0]
        reason = plan_reason(first, here)
        will_run += len(items) if reason is None else 0
        seq = ",".join(str(p.seq_len) for p in items)
        table.add_row(escape(first.impl), first.device, first.dtype, str(first.causal),
                      first.pass_, str(first.batch), str(first.heads), str(first.head_dim),
                      escape(first.workload_label() or "-"), seq, "[green]run[/]"
                      if reason is None else f"[dim]skip: {escape(reason)}[/]")
    console.print(table)
    console.print(f"{will_run} point(s) would run, {len(sweep.points) - will_run} skipped as "
                  f"unsupported")
    print_predictions(sweep, console, costs_from, here)
    return 0


def without_recorded(sweep: SweepPlan, console: Console) -> SweepPlan:
    """A --resume plan without the points its run directory already holds (the resumed run
    skips them), saying how many; any other plan as it is."""
    if not sweep.resume or sweep.out is None or not (sweep.out / "run.json").exists():
        return sweep
    done = open_run(sweep.out).done_point_ids()
    todo = [p for p in sweep.points if p.point_id not in done]
    console.print(f"--resume {sweep.out}: {len(sweep.points) - len(todo)} point(s) already "
                  f"recorded, left out of the plan below", highlight=False)
    return replace(sweep, points=todo)


def present_kinds(devices: set[str]) -> set[str]:
    """The device kinds among ``devices`` that this machine has (the CPU always)."""
    from harness.contract.frameworks import torch_fw
    from harness.grid.cost import device_kind

    kinds = {"cpu"}
    for device in sorted(devices):
        if device_kind(device) != "cpu" and torch_fw.device_present(device):
            kinds.add(device_kind(device))
    return kinds


def plan_reason(point: Point, here: set[str]) -> str | None:
    """Why a point would not run: the static checks on a device kind present here, the
    method's capabilities alone on another (harness.grid.forecast.runnable's rule)."""
    from harness.contract.registry import Query
    from harness.grid.cost import device_kind

    impl = REGISTRY.get(point.impl)
    kind = device_kind(point.device)
    if kind in here:
        return static_check(impl, point)
    reasons = impl.not_supported_reasons(Query(kind, point.dtype, point.all_features()))
    return "; ".join(reasons) if reasons else None


def cost_constants(costs_from: str | None) -> dict[str, Any]:
    """Device kind -> the cost model's constants: the defaults (harness.grid.cost), those of
    the kinds a run directory measured replaced by its calibration."""
    from harness.grid.cost import DEFAULTS, calibrate, device_kind
    from harness.grid.forecast import method_of
    from harness.store.run_dir import open_run

    constants = dict(DEFAULTS)
    if costs_from is None:
        return constants
    run = open_run(costs_from)
    meta = run.metadata()
    records = list(run.raw_records())
    for kind in sorted({device_kind(str(r.get("device", ""))) for r in records
                        if r.get("device")}):
        base = constants.get(kind, DEFAULTS["cpu"])
        base = replace(base, kind=kind)
        calibrated = calibrate(meta.get("overhead"), records, method_of, base,
                               meta.get("settings"))
        constants[kind] = replace(calibrated, source=f"{calibrated.source} ({costs_from})") \
            if calibrated is not base else base
    return constants


def print_predictions(sweep: SweepPlan, console: Console, costs_from: str | None,
                      here: set[str]) -> None:
    """The grid's predicted time (both isolation modes), then every preset's on every device
    kind (harness.grid.forecast); which constants, measured or assumed. ``here``: the device
    kinds this machine has."""
    from harness.grid.cost import ISOLATIONS, device_kind, run_cost
    from harness.grid.forecast import (KINDS, cost_line, format_duration, method_of,
                                       predict_presets, runnable)

    constants = cost_constants(costs_from)
    points = [p for p in sweep.points if runnable(p, here)]
    for mode in sorted(ISOLATIONS, key=lambda m: m != sweep.settings.isolate):
        cost = run_cost(points, method_of, lambda d: constants[device_kind(d)]
                        if device_kind(d) in constants else constants["cpu"],
                        timing=sweep.settings.timing, isolate=mode,
                        cooldown_s=sweep.settings.cooldown_s)
        console.print(f"predicted: {cost_line(cost)}", highlight=False)
    kinds = [k for k in KINDS if k in constants]
    for kind in kinds:
        c = constants[kind]
        label = "measured" if c.measured else "a model, not a measurement"
        console.print(f"{kind} constants ({label}): {c.source}", highlight=False)
    table = Table(title="predicted time of each preset (default settings; worker / point "
                        "isolation)", title_justify="left")
    table.add_column("preset")
    for kind in kinds:
        table.add_column(f"{kind} points", justify="right")
        table.add_column(f"{kind} worker", justify="right")
        table.add_column(f"{kind} point", justify="right")
    rows: dict[str, list[str]] = {}
    for prediction in predict_presets({k: constants[k] for k in kinds}, here):
        rows.setdefault(prediction.preset, []).extend(
            [str(prediction.points)] + [format_duration(prediction.cost[m].total_s)
                                        if prediction.points else "-" for m in ISOLATIONS])
    for name, cells in rows.items():
        table.add_row(name, *cells)
    console.print(table)
