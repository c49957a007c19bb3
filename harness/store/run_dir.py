"""The results store: a run directory holding ``run.json`` and an append-only ``results.jsonl``.

Records are appended (and flushed to disk) as each point finishes, so an interrupted run keeps
everything it measured and ``--resume`` can skip it. Reading tolerates a truncated last line
(the usual result of a kill mid-write) with a warning; before appending, the writer repairs it
(the file is cut back to its last complete line, the torn bytes kept in ``results.jsonl.torn``;
a last record that is whole and lacks only its newline is kept, its newline added).

One writer per run directory: ``RunDir.create`` takes an OS lock (``fcntl.flock`` on ``lock`` in
the directory) that the process holds until ``release()`` or its end; a second process is refused
with the holder's pid. A lock file left by a dead process carries no OS lock and is taken over
with a message. Numbers that JSON cannot hold (NaN, +-Inf) are written as null, their places
listed in the record's ``nonfinite_fields``.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import math
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.errors import UsageError
from harness.contract.records import (
    SCHEMA_VERSION,
    AccuracyRecord,
    SpeedRecord,
    record_from_json,
    field_problem,
    structure_problem,
)

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = "lock"
TORN_SUFFIX = ".torn"
DEFAULT_ROOT = Path("results")


class TruncatedLineWarning(UserWarning):
    """A line of results.jsonl could not be parsed (typically the last, cut by a kill)."""


class RunLockedError(UsageError):
    """Another live process is writing the run directory."""


# run directory (resolved) -> open file descriptor holding its flock, for this process
_HELD_LOCKS: dict[str, int] = {}


def acquire_lock(directory: Path) -> None:
    """Hold the run directory's OS lock for this process (re-entrant within one process).

    Refused (RunLockedError, exit 2) while another live process holds it; a lock file left
    behind by a process that died is taken over, with a message on stderr.
    """
    key = str(Path(directory).resolve())
    if key in _HELD_LOCKS:
        return
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:   # a directory named lock, a read-only file system ...
        raise UsageError(f"cannot open the run's lock file {path}: {exc.strerror or exc} "
                         f"(it must be a plain file that attnbench may write)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_lock_owner(fd)
        os.close(fd)
        raise RunLockedError(
            f"run directory {directory} is being written by another attnbench process "
            f"({holder or 'pid unknown'}); one writer per run directory: wait for it to end "
            f"or choose another --out") from None
    previous = _read_lock_owner(fd)
    pid = _lock_pid(previous)
    if pid is not None and pid != os.getpid():
        state = "no longer running" if not _alive(pid) else "not holding it"
        print(f"note: {directory}: taking over the lock left by {previous} ({state})",
              file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {now_iso()}\n".encode(), 0)
    _HELD_LOCKS[key] = fd


def release_lock(directory: Path) -> None:
    fd = _HELD_LOCKS.pop(str(Path(directory).resolve()), None)
    if fd is not None:
        try:
            os.ftruncate(fd, 0)   # a clean release leaves no owner behind
        except OSError:
            pass
        os.close(fd)   # closing the descriptor releases the flock


def _read_lock_owner(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _lock_pid(text: str) -> int | None:
    parts = text.split()
    if len(parts) >= 2 and parts[0] == "pid" and parts[1].isdigit():
        return int(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def repair_torn_tail(path: Path) -> int:
    """Cut a file back to its last complete line; the torn bytes go to ``<path>.torn``.

    A last line that is a complete JSON object lacking only its newline is a whole record: it
    is kept and the newline added. Returns the number of bytes moved (0 when the file ends
    with a newline, is empty or its last line was whole).
    """
    try:
        with open(path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return 0
            keep = 0
            position = size
            while position > 0:   # find the last newline, reading backwards in blocks
                step = min(65536, position)
                position -= step
                handle.seek(position)
                block = handle.read(step)
                index = block.rfind(b"\n")
                if index >= 0:
                    keep = position + index + 1
                    break
            handle.seek(keep)
            torn = handle.read()
            if _whole_record(torn):   # complete and valid, only its newline missing: keep it
                handle.seek(size)
                handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                return 0
            with open(path.with_name(path.name + TORN_SUFFIX), "ab") as side:
                side.write(torn + b"\n")
                side.flush()
                os.fsync(side.fileno())
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    except FileNotFoundError:
        return 0
    print(f"note: {path}: its last line was torn (a crash while writing); cut it off before "
          f"appending, {len(torn)} byte(s) kept in {path.name}{TORN_SUFFIX}", file=sys.stderr)
    return len(torn)


def _whole_record(data: bytes) -> bool:
    """Whether ``data`` is one complete JSON object (a record that lacks only its newline)."""
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def finite_json(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """``value`` with every non-finite float replaced by None, and where those were."""
    if isinstance(value, float):
        return (value, []) if math.isfinite(value) else (None, [where or "value"])
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        found: list[str] = []
        for key, item in value.items():
            out[key], sub = finite_json(item, f"{where}.{key}" if where else str(key))
            found += sub
        return out, found
    if isinstance(value, (list, tuple)):
        items, found = [], []
        for index, item in enumerate(value):
            clean, sub = finite_json(item, f"{where}[{index}]")
            items.append(clean)
            found += sub
        return items, found
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return finite_json(value.item(), where)
        except (TypeError, ValueError):
            return value, []
    return value, []


# what a resumption keeps of run.json besides its command and start: the peaks measured by
# the earlier sessions (harness.metrics.peaks.with_earlier adds the new session's to them)
KEPT_ON_RESUME = ("peaks", "peaks_by_device")


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
        try:
            exists = run.path.exists()
            if exists and not run.path.is_dir():
                raise UsageError(f"{run.path} exists and is not a directory")
            not_empty = exists and any(run.path.iterdir())
        except PermissionError:
            raise UsageError(f"run directory {run.path} cannot be read (permission "
                             f"denied)") from None
        except OSError as exc:   # a name too long, a loop of links ...
            raise UsageError(f"run directory {run.path}: {exc.strerror or exc}") from None
        if not_empty and not resume:
            raise UsageError(f"run directory {run.path} already exists and is not empty; "
                             f"use --resume {run.path} to continue it or choose another --out")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"{run.path} exists and is not a directory") from None
        except OSError as exc:
            raise UsageError(f"cannot create run directory {run.path}: "
                             f"{exc.strerror or exc}") from None
        if not os.access(run.path, os.W_OK | os.X_OK):
            raise UsageError(f"run directory {run.path} is not writable")
        acquire_lock(run.path)
        try:
            return run._start(metadata, resume=resume)
        except OSError as exc:   # a disk full at the start: no directory holding only a lock
            release_lock(run.path)
            if not exists:
                shutil.rmtree(run.path, ignore_errors=True)
            raise UsageError(f"cannot write run directory {run.path}: "
                             f"{exc.strerror or exc}") from None

    def _start(self, metadata: dict[str, Any], *, resume: bool) -> "RunDir":
        run = self
        if resume and run.run_path.exists():
            existing = run.metadata()
            kind, stored_kind = metadata.get("kind"), existing.get("kind", "speed")
            if kind is not None and kind != stored_kind:
                release_lock(run.path)
                raise UsageError(f"{run.path} holds a {stored_kind} run; it cannot be resumed "
                                 f"as a {kind} run (use the command that made it)")
            existing.setdefault("resumed", []).append(
                {"at": now_iso(), "command": metadata.get("command")})
            # the original command and start stay; each resumption is listed under "resumed"
            # and the peaks measured so far stay until the resumed session adds its own to
            # them (records already written name those measurements)
            metadata = {**{k: existing[k] for k in KEPT_ON_RESUME if k in existing},
                        **metadata, "resumed": existing["resumed"],
                        "command": existing.get("command", metadata.get("command")),
                        "started_at": existing.get("started_at", metadata.get("started_at"))}
        run.write_metadata(metadata)
        run.results_path.touch()
        repair_torn_tail(run.results_path)
        return run

    def release(self) -> None:
        """Give up this process's lock on the run directory (also done at exit)."""
        release_lock(self.path)

    def remove_lock_file(self) -> None:
        self.release()
        (self.path / LOCK_FILE).unlink(missing_ok=True)

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
        clean, nonfinite = finite_json(data)
        if nonfinite:
            clean["nonfinite_fields"] = sorted(set(clean.get("nonfinite_fields") or [])
                                               | set(nonfinite))
        line = json.dumps(clean, default=_json_default, allow_nan=False)
        try:
            repair_torn_tail(self.results_path)
            with open(self.results_path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:   # a full disk, a file made unwritable or replaced mid-run
            raise UsageError(f"cannot write {self.results_path}: {exc.strerror or exc}; every "
                             f"record written before is kept: --resume {self.path} goes on "
                             f"once it can be written") from None

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
        """Every record of results.jsonl as a dict. A line that cannot be one (cut by a kill,
        not UTF-8 text, not a JSON object, or naming no method:
        records.structure_problem) is skipped with one warning naming the line and why."""
        if not self.results_path.exists():
            raise UsageError(f"{self.path}: no {RESULTS_FILE}")
        try:
            lines = self.results_path.read_bytes().split(b"\n")
        except OSError as exc:
            raise UsageError(f"{self.results_path}: cannot read ({exc.strerror or exc})") \
                from None
        while lines and not lines[-1].strip():
            lines.pop()
        for number, blob in enumerate(lines, 1):
            if not blob.strip():
                continue
            where = "last line" if number == len(lines) else f"line {number}"
            problem, data = "", None
            try:
                data = json.loads(blob.decode("utf-8"))
            except UnicodeDecodeError:
                problem = "is not UTF-8 text"
            except json.JSONDecodeError:
                problem = "is truncated or corrupt"
            if not problem and not isinstance(data, dict):
                problem = f"is not a JSON object (a {type(data).__name__})"
            if not problem:
                check_schema(data.get("schema_version"), self.results_path, number)
                reason = structure_problem(data)
                problem = f"is not a record: {reason}" if reason else ""
            if problem:
                warnings.warn(f"{self.results_path}: {where} {problem}; skipped",
                              TruncatedLineWarning, stacklevel=2)
                continue
            yield data

    def records(self) -> list[SpeedRecord | AccuracyRecord]:
        return [record_from_json(data) for data in self.raw_records()]

    def done_point_ids(self) -> set[str]:
        return {data["point_id"] for data in self.raw_records() if "point_id" in data}

    def refuse_unsound_records(self, action: str) -> None:
        """UsageError (one line) naming the first record whose status or shape cannot be right
        (records.field_problem: edited by hand, another tool), as report and merge refuse it;
        ``action`` names what is refused ("resume")."""
        for number, data in enumerate(self.raw_records(), 1):
            problem = field_problem(data)
            if problem:
                raise UsageError(f"{self.results_path} record {number} ({data.get('impl')}, "
                                 f"seq_len {data.get('seq_len')!r}): {problem}; refusing to "
                                 f"{action} it (fix or remove that line)")

    def duplicate_ok_points(self) -> dict[str, int]:
        """point_id -> number of ok records, for points recorded ok more than once."""
        counts: dict[str, int] = {}
        for data in self.raw_records():
            if data.get("status") == "ok" and "point_id" in data:
                counts[data["point_id"]] = counts.get(data["point_id"], 0) + 1
        return {pid: n for pid, n in counts.items() if n > 1}


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

