"""The accuracy-speed-memory figure (in the style of LRA's Figure 3): x = training examples/s,
y = test accuracy, marker area proportional to peak memory, one marker per implementation."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.lines import Line2D

from harness.report import style
from harness.report.data import MIB
from harness.report.figures import add_legend, add_note, grid, impl_handles, spans_decades
from harness.report.lra import AVG

MAX_AREA = 500.0        # pt^2 of the largest peak memory in the figure
MIN_AREA = 12.0         # smaller markers are drawn at this area, so that they stay visible
NO_MEMORY_AREA = 40.0   # hollow marker: peak memory not recorded


def area(mem: float | None, largest: float) -> float:
    if mem is None or not largest or pd.isna(mem):
        return NO_MEMORY_AREA
    return max(MIN_AREA, MAX_AREA * float(mem) / largest)


def accuracy_speed_memory(points: pd.DataFrame, impls: list[str], looks: dict[str, style.Look],
                          task_titles: dict[str, str]):
    """One panel per task, or a single LRA-average panel when every implementation shown has
    all five LRA tasks. ``points``: harness.report.lra.speed_points. None when no point has a
    throughput."""
    points = points[points["examples_per_s"].notna() & (points["examples_per_s"] > 0)]
    if points.empty:
        return None
    average = points[points["task"] == AVG]
    if len(average) and set(average["impl"]) == set(points["impl"]):
        panels = [AVG]
    else:
        panels = [t for t in dict.fromkeys(points["task"]) if t != AVG]
    multi_run = "run" in points.columns
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    fig, axes = grid(nrows, ncols, sharey=False, sharex=False)
    largest = points["peak_mem_bytes"].max(skipna=True)
    largest = None if pd.isna(largest) else float(largest)
    missing_memory = False
    for k, task in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        sub = points[points["task"] == task]
        for _, row in sub.iterrows():
            look = looks[row["impl"]]
            mem = row["peak_mem_bytes"]
            hollow = mem is None or pd.isna(mem)
            missing_memory |= hollow
            if row["std"] is not None and pd.notna(row["std"]):
                ax.errorbar([row["examples_per_s"]], [row["accuracy"]], yerr=[row["std"]],
                            color=look.color, linewidth=0.8, capsize=2, zorder=2)
            ax.scatter([row["examples_per_s"]], [row["accuracy"]], s=area(mem, largest),
                       marker=look.marker, color="none" if hollow else look.color,
                       edgecolors=look.color, alpha=0.55 if not hollow else 1.0,
                       linewidths=0.9, zorder=3)
            label = row["impl"] + (f" ({row['run']})" if multi_run else "")
            ax.annotate(label, (row["examples_per_s"], row["accuracy"]), fontsize=5.5,
                        xytext=(4, 4), textcoords="offset points", color="#333333")
        if spans_decades(sub["examples_per_s"]):
            ax.set_xscale("log")
        ax.margins(x=0.25, y=0.25)
        title = ("LRA average (5 tasks)" if task == AVG else task_titles.get(task, task))
        ax.set_title(title)
        ax.set_xlabel("training examples/s" + (" (geometric mean over the tasks)"
                                               if task == AVG else ""))
        if k % ncols == 0:
            ax.set_ylabel("test accuracy (%)")
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles = impl_handles([i for i in impls if i in set(points["impl"])], looks)
    for i, h in enumerate(handles):
        h.set_linestyle("none")
    if largest:
        for fraction in (1.0, 0.25):
            handles.append(Line2D([], [], marker="o", linestyle="none", color="#999999",
                                  alpha=0.55, markersize=math.sqrt(MAX_AREA * fraction),
                                  label=f"{largest * fraction / MIB:.0f} MiB"))
    add_legend(fig, handles, ncol=min(len(handles), 4))
    note = ("marker area proportional to peak memory during training (mean over seeds; "
            f"smallest drawn at {MIN_AREA:.0f} pt^2); error bars: sample std of the test "
            "accuracy over seeds; test accuracy at the best validation checkpoint")
    if missing_memory:
        note += "; hollow markers: peak memory not recorded"
    if panels == [AVG]:
        note += ("; LRA average: accuracy averaged over the five tasks, examples/s their "
                 "geometric mean, memory their mean")
    add_note(fig, note)
    return fig
