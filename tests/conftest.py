"""Shared test set-up: matplotlib writes nowhere in $HOME; tests run on the CPU; one compile cache
for the session."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="attnbench-mpl-"))
os.environ.setdefault("MPLBACKEND", "Agg")
# a JAX GPU test in this process takes its memory as it needs it, not 75% of the GPU up front
# (the runner's workers measure beside it)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# one compile cache for the whole session (harness.measure.compile_cache): FlexAttention and JAX
# compile each shape once per session, not once per run directory or worker; the tests'
# processes (torch.compile in this one) use it too. Set it beforehand to keep one across sessions.
OWN_COMPILE_CACHE = "ATTNBENCH_COMPILE_CACHE" not in os.environ   # removed at the session's end
COMPILE_CACHE = os.environ.setdefault("ATTNBENCH_COMPILE_CACHE",
                                      tempfile.mkdtemp(prefix="attnbench-compile-"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(COMPILE_CACHE, "inductor"))
os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(COMPILE_CACHE, "triton"))

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


def pytest_sessionfinish(session, exitstatus) -> None:
    if OWN_COMPILE_CACHE:
        shutil.rmtree(COMPILE_CACHE, ignore_errors=True)
