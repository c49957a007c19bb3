"""A rich progress bar for training: one bar per epoch with running loss and accuracy."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from harness.accuracy.train import ProgressLike
from harness.console import DataSafeConsole


class RichProgress(ProgressLike):
    def __init__(self, label: str, console: Console | None = None) -> None:
        self.label = label
        self.console = console or DataSafeConsole(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                                 MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False)
        self.task_id = None

    def __enter__(self) -> "RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.task_id = self.progress.add_task(f"{self.label} {epoch}/{epochs}",
                                              total=steps, stats="")

    def advance(self, *, loss: float, accuracy: float) -> None:
        self.progress.update(self.task_id, advance=1,
                             stats=f"loss {loss:.3f} acc {accuracy:.3f}")

    def end_epoch(self, *, val_accuracy: float) -> None:
        stats = self.progress.tasks[-1].fields.get("stats", "")
        self.progress.update(self.task_id, stats=f"{stats} val {val_accuracy:.3f}")
