"""Reports: figures, tables and a readable report from one or more run directories.

``render_report(run_paths, out_dir=None, baseline=None) -> Path`` is the entry point (used by
``run_bench.py report`` and at the end of the default run). The package is split by job:
data (load and tidy), style (colours and markers), tables, figures, findings, render.
"""

from __future__ import annotations

from pathlib import Path


def render_report(run_paths: list[Path], out_dir: Path | None = None,
                  baseline: str | None = None) -> Path:
    from harness.report.render import render_report as render

    return render(run_paths, out_dir, baseline)


__all__ = ["render_report"]
