"""bytes: classify files by their first T raw bytes (the long-sequence malware-detection setting).

Any folder with one sub-folder per class: ``DIR/<class>/<any files, any depth>``. Classes are
the sub-folder names in sorted order. Token id = byte + 1, 0 = padding (vocab 257). Only the
first ``seq_len`` bytes of each file are read, so T = 2^17 and beyond cost T bytes per file.
Split: seeded, stratified 80/10/10 per class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.accuracy.tasks.common import Limits, Split, TaskData, missing, trim_to_longest
from harness.errors import UsageError

FRACTIONS = (0.8, 0.1, 0.1)
SOURCE = ("any folder of your own files with one sub-folder per class "
          "(e.g. DIR/benign/..., DIR/malware/...)")


def list_classes(data_dir: Path) -> dict[str, list[Path]]:
    classes = {}
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and not p.is_symlink())
        classes[sub.name] = files
    return classes


def split_files(classes: dict[str, list[Path]], seed: int
                ) -> dict[str, list[tuple[Path, int]]]:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for label, files in enumerate(classes.values()):
        order = rng.permutation(len(files))
        n_val = max(1, int(round(len(files) * FRACTIONS[1])))
        n_test = max(1, int(round(len(files) * FRACTIONS[2])))
        picks = [files[i] for i in order]
        parts["val"] += [(p, label) for p in picks[:n_val]]
        parts["test"] += [(p, label) for p in picks[n_val:n_val + n_test]]
        parts["train"] += [(p, label) for p in picks[n_val + n_test:]]
    for name in parts:  # interleave the classes so that a --max-* limit keeps them balanced
        order = rng.permutation(len(parts[name]))
        parts[name] = [parts[name][i] for i in order]
    return parts


def read_prefixes(files: list[tuple[Path, int]], seq_len: int) -> Split:
    tokens = np.zeros((len(files), seq_len), dtype=np.int32)
    lengths = np.zeros(len(files), dtype=np.int64)
    for i, (path, _) in enumerate(files):
        try:
            with open(path, "rb") as handle:
                data = handle.read(seq_len)
        except OSError as exc:
            raise UsageError(f"bytes: cannot read {path}: {exc.strerror}") from None
        row = np.frombuffer(data, dtype=np.uint8)
        tokens[i, :len(row)] = row.astype(np.int32) + 1
        lengths[i] = len(row)
    return Split(tokens, lengths, np.array([label for _, label in files], dtype=np.int64))


def load(data_dir: Path | None, limits: Limits, *, seed: int = 0, **_: object) -> TaskData:
    expected = ["DIR/<class name>/<files> for at least two classes"]
    if data_dir is None or not data_dir.is_dir():
        raise missing("bytes", data_dir, expected, SOURCE)
    classes = list_classes(data_dir)
    if len(classes) < 2:
        raise missing("bytes", data_dir, expected, SOURCE,
                      f"found {len(classes)} class folder(s): {', '.join(classes) or 'none'}")
    small = [name for name, files in classes.items() if len(files) < 3]
    if small:
        raise UsageError(f"bytes: class folder(s) {', '.join(small)} under {data_dir} hold fewer "
                         f"than 3 files; each class needs files for train, val and test")
    parts = split_files(classes, seed)
    splits = [read_prefixes(parts[s][:limits.for_split(s)] if limits.for_split(s) else parts[s],
                            limits.seq_len) for s in ("train", "val", "test")]
    empty = [s for s, split in zip(("train", "val", "test"), splits)
             if int(split.lengths.max(initial=0)) == 0]
    if empty:
        raise UsageError(f"bytes: every file of the {empty[0]} split under {data_dir} is empty")
    train, val, test = trim_to_longest(splits)
    return TaskData("bytes", train, val, test, num_classes=len(classes), vocab_size=257,
                    pad_id=0, data_source="user folder", data_path=str(data_dir),
                    notes={"classes": list(classes),
                           "files_per_class": {k: len(v) for k, v in classes.items()}})
