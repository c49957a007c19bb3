"""Text: IMDb sentiment at byte level (LRA), from the aclImdb distribution folders.

Layout (aclImdb_v1.tar.gz from ai.stanford.edu/~amaas/data/sentiment/): ``aclImdb/{train,test}/
{pos,neg}/*.txt``. Labels: neg = 0, pos = 1. Bytes of the UTF-8 text, id = byte + 1, 0 = pad.

Validation: the LRA code evaluates on the test set during training; attnbench holds out a
seeded 10% of the training reviews instead, so that the test score is taken at the best
*validation* checkpoint without the test set taking part in the choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.accuracy.tasks.common import (
    Limits, Split, TaskData, byte_ids, data_roots, first_existing, missing, pad_rows,
    trim_to_longest)

SOURCE = "aclImdb_v1.tar.gz (https://ai.stanford.edu/~amaas/data/sentiment/)"
CLASSES = ("neg", "pos")
VAL_FRACTION = 0.1


def find_dir(data_dir: Path | None) -> Path | None:
    if data_dir is None:
        return None
    return first_existing(p for root in data_roots(data_dir) for p in (root / "aclImdb", root)
                          if (p / "train" / "pos").is_dir())


def list_files(folder: Path) -> list[tuple[Path, int]]:
    return [(path, label) for label, name in enumerate(CLASSES)
            for path in sorted((folder / name).glob("*.txt"))]


def read_files(files: list[tuple[Path, int]], seq_len: int) -> Split:
    rows = [byte_ids(path.read_bytes(), seq_len) for path, _ in files]
    tokens, lengths = pad_rows(rows, seq_len)
    return Split(tokens, lengths, np.asarray([label for _, label in files], dtype=np.int64))


def load(data_dir: Path | None, limits: Limits, *, seed: int = 0, **_: object) -> TaskData:
    folder = find_dir(data_dir)
    expected = ["aclImdb/train/pos/*.txt", "aclImdb/train/neg/*.txt",
                "aclImdb/test/pos/*.txt", "aclImdb/test/neg/*.txt"]
    if folder is None or not (folder / "test" / "neg").is_dir():
        raise missing("text", data_dir, expected, SOURCE)
    train_files = list_files(folder / "train")
    test_files = list_files(folder / "test")
    if not train_files or not test_files:
        raise missing("text", data_dir, expected, SOURCE, "the folders hold no .txt files")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_files))
    n_val = max(1, int(round(len(train_files) * VAL_FRACTION)))
    val_files = [train_files[i] for i in order[:n_val]]
    fit_files = [train_files[i] for i in order[n_val:]]
    test_order = rng.permutation(len(test_files))
    test_files = [test_files[i] for i in test_order]
    picks = {"train": fit_files, "val": val_files, "test": test_files}
    splits = [read_files(picks[s][:limits.for_split(s)] if limits.for_split(s) else picks[s],
                         limits.seq_len) for s in ("train", "val", "test")]
    train, val, test = trim_to_longest(splits)
    return TaskData("text", train, val, test, num_classes=2, vocab_size=257, pad_id=0,
                    data_source="official", data_path=str(folder),
                    notes={"validation": f"seeded {VAL_FRACTION:.0%} of aclImdb/train "
                                         f"(LRA itself validates on test)"})
