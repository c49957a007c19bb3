"""ListOps: nested MIN/MAX/MED/SM expressions (LRA), loader and a generator of the official grammar.

Official layout: ``listops-1000/basic_{train,val,test}.tsv``, a header ``Source<TAB>Target``,
then one expression and its value per line. The written expression brackets left-nested pairs
with ``(`` and ``)``; as in the usual LRA input pipeline they are dropped before tokenising.

Grammar (the official LRA generator, Tay et al. 2020): an operand is a digit (probability 0.75 below the depth
limit) or ``[OP a1 ... an ]`` with 2 <= n <= 10; depth <= 10; kept if 500 < L < 2000 where L
counts operator tokens, digits and ``]``.
"""

from __future__ import annotations

import csv
import random
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Union

import numpy as np

from harness.accuracy.tasks.common import (
    LRA_SOURCE, Limits, Split, TaskData, data_roots, first_existing, malformed, missing,
    pad_rows, read_marker, trim_to_longest, write_marker)
from harness.errors import UsageError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
# 0 = pad, 1 = unknown (kept for the vocabulary size of the LRA setting: 17), then the tokens
VOCAB = ("<pad>", "<unk>", *DIGITS, *OPERATORS, END)
TOKEN_IDS = {token: i for i, token in enumerate(VOCAB)}
PARENS = ("(", ")")
SUBDIR = "listops-1000"
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
NUM_CLASSES = 10

# A tree: a digit, an operator token, END, or a pair (left, right) of trees
Tree = Union[int, str, tuple]


@dataclass(frozen=True)
class GrammarConfig:
    max_depth: int = 10
    max_args: int = 10
    value_probability: float = 0.75
    min_length: int = 500      # exclusive, as in the official generator
    max_length: int = 2000     # exclusive

    def is_official(self) -> bool:
        return self == GrammarConfig()


def generate_tree(rng: random.Random, config: GrammarConfig, depth: int = 1) -> tuple[Tree, int]:
    """One random operand and its length L (operators, digits and ']' counted)."""
    if depth >= config.max_depth or rng.random() < config.value_probability:
        return rng.randrange(10), 1
    count = rng.randint(2, config.max_args)
    children = [generate_tree(rng, config, depth + 1) for _ in range(count)]
    tree: Tree = (rng.choice(OPERATORS), children[0][0])
    for child, _ in children[1:]:
        tree = (tree, child)
    return (tree, END), 2 + sum(length for _, length in children)


def to_string(tree: Tree) -> str:
    """The official written form: every pair bracketed by '(' and ')'."""
    if isinstance(tree, tuple):
        return f"( {to_string(tree[0])} {to_string(tree[1])} )"
    return str(tree)


def apply_operator(op: str, values: list[int]) -> int:
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        return int(statistics.median(values))
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown operator {op!r}")


def evaluate_tokens(tokens: list[str]) -> int:
    """Value of an expression given as tokens (parentheses already dropped), by a stack."""
    stack: list[list] = []
    result: int | None = None
    for token in tokens:
        if token in OPERATORS:
            stack.append([token])
        elif token == END:
            if not stack:
                raise ValueError("unbalanced ']'")
            op, *values = stack.pop()
            value = apply_operator(op, values)
            if stack:
                stack[-1].append(value)
            else:
                result = value
        elif token in DIGITS:
            if stack:
                stack[-1].append(int(token))
            else:
                result = int(token)
        else:
            raise ValueError(f"unknown token {token!r}")
    if stack or result is None:
        raise ValueError("unterminated expression")
    return result


MAX_ATTEMPTS = 200_000   # draws per expression before the window is declared out of reach


def longest_expression(config: GrammarConfig) -> int:
    """The largest L the grammar can produce at its max_depth (every node with max_args)."""
    length = 1
    for _ in range(config.max_depth - 1):
        length = 2 + config.max_args * length
    return length


def check_grammar(config: GrammarConfig) -> None:
    """Refuse a grammar that can never (or only by a freak draw) meet the length window."""
    if config.max_depth < 1:
        raise UsageError(f"listops: --max-depth must be at least 1, got {config.max_depth}")
    if not 0 <= config.min_length < config.max_length - 1:
        raise UsageError(f"listops: no integer length L with {config.min_length} < L < "
                         f"{config.max_length} (need 0 <= min_length < max_length - 1)")
    longest = longest_expression(config)
    if longest <= config.min_length:
        raise UsageError(f"listops: at --max-depth {config.max_depth} expressions have at most "
                         f"{longest} tokens, never more than --min-length {config.min_length}; "
                         f"raise --max-depth or lower --min-length")


def generate_example(rng: random.Random, config: GrammarConfig,
                     max_attempts: int = MAX_ATTEMPTS) -> tuple[str, int]:
    """Rejection-sample one expression in the length window; (written string, value)."""
    for _ in range(max_attempts):
        tree, length = generate_tree(rng, config)
        if config.min_length < length < config.max_length:
            text = to_string(tree)
            return text, evaluate_tokens(strip_parens(text.split()))
    raise UsageError(f"listops: no expression with {config.min_length} < L < "
                     f"{config.max_length} in {max_attempts} draws at --max-depth "
                     f"{config.max_depth}; widen the length window or raise --max-depth")


def strip_parens(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in PARENS]


def write_dataset(out: Path, *, n_train: int, n_val: int, n_test: int, seed: int = 0,
                  config: GrammarConfig = GrammarConfig()) -> Path:
    """Write ``out/listops-1000/basic_{train,val,test}.tsv`` (official layout), marked generated."""
    for name, count in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if count < 1:
            raise UsageError(f"listops: {name} must be at least 1, got {count}")
    check_grammar(config)
    rng = random.Random(seed)
    target = out / SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        with open(target / SPLIT_FILES[split], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["Source", "Target"])
            for _ in range(count):
                writer.writerow(generate_example(rng, config))
    write_marker(target, {"task": "listops", "seed": seed, "grammar": asdict(config),
                          "official_length_window": config.is_official(),
                          "counts": {"train": n_train, "val": n_val, "test": n_test}})
    return target


def tokenize(text: str) -> list[int]:
    """Token ids of a written expression; parentheses dropped. Raises ValueError on unknowns."""
    ids = []
    for token in strip_parens(text.split()):
        if token not in TOKEN_IDS or token in ("<pad>", "<unk>"):
            raise ValueError(f"unknown token {token!r}")
        ids.append(TOKEN_IDS[token])
    return ids


def read_split(path: Path, seq_len: int, limit: int | None) -> Split:
    rows, labels = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if number == 1:
                if line.split("\t")[:2] != ["Source", "Target"]:
                    raise malformed(path, 1, f"expected the header 'Source<TAB>Target', "
                                             f"got {line[:60]!r}")
                continue
            if not line.strip():
                continue
            if limit is not None and len(labels) >= limit:
                break
            fields = line.split("\t")
            if len(fields) != 2:
                raise malformed(path, number, f"expected 2 tab-separated fields, got {len(fields)}")
            try:
                label = int(fields[1])
            except ValueError:
                raise malformed(path, number, f"target {fields[1]!r} is not an integer") from None
            if not 0 <= label < NUM_CLASSES:
                raise malformed(path, number, f"target {label} is outside 0..9")
            try:
                rows.append(tokenize(fields[0]))
            except ValueError as exc:
                raise malformed(path, number, str(exc)) from None
            labels.append(label)
    if not labels:
        raise malformed(path, None, "no examples")
    tokens, lengths = pad_rows(rows, seq_len)
    return Split(tokens, lengths, np.asarray(labels, dtype=np.int64))


def find_dir(data_dir: Path | None) -> Path | None:
    return first_existing(root / SUBDIR for root in data_roots(data_dir))


def load(data_dir: Path | None, limits: Limits, **_: object) -> TaskData:
    folder = find_dir(data_dir)
    expected = [f"{SUBDIR}/{name}" for name in SPLIT_FILES.values()]
    if folder is None or not all((folder / f).exists() for f in SPLIT_FILES.values()):
        raise missing("listops", data_dir, expected, LRA_SOURCE,
                      "or generate a set with: python run_bench.py data listops --out DIR")
    splits = [read_split(folder / SPLIT_FILES[s], limits.seq_len, limits.for_split(s))
              for s in ("train", "val", "test")]
    train, val, test = trim_to_longest(splits)
    marker = read_marker(folder)
    return TaskData("listops", train, val, test, num_classes=NUM_CLASSES, vocab_size=len(VOCAB),
                    pad_id=0, data_source="generated" if marker else "official",
                    data_path=str(folder), notes={"generator": marker} if marker else {})
