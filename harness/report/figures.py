"""The report's figures: matplotlib, one function per figure, saved as PNG and vector PDF.

Every figure takes tidy frames and the implementation looks (harness.report.style), so the
same implementation has the same colour and marker everywhere. Points that did not run are
never dropped silently: failures are lettered at the top of the panel where they happened
(M out of memory, T timed out, E error) and implementations that could not run at all appear
in the legend marked "unsupported"; the failure map shows every point's status.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
)

from harness.contract.parsers import PASSES
from harness.metrics.peaks import roofs
from harness.report.peak_marks import MARK, above
from harness.report import style  # noqa: E402
from harness.report.data import MIB, facet_label  # noqa: E402

FLOP_CONVENTION = ("FLOPs = 4·B·Hq·D·(allowed query-key pairs) forward, the pairs counted "
                   "exactly for causal (bottom-right), windows, documents and Tq != Tk "
                   "(x2.5 backward, x3.5 forward+backward)")
FAILURE_NOTE = "letters at the top: M out of memory, T timed out, E error (at that seq_len)"


@dataclass
class Saved:
    name: str
    title: str
    caption: str
    png: Path
    pdf: Path


def literal_text(fig: Figure) -> None:
    """Every text of the figure that comes from the data (titles, axis labels, legend entries,
    annotations: method names, reasons) drawn as written: a '$' there would start matplotlib's
    mathtext, and an unmatched one fail the whole report. Tick labels and the axes' offset
    text keep mathtext (a log axis's 10^n is written in it)."""
    from matplotlib.text import Text

    generated = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            generated.add(id(axis.offsetText))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                generated.update((id(tick.label1), id(tick.label2)))
    for text in fig.findobj(Text):
        if id(text) not in generated:
            text.set_parse_math(False)


def save(fig: Figure, directory: Path, name: str) -> tuple[Path, Path]:
    literal_text(fig)
    png, pdf = directory / f"{name}.png", directory / f"{name}.pdf"
    fig.savefig(png, dpi=200, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                               "Creator": None})
    plt.close(fig)
    return png, pdf


def seq_len_label(value: float) -> str:
    value = int(round(value))
    if value >= 1024 and value % 1024 == 0:
        return f"{value // 1024}K"
    return str(value)


def format_seq_axis(ax, lengths) -> None:
    lengths = sorted(set(int(t) for t in lengths))
    ax.set_xscale("log", base=2)
    if len(lengths) > 8:
        lengths = lengths[::2]
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: seq_len_label(v)))
    ax.xaxis.set_minor_locator(NullLocator())


SEQ_XLABEL = "sequence length T (tokens)"
KV_XLABEL = "key/value length T (keys; queries fixed)"


def seq_xlabel(frame: pd.DataFrame) -> str:
    """The x label of a T-on-x figure: T is the key/value length when the query length is
    fixed (decode steps, chunks: q_axis != 0), else the sequence length."""
    if "q_axis" in frame and len(frame) and (frame["q_axis"] != 0).all():
        return KV_XLABEL
    return SEQ_XLABEL


def label_seq_panel(ax, lengths, *, bottom: bool, left: bool, ylabel: str,
                    xlabel: str = SEQ_XLABEL) -> None:
    """A panel of a T-on-x grid: the T axis, its label on the bottom row, y label on the left."""
    format_seq_axis(ax, lengths)
    if bottom:
        ax.set_xlabel(xlabel)
    if left:
        ax.set_ylabel(ylabel)


def format_log_y(ax, values) -> None:
    """Log y axis; within two decades, label 1-2-5 steps in plain numbers."""
    ax.set_yscale("log")
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0])
    if len(values) and values.max() / values.min() <= 100:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))


def spans_decades(values, factor: float = 10.0) -> bool:
    values = np.asarray([v for v in values if v is not None and np.isfinite(v) and v > 0])
    return len(values) > 1 and values.max() / values.min() >= factor


def facets(frame: pd.DataFrame) -> tuple[list[int], list[str]]:
    passes = [p for p in PASSES if p in set(frame["pass"])] + sorted(
        set(frame["pass"]) - set(PASSES))
    return sorted(frame["head_dim"].unique()), passes


def grid(nrows: int, ncols: int, *, sharey: bool | str = "row", extra_h: float = 0.55,
         sharex: bool = True):
    width = max(style.PAPER_WIDTH_IN, style.PANEL_WIDTH_IN * ncols)
    height = style.PANEL_HEIGHT_IN * nrows + extra_h
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             sharex=sharex, sharey=sharey, layout="constrained")
    return fig, axes


def impl_handles(impls: list[str], looks: dict[str, style.Look],
                 notes: dict[str, str] | None = None) -> list[Line2D]:
    notes = notes or {}
    return [Line2D([], [], color=looks[i].color, marker=looks[i].marker,
                   linestyle=looks[i].linestyle, markersize=looks[i].markersize,
                   label=i + (f" ({notes[i]})" if i in notes else "")) for i in impls]


def add_legend(fig: Figure, handles: list, ncol: int | None = None) -> None:
    if not handles:
        return
    ncol = ncol or min(len(handles), 3)
    fig.legend(handles=handles, loc="outside upper center", ncol=ncol, handlelength=2.2,
               columnspacing=1.0, handletextpad=0.4)


def add_note(fig: Figure, text: str) -> None:
    """Small wrapped text under the panels, with room reserved for it in the layout."""
    lines = textwrap.wrap(text, int(fig.get_figwidth() * 19))
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=5.5, ha="left", va="bottom",
             color="#444444", transform=fig.transFigure, linespacing=1.2)
    needed_in = len(lines) * 5.5 * 1.2 / 72 + 0.04
    fig.get_layout_engine().set(rect=(0, needed_in / fig.get_figheight(), 1,
                                      1 - needed_in / fig.get_figheight()))


def mark_failures(ax, sub: pd.DataFrame, looks: dict[str, style.Look]) -> bool:
    """Letter each series' first failure at the top of the panel; True if any was drawn."""
    drawn = False
    failed = sub[sub["status"].isin(("oom", "timeout", "error"))]
    for impl, rows in failed.groupby("impl", sort=True):
        first = rows.sort_values("seq_len").iloc[0]
        ax.annotate(style.STATUS_LETTER[first["status"]], xy=(first["seq_len"], 1.0),
                    xycoords=("data", "axes fraction"), ha="center", va="bottom",
                    fontsize=6.5, fontweight="bold", color=looks[impl].color,
                    annotation_clip=False)
        drawn = True
    return drawn


def line_figure(frame: pd.DataFrame, impls: list[str], looks: dict[str, style.Look], *,
                value: Callable[[pd.DataFrame], np.ndarray], ylabel: str,
                band: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]] | None = None,
                logy: bool | None = True, hline: float | None = None, title: str = "",
                failures: bool = True, note: str = "") -> Figure | None:
    """The standard layout: rows head_dim, columns pass, one line per implementation."""
    head_dims, passes = facets(frame)
    if not head_dims or not passes or not impls:
        return None   # nothing to draw (e.g. runs of different grids share no shape)
    fig, axes = grid(len(head_dims), len(passes), sharey="all")
    all_values: list[float] = []
    any_failure = False
    plotted: set[str] = set()
    for r, head_dim in enumerate(head_dims):
        for c, pass_ in enumerate(passes):
            ax = axes[r][c]
            sub = frame[(frame["head_dim"] == head_dim) & (frame["pass"] == pass_)]
            ax.set_title(facet_label(head_dim, pass_), pad=8 if failures else 4)
            for impl in impls:
                rows = sub[(sub["impl"] == impl) & (sub["status"] == "ok")].sort_values(
                    "seq_len")
                y = value(rows) if len(rows) else np.array([])
                keep = np.isfinite(y) & (y > 0) if logy else np.isfinite(y)
                if not keep.any():
                    continue
                x = rows["seq_len"].to_numpy()[keep]
                look = looks[impl]
                ax.plot(x, y[keep], color=look.color, marker=look.marker,
                        linestyle=look.linestyle, markersize=look.markersize, label=impl)
                plotted.add(impl)
                all_values += list(y[keep])
                if band is not None:
                    lo, hi = band(rows)
                    ax.fill_between(x, lo[keep], hi[keep], color=look.color, alpha=0.2,
                                    linewidth=0)
            if failures:
                any_failure |= mark_failures(ax, sub, looks)
            if hline is not None:
                ax.axhline(hline, color="#777777", linewidth=0.6, linestyle=":")
            label_seq_panel(ax, frame["seq_len"], bottom=r == len(head_dims) - 1, left=c == 0,
                            ylabel=ylabel, xlabel=seq_xlabel(frame))
    if not all_values:
        plt.close(fig)
        return None
    use_log = logy if logy is not None else spans_decades(all_values)
    if use_log:
        format_log_y(axes[0][0], all_values)
    notes = {}
    status = frame.groupby("impl")["status"].agg(lambda s: set(s))
    for impl in impls:
        if impl in plotted:
            continue
        statuses = status.get(impl, set())
        notes[impl] = ("unsupported" if statuses == {"unsupported"} else
                       "no data" if not statuses - {"unsupported", "skipped"} or
                       "ok" in statuses else "/".join(sorted(statuses)))
    add_legend(fig, impl_handles([i for i in impls if i in plotted], looks))
    by_note: dict[str, list[str]] = {}
    for impl, why in notes.items():
        by_note.setdefault(why, []).append(impl)
    missing = "; ".join(f"{why}: {', '.join(names)}" for why, names in by_note.items())
    texts = [t for t in (title, FAILURE_NOTE if any_failure else "", note,
                         f"not plotted ({missing})" if missing else "") if t]
    if texts:
        add_note(fig, "; ".join(texts))
    return fig


def time_figure(frame, impls, looks, title=""):
    return line_figure(frame, impls, looks, value=lambda r: r["time_s"].to_numpy() * 1e3,
                       band=lambda r: (r["time_q1_s"].to_numpy() * 1e3,
                                       r["time_q3_s"].to_numpy() * 1e3),
                       ylabel="time per call (ms)", title=title,
                       note="line: median; band: interquartile range of the samples")


def memory_figure(frame, impls, looks, title="", method=""):
    return line_figure(frame, impls, looks,
                       value=lambda r: r["peak_mem_bytes"].to_numpy(float) / MIB,
                       ylabel="peak memory (MiB)", title=title,
                       note=f"memory: {method}" if method else "")


def ratio_figure(merged, impls, looks, *, column, ylabel, baseline, title=""):
    frame = merged.assign(status="ok")
    present = set(frame["impl"])
    return line_figure(frame, [i for i in impls if i != baseline and i in present], looks,
                       value=lambda r: r[column].to_numpy(float), ylabel=ylabel, hline=1.0,
                       logy=None, title=title, failures=False,
                       note=f"relative to {baseline} at the same shape; above 1: better")


def tflops_figure(frame, impls, looks, title=""):
    exact = frame[frame["family"] == "exact"]
    if exact["tflops"].notna().sum() == 0:
        return None
    return line_figure(exact, [i for i in impls if i in set(exact["impl"])], looks,
                       value=lambda r: r["tflops"].to_numpy(float),
                       ylabel="throughput (TFLOP/s)", logy=None, title=title,
                       note="exact methods only; " + FLOP_CONVENTION)


def failure_map(frame, impls, looks, title=""):
    head_dims, passes = facets(frame)
    lengths = sorted(frame["seq_len"].unique())
    present = [i for i in impls if i in set(frame["impl"])]
    panels = [(h, p) for h in head_dims for p in passes]
    if not panels:
        return None   # nothing in common to draw (e.g. runs of different grids)
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    width = max(style.PAPER_WIDTH_IN, style.PANEL_WIDTH_IN * ncols)
    height = nrows * (0.3 + 0.16 * len(present)) + 0.6
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                             layout="constrained", sharey=True)
    for k, (head_dim, pass_) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        sub = frame[(frame["head_dim"] == head_dim) & (frame["pass"] == pass_)]
        for y, impl in enumerate(present):
            for _, row in sub[sub["impl"] == impl].iterrows():
                x = lengths.index(row["seq_len"])
                ax.scatter([x], [y], marker="s", s=45, color=style.STATUS_COLORS[row["status"]],
                           edgecolors="#555555", linewidths=0.4, zorder=2)
                ax.text(x, y, style.STATUS_LETTER[row["status"]], ha="center", va="center",
                        fontsize=5, zorder=3)
        ax.set_title(facet_label(head_dim, pass_))
        ax.set_xticks(range(len(lengths)), [seq_len_label(t) for t in lengths])
        ax.set_yticks(range(len(present)), present)
        for tick, impl in zip(ax.get_yticklabels(), present):
            tick.set_color(looks[impl].color if looks[impl].color != "#DDCC77" else "#000000")
        ax.set_xlim(-0.6, len(lengths) - 0.4)
        ax.set_ylim(len(present) - 0.5, -0.5)
        ax.grid(False)
        ax.spines[["left", "bottom"]].set_visible(False)
        ax.tick_params(length=0)
        if k // ncols == nrows - 1:
            ax.set_xlabel("sequence length T (tokens)")
    for k in range(len(panels), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles = [Patch(facecolor=style.STATUS_COLORS[s], edgecolor="#555555", linewidth=0.4,
                     label=f"{style.STATUS_LETTER[s] or ' '} {s}" if s != "ok" else "ran")
               for s in style.STATUS_COLORS if s in set(frame["status"]) or s == "ok"]
    add_legend(fig, handles, ncol=min(len(handles), 6))
    if title:
        add_note(fig, title)
    return fig


# -- several runs ----------------------------------------------------------------------------
def runs_side_by_side(frame, runs: list[tuple[str, str]], impls, looks, *, value, ylabel):
    """Columns: runs (label and hardware); rows: the facets; shared y per row."""
    head_dims, passes = facets(frame)
    panels = [(h, p) for h in head_dims for p in passes]
    if not panels or not runs:
        return None   # nothing in common to draw (e.g. runs of different grids)
    fig, axes = grid(len(panels), len(runs), sharey="row")
    plotted: set[str] = set()
    for r, (head_dim, pass_) in enumerate(panels):
        for c, (run, hardware) in enumerate(runs):
            ax = axes[r][c]
            sub = frame[(frame["run"] == run) & (frame["head_dim"] == head_dim) &
                        (frame["pass"] == pass_)]
            for impl in impls:
                rows = sub[(sub["impl"] == impl) & (sub["status"] == "ok")].sort_values(
                    "seq_len")
                y = value(rows)
                keep = np.isfinite(y) & (y > 0)
                if not keep.any():
                    continue
                look = looks[impl]
                ax.plot(rows["seq_len"].to_numpy()[keep], y[keep], color=look.color,
                        marker=look.marker, linestyle=look.linestyle,
                        markersize=look.markersize)
                plotted.add(impl)
            mark_failures(ax, sub, looks)
            ax.set_yscale("log")
            title = f"{run}\n({hardware})\n" if r == 0 else ""
            ax.set_title(title + facet_label(head_dim, pass_), pad=8)
            label_seq_panel(ax, frame["seq_len"], bottom=r == len(panels) - 1, left=c == 0,
                            ylabel=ylabel)
    if not plotted:
        plt.close(fig)
        return None
    add_legend(fig, impl_handles([i for i in impls if i in plotted], looks))
    return fig


def runs_ratio(pairs, reference: str, impls, looks):
    """time in each other run / time in the reference run, per implementation and facet."""
    frame = pairs.assign(status="ok")
    others = list(dict.fromkeys(frame["run"]))
    head_dims, passes = facets(frame)
    panels = [(h, p) for h in head_dims for p in passes]
    if not panels or not others:
        return None   # nothing in common to draw (e.g. runs of different grids)
    fig, axes = grid(len(panels), len(others), sharey="all")
    values = []
    for r, (head_dim, pass_) in enumerate(panels):
        for c, run in enumerate(others):
            ax = axes[r][c]
            sub = frame[(frame["run"] == run) & (frame["head_dim"] == head_dim) &
                        (frame["pass"] == pass_)]
            for impl in impls:
                rows = sub[sub["impl"] == impl].sort_values("seq_len")
                if rows.empty:
                    continue
                look = looks[impl]
                ax.plot(rows["seq_len"], rows["time_ratio"], color=look.color,
                        marker=look.marker, linestyle=look.linestyle,
                        markersize=look.markersize)
                values += list(rows["time_ratio"])
            ax.axhline(1.0, color="#777777", linewidth=0.6, linestyle=":")
            ax.set_title((f"{run} / {reference}\n" if r == 0 else "") +
                         facet_label(head_dim, pass_))
            label_seq_panel(ax, frame["seq_len"], bottom=r == len(panels) - 1, left=c == 0,
                            ylabel="time ratio (x)")
    if spans_decades(values):
        format_log_y(axes[0][0], values)
    add_legend(fig, impl_handles([i for i in impls if i in set(frame["impl"])], looks))
    add_note(fig, "below 1: faster than in the reference run")
    return fig


# -- accuracy --------------------------------------------------------------------------------
def accuracy_vs_time(acc: pd.DataFrame, impls, looks, task_titles: dict[str, str]):
    ok = acc[acc["status"] == "ok"]
    tasks = list(dict.fromkeys(ok["task"]))
    if not tasks:
        return None
    ncols = min(len(tasks), 2)
    nrows = -(-len(tasks) // ncols)
    fig, axes = grid(nrows, ncols, sharey=False, sharex=False)
    times = []
    for k, task in enumerate(tasks):
        ax = axes[k // ncols][k % ncols]
        sub = ok[ok["task"] == task]
        for impl in impls:
            rows = sub[sub["impl"] == impl]
            look = looks[impl]
            for _, row in rows.iterrows():
                curve = row["curve"] or []
                xs = [p.get("elapsed_s") for p in curve]
                ys = [p.get("val_accuracy") for p in curve]
                pts = [(x, 100 * y) for x, y in zip(xs, ys) if x and y is not None]
                if pts:
                    ax.plot(*zip(*pts), color=look.color, linestyle=look.linestyle,
                            linewidth=0.8, alpha=0.8)
                    times += [p[0] for p in pts]
                if row["train_time_s"] and row["test_accuracy"] is not None:
                    ax.plot([row["train_time_s"]], [100 * row["test_accuracy"]],
                            color=look.color, marker=look.marker, linestyle="none",
                            markersize=look.markersize + 1)
                    times.append(row["train_time_s"])
        ax.set_title(task_titles.get(task, task))
        ax.set_xlabel("training time (s)")
        if k % ncols == 0:
            ax.set_ylabel("accuracy (%)")
    for k in range(len(tasks), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if spans_decades(times):
        for row in axes:
            for ax in row:
                ax.set_xscale("log")
    add_legend(fig, impl_handles([i for i in impls if i in set(ok["impl"])], looks))
    add_note(fig, "lines: validation accuracy during training; markers: test accuracy at the "
                  "best validation checkpoint, at the end of training")
    return fig


def not_plotted_note(frame: pd.DataFrame, impls: list[str], plotted) -> str:
    """'not plotted (unsupported: a, b; timeout: c)' for the implementations without a line."""
    status = frame.groupby("impl")["status"].agg(lambda s: set(s))
    by_note: dict[str, list[str]] = {}
    for impl in impls:
        if impl in plotted or impl not in status.index:
            continue
        statuses = status[impl]
        why = ("unsupported" if statuses == {"unsupported"} else
               "no data" if not statuses - {"unsupported", "skipped"} or "ok" in statuses
               else "/".join(sorted(statuses)))
        by_note.setdefault(why, []).append(impl)
    missing = "; ".join(f"{why}: {', '.join(names)}" for why, names in by_note.items())
    return f"not plotted ({missing})" if missing else ""


def decode_figure(frame: pd.DataFrame, impls: list[str], looks: dict[str, style.Look],
                  title: str = "", bandwidth: float | None = None) -> Figure | None:
    """Time per decode step (one query against a KV cache of seq_len keys) vs KV length: one
    panel per batch size, one line per implementation (median, interquartile band); failures
    lettered at the top, implementations without a line named under the panels. A second row
    plots each point's achieved bandwidth (the bytes its traffic model says the step moves, per
    second) against ``bandwidth``, the machine's measured memory peak: decode is
    bandwidth-bound, so that is the number serving people read."""
    decode = frame[frame["q_len"] == 1]
    rows = decode[decode["status"] == "ok"]
    batches = sorted(set(rows["batch"]))
    if not batches:
        return None
    achieved = "achieved_bytes_per_s" in rows and rows["achieved_bytes_per_s"].notna().any()
    fig, axes = grid(2 if achieved else 1, len(batches), sharey="row")
    values: list[float] = []
    plotted: list[str] = []
    any_failure = False
    for c, batch in enumerate(batches):
        ax = axes[0][c]
        ax.set_title(f"B={batch}", pad=8)
        sub = rows[rows["batch"] == batch]
        for impl in impls:
            line = sub[sub["impl"] == impl].sort_values("seq_len")
            y = line["time_s"].to_numpy(float) * 1e3
            keep = np.isfinite(y) & (y > 0)
            if not keep.any():
                continue
            look = looks[impl]
            x = line["seq_len"].to_numpy()[keep]
            ax.plot(x, y[keep], color=look.color, marker=look.marker,
                    linestyle=look.linestyle, markersize=look.markersize, label=impl)
            lo = line["time_q1_s"].to_numpy(float)[keep] * 1e3
            hi = line["time_q3_s"].to_numpy(float)[keep] * 1e3
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                ax.fill_between(x, lo, hi, color=look.color, alpha=0.2, linewidth=0)
            values += list(y[keep])
            if impl not in plotted:
                plotted.append(impl)
        any_failure |= mark_failures(ax, decode[decode["batch"] == batch], looks)
        label_seq_panel(ax, decode["seq_len"], bottom=not achieved, left=c == 0,
                        ylabel="time per step (ms)" if achieved else "time per decode step (ms)")
        ax.set_xlabel("" if achieved else "KV cache length (keys)")
        if achieved:
            bandwidth_panel(axes[1][c], sub, impls, looks, bandwidth, left=c == 0)
    format_log_y(axes[0][0], values)
    add_legend(fig, impl_handles(plotted, looks))
    texts = [t for t in (title, "line: median; band: interquartile range of the samples",
                         FAILURE_NOTE.replace("seq_len", "KV length") if any_failure else "",
                         not_plotted_note(decode, impls, plotted)) if t]
    add_note(fig, "; ".join(texts))
    return fig


def bandwidth_panel(ax, rows: pd.DataFrame, impls: list[str], looks: dict[str, style.Look],
                    bandwidth: float | None, *, left: bool) -> None:
    """Achieved GB/s vs KV length, one line per implementation, the memory peak as a line."""
    for impl in impls:
        line = rows[rows["impl"] == impl].sort_values("seq_len")
        y = line["achieved_bytes_per_s"].to_numpy(float) / 1e9
        keep = np.isfinite(y) & (y > 0)
        if not keep.any():
            continue
        look = looks[impl]
        ax.plot(line["seq_len"].to_numpy()[keep], y[keep], color=look.color, marker=look.marker,
                linestyle=look.linestyle, markersize=look.markersize)
    if bandwidth:
        ax.axhline(bandwidth / 1e9, color="#333333", lw=1.0, zorder=2)
        if left:   # named once, in the first panel
            ax.annotate(f"memory peak {bandwidth / 1e9:.3g} GB/s", xy=(0.02, bandwidth / 1e9),
                        xycoords=("axes fraction", "data"), va="top", fontsize=5.5)
    ax.set_yscale("log")
    label_seq_panel(ax, rows["seq_len"], bottom=True, left=left, ylabel="bandwidth (GB/s)")
    ax.set_xlabel("KV cache length (keys)")


MARK_LOOK = dict(marker="o", facecolors="none", edgecolors="#d62728", s=34, linewidths=0.9)


def roofline_figure(frame: pd.DataFrame, impls: list[str], looks: dict[str, style.Look],
                    peaks: dict, title: str = ""):
    """Left: the roofline of the exact methods (FLOP per byte moved vs achieved FLOP/s, the
    machine's GEMM and copy ceilings); right: every method's achieved bytes/s against the copy
    ceiling. The ceilings are the run's best peak (every measurement in run.json's peaks); on
    a known GPU the data sheet's ceilings are drawn dashed beside them. One marker per point;
    a point above a measured ceiling is not drawn as a result but as a hollow red circle,
    "peak under-measured" (harness.report.peak_marks). Each artist has a gid the tests read:
    ``points:<impl>``, ``under-measured``, ``roof:<dtype>``, ``roof:copy``, ``datasheet:...``.
    None when no point has bytes moved."""
    ok = frame[(frame["status"] == "ok") & frame["achieved_bytes_per_s"].notna()]
    if ok.empty:
        return None
    flop_peaks, bandwidth = roofs(peaks)
    table = (peaks or {}).get("table") or {}
    table_bw = (table.get("memory_bytes_per_s") or {}).get("value")
    table_flops = {d: v.get("value") for d, v in (table.get("matmul_flops_per_s") or {}).items()
                   if v.get("value")}
    fig, axes = plt.subplots(1, 2, figsize=(2 * style.PAPER_WIDTH_IN,
                                            style.PANEL_HEIGHT_IN * 1.4 + 0.7),
                             layout="constrained")
    left, right = axes
    exact = ok[(ok["family"] == "exact") & ok["arithmetic_intensity"].notna() &
               ok["flops"].notna()]
    # left: above the GEMM roof or the copy slope; right: above the copy ceiling
    left_over = above(exact, "pct_peak_flops") | above(exact, "pct_peak_bandwidth")
    right_over = above(ok, "pct_peak_bandwidth")
    present = [i for i in impls if i in set(ok["impl"])]
    for impl in present:
        look = looks[impl]
        sub = exact[(exact["impl"] == impl) & ~left_over]
        if not sub.empty:
            left.scatter(sub["arithmetic_intensity"], sub["flops"] / sub["time_s"],
                         color=look.color, marker=look.marker, s=14, zorder=3,
                         gid=f"points:{impl}")
        sub = ok[(ok["impl"] == impl) & ~right_over]
        if not sub.empty:
            right.scatter(sub["bytes_moved"], sub["achieved_bytes_per_s"], color=look.color,
                          marker=look.marker, s=14, zorder=3, gid=f"points:{impl}")
    over = exact[left_over]
    if not over.empty:
        left.scatter(over["arithmetic_intensity"], over["flops"] / over["time_s"], zorder=4,
                     gid="under-measured", **MARK_LOOK)
    over = ok[right_over]
    if not over.empty:
        right.scatter(over["bytes_moved"], over["achieved_bytes_per_s"], zorder=4,
                      gid="under-measured", **MARK_LOOK)
    if not exact.empty:
        lo = float(exact["arithmetic_intensity"].min()) / 4
        hi = float(exact["arithmetic_intensity"].max()) * 4
        dtypes = sorted(set(exact["dtype"]))
        for dtype in dtypes:
            for peak, bw, gid, dashes, label in (
                    (flop_peaks.get(dtype), bandwidth, f"roof:{dtype}", None,
                     f"{dtype} GEMM peak"),
                    (table_flops.get(dtype), table_bw, f"datasheet:{dtype}", (4, 2),
                     f"{dtype} data sheet")):
                if not (peak and bw):
                    continue
                xs = np.geomspace(min(lo, peak / bw / 4), max(hi, peak / bw * 4), 200)
                line, = left.plot(xs, np.minimum(peak, xs * bw), color="#333333", lw=1.0,
                                  zorder=2, gid=gid)
                if dashes:
                    line.set_dashes(dashes)
                left.annotate(f"{label} {peak / 1e9:.4g} GFLOP/s", xy=(xs[-1], peak),
                              ha="right", va="bottom", fontsize=5.5)
        left.set_xscale("log")
        left.set_yscale("log")
    else:
        left.text(0.5, 0.5, "no exact-method point", ha="center", va="center",
                  transform=left.transAxes, fontsize=7)
    left.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    left.set_ylabel("achieved FLOP/s")
    left.set_title("exact methods: roofline", fontsize=7.5)
    for value, gid, dashes, label in ((bandwidth, "roof:copy", None, "copy peak"),
                                      (table_bw, "datasheet:copy", (4, 2), "data sheet")):
        if value:
            line = right.axhline(value, color="#333333", lw=1.0, zorder=2, gid=gid)
            if dashes:
                line.set_dashes(dashes)
            right.annotate(f"{label} {value / 1e9:.3g} GB/s", xy=(0.02, value),
                           xycoords=("axes fraction", "data"), va="bottom", fontsize=5.5)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("bytes moved per call (model)")
    right.set_ylabel("achieved bytes/s")
    right.set_title("all methods: bandwidth", fontsize=7.5)
    for ax in (left, right):
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
    if title:
        fig.suptitle(title, fontsize=7.5)
    handles = impl_handles(present, looks)
    n_over = int(left_over.sum() + right_over.sum())
    if n_over:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none",
                              markeredgecolor=MARK_LOOK["edgecolors"], label=MARK))
    add_legend(fig, handles, ncol=min(len(handles), 4))
    note = ("Ceilings: the machine's measured GEMM peak and copy bandwidth, the best of the "
            "run's measurements (run.json peaks)" + ("; dashed: the data sheet's" if table_bw
                                                     or table_flops else "") +
            ". Bytes moved: each implementation's declared lower-bound traffic model (q, k, v "
            "in, o out, plus what it must store); FLOPs for exact attention only.")
    if n_over:
        note += (" Hollow red circles: points above a measured ceiling, marked peak "
                 "under-measured (the peak was measured lower than the machine reached), "
                 "not results.")
    add_note(fig, note)
    return fig


ENERGY_NOTE = ("energy: the whole device's (GPU) or CPU package's counter over the timed "
               "window, other processes included; points without a value not drawn")


def energy_figure(frame: pd.DataFrame, impls: list[str], looks: dict[str, style.Look],
                  title: str = "") -> Figure | None:
    """Energy per token against T beside time per call: one row per (head_dim, pass), left the
    median time per call, right the energy per token; only points with an energy value (so
    both panels show the same points). None when no point has one."""
    ok = frame[(frame["status"] == "ok") & frame["energy_j_per_token"].notna()
               & (frame["energy_j_per_token"] > 0)]
    if ok.empty:
        return None
    head_dims, passes = facets(ok)
    rows = [(d, p) for d in head_dims for p in passes
            if not ok[(ok["head_dim"] == d) & (ok["pass"] == p)].empty]
    fig, axes = grid(len(rows), 2, sharey=False)
    present = [i for i in impls if i in set(ok["impl"])]
    columns = (("time per call (ms)", lambda r: r["time_s"].to_numpy(float) * 1e3),
               ("energy per token (µJ)", lambda r: r["energy_j_per_token"].to_numpy(float) * 1e6))
    for r, (head_dim, pass_) in enumerate(rows):
        sub = ok[(ok["head_dim"] == head_dim) & (ok["pass"] == pass_)]
        for c, (ylabel, value) in enumerate(columns):
            ax = axes[r][c]
            values: list[float] = []
            for impl in present:
                line = sub[sub["impl"] == impl].sort_values("seq_len")
                if line.empty:
                    continue
                look = looks[impl]
                y = value(line)
                ax.plot(line["seq_len"], y, color=look.color, marker=look.marker,
                        linestyle=look.linestyle, markersize=look.markersize)
                values += list(y)
            ax.set_title(facet_label(head_dim, pass_), pad=4)
            label_seq_panel(ax, ok["seq_len"], bottom=r == len(rows) - 1, left=True,
                            ylabel=ylabel, xlabel=seq_xlabel(ok))
            format_log_y(ax, values)
    add_legend(fig, impl_handles(present, looks))
    sources = ", ".join(sorted(set(ok["energy_source"].dropna()) - {""}))
    add_note(fig, "; ".join(t for t in (title, f"counter: {sources}" if sources else "",
                                         ENERGY_NOTE) if t))
    return fig
