"""Loaders of the official formats, on small fixture files; missing and malformed data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from accuracy_fixtures import (LISTOPS_ROWS, write_bytes_folder, write_cifar, write_imdb,
                               write_listops, write_retrieval)
from harness.accuracy import tasks
from harness.accuracy.tasks import listops
from harness.accuracy.tasks.common import Limits, MalformedDataError, MissingDataError
from harness.errors import UsageError

LIMITS = Limits(seq_len=64)


def as_bytes(ids: np.ndarray) -> bytes:
    """Byte-level ids (byte + 1) back to bytes."""
    return (np.asarray(ids) - 1).astype(np.uint8).tobytes()


def decode_listops(ids: np.ndarray, length: int) -> list[str]:
    return [listops.VOCAB[i] for i in ids[:length]]


def test_listops_official_tsv(tmp_path):
    write_listops(tmp_path, {"train": LISTOPS_ROWS, "val": LISTOPS_ROWS[:1],
                             "test": LISTOPS_ROWS[1:]})
    data = tasks.load("listops", tmp_path, LIMITS)
    assert data.data_source == "official"      # no GENERATED marker
    assert data.sizes() == {"train": 3, "val": 1, "test": 2}
    assert data.vocab_size == 17 and data.num_classes == 10
    assert list(data.train.labels) == [9, 2, 5]
    first = decode_listops(data.train.tokens[0], int(data.train.lengths[0]))
    assert first == ["[MAX", "2", "9", "]"]      # parentheses dropped
    assert (data.train.tokens[0, data.train.lengths[0]:] == 0).all()
    assert data.seq_len == max(int(n) for n in data.train.lengths)  # trimmed to the longest


def test_listops_in_lra_release_subfolder(tmp_path):
    write_listops(tmp_path / "lra_release", {s: LISTOPS_ROWS for s in ("train", "val", "test")})
    assert len(tasks.load("listops", tmp_path, LIMITS).test) == 3


@pytest.mark.parametrize("line, problem", [("( [MAX 2 ) ]", "2 tab-separated fields"),
                                           ("( ( [MAX 2 ) ] )\tnine", "not an integer"),
                                           ("( ( [FOO 2 ) ] )\t2", "unknown token '[FOO'"),
                                           ("( ( [MAX 2 ) ] )\t12", "outside 0..9")])
def test_listops_malformed_names_file_and_line(tmp_path, line, problem):
    folder = write_listops(tmp_path, {s: LISTOPS_ROWS for s in ("train", "val", "test")})
    path = folder / "basic_val.tsv"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(MalformedDataError) as info:
        tasks.load("listops", tmp_path, LIMITS)
    message = str(info.value)
    assert str(path) in message and "line 5" in message and problem in message


def test_listops_missing_header(tmp_path):
    write_listops(tmp_path, {s: LISTOPS_ROWS for s in ("train", "val", "test")}, header=False)
    with pytest.raises(MalformedDataError, match="basic_train.tsv line 1: expected the header"):
        tasks.load("listops", tmp_path, LIMITS)


@pytest.mark.parametrize("task, names", [
    ("listops", ["listops-1000/basic_train.tsv", "lra_release"]),
    ("retrieval", ["tsv_data/new_aan_pairs.train.tsv", "lra_release"]),
    ("text", ["aclImdb/train/pos", "aclImdb_v1.tar.gz"]),
    ("image", ["cifar-10-batches-py/data_batch_1", "cifar-10-python.tar.gz"]),
    ("pathfinder", ["pathfinder32/curv_contour_length_14/metadata", "lra_release",
                    "run_bench.py data pathfinder"]),
    ("pathx", ["pathfinder128/curv_contour_length_14", "lra_release"]),
    ("bytes", ["one sub-folder per class"]),
])
def test_missing_data_names_expected_files_and_source(tmp_path, task, names):
    with pytest.raises(MissingDataError) as info:
        tasks.load(task, tmp_path / "nowhere", LIMITS)
    assert isinstance(info.value, UsageError)
    for name in names:
        assert name in str(info.value)
    assert "Nothing is downloaded" in str(info.value)


def test_retrieval_tsv(tmp_path):
    rows = [("1", "a1", "b1", "first doc", "second doc longer"),
            ("0.0", "a2", "b2", "x", "\u00e9")]
    write_retrieval(tmp_path, rows)
    data = tasks.load("retrieval", tmp_path, LIMITS)
    assert data.pair and data.vocab_size == 257
    assert list(data.train.labels) == [1, 0]
    assert as_bytes(data.train.tokens[0, :9]) == b"first doc"
    assert as_bytes(data.train.tokens2[0, :data.train.lengths2[0]]) == b"second doc longer"
    assert as_bytes(data.train.tokens2[1, :2]) == "\u00e9".encode()   # byte level
    # truncation to seq_len
    short = tasks.load("retrieval", tmp_path, Limits(seq_len=4))
    assert short.seq_len == 4 and short.train.lengths2[0] == 4


def test_retrieval_malformed(tmp_path):
    write_retrieval(tmp_path, [("1", "a", "b", "t1", "t2"), ("2", "a", "b", "t1", "t2")])
    with pytest.raises(MalformedDataError, match=r"new_aan_pairs.train.tsv line 2: label"):
        tasks.load("retrieval", tmp_path, LIMITS)
    write_retrieval(tmp_path, [("1", "a", "b", "only four")])
    with pytest.raises(MalformedDataError, match=r"line 1: expected 5 tab-separated"):
        tasks.load("retrieval", tmp_path, LIMITS)


def test_text_imdb_folders(tmp_path):
    write_imdb(tmp_path, per_class=5)
    data = tasks.load("text", tmp_path, Limits(seq_len=200), seed=1)
    assert data.sizes() == {"train": 9, "val": 1, "test": 10}
    assert data.num_classes == 2 and data.vocab_size == 257
    for split in (data.train, data.val, data.test):
        for row, length, label in zip(split.tokens, split.lengths, split.labels):
            text = as_bytes(row[:length]).decode("utf-8")
            assert text.startswith(("neg", "pos")[label])
            assert text.endswith("caf\u00e9")


def test_image_cifar_pickles_to_grayscale(tmp_path):
    folder, raw = write_cifar(tmp_path, per_batch=20)
    data = tasks.load("image", tmp_path, Limits(seq_len=1024))
    assert data.sizes() == {"train": 90, "val": 10, "test": 20}  # val: last tenth, at most 5000
    assert data.seq_len == 1024 and data.pad_id is None and data.vocab_size == 256
    test_data, test_labels = raw["test_batch"]
    rgb = test_data[3].reshape(3, 32, 32).astype(float)
    gray = np.rint(0.2989 * rgb[0] + 0.5870 * rgb[1] + 0.1140 * rgb[2]).reshape(-1)
    assert np.array_equal(data.test.tokens[3], gray.astype(int))
    assert list(data.test.labels) == test_labels
    assert int(data.train.labels[0]) == raw["data_batch_1"][1][0]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_image_refuses_code_in_pickles(tmp_path, capsys):
    folder, _ = write_cifar(tmp_path, per_batch=2)
    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, handle)
    with pytest.raises(MalformedDataError, match="data_batch_3: not a CIFAR-10 python batch"):
        tasks.load("image", tmp_path, Limits(seq_len=1024))
    assert "pwned" not in capsys.readouterr().out


def test_unknown_task_lists_valid_ones():
    with pytest.raises(UsageError, match="unknown task 'lisops'.*listops"):
        tasks.get("lisops")


def test_bytes_folder(tmp_path):
    (tmp_path / "b_class").mkdir()
    (tmp_path / "a_class" / "deep").mkdir(parents=True)
    payloads = {}
    for i in range(10):
        data_a = bytes([0, 255, i]) * 30             # 90 bytes, includes byte 0 and 255
        (tmp_path / "a_class" / "deep" / f"{i}.dat").write_bytes(data_a)
        data_b = bytes(range(i + 1))                  # shorter than seq_len: padded
        (tmp_path / "b_class" / f"{i}.dat").write_bytes(data_b)
        payloads[data_a[:64]] = 0
        payloads[data_b[:64]] = 1
    data = tasks.load("bytes", tmp_path, Limits(seq_len=64), seed=3)
    assert data.notes["classes"] == ["a_class", "b_class"]
    assert data.data_source == "user folder" and data.vocab_size == 257
    assert data.sizes() == {"train": 16, "val": 2, "test": 2}
    assert sorted(data.val.labels) == [0, 1] and sorted(data.test.labels) == [0, 1]
    seen = 0
    for split in (data.train, data.val, data.test):
        for row, length, label in zip(split.tokens, split.lengths, split.labels):
            content = bytes(int(t) - 1 for t in row[:length])
            assert payloads[content] == label               # first T bytes, id = byte + 1
            assert (row[length:] == 0).all()                 # pad id 0
            seen += 1
    assert seen == 20


def test_bytes_needs_two_classes_and_three_files(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x").write_bytes(b"abc")
    with pytest.raises(MissingDataError, match="found 1 class folder"):
        tasks.load("bytes", tmp_path, LIMITS)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "y").write_bytes(b"abc")
    with pytest.raises(UsageError, match="fewer than 3 files"):
        tasks.load("bytes", tmp_path, LIMITS)


def test_bytes_long_prefix_reads_only_t_bytes(tmp_path):
    write_bytes_folder(tmp_path, per_class=5, size=50)
    big = tmp_path / "first_half" / "big.bin"
    big.write_bytes(b"a" * (2**17 + 100))
    data = tasks.load("bytes", tmp_path, Limits(seq_len=2**17), seed=0)
    assert data.seq_len == 2**17
    longest = max(int(s.lengths.max()) for s in (data.train, data.val, data.test))
    assert longest == 2**17
