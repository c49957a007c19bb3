"""The console: a rich console that does not wrap piped output, and how points, times and
sizes are written for people."""

from __future__ import annotations

from rich.console import Console

from harness.contract.records import Point, SpeedRecord

STATUS_STYLE = {"ok": "green", "oom": "magenta", "timeout": "yellow", "error": "red",
                "unsupported": "dim", "skipped": "dim"}


def make_console() -> Console:
    """A console that does not wrap record lines at 80 columns when output is not a terminal."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    return console


def describe_point(point: Point | SpeedRecord) -> str:
    causal = " causal" if point.causal else ""
    workload = (point.point if isinstance(point, SpeedRecord) else point).workload_label()
    return (f"{point.impl} T={point.seq_len} D={point.head_dim} B={point.batch} H={point.heads} "
            f"{point.dtype}{causal} {point.pass_} {point.device}" +
            (f" {workload}" if workload else ""))


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"


def format_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{int(value)} B"
