"""The results store: a run directory holding ``run.json`` and an append-only ``results.jsonl``.

Records are appended (and flushed to disk) as each point finishes, so an interrupted run keeps
everything it measured and ``--resume`` can skip it. Reading tolerates a truncated last line
(the usual result of a kill mid-write) with a warning.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.errors import UsageError
from harness.records import SCHEMA_VERSION, AccuracyRecord, SpeedRecord, record_from_json

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
DEFAULT_ROOT = Path("results")


class TruncatedLineWarning(UserWarning):
    """A line of results.jsonl could not be parsed (typically the last, cut by a kill)."""


@dataclass
class RunDir:
    path: Path

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def run_path(self) -> Path:
        return self.path / RUN_FILE

    # -- writing --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, metadata: dict[str, Any], *, resume: bool = False) -> "RunDir":
        run = cls(Path(path))
        if run.path.exists() and any(run.path.iterdir()) and not resume:
            raise UsageError(f"run directory {run.path} already exists and is not empty; "
                             f"use --resume {run.path} to continue it or choose another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        if resume and run.run_path.exists():
            existing = run.metadata()
            existing.setdefault("resumed", []).append(
                {"at": now_iso(), "command": metadata.get("command")})
            # the original command and start stay; each resumption is listed under "resumed"
            metadata = {**metadata, "resumed": existing["resumed"],
                        "command": existing.get("command", metadata.get("command")),
                        "started_at": existing.get("started_at", metadata.get("started_at"))}
        run.write_metadata(metadata)
        run.results_path.touch()
        return run

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        tmp = self.run_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **metadata}, indent=2,
                                  default=str) + "\n")
        os.replace(tmp, self.run_path)

    def update_metadata(self, **values: Any) -> None:
        self.write_metadata({**self.metadata(), **values})

    def append(self, record: SpeedRecord | AccuracyRecord) -> None:
        self.append_raw(record.to_json())

    def append_raw(self, data: dict[str, Any]) -> None:
        """Append one record already in its JSON form (merging and gathering copy these)."""
        line = json.dumps(data, default=_json_default, allow_nan=False)
        with open(self.results_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    # -- reading --------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        try:
            data = json.loads(self.run_path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{self.path}: not a run directory (no {RUN_FILE})") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{self.run_path}: unreadable JSON ({exc})") from None
        check_schema(data.get("schema_version"), self.run_path)
        return data

    def raw_records(self) -> Iterator[dict[str, Any]]:
        if not self.results_path.exists():
            raise UsageError(f"{self.path}: no {RESULTS_FILE}")
        with open(self.results_path, encoding="utf-8") as handle:
            lines = handle.readlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                where = "last line" if number == len(lines) else f"line {number}"
                warnings.warn(f"{self.results_path}: {where} is truncated or corrupt; skipped",
                              TruncatedLineWarning, stacklevel=2)
                continue
            check_schema(data.get("schema_version"), self.results_path, number)
            yield data

    def records(self) -> list[SpeedRecord | AccuracyRecord]:
        return [record_from_json(data) for data in self.raw_records()]

    def done_point_ids(self) -> set[str]:
        return {data["point_id"] for data in self.raw_records() if "point_id" in data}


def check_schema(version: Any, path: Path, line: int | None = None) -> None:
    where = f"{path}" + (f" line {line}" if line else "")
    if not isinstance(version, int):
        raise UsageError(f"{where}: no schema_version; not an attnbench results file")
    if version > SCHEMA_VERSION:
        raise UsageError(f"{where}: schema version {version} is newer than this attnbench "
                         f"understands ({SCHEMA_VERSION}); upgrade attnbench")


def open_run(path: str | Path) -> RunDir:
    """An existing run directory, with clear messages for missing or empty ones."""
    run = RunDir(Path(path))
    if not run.path.exists():
        raise UsageError(f"run directory {run.path} does not exist")
    if not run.path.is_dir():
        raise UsageError(f"{run.path} is not a directory")
    if not run.run_path.exists() and not run.results_path.exists():
        raise UsageError(f"{run.path} is empty or not a run directory "
                         f"(expected {RUN_FILE} and {RESULTS_FILE})")
    return run


def default_run_path(hardware_tag: str, root: Path = DEFAULT_ROOT) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{hardware_tag}"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_results(*paths: str | Path, kind: str | None = "speed") -> "pandas.DataFrame":  # noqa: F821
    """Records of one or more run directories as a pandas DataFrame.

    Adds columns ``run`` (directory name), ``run_path`` and, from run.json, ``hardware_tag``.
    ``kind`` selects 'speed' or 'accuracy' records (None: all).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for path in paths:
        run = open_run(path)
        meta = run.metadata() if run.run_path.exists() else {}
        machine = meta.get("machine", {})
        for data in run.raw_records():
            if kind is not None and data.get("kind", "speed") != kind:
                continue
            rows.append({**data, "run": run.path.name, "run_path": str(run.path),
                         "hardware_tag": machine.get("hardware_tag", "")})
    return pd.DataFrame(rows)

