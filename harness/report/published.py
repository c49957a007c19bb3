"""Published LRA accuracy (%), from Tay et al. 2020 and Alam et al. 2023. Shown labelled as
published, next to (never mixed into) what attnbench measured."""

from __future__ import annotations

LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder")   # the LRA average's five
TASK_TITLES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
               "pathfinder": "Path", "pathx": "Path-X", "bytes": "Bytes"}
SOURCE = ("Tay et al. 2020, \"Long Range Arena: A Benchmark for Efficient Transformers\" "
          "(arXiv 2011.04006), and Alam et al. 2023, \"Recasting Self-Attention with "
          "Holographic Reduced Representations\", ICML (arXiv 2305.19534)")

# model -> (ListOps, Text, Retrieval, Image, Path, Avg)
PUBLISHED_LRA: dict[str, tuple[float, float, float, float, float, float]] = {
    "Transformer (LRA paper)": (36.37, 64.27, 57.46, 42.44, 71.40, 54.39),
    "Performer (LRA paper)": (18.01, 65.40, 53.82, 42.77, 77.05, 51.41),
    "Linformer (LRA paper)": (35.70, 53.94, 52.27, 38.56, 76.34, 51.36),
    "Luna-256": (37.98, 65.78, 79.56, 47.86, 78.55, 61.95),
    "Hrrformer, 1 layer": (38.79, 66.50, 75.40, 48.47, 70.71, 59.97),
    "Hrrformer, multi layer": (39.98, 65.38, 76.15, 50.45, 72.17, 60.83),
}
