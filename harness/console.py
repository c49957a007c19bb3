"""The console: a rich console that does not wrap piped output, and how points, times and
sizes are written for people."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape

from harness.contract.records import Point, SpeedRecord

STATUS_STYLE = {"ok": "green", "oom": "magenta", "timeout": "yellow", "error": "red",
                "unsupported": "dim", "skipped": "dim"}


class DataSafeConsole(Console):
    """A rich console whose print never fails on text from the data: a method's name, a
    message or a path holding brackets ("[/tmp/cache]") reads as a markup tag to rich. The
    harness escapes such text where it prints it (``escape``, ``describe_point``); text that
    slipped through makes rich raise MarkupError, and then the same objects are printed again
    with markup off (the harness's own styles show as written for that line) rather than a
    traceback ending the run."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        try:
            super().print(*objects, **kwargs)
        except MarkupError:
            markup = self._markup
            self._markup = False      # a table's cells are read with the console's setting
            try:
                super().print(*objects, **{**kwargs, "markup": False})
            finally:
                self._markup = markup


def make_console() -> Console:
    """A console that does not wrap record lines at 80 columns when output is not a terminal."""
    console = DataSafeConsole()
    if not console.is_terminal:
        console = DataSafeConsole(width=160)
    return console


def describe_point(point: Point | SpeedRecord, markup: bool = True) -> str:
    """The point in one line: for the console (rich markup in the names escaped), or as plain
    text (``markup=False``: a message printed as it is)."""
    causal = " causal" if point.causal else ""
    workload = (point.point if isinstance(point, SpeedRecord) else point).workload_label()
    return (escape if markup else str)(f"{point.impl} T={point.seq_len} D={point.head_dim} B={point.batch} "
                  f"H={point.heads} {point.dtype}{causal} {point.pass_} {point.device}" +
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
