"""The pathfinder-style generator: every label checked by a connectivity search on the PNG."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.accuracy import tasks
from harness.accuracy.tasks import pathfinder
from harness.accuracy.tasks.common import Limits, MalformedDataError


def marker_sites(ink: np.ndarray, side: int) -> list[tuple[int, int]]:
    """Top-left corners of fully inked side x side squares, merged when they overlap."""
    rows, cols = ink.shape
    corners = [(r, c) for r in range(rows - side + 1) for c in range(cols - side + 1)
               if ink[r:r + side, c:c + side].all()]
    sites: list[tuple[int, int]] = []
    for corner in corners:
        if all(max(abs(corner[0] - s[0]), abs(corner[1] - s[1])) >= side for s in sites):
            sites.append(corner)
    return sites


def reachable(ink: np.ndarray, start: tuple[int, int], goal: tuple[int, int], step: int) -> bool:
    """Breadth-first search over ink pixels, moving at most `step` pixels (Chebyshev)."""
    seen = {start}
    queue = deque([start])
    rows, cols = ink.shape
    while queue:
        r, c = queue.popleft()
        if (r, c) == goal:
            return True
        for dr in range(-step, step + 1):
            for dc in range(-step, step + 1):
                nr, nc = r + dr, c + dc
                if 0 <= nr < rows and 0 <= nc < cols and ink[nr, nc] and (nr, nc) not in seen:
                    seen.add((nr, nc))
                    queue.append((nr, nc))
    return False


def check_generated(root: Path, resolution: int, count: int) -> list[int]:
    folder = root / f"pathfinder{resolution}" / "curv_contour_length_14"
    marker = json.loads((folder / "GENERATED.json").read_text())
    side, step = marker["style"]["marker_px"], marker["style"]["bridge_px"]
    lines = [line.split() for meta in sorted((folder / "metadata").glob("*.npy"))
             for line in meta.read_text().splitlines()]
    assert len(lines) == count
    labels = []
    for subdir, name, _, label in lines:
        image = np.asarray(Image.open(folder / subdir / name))
        assert image.shape == (resolution, resolution) and image.dtype == np.uint8
        ink = image > 127
        sites = marker_sites(ink, side)
        assert len(sites) == 2, f"{name}: {len(sites)} markers"
        connected = reachable(ink, sites[0], sites[1], step)
        assert connected == (label == "1"), f"{name}: label {label}, connected {connected}"
        assert ink.sum() > 2 * side * side        # there is more ink than the two markers
        labels.append(int(label))
    return labels


def test_labels_match_connectivity_32(tmp_path):
    pathfinder.write_dataset(tmp_path, n_train=48, n_val=8, n_test=8, seed=5)
    labels = check_generated(tmp_path, 32, 64)
    assert 20 <= sum(labels) <= 44                 # both classes, roughly balanced


def test_labels_match_connectivity_other_resolution(tmp_path):
    pathfinder.write_dataset(tmp_path, n_train=6, n_val=2, n_test=2, seed=1, resolution=64)
    labels = check_generated(tmp_path, 64, 10)
    assert 0 < sum(labels) < 10


def test_loader_reads_generated_set(tmp_path):
    pathfinder.write_dataset(tmp_path, n_train=12, n_val=4, n_test=4, seed=2)
    data = tasks.load("pathfinder", tmp_path, Limits(seq_len=1024, max_train=10))
    assert data.data_source == "generated"
    assert data.sizes() == {"train": 10, "val": 4, "test": 4}
    assert data.seq_len == 1024 and data.pad_id is None and data.num_classes == 2
    folder = tmp_path / "pathfinder32" / "curv_contour_length_14"
    first = np.asarray(Image.open(folder / "imgs" / "0" / "sample_0.png")).reshape(-1)
    assert np.array_equal(data.train.tokens[0], first)
    meta = (folder / "metadata" / "0.npy").read_text().splitlines()
    assert [int(line.split()[3]) for line in meta[16:20]] == list(data.test.labels)


def official_layout(root: Path, count: int, resolution: int = 32) -> Path:
    """An 'official' set: PNGs and text metadata, no GENERATED marker."""
    folder = root / "lra_release" / f"pathfinder{resolution}" / "curv_baseline"
    (folder / "imgs" / "0").mkdir(parents=True)
    (folder / "metadata").mkdir()
    rows = []
    for i in range(count):
        Image.fromarray(np.full((resolution, resolution), i, np.uint8)).save(
            folder / "imgs" / "0" / f"sample_{i}.png")
        rows.append(f"imgs/0 sample_{i}.png {i} {i % 2} 7 1.5")
    (folder / "metadata" / "0.npy").write_text("\n".join(rows) + "\n")
    return folder


def test_official_split_is_80_10_10_in_metadata_order(tmp_path):
    official_layout(tmp_path, 20)
    data = tasks.load("pathfinder", tmp_path, Limits(seq_len=1024), difficulty="easy")
    assert data.data_source == "official" and data.sizes() == {"train": 16, "val": 2, "test": 2}
    assert [int(t[0]) for t in data.val.tokens] == [16, 17]   # pixel value = sample index
    assert list(data.test.labels) == [0, 1]


def test_numpy_metadata_is_read_too(tmp_path):
    folder = official_layout(tmp_path, 10)
    rows = [line.split() for line in (folder / "metadata" / "0.npy").read_text().splitlines()]
    np.save(folder / "metadata" / "0.npy", np.array(rows))
    data = tasks.load("pathfinder", tmp_path, Limits(seq_len=1024), difficulty="easy")
    assert len(data.train) == 8


def test_malformed_metadata_and_images(tmp_path):
    folder = official_layout(tmp_path, 10)
    meta = folder / "metadata" / "0.npy"
    meta.write_text(meta.read_text() + "imgs/0 sample_99.png 99 1\n")
    with pytest.raises(MalformedDataError, match=r"0.npy line 11: lists imgs/0/sample_99.png"):
        tasks.load("pathfinder", tmp_path, Limits(seq_len=1024), difficulty="easy")
    meta.write_text("imgs/0 sample_0.png 0\n")
    with pytest.raises(MalformedDataError, match=r"0.npy line 1: expected at least 4 fields"):
        tasks.load("pathfinder", tmp_path, Limits(seq_len=1024), difficulty="easy")
    official_layout(tmp_path / "x", 10, resolution=16)
    wrong = tmp_path / "x" / "lra_release" / "pathfinder16" / "curv_baseline"
    target = tmp_path / "x" / "lra_release" / "pathfinder32"
    wrong.parent.rename(target)
    with pytest.raises(MalformedDataError, match=r"sample_0.png: image is 16x16, expected 32x32"):
        tasks.load("pathfinder", tmp_path / "x", Limits(seq_len=1024), difficulty="easy")
