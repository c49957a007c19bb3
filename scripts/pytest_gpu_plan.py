"""pytest plugin for scripts/gpu_validate.sh's gpu-tests step (``-p pytest_gpu_plan`` with
scripts/ on the path): the order of the GPU tests, a per-test time limit, and a line per test
written the moment it is known.

- ``--gpu-plan``: the tests in FIRST run first, in that order (the harness's own CUDA checks:
  event timer, allocator peak, OOM record, --max-memory, L2 cap, CUDA graph, the CUDA-graph
  check on a real kernel, NVML's energy counter, then one FlexAttention case); of the tests whose id names a method in ONE_CASE_ONLY, only the ones in
  FIRST run (each FlexAttention case recompiles: a few seconds to a minute each).
- ``--test-timeout SECONDS`` (or $ATTNBENCH_TEST_TIMEOUT): a test still running after that long
  fails with TestTimeout (SIGALRM: Unix main thread; a call stuck in C code ends when it returns
  to Python, the step's own limit bounds the rest). pytest-timeout is not needed.
- ``--progress-file PATH``: one tab-separated line per test (outcome, node id, seconds, reason),
  appended and flushed as each test ends: a step killed at its limit keeps the names and
  outcomes of every test that finished. ``--skip-reported`` deselects the tests already in that
  file, so a rerun goes on where a cut run stopped.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

GPU_TESTS = "tests/test_gpu.py::"
# the files gpu_validate.sh's gpu-tests step collects with -m gpu
FILES = ("tests/test_gpu.py", "tests/test_graph_check.py", "tests/test_energy.py")
FIRST = tuple(GPU_TESTS + name for name in (
    "test_cuda_runner_records_event_timing_and_allocator_memory",
    "test_cuda_oom_is_a_record",
    "test_max_memory_on_device_cuda_caps_torch_and_jax",
    "test_l2_flush_buffer_is_sized_from_the_l2_and_outside_the_workloads_cap",
    "test_cudagraph_timer_and_clock_sampling_in_records",
)) + (
    "tests/test_graph_check.py::test_a_real_graph_of_a_real_kernel_is_kept_and_counted",
    "tests/test_energy.py::test_nvml_energy_counter_advances_over_a_gpu_window",
    GPU_TESTS + "test_cuda_numerics_against_float64_reference[False-float16-flex_attention]",
)
ONE_CASE_ONLY = ("flex_attention",)
TIMEOUT_ENV = "ATTNBENCH_TEST_TIMEOUT"
PROGRESS: dict[str, str] = {}   # "path": the --progress-file (logreport hooks get no config)


class TestTimeout(Exception):
    """A test ran past --test-timeout."""

    __test__ = False   # not a test class


def pytest_addoption(parser) -> None:
    group = parser.getgroup("gpu_plan", "gpu_validate.sh's test plan")
    group.addoption("--gpu-plan", action="store_true",
                    help="harness checks first, one FlexAttention case (scripts/pytest_gpu_plan)")
    group.addoption("--test-timeout", type=float, default=None, metavar="SECONDS",
                    help=f"fail a test running longer than this (default ${TIMEOUT_ENV})")
    group.addoption("--progress-file", default=None, metavar="PATH",
                    help="append a line per test as it ends")
    group.addoption("--skip-reported", action="store_true",
                    help="deselect the tests already in --progress-file")


def planned(nodeids: list[str]) -> tuple[list[str], list[str]]:
    """(node ids in run order, node ids deselected) under --gpu-plan (pure)."""
    rank = {nodeid: i for i, nodeid in enumerate(FIRST)}
    keep, drop = [], []
    for nodeid in nodeids:
        if nodeid not in rank and any(f"-{m}]" in nodeid or f"[{m}]" in nodeid
                                      for m in ONE_CASE_ONLY):
            drop.append(nodeid)
        else:
            keep.append(nodeid)
    first = sorted((n for n in keep if n in rank), key=rank.__getitem__)
    return first + [n for n in keep if n not in rank], drop


def reported(path: str | None) -> set[str]:
    """Node ids already in a progress file."""
    if not path or not Path(path).exists():
        return set()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {line.split("\t")[1] for line in lines if line.count("\t") >= 2}


def pytest_collection_modifyitems(session, config, items) -> None:
    order = [item.nodeid for item in items]
    drop: list[str] = []
    if config.getoption("gpu_plan"):
        order, drop = planned(order)
    if config.getoption("skip_reported"):
        done = reported(config.getoption("progress_file"))
        drop += [n for n in order if n in done]
        order = [n for n in order if n not in done]
    by_id = {item.nodeid: item for item in items}
    if drop:
        config.hook.pytest_deselected(items=[by_id[n] for n in drop])
    items[:] = [by_id[n] for n in order]


def time_limit(config) -> float | None:
    value = config.getoption("test_timeout")
    if value is None and os.environ.get(TIMEOUT_ENV):
        value = float(os.environ[TIMEOUT_ENV])
    return value if value and value > 0 and hasattr(signal, "setitimer") else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Arms one alarm for the test's setup, call and teardown. The alarm's exception is raised
    inside the phase running (pytest reports it as that phase's failure)."""
    seconds = time_limit(item.config)
    if seconds is None:
        yield
        return

    def expire(signum, frame):
        raise TestTimeout(f"{item.nodeid} ran past --test-timeout {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:   # a skip: (path, line, reason)
        text = str(longrepr[2])
    elif getattr(getattr(longrepr, "reprcrash", None), "message", None):
        text = longrepr.reprcrash.message          # the exception's own line
    else:
        lines = [line for line in str(getattr(report, "longreprtext", "") or "").splitlines()
                 if line.strip()]
        text = lines[-1] if lines else ""
    return " ".join(text.replace("\t", " ").split())[:240]


def pytest_runtest_logreport(report) -> None:
    path = PROGRESS.get("path")
    if not path:
        return
    final = report.when == "call" or (report.when == "setup" and not report.passed) or \
        (report.when == "teardown" and report.failed)
    if not final:
        return
    outcome = "error" if report.failed and report.when != "call" else report.outcome
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{outcome}\t{report.nodeid}\t{report.duration:.2f}\t{reason(report)}\n")
        handle.flush()


def pytest_configure(config) -> None:
    path = config.getoption("progress_file")
    if path:
        PROGRESS["path"] = str(Path(path).resolve())
