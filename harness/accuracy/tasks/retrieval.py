"""Retrieval: do two AAN papers cite each other (LRA), byte level, two documents per example.

Official layout: ``tsv_data/new_aan_pairs.{train,eval,test}.tsv`` from the LRA release; no
header; fields: label, id1, id2, text1, text2.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from harness.accuracy.tasks.common import (
    LRA_SOURCE, Limits, Split, TaskData, byte_ids, data_roots, first_existing, malformed,
    missing, pad_rows, trim_to_longest)

SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv",
               "test": "new_aan_pairs.test.tsv"}


def find_dir(data_dir: Path | None) -> Path | None:
    return first_existing(p for root in data_roots(data_dir) for p in (root / "tsv_data", root)
                          if (p / SPLIT_FILES["train"]).exists())


def parse_label(text: str) -> int:
    value = float(text)
    if value not in (0.0, 1.0):
        raise ValueError(f"label {text!r} is not 0 or 1")
    return int(value)


def read_split(path: Path, seq_len: int, limit: int | None) -> Split:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    first, second, labels = [], [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for fields in reader:
            number = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if limit is not None and len(labels) >= limit:
                break
            if len(fields) != 5:
                raise malformed(path, number, f"expected 5 tab-separated fields (label, id1, "
                                              f"id2, text1, text2), got {len(fields)}")
            try:
                labels.append(parse_label(fields[0]))
            except ValueError as exc:
                raise malformed(path, number, str(exc)) from None
            first.append(byte_ids(fields[3].encode("utf-8"), seq_len))
            second.append(byte_ids(fields[4].encode("utf-8"), seq_len))
    if not labels:
        raise malformed(path, None, "no examples")
    tokens, lengths = pad_rows(first, seq_len)
    tokens2, lengths2 = pad_rows(second, seq_len)
    return Split(tokens, lengths, np.asarray(labels, dtype=np.int64), tokens2, lengths2)


def load(data_dir: Path | None, limits: Limits, **_: object) -> TaskData:
    folder = find_dir(data_dir)
    expected = [f"tsv_data/{name}" for name in SPLIT_FILES.values()]
    if folder is None or not all((folder / f).exists() for f in SPLIT_FILES.values()):
        raise missing("retrieval", data_dir, expected, LRA_SOURCE)
    splits = [read_split(folder / SPLIT_FILES[s], limits.seq_len, limits.for_split(s))
              for s in ("train", "val", "test")]
    train, val, test = trim_to_longest(splits)
    return TaskData("retrieval", train, val, test, num_classes=2, vocab_size=257, pad_id=0,
                    data_source="official", data_path=str(folder), pair=True)
