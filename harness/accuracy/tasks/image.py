"""Image: CIFAR-10 as a sequence of 1024 grayscale pixels (LRA), from the python pickle batches.

Layout (cifar-10-python.tar.gz from www.cs.toronto.edu/~kriz/cifar.html):
``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``, each a pickled dict with
``b'data'`` (N x 3072 uint8, R then G then B planes) and ``b'labels'``. The pickles are read
with an unpickler that only admits numpy arrays, so a tampered file cannot run code.
Grayscale as tf.image.rgb_to_grayscale: 0.2989 R + 0.5870 G + 0.1140 B, rounded.
Validation: the last 5000 training images (LRA itself validates on test).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from harness.accuracy.tasks.common import (
    Limits, Split, TaskData, data_roots, first_existing, malformed, missing)

SOURCE = "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)"
SUBDIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
VAL_COUNT = 5000
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140])
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
           ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def to_grayscale(data: np.ndarray) -> np.ndarray:
    """(N, 3072) RGB planes -> (N, 1024) uint8 gray pixels."""
    rgb = data.reshape(-1, 3, 1024).astype(np.float64)
    gray = np.tensordot(GRAY_WEIGHTS, rgb, axes=([0], [1]))
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise malformed(path, None, f"not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise malformed(path, None, "expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise malformed(path, None, f"b'data' has shape {data.shape}, expected (N, 3072) "
                                    f"matching {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise malformed(path, None, "labels outside 0..9")
    return data.astype(np.uint8), labels


def as_split(gray: np.ndarray, labels: np.ndarray, limit: int | None) -> Split:
    if limit is not None:
        gray, labels = gray[:limit], labels[:limit]
    tokens = gray.astype(np.int32)
    return Split(tokens, np.full(len(labels), tokens.shape[1], dtype=np.int64), labels)


def load(data_dir: Path | None, limits: Limits, **_: object) -> TaskData:
    folder = first_existing(root / SUBDIR for root in data_roots(data_dir))
    expected = [f"{SUBDIR}/{name}" for name in (*TRAIN_FILES, TEST_FILE)]
    if folder is None or not all((folder / f).exists() for f in (*TRAIN_FILES, TEST_FILE)):
        raise missing("image", data_dir, expected, SOURCE)
    batches = [read_batch(folder / name) for name in TRAIN_FILES]
    data = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    n_val = min(VAL_COUNT, len(labels) // 10 or 1)
    gray = to_grayscale(data)
    test_data, test_labels = read_batch(folder / TEST_FILE)
    return TaskData(
        "image", as_split(gray[:-n_val], labels[:-n_val], limits.max_train),
        as_split(gray[-n_val:], labels[-n_val:], limits.max_val),
        as_split(to_grayscale(test_data), test_labels, limits.max_test),
        num_classes=10, vocab_size=256, pad_id=None, data_source="official",
        data_path=str(folder),
        notes={"validation": f"last {n_val} training images (LRA itself validates on test)"})
