"""Small data sets written in each official format, for the accuracy-track tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_listops(root: Path, rows: dict[str, list[tuple[str, int]]], header: bool = True) -> Path:
    folder = root / "listops-1000"
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "basic_train.tsv"), ("val", "basic_val.tsv"),
                        ("test", "basic_test.tsv")):
        lines = (["Source\tTarget"] if header else []) + [f"{s}\t{t}" for s, t in rows[split]]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


LISTOPS_ROWS = [("( ( ( [MAX 2 ) 9 ) ] )", 9),
                ("( ( ( ( [MIN 4 ) ( ( ( [SM 5 ) 7 ) ] ) ) 3 ) ] )", 2),
                ("( ( ( ( [MED 1 ) 8 ) 5 ) ] )", 5)]


def write_retrieval(root: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    folder = root / "tsv_data"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval", "test"):
        (folder / f"new_aan_pairs.{split}.tsv").write_text(
            "".join("\t".join(r) + "\n" for r in rows))
    return folder


def write_imdb(root: Path, per_class: int = 5) -> Path:
    folder = root / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            target = folder / split / label
            target.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (target / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(
                    f"{label} review {i} of {split}: caf\u00e9")
    return folder


def write_cifar(root: Path, per_batch: int = 4, seed: int = 0) -> tuple[Path, dict]:
    """Five training batches and a test batch; returns the folder and the raw arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
        raw[name] = (data, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, handle, protocol=2)
    return folder, raw


def write_bytes_folder(root: Path, per_class: int = 40, size: int = 200, seed: int = 0) -> Path:
    """An easy two-class folder: letters a-m versus letters n-z."""
    rng = np.random.default_rng(seed)
    for name, (low, high) in (("first_half", (ord("a"), ord("m"))),
                              ("second_half", (ord("n"), ord("z")))):
        target = root / name
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            length = int(rng.integers(size // 2, size))
            (target / f"f{i}.bin").write_bytes(
                rng.integers(low, high + 1, size=length, dtype=np.uint8).tobytes())
    return root
