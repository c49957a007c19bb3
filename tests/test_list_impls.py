"""`run_bench.py list`: every implementation's name whole on one line, at any width and piped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from cli_helpers import ROOT

import harness
from harness.commands import list_impls
from harness.contract.probe import ProbeResult
from harness.contract.registry import REGISTRY, Capabilities, Implementation


def whole_on_a_line(name: str, text: str) -> int:
    """How many lines hold ``name`` as a whole word (what `grep -cw NAME` counts)."""
    pattern = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")
    return sum(1 for line in text.splitlines() if pattern.search(line))


def builtin_names() -> list[str]:
    """The implementations a fresh `run_bench.py list` shows (other tests of this process may
    have registered their own)."""
    return [impl.name for impl in harness.all_implementations()
            if impl.module.startswith("implementations.")]


def test_piped_list_shows_every_name_whole_at_80_and_60_columns():
    # both widths at once: each call probes every implementation in a worker process
    calls = {columns: subprocess.Popen(
        [sys.executable, str(ROOT / "run_bench.py"), "list"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": str(columns)}) for columns in (80, 60)}
    for columns, call in calls.items():
        out, err = call.communicate(timeout=600)
        assert call.returncode == 0, err
        assert whole_on_a_line("performer_torch", out) >= 1, columns
        missing = [name for name in builtin_names() if not whole_on_a_line(name, out)]
        assert not missing, (columns, missing)


@pytest.mark.parametrize("columns", [30, 60, 200])
def test_a_long_plug_in_name_never_wraps(columns, monkeypatch, capsys):
    name = "my_own_attention_with_a_rather_long_name_v2"
    REGISTRY.add(Implementation(name, "torch", "exact", Capabilities(),
                                fn=lambda q, k, v, **kw: q))
    try:
        monkeypatch.setenv("COLUMNS", str(columns))
        monkeypatch.setattr(list_impls, "probe_all", lambda names, devices, modules: {
            (n, d): {"float32": ProbeResult(False, f"{n}: a long reason that has to fold " * 3)}
            for n in names for d in devices})
        assert list_impls.run(SimpleNamespace(device=None, json=False, impl_module=[])) == 0
        out = capsys.readouterr().out
        for registered in REGISTRY.names():
            assert whole_on_a_line(registered, out) >= 1, registered
    finally:
        REGISTRY._impls.pop(name, None)
