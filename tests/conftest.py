"""Shared test set-up: matplotlib writes nowhere in $HOME; tests run on the CPU."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="attnbench-mpl-"))
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
for entry in (ROOT, TESTS):  # before any worker (forkserver) starts, so workers see them too
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
