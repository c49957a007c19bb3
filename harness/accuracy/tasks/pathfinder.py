"""Pathfinder (32x32) and Path-X (128x128): are the two markers joined by one dashed path?

Official layout (LRA release): ``pathfinder{R}/{difficulty}/imgs/<n>/sample_<i>.png`` with
metadata lists ``pathfinder{R}/{difficulty}/metadata/<n>.npy``: text lines despite the suffix,
``imgs/<n> sample_<i>.png <index> <label> ...`` (label = field 4). Difficulties:
``curv_baseline`` (easy), ``curv_contour_length_9`` (medium), ``curv_contour_length_14``
(hard, the one LRA reports). Split as LRA: 80/10/10 of the samples in metadata order
(metadata files in numeric order); a generated set records its own split sizes and is split
by those.

The generator here is pathfinder-*style*, not Linsley et al.'s: smooth random curves drawn as
dashes, a square marker at path ends, short dashed distractors. A positive image has one path
with a marker at each end plus an unmarked path; a negative has two paths with one marker
each. Different curves are kept at least ``separation_px`` apart (Chebyshev), and a dash gap
never exceeds ``bridge_px``, so "connected" is exactly "reachable through ink with steps of at
most bridge_px" -- which is what the tests check on the rendered PNG.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.accuracy.tasks.common import (
    LRA_SOURCE, Limits, Split, TaskData, data_roots, first_existing, malformed, missing,
    read_marker, write_marker)
from harness.errors import UsageError

DIFFICULTIES = {"easy": "curv_baseline", "medium": "curv_contour_length_9",
                "hard": "curv_contour_length_14"}
RESOLUTIONS = {"pathfinder": 32, "pathx": 128}
PER_FOLDER = 1000
INK = 255
FRACTIONS = (0.8, 0.1, 0.1)
NUMPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class PathStyle:
    """Drawing parameters at one resolution; lengths in pixels."""

    resolution: int
    contour_px: float
    distractors: int
    dash_px: float
    gap_px: float
    marker_px: int
    step_px: float = 0.25

    @property
    def bridge_px(self) -> int:
        """Largest pixel (Chebyshev) step between consecutive inked pixels along one path."""
        return max(1, math.ceil(self.gap_px + self.step_px))

    @property
    def separation_px(self) -> int:
        """Smallest Chebyshev distance between pixels of different curves."""
        return self.bridge_px + 1

    @classmethod
    def for_resolution(cls, resolution: int, difficulty: str = "hard") -> "PathStyle":
        if resolution < 16:
            raise UsageError(f"pathfinder: resolution must be at least 16, got {resolution}")
        if difficulty not in DIFFICULTIES:
            raise UsageError(f"pathfinder: unknown difficulty {difficulty!r}; valid: "
                             f"{', '.join(DIFFICULTIES)}")
        scale = resolution / 32
        length = {"easy": 10.0, "medium": 16.0, "hard": 22.0}[difficulty]
        return cls(resolution=resolution, contour_px=length * scale,
                   distractors={"easy": 1, "medium": 2, "hard": 3}[difficulty],
                   dash_px=3.0 * scale, gap_px=1.5 * scale,
                   marker_px=2 * max(1, round(scale)) + 1)


def random_curve(rng: np.random.Generator, style: PathStyle, length: float) -> np.ndarray:
    """Points (n, 2) every step_px along a smooth random curve inside the image margins."""
    margin = style.marker_px // 2 + 1
    low, high = margin, style.resolution - 1 - margin
    scale = style.resolution / 32
    while True:
        point = rng.uniform(low, high, size=2)
        theta = rng.uniform(0, 2 * math.pi)
        omega = 0.0
        points = [point.copy()]
        steps = int(length / style.step_px)
        for _ in range(steps):
            omega = float(np.clip(omega + rng.normal(0, 0.02 / scale), -0.09 / scale,
                                  0.09 / scale))
            theta += omega
            point = point + style.step_px * np.array([math.cos(theta), math.sin(theta)])
            if not (low <= point[0] <= high and low <= point[1] <= high):
                break
            points.append(point.copy())
        else:
            return np.array(points)


def dash_pixels(points: np.ndarray, style: PathStyle, phase: float = 0.0) -> set[tuple[int, int]]:
    """Pixels (row, col) inked by a dashed rendering of the curve (dash, gap, dash, ...)."""
    period = style.dash_px + style.gap_px
    pixels = set()
    for i, (x, y) in enumerate(points):
        if (i * style.step_px + phase) % period < style.dash_px:
            pixels.add((int(math.floor(y + 0.5)), int(math.floor(x + 0.5))))
    # the end points are always inked, so the markers sit on ink
    for x, y in (points[0], points[-1]):
        pixels.add((int(math.floor(y + 0.5)), int(math.floor(x + 0.5))))
    return pixels


def marker_pixels(point: np.ndarray, style: PathStyle) -> set[tuple[int, int]]:
    row, col = int(math.floor(point[1] + 0.5)), int(math.floor(point[0] + 0.5))
    half = style.marker_px // 2
    return {(r, c) for r in range(row - half, row + half + 1)
            for c in range(col - half, col + half + 1)
            if 0 <= r < style.resolution and 0 <= c < style.resolution}


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Chebyshev dilation of a boolean image."""
    out = mask.copy()
    size = mask.shape[0]
    padded = np.pad(mask, radius)
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            out |= padded[radius + dr:radius + dr + size, radius + dc:radius + dc + size]
    return out


def render_sample(rng: np.random.Generator, style: PathStyle, label: int,
                  max_tries: int = 200) -> np.ndarray:
    """One (R, R) uint8 image whose markers are joined by one path iff label == 1."""
    while True:
        image = _try_render(rng, style, label, max_tries)
        if image is not None:
            return image


def _try_render(rng: np.random.Generator, style: PathStyle, label: int,
                max_tries: int) -> np.ndarray | None:
    size = style.resolution
    ink = np.zeros((size, size), dtype=bool)
    forbidden = np.zeros((size, size), dtype=bool)
    # (curve length, markers at (start, end))
    plan = [(style.contour_px, (True, True)), (style.contour_px, (False, False))] if label \
        else [(style.contour_px, (True, False)), (style.contour_px, (True, False))]
    plan += [(style.contour_px * rng.uniform(0.2, 0.35), (False, False))
             for _ in range(style.distractors)]
    for length, (start_marker, end_marker) in plan:
        for _ in range(max_tries):
            points = random_curve(rng, style, length)
            pixels = dash_pixels(points, style, phase=rng.uniform(0, style.dash_px))
            if start_marker:
                pixels |= marker_pixels(points[0], style)
            if end_marker:
                pixels |= marker_pixels(points[-1], style)
            rows, cols = np.array(sorted(pixels)).T
            if start_marker and end_marker and \
                    np.abs(points[0] - points[-1]).max() < min_marker_distance(style):
                continue
            if not forbidden[rows, cols].any():
                break
        else:
            return None
        component = np.zeros_like(ink)
        component[rows, cols] = True
        ink |= component
        forbidden |= dilate(component, style.separation_px - 1)
    return np.where(ink, INK, 0).astype(np.uint8)


def min_marker_distance(style: PathStyle) -> float:
    """Two markers of one path sit at least this far apart (Chebyshev, pixels)."""
    return max(style.marker_px + style.separation_px, style.contour_px / 3)


def write_dataset(out: Path, *, n_train: int, n_val: int, n_test: int, seed: int = 0,
                  resolution: int = 32, difficulty: str = "hard") -> Path:
    """Write a generated set in the official layout under out/pathfinder{R}/{difficulty dir}."""
    from PIL import Image

    for name, count in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if count < 1:
            raise UsageError(f"pathfinder: {name} must be at least 1, got {count}")
    style = PathStyle.for_resolution(resolution, difficulty)
    target = out / f"pathfinder{resolution}" / DIFFICULTIES[difficulty]
    rng = np.random.default_rng(seed)
    total = n_train + n_val + n_test
    labels = np.concatenate([rng.permutation(np.arange(n) % 2) for n in (n_train, n_val, n_test)])
    lines: dict[int, list[str]] = {}
    for index in range(total):
        folder = index // PER_FOLDER
        (target / "imgs" / str(folder)).mkdir(parents=True, exist_ok=True)
        name = f"sample_{index}.png"
        Image.fromarray(render_sample(rng, style, int(labels[index])), mode="L").save(
            target / "imgs" / str(folder) / name)
        lines.setdefault(folder, []).append(f"imgs/{folder} {name} {index} {int(labels[index])}")
    (target / "metadata").mkdir(parents=True, exist_ok=True)
    for folder, rows in lines.items():
        (target / "metadata" / f"{folder}.npy").write_text("\n".join(rows) + "\n")
    write_marker(target, {"task": "pathfinder" if resolution == 32 else f"pathfinder{resolution}",
                          "seed": seed, "resolution": resolution, "difficulty": difficulty,
                          "style": {**asdict(style), "bridge_px": style.bridge_px,
                                    "separation_px": style.separation_px},
                          "counts": {"train": n_train, "val": n_val, "test": n_test}})
    return target


def read_metadata(path: Path) -> list[tuple[str, str, int, int]]:
    """(subdir, file name, label, line number) of every sample listed in one metadata file."""
    raw = path.read_bytes()
    if raw.startswith(NUMPY_MAGIC):
        import io

        try:
            table = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as exc:
            raise malformed(path, None, f"unreadable numpy metadata ({exc})") from None
        lines = [" ".join(str(x) for x in np.atleast_1d(row)) for row in np.atleast_2d(table)]
    else:
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise malformed(path, None, "neither text nor a numpy array") from None
    rows = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            raise malformed(path, number, f"expected at least 4 fields (dir, file, index, "
                                          f"label), got {len(fields)}")
        try:
            label = int(float(fields[3]))
        except ValueError:
            raise malformed(path, number, f"label {fields[3]!r} is not a number") from None
        if label not in (0, 1):
            raise malformed(path, number, f"label {label} is not 0 or 1")
        rows.append((fields[0], fields[1], label, number))
    return rows


def _numeric_key(path: Path) -> tuple[int, str]:
    return (int(path.stem), path.name) if path.stem.isdigit() else (1 << 60, path.name)


def load_images(folder: Path, entries: list[tuple[str, str, int, int, Path]],
                resolution: int) -> Split:
    from PIL import Image

    tokens = np.zeros((len(entries), resolution * resolution), dtype=np.int32)
    for i, (subdir, name, _, number, meta) in enumerate(entries):
        path = folder / subdir / name
        if not path.exists():
            raise malformed(meta, number, f"lists {subdir}/{name}, which does not exist")
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L"))
        except OSError as exc:
            raise malformed(path, None, f"unreadable PNG ({exc})") from None
        if pixels.shape != (resolution, resolution):
            raise malformed(path, None, f"image is {pixels.shape[1]}x{pixels.shape[0]}, "
                                        f"expected {resolution}x{resolution}")
        tokens[i] = pixels.reshape(-1)
    labels = np.array([e[2] for e in entries], dtype=np.int64)
    return Split(tokens, np.full(len(entries), tokens.shape[1], dtype=np.int64), labels)


def load(data_dir: Path | None, limits: Limits, *, task: str = "pathfinder",
         difficulty: str = "hard", **_: object) -> TaskData:
    resolution = RESOLUTIONS[task]
    if difficulty not in DIFFICULTIES:
        raise UsageError(f"{task}: unknown difficulty {difficulty!r}; valid: "
                         f"{', '.join(DIFFICULTIES)}")
    relative = f"pathfinder{resolution}/{DIFFICULTIES[difficulty]}"
    folder = first_existing(root / relative for root in data_roots(data_dir))
    expected = [f"{relative}/metadata/*.npy", f"{relative}/imgs/*/sample_*.png"]
    metas = sorted((folder / "metadata").glob("*.npy"), key=_numeric_key) if folder else []
    if not metas:
        raise missing(task, data_dir, expected, LRA_SOURCE,
                      f"or generate a set with: python run_bench.py data pathfinder "
                      f"--resolution {resolution} --out DIR")
    entries = [(*row[:3], row[3], meta) for meta in metas for row in read_metadata(meta)]
    marker = read_marker(folder)
    if marker and "counts" in marker:
        counts = marker["counts"]
        n_train, n_val = int(counts["train"]), int(counts["val"])
    else:
        n_train = int(round(len(entries) * FRACTIONS[0]))
        n_val = int(round(len(entries) * FRACTIONS[1]))
    parts = {"train": entries[:n_train], "val": entries[n_train:n_train + n_val],
             "test": entries[n_train + n_val:]}
    for name, part in parts.items():
        if not part:
            raise malformed(metas[-1], None, f"too few samples ({len(entries)}) for a "
                                             f"non-empty {name} split")
    splits = {name: load_images(folder, part[:limits.for_split(name)], resolution)
              for name, part in parts.items()}
    return TaskData(task, splits["train"], splits["val"], splits["test"], num_classes=2,
                    vocab_size=256, pad_id=None,
                    data_source="generated" if marker else "official", data_path=str(folder),
                    notes={"difficulty": difficulty, **({"generator": marker} if marker else {})})
