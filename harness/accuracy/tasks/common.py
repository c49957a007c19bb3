"""Shared pieces of the task loaders: the data containers, error messages, tokenising, splits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from harness.errors import UsageError

GENERATED_MARKER = "GENERATED.json"
LRA_SOURCE = ("the LRA release archive lra_release.gz "
              "(https://storage.googleapis.com/long-range-arena/lra_release.gz, "
              "see github.com/google-research/long-range-arena)")

PAD_ID = 0


class MissingDataError(UsageError):
    """The expected data files are not there; the message names them and their source."""


class MalformedDataError(UsageError):
    """A data file could not be parsed; the message names the file and line."""


def missing(task: str, data_dir: Path | None, expected: Sequence[str], source: str,
            hint: str = "") -> MissingDataError:
    where = f"under {data_dir}" if data_dir is not None else "(no --data-dir given)"
    text = (f"{task}: data not found {where}; expected {', '.join(expected)}. "
            f"Get it from {source}" + (f"; {hint}" if hint else "") +
            ". Nothing is downloaded at run time.")
    return MissingDataError(text)


def malformed(path: Path, line: int | None, problem: str) -> MalformedDataError:
    where = f"{path}" + (f" line {line}" if line is not None else "")
    return MalformedDataError(f"{where}: {problem}")


@dataclass
class Split:
    """One split of a task: token ids (N, T), true lengths (N,), labels (N,).

    Retrieval fills ``tokens2``/``lengths2`` with the second document of each pair.
    Tokens beyond a row's length are padding (id 0 where the task has a pad id).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    tokens2: np.ndarray | None = None
    lengths2: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])


@dataclass
class TaskData:
    """Everything the model and the training loop need to know about a loaded task."""

    task: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    vocab_size: int
    pad_id: int | None          # None: every position is a real token (pixels)
    data_source: str            # "official", "generated" or "user folder"
    data_path: str
    pair: bool = False          # retrieval: two documents per example
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return self.train.seq_len

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


@dataclass(frozen=True)
class Limits:
    """How many examples of each split to load (None: all) and the longest sequence kept."""

    seq_len: int
    max_train: int | None = None
    max_val: int | None = None
    max_test: int | None = None

    def for_split(self, split: str) -> int | None:
        return {"train": self.max_train, "val": self.max_val, "test": self.max_test}[split]


def pad_rows(rows: Iterable[Sequence[int] | np.ndarray], seq_len: int,
             pad_id: int = PAD_ID, dtype: Any = np.int32) -> tuple[np.ndarray, np.ndarray]:
    """Token rows -> (N, T) array padded with pad_id and truncated to seq_len, plus lengths."""
    rows = list(rows)
    tokens = np.full((len(rows), seq_len), pad_id, dtype=dtype)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        row = np.asarray(row[:seq_len], dtype=dtype)
        tokens[i, :len(row)] = row
        lengths[i] = len(row)
    return tokens, lengths


def byte_ids(data: bytes, seq_len: int) -> np.ndarray:
    """Byte-level tokens: byte b -> id b + 1 (0 is padding); the first seq_len bytes."""
    return np.frombuffer(data[:seq_len], dtype=np.uint8).astype(np.int32) + 1


def trim_to_longest(split_list: Sequence[Split]) -> list[Split]:
    """Cut the common padded width down to the longest real sequence (saves work on short data)."""
    longest = max(int(s.lengths.max(initial=1)) for s in split_list)
    if split_list[0].tokens2 is not None:
        longest = max(longest, *(int(s.lengths2.max(initial=1)) for s in split_list))
    return [Split(s.tokens[:, :longest], s.lengths, s.labels,
                  None if s.tokens2 is None else s.tokens2[:, :longest], s.lengths2)
            for s in split_list]


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The GENERATED.json that attnbench's generators leave next to generated data, if any."""
    path = directory / GENERATED_MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise malformed(path, exc.lineno, f"unreadable JSON ({exc.msg})") from None


def write_marker(directory: Path, info: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / GENERATED_MARKER).write_text(json.dumps(
        {"generated_by": "attnbench", "note": "generated data, not the official LRA set",
         **info}, indent=2) + "\n")


def first_existing(candidates: Iterable[Path]) -> Path | None:
    for path in candidates:
        if path.exists():
            return path
    return None


def data_roots(data_dir: Path | None) -> list[Path]:
    """Where to look: DIR itself and DIR/lra_release (the archive's top folder)."""
    if data_dir is None:
        return []
    return [data_dir, data_dir / "lra_release", data_dir / "lra_release" / "lra_release"]
