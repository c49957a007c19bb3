"""Assemble the report: figures and tables to files, then report.md and a self-contained
report.html from one list of blocks (so the two always say the same thing)."""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import html
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.console import format_bytes
from harness.errors import UsageError
from harness.contract import escape
from harness.contract.records import NoiseMetrics
from harness.contract.registry import REGISTRY
from harness.report import claims
from harness.report import findings as findings_lib
from harness.metrics import peaks as peaks_mod
from harness.report import peak_marks, style, tables
from harness.report.data import (
    MIB,
    Results,
    axis_columns,
    load,
    point_key_columns,
    workload_label,
)
from harness.report.published import SOURCE, TASK_TITLES
from harness.store.run_metadata import command_text
from harness.store.run_dir import TruncatedLineWarning

DEFAULT_ROOT = Path("reports")


# -- blocks ----------------------------------------------------------------------------------
@dataclass
class Doc:
    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, frame: pd.DataFrame, files: str = "") -> None:
        self.blocks.append(("table", frame, files))

    def figure(self, saved: Any) -> None:
        if saved is not None:      # None: nothing to draw (no successful points)
            self.blocks.append(("figure", saved))


def memory_cap_text(settings: dict) -> str:
    """--max-memory, else the share of each GPU every framework was held to (runs without
    device_memory_fraction in their settings had no common GPU cap)."""
    if settings.get("max_memory_bytes"):
        return format_bytes(settings["max_memory_bytes"])
    fraction = settings.get("device_memory_fraction")
    return f"none (on a GPU: {fraction:.0%} of its memory)" if fraction else "none"


def cell_text(value: object) -> str:
    """A table value as plain text: blank for a missing value, 4 significant digits for a
    float; each writer escapes it for its format."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def md_cell(value: object) -> str:
    return escape.md_cell(cell_text(value))


def to_markdown(doc: Doc, root: Path) -> str:
    out: list[str] = []
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + escape.md_text(block[2]))
        elif kind == "p":
            out.append(escape.md_text(block[1]))
        elif kind == "ul":
            out.append("\n".join(f"- {escape.md_text(item)}" for item in block[1]))
        elif kind == "table":
            frame, files = block[1], block[2]
            lines = ["| " + " | ".join(escape.md_cell(c) for c in frame.columns) + " |",
                     "|" + "|".join("---" for _ in frame.columns) + "|"]
            lines += ["| " + " | ".join(md_cell(v) for v in row) + " |"
                      for row in frame.itertuples(index=False)]
            if files:
                lines.append(f"\n{escape.md_text(files)}")
            out.append("\n".join(lines))
        elif kind == "figure":
            s = block[1]
            png, pdf = s.png.relative_to(root).as_posix(), s.pdf.relative_to(root).as_posix()
            title, caption = escape.md_text(s.title), escape.md_text(s.caption)
            out.append(f"![{title}]({png})\n\n*{title}.* {caption} "
                       f"([PNG]({png}), [PDF]({pdf}))")
    return "\n\n".join(out) + "\n"


def to_html(doc: Doc, title: str) -> str:
    e, t = html.escape, escape.html_text   # t: text that may hold the harness's own marks
    body: list[str] = []
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{t(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{t(block[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{t(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            frame, files = block[1], block[2]
            head = "".join(f"<th>{e(str(c))}</th>" for c in frame.columns)
            rows = "".join("<tr>" + "".join(f"<td>{e(cell_text(v))}"
                                            f"</td>" for v in row) + "</tr>"
                           for row in frame.itertuples(index=False))
            body.append(f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
                        f"<tbody>{rows}</tbody></table></div>")
            if files:
                body.append(f"<p class=\"files\">{e(files)}</p>")
        elif kind == "figure":
            s = block[1]
            data = base64.b64encode(s.png.read_bytes()).decode("ascii")
            body.append(f"<figure><img alt=\"{e(s.title)}\" src=\"data:image/png;base64,{data}\">"
                        f"<figcaption><b>{e(s.title)}.</b> {e(s.caption)} "
                        f"(files: {e(s.png.name)}, {e(s.pdf.name)})</figcaption></figure>")
    css = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
           "line-height:1.45;color:#222}table{border-collapse:collapse;font-size:0.85em}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
           "th{background:#f2f2f2}.scroll{overflow-x:auto}img{max-width:100%;"
           "width:36em}figure{margin:1.5em 0}figcaption{font-size:0.9em;color:#444}"
           ".files{font-size:0.8em;color:#666}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{css}</style></head><body>\n" +
            "\n".join(body) + "\n</body></html>\n")


# -- the report ------------------------------------------------------------------------------
def report_name(paths: list[Path]) -> str:
    names = [re.sub(r"[^A-Za-z0-9._-]+", "-", Path(p).resolve().name) or "run" for p in paths]
    name = "-vs-".join(names)
    if len(name) > 80:
        name = name[:60] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def choose_baseline(results: Results, baseline: str | None) -> str | None:
    ok_impls = set(results.speed[results.speed["status"] == "ok"]["impl"])
    if baseline is not None:
        if baseline not in ok_impls:
            raise UsageError(f"--baseline {baseline}: no successful points in these runs; "
                             f"implementations with results: "
                             f"{', '.join(sorted(ok_impls)) or 'none'}")
        return baseline
    return claims.default_baseline(ok_impls, claims.registered_traits(), REGISTRY.names())


def clean(directory: Path, suffixes: tuple[str, ...]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if path.is_file() and path.suffix in suffixes:
            path.unlink()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


class Writer:
    """Writes figures and tables under the report directory and remembers them."""

    def __init__(self, root: Path, looks: dict[str, style.Look]):
        self.root, self.looks = root, looks
        self.figures_dir, self.tables_dir = root / "figures", root / "tables"
        clean(self.figures_dir, (".png", ".pdf"))
        clean(self.tables_dir, (".csv", ".tex"))
        self.figures: list[Any] = []
        self.tables: list[str] = []

    def figure(self, fig, name: str, title: str, caption: str):
        if fig is None:
            return None
        import matplotlib

        from harness.report.figures import Saved, save

        with matplotlib.rc_context(style.RC):
            png, pdf = save(fig, self.figures_dir, name)
        saved = Saved(name, title, caption, png, pdf)
        self.figures.append(saved)
        return saved

    def table(self, frame: pd.DataFrame, name: str, caption: str) -> str:
        tables.write_csv(frame, self.tables_dir / f"{name}.csv")
        (self.tables_dir / f"{name}.tex").write_text(tables.to_latex(frame, caption))
        self.tables.append(name)
        return f"Files: tables/{name}.csv, tables/{name}.tex"


def render_report(run_paths: list[Path], out_dir: Path | None = None,
                  baseline: str | None = None) -> Path:
    """Render the report of one or more run directories; returns the report directory."""
    run_paths = [Path(p) for p in run_paths]
    results = load(run_paths)
    for message in results.warnings:
        warnings.warn(message, TruncatedLineWarning, stacklevel=2)
    if results.speed.empty and results.accuracy.empty:
        raise UsageError("no records to report in " + ", ".join(map(str, run_paths)))
    baseline = choose_baseline(results, baseline) if not results.speed.empty else None
    root = Path(out_dir) if out_dir is not None else DEFAULT_ROOT / report_name(run_paths)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root}: exists and is not a directory")
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {root}: cannot create it ({exc.strerror or exc})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"--out {root}: not writable")
    try:
        return _render_into(root, results, baseline)
    except BaseException:
        if created:   # a failed report leaves nothing behind
            shutil.rmtree(root, ignore_errors=True)
        raise


def _render_into(root: Path, results: Results, baseline: str | None) -> Path:
    impls_all = set(results.speed.get("impl", [])) | set(results.accuracy.get("impl", []))
    looks = style.looks_for(impls_all, claims.frameworks(results.speed, results.accuracy))
    order = style.impl_order(impls_all, REGISTRY.names())
    writer = Writer(root, looks)
    import matplotlib

    with matplotlib.rc_context(style.RC):
        doc = build(results, baseline, order, looks, writer)
    title = "attnbench report: " + ", ".join(r.label for r in results.runs)
    (root / "report.md").write_text(to_markdown(doc, root))
    (root / "report.html").write_text(to_html(doc, title))
    return root


def build(results: Results, baseline: str | None, order: list[str],
          looks: dict[str, style.Look], writer: Writer) -> Doc:
    from harness.report import figures

    doc = Doc()
    speed, acc = results.speed, results.accuracy
    doc.h(1, "attnbench report: " + ", ".join(r.label for r in results.runs))
    doc.p(f"Rendered by {escape.code('run_bench.py report')} from the records of the run "
          "directories below; nothing was re-measured. Figures are in figures/ (PNG and PDF), tables in tables/ "
          "(CSV and LaTeX).")

    # what was run, on what
    doc.h(2, "What was run")
    doc.table(runs_table(results))
    for run in results.runs:
        meta = run.meta
        settings = meta.get("settings", {})
        timing = settings.get("timing", {})
        items = [f"command: {command_text(meta.get('command')) or 'unknown'}"]
        if meta.get("merged_from"):
            items.append(f"merged from: {', '.join(map(str, meta['merged_from']))}")
        grids = [meta["grid"]] if meta.get("grid") else [g for g in meta.get("grids") or [] if g]
        for grid in grids:
            items.append(f"grid: preset {grid.get('preset', '?')}, overrides "
                         f"{grid.get('overrides') or 'none'}")
        inputs = {g["input_distribution"] for g in grids if g.get("input_distribution")}
        if inputs:
            items.append(f"inputs: {'; '.join(sorted(inputs))}")
        if timing:
            target, cap = timing.get("noise_target"), timing.get("max_time_s")
            until = (f", then on until their spread (IQR/median) is at most {target:.0%} or "
                     f"{cap:g} s of samples" if target is not None and cap is not None else "")
            items.append(f"timing: {timing.get('warmup')} warm-up call(s), then samples for at "
                         f"least {timing.get('min_time_s')} s{until} "
                         f"({timing.get('min_repeats')} to "
                         f"{timing.get('max_repeats')} samples); timeout "
                         f"{settings.get('timeout_s')} s per point; memory cap "
                         f"{memory_cap_text(settings)}")
        if meta.get("interrupted"):
            items.append("the run was interrupted: only the points it finished are reported")
        doc.p(f"Run {run.label} ({run.path}):")
        doc.ul(items)

    doc.h(2, "Hardware and software")
    doc.table(hardware_table(results))

    pairs = pd.DataFrame()
    reference = results.runs[0].label
    scaling = pd.DataFrame()
    if not speed.empty:
        scaling = tables.scaling(speed, claims.registered_traits())
        if results.multi:
            pairs = tables.run_pairs(speed, reference)
    doc.h(2, "Headline findings")
    items = findings_lib.headline(speed, baseline, scaling) if not speed.empty else []
    items += findings_lib.run_findings(pairs, reference) if not pairs.empty else []
    items += accuracy_findings(acc)
    doc.ul(items or ["no successful measurements to draw findings from"])
    if not speed.empty and baseline is None:
        candidates = claims.baseline_candidates(claims.registered_traits(), REGISTRY.names())
        doc.p("No baseline: no implementation declared as one ("
              + (", ".join(candidates) or "none registered") + ") has successful points, so "
              "no speedup or memory-ratio figures; choose one with --baseline.")

    if not speed.empty:
        speed_sections(doc, results, baseline, order, looks, writer, scaling, figures)
    if results.multi and not speed.empty:
        runs_section(doc, results, pairs, reference, order, looks, writer, figures)
    if not acc.empty:
        accuracy_section(doc, acc, order, looks, writer, figures)
    unavailable_section(doc, results, writer)
    notes_section(doc, results)
    return doc


def runs_table(results: Results) -> pd.DataFrame:
    rows = []
    for run in results.runs:
        sub = results.speed[results.speed["run"] == run.label] if not results.speed.empty \
            else pd.DataFrame(columns=["status"])
        counts = sub["status"].value_counts()
        rows.append({"run": run.label, "hardware": (run.meta.get("machine") or {}).get(
            "hardware_tag", "unknown"), "started": run.meta.get("started_at", ""),
            "finished": run.meta.get("finished_at", "") or "not recorded",
            "speed points": run.n_speed, "accuracy records": run.n_accuracy,
            "status counts": ", ".join(f"{s} {int(counts[s])}" for s in
                                       ("ok", "oom", "timeout", "error", "unsupported",
                                        "skipped") if s in counts) or "-"})
    return pd.DataFrame(rows)


def hardware_table(results: Results) -> pd.DataFrame:
    rows = []
    for run in results.runs:
        m = run.meta.get("machine") or {}
        packages = m.get("packages") or {}
        gpu = m.get("gpu") or {}
        gpus = ", ".join(str(g.get("name")) for g in gpu.get("gpus", []) if isinstance(g, dict))
        cuda = m.get("cuda") or {}
        git = m.get("git") or {}
        rows.append({
            "run": run.label, "hardware": m.get("hardware_tag", "unknown"),
            "CPU": f"{m.get('cpu_model', '?')} ({m.get('cpu_affinity') or m.get('cpu_count_logical', '?')} cores usable, torch threads {m.get('torch_threads', '?')})",
            "GPU": gpus or ", ".join(cuda.get("devices", []) or []) or "none",
            "RAM": format_bytes(m.get("ram_bytes")) if m.get("ram_bytes") else "?",
            "OS": m.get("platform", "?"), "Python": m.get("python", "?"),
            "packages": ", ".join(f"{k} {v}" for k, v in sorted(packages.items()) if v) or "?",
            "CUDA": cuda.get("torch_cuda") or "none",
            "attnbench commit": (str(git.get("commit", "?"))[:12] +
                                 (" (uncommitted changes)" if git.get("dirty") else "")),
        })
    return pd.DataFrame(rows).T.reset_index().rename(
        columns=lambda c: "" if c == "index" else results.runs[c].label
        if isinstance(c, int) else c).iloc[1:] if rows else pd.DataFrame()


def variants(speed: pd.DataFrame, multi: bool) -> list[tuple[str, str, pd.DataFrame]]:
    """(file suffix, title, frame) per run and group: one set of figures each."""
    out = []
    groups_total = speed["group"].nunique()
    for (run, group), frame in speed.groupby(["run", "group"], sort=False):
        suffix = (f"__{slug(run)}" if multi else "") + (f"__{slug(group)}"
                                                        if groups_total > 1 else "")
        title = (f"run {run}; " if multi else "") + group
        out.append((suffix, title, frame))
    return out


def figures_per_variant(doc, writer, speed: pd.DataFrame, multi: bool, name: str,
                        heading: str, make, caption) -> bool:
    """One figure per configuration (and run): make(frame, title) saved as name + suffix with
    caption(frame), added to doc; True if any was drawn (make may return None)."""
    drawn = False
    for suffix, title, frame in variants(speed, multi):
        saved = writer.figure(make(frame, title), name + suffix, f"{heading} ({title})",
                              caption(frame))
        doc.figure(saved)
        drawn = drawn or saved is not None
    return drawn


def speed_sections(doc, results, baseline, order, looks, writer, scaling, figures) -> None:
    speed = results.speed
    impls = [i for i in order if i in set(speed["impl"])]
    mem_methods = sorted(set(speed["mem_method"].dropna()) - {""})
    method = "; ".join(mem_methods)
    per_variant = functools.partial(figures_per_variant, doc, writer, speed, results.multi)
    doc.h(2, "Time and memory")
    per_variant("time_vs_seq_len", "Time vs sequence length",
                lambda frame, title: figures.time_figure(frame, impls, looks, title),
                lambda frame: "Median time per call, log-log, one line per implementation; the "
                              "band is the interquartile range of the timing samples. "
                              + " ".join(filter(None, [basis_caption(frame),
                                                       failure_caption(frame)])))
    per_variant("memory_vs_seq_len", "Peak memory vs sequence length",
                lambda frame, title: figures.memory_figure(frame, impls, looks, title, method),
                lambda frame: f"Peak memory above the inputs ({method or 'method unknown'}). "
                              + failure_caption(frame))
    decode_section(doc, speed, impls, looks, writer, figures, results.multi,
                   {run.label: run.meta.get("peaks") or {} for run in results.runs})
    times = tables.pivot(speed, "time_s", 1e3)
    doc.table(times, writer.table(times, "time_ms",
                                  "median time per call (ms); failed points show their status"
                                  + (f". {basis_caption(speed)}" if basis_caption(speed)
                                     else "") + noisy_caption(speed)))
    noisy = tables.noisy_points(speed)
    if not noisy.empty:
        doc.p(f"{escape.strong('Noisy')}: {len(noisy)} point(s) are marked noisy: their medians are not "
              "quoted as results, because their samples did not fix the median to ±5% or "
              "other processes took the CPUs their worker needed while they ran (the sampling "
              "rule, the spread and the machine's state are in docs/methodology.md).")
        doc.table(noisy, writer.table(noisy, "noisy_points",
                                      "points marked noisy and why (other_cpus: CPUs other "
                                      "processes used while the samples ran)"))
    mem = tables.pivot(speed, "peak_mem_bytes", 1 / MIB, mark_noisy=False)
    doc.table(mem, writer.table(mem, "peak_memory_mib",
                                "peak memory above the inputs (MiB); failed points show "
                                "their status"))
    doc.h(2, "Relative to the baseline" + (f" ({baseline})" if baseline else ""))
    if baseline:
        merged = tables.ratios(speed, baseline)
        for suffix, title, _ in variants(speed, results.multi):
            frame = merged[merged["group"] == title.split("; ")[-1]]
            if results.multi:
                frame = frame[frame["run"] == title.split("; ")[0][4:]]
            doc.figure(writer.figure(
                figures.ratio_figure(frame, impls, looks, column="speedup",
                                     ylabel="speedup (x)", baseline=baseline,
                                     title=title),
                "speedup" + suffix, f"Speedup over {baseline} ({title})",
                f"{baseline}'s median time divided by each implementation's at the same shape; "
                f"above 1 is faster. Only points where both ran are shown. "
                f"{basis_caption(frame)}".rstrip()))
            doc.figure(writer.figure(
                figures.ratio_figure(frame, impls, looks, column="memory_ratio",
                                     ylabel="memory saving (x)",
                                     baseline=baseline, title=title),
                "memory_ratio" + suffix, f"Memory ratio to {baseline} ({title})",
                f"{baseline}'s peak memory divided by each implementation's; above 1 uses "
                f"less memory. Only points where both ran, with non-zero peaks, are shown."))
        if not merged.empty:
            sp = tables.pivot(merged.assign(time_s=merged["speedup"]), "time_s", digits=3)
            doc.table(sp, writer.table(sp, f"speedup_vs_{baseline}",
                                       f"speedup over {baseline} (x)" + noisy_caption(merged)))
            mr = tables.pivot(merged.assign(time_s=merged["memory_ratio"]), "time_s", digits=3,
                              mark_noisy=False)
            doc.table(mr, writer.table(mr, f"memory_ratio_vs_{baseline}",
                                       f"peak memory of {baseline} / peak memory (x)"))
    fidelity = speed[speed["deviation_from_softmax"].notna()] \
        if "deviation_from_softmax" in speed.columns else speed.iloc[0:0]
    if not fidelity.empty:
        doc.h(2, "Fidelity of the approximate methods")
        fd = tables.pivot(fidelity, "deviation_from_softmax", digits=3, mark_noisy=False)
        doc.table(fd, writer.table(
            fd, "deviation_from_softmax",
            "relative deviation of the output from exact softmax attention on the same inputs "
            "(|out - exact|_F / |exact|_F; measured where the exact output fits in memory)"))
    kv = tables.kv_dtype_table(speed)
    if not kv.empty:
        doc.h(2, "FP8 keys and values: speed and error")
        doc.table(kv, writer.table(
            kv, "kv_dtype",
            "FP8 key/value points: median time and quant_error (|out - exact|_F / |exact|_F, "
            "exact = float64 attention of the unquantised inputs, on up to 256 query rows), "
            "beside the same point with k, v in the point's dtype (time_ratio above 1: FP8 is "
            "slower). Scales are per tensor (record extra kv_scales)"))
    doc.h(2, "Throughput of the exact methods")
    any_tflops = per_variant(
        "tflops", "TFLOP/s of the exact methods",
        lambda frame, title: figures.tflops_figure(frame, impls, looks, title),
        lambda frame: "Exact-attention FLOPs (4·B·Hq·D·(allowed query-key pairs) forward, the "
                      "pairs counted exactly for causal, windows, documents and Tq != Tk, so "
                      "causal Tq = Tk = T gives T(T+1)/2; backward 2.5x, forward+backward 3.5x) "
                      "per second. HRR and Performer "
                      "do not form QK^T, so no FLOP count is claimed for them; see tokens/s in "
                      "tables/points.csv.")
    if any_tflops:
        tf = tables.pivot(speed, "tflops", family="exact", digits=3)
        doc.table(tf, writer.table(tf, "tflops", "TFLOP/s of the exact methods"))
    else:
        doc.p("No exact method has successful points: no TFLOP/s figure.")

    energy_section(doc, speed, impls, looks, writer, figures, per_variant)
    peaks_section(doc, results, impls, looks, writer, figures)

    doc.h(2, "Failure map")
    per_variant("failure_map", "Failure map",
                lambda frame, title: figures.failure_map(frame, impls, looks, title),
                lambda frame: "Status of every point: a grey square ran; M out of memory, "
                              "T timed out, E error, S skipped (not tried after a failure at a "
                              "shorter length), U unsupported here.")
    largest = tables.largest_seq_len(speed)
    doc.table(largest, writer.table(largest, "largest_seq_len",
                                    "largest sequence length that ran, and what stopped it"))

    doc.h(2, "Scaling exponents")
    doc.p("Slope of log(time) and log(peak memory) against log(T), fitted by least squares to "
          "the upper part of the measured lengths (those at or above the geometric middle of "
          "the range, and at least the three longest), next to what each method claims (the "
          "memory trait it declared when it registered): "
          + claims.scaling_prose(impls, claims.registered_traits())
          + " At short lengths fixed costs flatten the measured slope.")
    doc.table(scaling, writer.table(scaling, "scaling_exponents",
                                    "measured vs claimed scaling exponents of seq_len"))
    points = points_table(speed)
    files = writer.table(points, "points", "every point, every status")
    doc.h(2, "Points and their reproducers")
    doc.p("Every point with its status, median time and L2 state; repro is the sweep command "
          "that measures the point alone with its run's settings (or: run_bench.py repro RUN "
          "POINT_ID). Quartiles, peak memory, TFLOP/s, tokens/s and energy (or why none): "
          "tables/points.csv (and .tex).")
    doc.table(points[[c for c in POINT_TABLE_COLUMNS if c in points.columns]], files)


def energy_section(doc, speed, impls, looks, writer, figures, per_variant) -> None:
    """Energy per token against T beside time, where a counter gave values; the reason where
    none did (harness.measure.energy)."""
    doc.h(2, "Energy per token")
    absent = findings_lib.energy_absence(speed)
    if not speed["energy_j_per_token"].notna().any():
        doc.p("Energy per call not measured: " + (absent or "no successful point") + ".")
        return
    per_variant(
        "energy_vs_seq_len", "Energy per token and time vs sequence length",
        lambda frame, title: figures.energy_figure(frame, impls, looks, title),
        lambda frame: "Left: median time per call; right: energy per token (the counter's "
                      "joules over the timed window / the calls in it / the point's tokens). "
                      "The counter is the whole GPU's (NVML total energy) or the CPU "
                      "packages' (RAPL): other processes on the device are included. "
                      + (f"Not drawn: {absent}." if absent else ""))
    energy = tables.pivot(speed, "energy_j_per_token", 1e6, digits=3)
    doc.table(energy, writer.table(energy, "energy_uj_per_token",
                                   "energy per token (µJ); n/a: no value (see energy_reason "
                                   "in tables/points.csv)"))


def decode_section(doc, speed, impls, looks, writer, figures, multi: bool,
                   peaks: dict[str, dict] | None = None) -> None:
    """Decode steps (q_len = 1 against a KV cache): time per step and achieved bandwidth vs KV
    length (decode is bandwidth-bound), against the run's measured memory peak (``peaks``: run
    label -> run.json's peaks)."""
    decode = speed[(speed["q_len"] == 1) & (speed["pass"] == "forward")]
    if decode.empty:
        return
    doc.h(2, "Decode with a KV cache")
    # one figure per point key but the batch (a panel each) and the queries (one)
    keys = ["run", *(c for c in point_key_columns(decode) if c not in ("batch", "pass", "q_axis"))]
    parts = list(decode.groupby(keys, sort=False, dropna=False))
    for index, (_, frame) in enumerate(parts):
        first = frame.iloc[0].to_dict()
        others = " ".join(part for part in workload_label(first).split()
                          if not part.startswith(("Hkv=", "Tq=")))
        title = (f"run {first['run']}; " if multi else "") + \
            f"{first['device']} {first['dtype']} Hq={first['heads']} " \
            f"Hkv={first['kv_heads']} D={first['head_dim']}" + (f" {others}" if others else "") + \
            (" causal" if first["causal"] else "")
        suffix = f"__{index + 1}" if len(parts) > 1 else ""
        bandwidth = (((peaks or {}).get(first["run"]) or {}).get("memory_bytes_per_s")
                     or {}).get("value")
        doc.figure(writer.figure(
            figures.decode_figure(frame, impls, looks, title, bandwidth=bandwidth),
            "decode" + suffix, f"Time per decode step and achieved bandwidth ({title})",
            "One new query per sequence against a KV cache of the given length (q_len = 1, "
            "seq_len = KV length): median time per step (top) and the bytes the step must move "
            "(each method's traffic model: the KV cache read once) per second (bottom), one "
            "panel per batch size, one line per implementation; the bottom row's line is the "
            "machine's measured memory (copy) bandwidth. " + basis_caption(frame)))


def machine_text(state: dict | None) -> str:
    """A peak measurement's machine state for the peaks table: 'busy: ...' where other
    processes took CPUs it needed, 'quiet' where none did, '' where not recorded."""
    if not state:
        return ""
    if state.get("busy"):
        return f"busy: {state['busy']}"
    return "quiet" if state.get("other_cpus") is not None else ""


def peaks_table(results: Results) -> pd.DataFrame:
    """Each run's peaks: every measurement (GEMM per dtype, copy; its role, calls, whether it
    held, threads), the best of them (what % of peak is taken against) and, for a known GPU,
    the data sheet's."""
    rows = []

    def add(run: str, source: str, entry: dict, measurement: str, extra: dict) -> None:
        for dtype, value in (entry.get("matmul_flops_per_s") or {}).items():
            if value.get("value"):
                rows.append({"run": run, "source": source, "measurement": measurement,
                             "peak": f"matmul {dtype}",
                             "value": f"{value['value'] / 1e9:.4g} GFLOP/s", **extra(value),
                             "how": value.get("method") or entry.get("citation", "")})
        copy = entry.get("memory_bytes_per_s") or {}
        if copy.get("value"):
            rows.append({"run": run, "source": source, "measurement": measurement,
                         "peak": "memory", "value": f"{copy['value'] / 1e9:.4g} GB/s",
                         **extra(copy),
                         "how": copy.get("method") or entry.get("citation", "")})
        if entry.get("unavailable"):
            rows.append({"run": run, "source": source, "measurement": measurement, "peak": "-",
                         "value": "not available", "how": entry["unavailable"]})

    for run in results.runs:
        peaks = run.meta.get("peaks") or {}
        runs = peaks_mod.measurements(peaks)
        for m in runs:
            add(run.label, "measured", m, peaks_mod.describe(m),
                lambda v, m=m: {"calls": len(v.get("samples_s") or []),
                                "stable": "" if v.get("stable") is None else
                                ("yes" if v["stable"] else "no (time cap)"),
                                "threads": m.get("threads"),
                                "machine": machine_text(m.get("machine_state"))})
        if len(runs) > 1:
            best = peak_marks.best_peaks(peaks)
            add(run.label, "best measured", best, "the run's peak",
                lambda v: {"calls": None, "stable": None, "threads": None,
                           "of": v.get("of", "")})
        if not runs:
            add(run.label, "measured", peaks, "", lambda v: {})
        if peaks.get("table"):
            add(run.label, "table", peaks["table"], "data sheet", lambda v: {})
    table = pd.DataFrame(rows)
    order = ["run", "source", "measurement", "peak", "value", "of", "calls", "stable",
             "threads", "machine", "how"]
    if table.empty:
        return table
    for column in ("calls", "threads"):   # whole numbers, blank where none applies
        if column in table.columns:
            table[column] = [int(v) if isinstance(v, (int, float)) and pd.notna(v) else ""
                             for v in table[column]]
    return table[[c for c in order if c in table.columns]].astype(object).fillna("")


def pct_table(speed: pd.DataFrame, column: str, family: str | None = None) -> pd.DataFrame:
    """% of peak pivot (impl x seq_len); a cell above 100% of the run's best peak says
    'peak under-measured' beside its number."""
    marked = peak_marks.above(speed, column)
    frame = speed.copy()
    frame[column] = frame[column].astype(object)
    for index in frame.index[marked & (frame["status"] == "ok")]:
        frame.at[index, column] = f"{tables.round_sig(float(speed.at[index, column]), 3):g} " \
                                  f"({peak_marks.MARK})"
    return tables.pivot(frame, column, family=family, digits=3)


def peaks_section(doc, results, impls, looks, writer, figures) -> None:
    """The roofline, % of peak tables and the points timed on a throttled GPU."""
    speed = results.speed
    doc.h(2, "Against the machine's peaks")
    table = peaks_table(results)
    if table.empty:
        doc.p(f"These runs recorded no peaks (run.json has no {escape.code('peaks')}): no "
              "roofline and no % of peak.")
        return
    doc.table(table, writer.table(table, "peaks", "peaks of the machine"))
    for run in results.runs:
        frame = speed[speed["run"] == run.label]
        name = "roofline" if not results.multi else f"roofline_{slug(run.label)}"
        doc.figure(writer.figure(
            figures.roofline_figure(frame, impls, looks, run.meta.get("peaks") or {},
                                    title=run.label if results.multi else ""),
            name, "Roofline" + (f" ({run.label})" if results.multi else ""),
            "Left: exact methods, FLOPs per byte moved against achieved FLOP/s, under the "
            "machine's GEMM and copy ceilings. Right: every method's achieved bytes/s against "
            "the copy bandwidth. Bytes moved come from each implementation's lower-bound traffic "
            "model (the record's bytes_model). The ceilings are the best of the run's peak "
            "measurements; a point above one is drawn as a hollow red circle, marked peak "
            "under-measured, not as a result."))
    if speed["pct_peak_bandwidth"].notna().any():
        bw = pct_table(speed, "pct_peak_bandwidth")
        doc.table(bw, writer.table(bw, "pct_peak_bandwidth",
                                   "% of the peak copy bandwidth (bytes moved / median time; "
                                   "the run's best measured peak)"))
    if speed["pct_peak_flops"].notna().any():
        fl = pct_table(speed, "pct_peak_flops", family="exact")
        doc.table(fl, writer.table(fl, "pct_peak_flops",
                                   "% of the peak matmul FLOP/s of the dtype (exact methods; "
                                   "the run's best measured peak)"))
    over = speed[peak_marks.marked(speed) & (speed["status"] == "ok")]
    if not over.empty:
        doc.p(f"**{peak_marks.MARK.capitalize()}**: {len(over)} point(s) ran above 100% of the "
              "best peak their run measured. A median cannot beat the best call of a peak "
              "that holds, so the peak was measured low (the machine was busier while it was "
              "measured than while these points ran) or a traffic model is wrong; their % of "
              "peak is not a result (hollow red circles in the roofline):")
        doc.ul([f"{r.impl} T={r.seq_len} D={r.head_dim} {r.dtype} {r['pass']}"
                + (f" ({r.run})" if results.multi else "") + f": {r.peak_under_measured}"
                for _, r in over.iterrows()])
    throttled = speed[speed["throttled"]]
    if not throttled.empty:
        items = [f"{r.impl} T={r.seq_len} D={r.head_dim} {r.dtype} {r['pass']}: "
                 + throttle_text(r) for _, r in throttled.iterrows()]
        doc.p(f"{escape.strong('Throttled')}: {len(items)} point(s) were timed while NVML reported a "
              "slowdown (power cap, thermal or hardware slowdown) or with the SM clock below "
              "75% of the application clock (idle samples left out); their times are not the "
              "GPU's best:")
        doc.ul(items)


BASIS_WORDS = {
    "device_events": "device_events (CUDA events around each call: the GPU's time)",
    "host_sync": "host_sync (wall clock around each call and a wait for its result: dispatch "
                 "and synchronisation included)",
}


L2_WORDS = {
    "cold": "cold (a buffer larger than L2 written before each sample, untimed: inputs come "
            "from device memory)",
    "warm": "warm (nothing written between samples: what the previous call left in the "
            "caches may serve the next; CPU samples are always warm)",
}


def l2_line(speed: pd.DataFrame) -> str:
    """The notes' 'L2: ...' line: the cache state the samples started from (--l2), by device
    kind, with a warning where a run holds both."""
    timed = speed[(speed["status"] == "ok") & speed["l2"].fillna("").astype(bool)] \
        if "l2" in speed.columns else speed.iloc[:0]
    if timed.empty:
        return "L2: unknown (records without the l2 field and no l2_flush note)"
    kinds = timed["device"].astype(str).str.split(":").str[0]
    parts = [f"{kind}: {', '.join(L2_WORDS.get(s, s) for s in sorted(set(group['l2'])))}"
             for kind, group in timed.groupby(kinds, sort=True)]
    mixed = timed.groupby(kinds)["l2"].nunique().max() > 1
    return "L2 (--l2): " + "; ".join(parts) + (
        " (several states: times with a cold and a warm cache are not comparable)"
        if mixed else "")


def basis_caption(frame: pd.DataFrame) -> str:
    """What the times of ``frame`` are: 'Timing basis: ...' (its records' timing_basis), or a
    warning when they hold several bases ('' with no timed record)."""
    bases = sorted(set(frame["timing_basis"].dropna()) - {""}) \
        if "timing_basis" in frame.columns else []
    if not bases:
        return ""
    if len(bases) == 1:
        return f"Timing basis: {BASIS_WORDS.get(bases[0], bases[0])}."
    return (f"Timing bases differ here ({', '.join(bases)}): times on different bases are not "
            f"comparable.")


def throttle_text(row: Any) -> str:
    """Why a throttled point was marked: its reasons and its lowest SM clock."""
    reasons = [r for r in (row.get("throttle_reasons") or []) if r != "gpu_idle"]
    parts = [f"reasons {', '.join(reasons)}"] if reasons else []
    low, top = row.get("sm_clock_mhz_min"), row.get("max_sm_clock_mhz")
    if pd.notna(low):
        parts.append(f"SM clock down to {low:.0f}" + (f" of {top:.0f} MHz" if pd.notna(top)
                                                       else " MHz"))
    return "; ".join(parts) or "throttled"


def failure_caption(frame: pd.DataFrame) -> str:
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return "Every point ran."
    parts = []
    for (impl, status), rows in bad.groupby(["impl", "status"], sort=True):
        lengths = sorted(set(rows["seq_len"]))
        span = (f"T={lengths[0]}" if len(lengths) == 1 else
                f"T={lengths[0]}..{lengths[-1]} ({len(rows)} points)")
        parts.append(f"{impl} {status} at {span}")
    return "Not plotted: " + "; ".join(parts) + "."


def points_table(speed: pd.DataFrame) -> pd.DataFrame:
    columns = ["run", "hardware_tag", "impl", "family", "device", "dtype", "batch", "heads",
               "head_dim", "causal", "pass", *axis_columns(speed.columns), "seq_len", "status",
               "time_s", "quant_error", "time_q1_s",
               "time_q3_s", "n_samples", "peak_mem_bytes", "tflops", "tokens_per_s",
               "deviation_from_softmax", "bytes_moved", "achieved_bytes_per_s",
               "pct_peak_bandwidth", "pct_peak_flops", "peak_under_measured", "throttled",
               "energy_j_per_call", "energy_j_per_token", "mean_power_w", "energy_window_s",
               "energy_error_max", "energy_source", "energy_reason", "l2", "graph_check",
               *NOISE_COLUMNS, "message", "point_id", "repro"]
    return speed[columns].reset_index(drop=True)


# the record's noise fields (harness.contract.records.NoiseMetrics), every one in points.csv
NOISE_COLUMNS = tuple(f.name for f in dataclasses.fields(NoiseMetrics))


def noisy_caption(frame: pd.DataFrame) -> str:
    """The time tables' footnote where a point in ``frame`` is marked noisy."""
    if "noisy" not in frame.columns or not (frame["status"] == "ok").any() or \
            not frame.loc[frame["status"] == "ok", "noisy"].astype(bool).any():
        return ""
    return ". " + tables.NOISY_NOTE


# the HTML's point table: what identifies a point, its result, and its reproducer
POINT_TABLE_COLUMNS = ("run", "impl", "device", "dtype", "pass", "causal", "batch", "heads",
                       "head_dim", "seq_len", "status", "time_s", "l2", "point_id", "repro")


def runs_section(doc, results, pairs, reference, order, looks, writer, figures) -> None:
    speed = results.speed
    impls = [i for i in order if i in set(speed["impl"])]
    doc.h(2, "Comparison of runs")
    doc.p(f"The same implementation and shape across runs, paired on implementation, device, "
          f"dtype, batch, heads, head_dim, causal, pass and seq_len. Reference run: "
          f"{reference}.")
    runs = [(r.label, (r.meta.get("machine") or {}).get("hardware_tag", "unknown hardware"))
            for r in results.runs]
    for group, frame in speed.groupby("group", sort=False):
        suffix = f"__{slug(group)}" if speed["group"].nunique() > 1 else ""
        doc.figure(writer.figure(figures.runs_side_by_side(
            frame, runs, impls, looks, value=lambda r: r["time_s"].to_numpy() * 1e3,
            ylabel="time per call (ms)"), "runs_time" + suffix,
            f"Time per run, side by side ({group})",
            "One column per run (label and hardware); median time per call. "
            + basis_caption(frame)))
        doc.figure(writer.figure(figures.runs_side_by_side(
            frame, runs, impls, looks,
            value=lambda r: r["peak_mem_bytes"].to_numpy(float) / MIB,
            ylabel="peak memory (MiB)"), "runs_memory" + suffix,
            f"Peak memory per run, side by side ({group})", "One column per run."))
    if pairs.empty:
        doc.p("No point was measured in both the reference run and another run: nothing to "
              "pair.")
        return
    doc.figure(writer.figure(figures.runs_ratio(pairs, reference, impls, looks), "runs_ratio",
                             "Time ratio between runs",
                             f"Median time in each run divided by the time in {reference} at "
                             f"the same implementation and shape. {basis_caption(speed)}"))
    table = tables.run_comparison_table(pairs, reference)
    doc.table(table, writer.table(table, "run_comparison",
                                  f"paired points: each run vs {reference}"))


def accuracy_findings(acc: pd.DataFrame) -> list[str]:
    if acc.empty:
        return []
    out = []
    ok = acc[(acc["status"] == "ok") & acc["test_accuracy"].notna()]
    from harness.metrics.stats import mean_std

    for task, rows in ok.groupby("task", sort=True):
        summary = {impl: mean_std(100 * sub["test_accuracy"])
                   for impl, sub in rows.groupby("impl")}
        best = sorted(summary.items(), key=lambda kv: -kv[1].mean)
        sources = ", ".join(sorted(set(rows["data_source"]) - {""})) or "unknown"
        out.append(f"{TASK_TITLES.get(task, task)} ({sources} data): best test accuracy "
                   f"{percent(best[0][1])} ({best[0][0]}); "
                   + ", ".join(f"{i} {percent(s)}" for i, s in best[1:]))
    failed = acc[acc["status"] != "ok"]
    for _, row in failed.iterrows():
        out.append(f"accuracy: {row['impl']} on {row['task']}: {row['status']} "
                   f"({row['message']})")
    return out


def percent(summary) -> str:
    """``"38.10% ± 0.90 (n=3)"``, ``"38.10% (n=1)"``."""
    spread = "" if summary.std is None else f" ± {summary.std:.2f}"
    return f"{summary.mean:.2f}%{spread} (n={summary.n})"


def accuracy_section(doc, acc, order, looks, writer, figures) -> None:
    from harness.report import lra, lra_figures

    doc.h(2, "Accuracy")
    summary = lra.accuracy_summary(acc)
    ours, published = lra.accuracy_display(summary), lra.published_table()
    sources = sorted(set(acc["data_source"].dropna()) - {""})
    seeds = summary[summary["task"] != lra.AVG]["n"]
    doc.p("Test accuracy (%) at the best validation checkpoint, from this report's accuracy "
          "records (source: ours): mean ± sample standard deviation over seeds, with n the "
          "number of seeds (n=1: one seed, no spread). The published LRA numbers are below it "
          f"(source: published; {SOURCE}). Data used here: {', '.join(sources) or 'unknown'}. "
          "Numbers from generated or reduced data, or from small presets, are not comparable "
          "with the published ones."
          + (" Fewer than three seeds per cell: the spread is not a reliable estimate."
             if len(seeds) and seeds.max() < 3 else ""))
    doc.table(ours, writer.table(summary, "accuracy",
                                 "test accuracy (%) measured here: mean, sample std, n seeds"))
    doc.table(published, writer.table(published, "accuracy_published",
                                      "published LRA accuracy (%)"))
    impls = [i for i in order if i in set(acc["impl"])]
    points = lra.speed_points(acc)
    doc.figure(writer.figure(lra_figures.accuracy_speed_memory(points, impls, looks,
                                                               TASK_TITLES),
                             "accuracy_speed_memory", "Accuracy vs speed vs memory",
                             "Test accuracy against training throughput (examples/s of "
                             "training steps); marker area proportional to peak memory during "
                             "training; one marker per implementation, per task (or the LRA "
                             "average when all five tasks ran). Speed and memory come from "
                             "these runs' devices and presets."))
    doc.figure(writer.figure(figures.accuracy_vs_time(acc, impls, looks, TASK_TITLES),
                             "accuracy_vs_training_time", "Accuracy vs training time",
                             "Per task: validation accuracy during training (lines) and the "
                             "test accuracy at the best validation checkpoint (markers), "
                             "against wall-clock training time."))
    hrrformer_section(doc, acc, writer)
    tuning = lra.tuning_table(acc)
    if not tuning.empty:
        doc.h(3, "Hyperparameter search (validation only)")
        doc.p("Each tuned record trained every setting of its grid, chose the one with the best "
              "validation accuracy (ties: the first in grid order) and only then read the test "
              "split, once, at that setting's best validation checkpoint. "
              + ("Every implementation used the same grid."
                 if tuning["grid"].nunique() == 1 else
                 "The records do not all share one grid: compare with care."))
        doc.table(tuning, writer.table(tuning, "tuning", "grid search: the setting chosen on "
                                                         "validation, per record"))
    detail = acc[["run", "impl", "task", "status", "data_source", "preset", "seed",
                  "test_accuracy", "best_val_accuracy", "epochs_to_best", "epochs",
                  "train_time_s", "examples_per_s", "peak_mem_bytes", "message"]]
    writer.table(detail, "accuracy_records", "every accuracy record")


def hrrformer_section(doc, acc, writer) -> None:
    """HRR next to softmax attention, with the Hrrformer paper's claims beside the numbers."""
    from harness.report import lra

    comparison = lra.hrrformer_comparison(acc, claims.registered_families(),
                                          claims.registered_traits(), REGISTRY.names())
    if comparison.empty:
        return
    doc.h(3, "Hrrformer comparison")
    row = comparison.iloc[0]
    ok = acc[acc["status"] == "ok"]
    where = ", ".join(sorted({f"{d} {t}" for d, t in zip(ok["device"], ok["dtype"])}))
    doc.p(f"{row['hrr']} against {row['softmax']} in the same model, trained here ({where}; "
          f"presets {', '.join(sorted(set(ok['preset'])))}; n = seeds of {row['hrr']}/"
          f"{row['softmax']}). Speed-up: ratio of training examples per second; memory ratio: "
          "ratio of peak memory during training; accuracy difference in points, with the "
          "standard error of the difference when both have several seeds. Published: "
          f"{lra.HRRFORMER_CITATION}. The paper's speed and memory claims compare the "
          "Hrrformer with Luna-256 on GPUs at the paper's settings, and its accuracy difference "
          "is Hrrformer (multi layer) against the LRA paper's Transformer; they are context, "
          "not the same measurement.")
    methods = sorted(set(ok["mem_method"].dropna()) - {""})
    if methods:
        doc.p("Peak memory measured as: " + "; ".join(methods) + ".")
    block = lra.hrrformer_block(comparison)
    doc.table(block)
    writer.table(comparison, "hrrformer", f"{row['hrr']} vs {row['softmax']}; published: "
                                          f"{lra.HRRFORMER_CITATION}")


def unavailable_section(doc, results: Results, writer: Writer) -> None:
    speed = results.speed
    doc.h(2, "What was unavailable, and why")
    rows = []
    if not speed.empty:
        for (impl, message), sub in speed[speed["status"] == "unsupported"].groupby(
                ["impl", "message"], sort=True):
            rows.append({"impl": impl, "points": len(sub), "reason": message})
    if not results.accuracy.empty:
        for (impl, message), sub in results.accuracy[
                results.accuracy["status"] == "unsupported"].groupby(["impl", "message"]):
            rows.append({"impl": impl + " (accuracy)", "points": len(sub), "reason": message})
    if rows:
        doc.table(pd.DataFrame(rows))
    else:
        doc.p("Every requested implementation could run.")
    doc.h(2, "Failed points")
    if speed.empty:
        doc.p("No speed records.")
        return
    failed = tables.failures(speed[speed["status"] != "unsupported"])
    if failed.empty:
        doc.p("No point failed: no out-of-memory, timeout, error or skipped points.")
    else:
        doc.p(f"{len(failed)} point(s) did not produce a measurement (unsupported ones are "
              "listed above):")
        doc.table(failed, writer.table(failed, "failures", "points that did not run, and why"))


def notes_section(doc, results: Results) -> None:
    doc.h(2, "Notes on method")
    speed = results.speed
    items = []
    if not speed.empty:
        timers = sorted(set(speed["timer"].dropna()) - {""})
        mems = sorted(set(speed["mem_method"].dropna()) - {""})
        flops = sorted(set(speed["flop_model"].dropna()) - {""})
        bases = sorted(set(speed["timing_basis"].dropna()) - {""})
        items += [f"timer: {', '.join(timers) or 'unknown'}; times are medians of the samples, "
                  "spread is the interquartile range",
                  "timing basis: " + ("; ".join(BASIS_WORDS.get(b, b) for b in bases)
                                      or "unknown")
                  + (" (several: times on different bases are not comparable)"
                     if len(bases) > 1 else "")]
        items += [l2_line(speed)]
        items += [f"memory: {', '.join(mems) or 'unknown'}"]
        items += [f"FLOP model: {f}" for f in flops]
    items += [f"input warning: {w}" for w in results.warnings]
    doc.ul(items or ["no speed records"])
