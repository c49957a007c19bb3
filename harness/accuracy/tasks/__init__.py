"""The task table: name -> how to load it and what it is."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from harness.accuracy.tasks import bytes_task, image, listops, pathfinder, retrieval, text
from harness.accuracy.tasks.common import Limits, TaskData
from harness.errors import UnknownNameError

Loader = Callable[..., TaskData]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    loader: Loader
    lra: bool = True


TASKS: dict[str, TaskSpec] = {
    "listops": TaskSpec("listops", "ListOps, nested MIN/MAX/MED/SM, 10 classes", listops.load),
    "text": TaskSpec("text", "IMDb reviews at byte level, 2 classes", text.load),
    "retrieval": TaskSpec("retrieval", "AAN citation pairs at byte level, two towers",
                          retrieval.load),
    "image": TaskSpec("image", "CIFAR-10 grayscale pixel sequence, 10 classes", image.load),
    "pathfinder": TaskSpec("pathfinder", "32x32 pathfinder, 2 classes",
                           partial(pathfinder.load, task="pathfinder")),
    "pathx": TaskSpec("pathx", "128x128 pathfinder (Path-X), 2 classes",
                      partial(pathfinder.load, task="pathx")),
    "bytes": TaskSpec("bytes", "first T raw bytes of files, one sub-folder per class",
                      bytes_task.load, lra=False),
}


def get(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownNameError("task", name, TASKS) from None


def load(name: str, data_dir: Path | None, limits: Limits, **options: Any) -> TaskData:
    task = get(name)
    try:
        return task.loader(data_dir, limits, **options)
    except UnicodeDecodeError as exc:   # a binary or wrongly encoded file: bad input
        from harness.accuracy.tasks.common import MalformedDataError

        raise MalformedDataError(f"{name}: a data file under {data_dir} is not UTF-8 text "
                                 f"({exc.reason} at byte {exc.start}); is it the right "
                                 f"file?") from None
