"""The ListOps generator: strings in the official form, labels checked by an evaluator written
here independently (it parses the written, parenthesised binary form, not the token stream)."""

from __future__ import annotations

import csv
import json
import random

import pytest

from harness.accuracy import tasks
from harness.accuracy.tasks import listops
from harness.accuracy.tasks.common import Limits
from harness.errors import UsageError

OPS = {"[MIN": min, "[MAX": max, "[SM": lambda xs: sum(xs) % 10,
       "[MED": lambda xs: sorted(xs)[(len(xs) - 1) // 2] if len(xs) % 2 else
       int((sorted(xs)[len(xs) // 2 - 1] + sorted(xs)[len(xs) // 2]) / 2)}


def parse_written(tokens: list[str], pos: int = 0):
    """node := atom | '(' node node ')'; returns (node, next position)."""
    token = tokens[pos]
    if token == "(":
        left, pos = parse_written(tokens, pos + 1)
        right, pos = parse_written(tokens, pos)
        assert tokens[pos] == ")", f"expected ')' at {pos}"
        return (left, right), pos + 1
    assert token != ")"
    return token, pos + 1


def spine(node) -> list:
    """A left-nested chain (((op a1) a2) ... ']') -> [op, a1, ..., ']']."""
    items = []
    while isinstance(node, tuple):
        items.append(node[1])
        node = node[0]
    return [node] + items[::-1]


def value_and_stats(node, depth: int = 1) -> tuple[int, int, int, list[int]]:
    """(value, length L, max depth, argument counts) of a parsed operand."""
    if not isinstance(node, tuple):
        assert node.isdigit() and len(node) == 1, node
        return int(node), 1, depth - 1, []
    items = spine(node)
    op, args, end = items[0], items[1:-1], items[-1]
    assert op in OPS and end == "]"
    results = [value_and_stats(a, depth + 1) for a in args]
    values = [r[0] for r in results]
    length = 2 + sum(r[1] for r in results)
    max_depth = max([depth] + [r[2] for r in results])
    counts = [len(args)] + [c for r in results for c in r[3]]
    return OPS[op](values), length, max_depth, counts


def check_line(text: str, label: int, config: listops.GrammarConfig) -> int:
    tokens = text.split()
    tree, end = parse_written(tokens)
    assert end == len(tokens), "trailing tokens"
    value, length, depth, counts = value_and_stats(tree)
    assert value == label
    assert length == sum(t not in "()" for t in tokens)
    assert config.min_length < length < config.max_length
    assert depth <= config.max_depth
    assert all(2 <= c <= config.max_args for c in counts)
    return length


def test_official_grammar_examples_and_labels():
    rng = random.Random(7)
    config = listops.GrammarConfig()
    labels = []
    for _ in range(12):
        text, label = listops.generate_example(rng, config)
        check_line(text, label, config)
        labels.append(label)
    assert len(set(labels)) >= 3


def test_written_dataset_official_layout(tmp_path):
    config = listops.GrammarConfig(min_length=10, max_length=120)
    folder = listops.write_dataset(tmp_path, n_train=60, n_val=10, n_test=12, seed=3,
                                   config=config)
    assert folder == tmp_path / "listops-1000"
    sizes = {}
    for split in ("train", "val", "test"):
        with open(folder / f"basic_{split}.tsv", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        assert rows[0] == ["Source", "Target"]
        for text, label in rows[1:]:
            check_line(text, int(label), config)
        sizes[split] = len(rows) - 1
    assert sizes == {"train": 60, "val": 10, "test": 12}
    marker = json.loads((folder / "GENERATED.json").read_text())
    assert marker["official_length_window"] is False and marker["seed"] == 3
    data = tasks.load("listops", tmp_path, Limits(seq_len=2000))
    assert data.data_source == "generated" and data.sizes() == sizes
    # the loader's tokens are the written tokens without parentheses
    text = (folder / "basic_train.tsv").read_text().splitlines()[1].split("\t")[0]
    expected = [listops.TOKEN_IDS[t] for t in text.split() if t not in "()"]
    assert list(data.train.tokens[0, :data.train.lengths[0]]) == expected


def test_generation_is_seeded(tmp_path):
    config = listops.GrammarConfig(min_length=5, max_length=60)
    a = listops.write_dataset(tmp_path / "a", n_train=5, n_val=1, n_test=1, seed=1, config=config)
    b = listops.write_dataset(tmp_path / "b", n_train=5, n_val=1, n_test=1, seed=1, config=config)
    c = listops.write_dataset(tmp_path / "c", n_train=5, n_val=1, n_test=1, seed=2, config=config)
    read = lambda p: (p / "basic_train.tsv").read_text()  # noqa: E731
    assert read(a) == read(b) != read(c)


def test_bad_counts_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="n_val must be at least 1"):
        listops.write_dataset(tmp_path, n_train=2, n_val=0, n_test=1)
