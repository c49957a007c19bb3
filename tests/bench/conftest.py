"""pytest-benchmark suite: one benchmark per available implementation at fixed small shapes.

Not part of the normal test run: the files are named ``bench_*.py`` (the default
``python_files`` pattern ``test_*.py`` does not match them) and this conftest collects them only
when benchmarking is switched on::

    python -m pytest tests/bench --benchmark-enable                 # run and print the table
    python -m pytest tests/bench --benchmark-enable --benchmark-autosave
    python -m pytest tests/bench --benchmark-enable --benchmark-compare \\
        --benchmark-compare-fail=median:10%                          # gate against the last save

(``--benchmark-only`` also switches it on.) Each benchmark's ``extra_info`` carries the peak
memory of one call and a trimmed hardware fingerprint; the saved JSON's ``machine_info`` gains
the hardware id and GPU names, so two saves from different machines can be told apart.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import pytest

BENCH_PATTERN = "bench_*.py"


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_enable", False)
                or config.getoption("benchmark_only", False))


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if not fnmatch.fnmatch(file_path.name, BENCH_PATTERN) or not _enabled(parent.config):
        return None
    # already collected through -o python_files=bench_*.py: do not collect it twice
    if any(fnmatch.fnmatch(file_path.name, pattern)
           for pattern in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


_FINGERPRINT: dict[str, Any] | None = None


def trimmed_fingerprint() -> dict[str, Any]:
    """The parts of harness.store.hardware.fingerprint() that say what the numbers were measured on."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        from harness.store.hardware import fingerprint, hardware_summary

        info = fingerprint()
        gpus = [g.get("name") for g in (info.get("gpu") or {}).get("gpus", [])] or \
            (info.get("cuda") or {}).get("devices", [])
        packages = info.get("packages") or {}
        _FINGERPRINT = {
            "hardware_id": info.get("hardware_id"),
            "hardware_tag": info.get("hardware_tag"),
            "hardware_summary": hardware_summary(info),
            "cpu_model": info.get("cpu_model"),
            "cpu_affinity": info.get("cpu_affinity"),
            "torch_threads": info.get("torch_threads"),
            "gpus": gpus,
            "driver": (info.get("gpu") or {}).get("driver"),
            "torch": packages.get("torch"),
            "jax": packages.get("jax"),
            "git_commit": (info.get("git") or {}).get("commit"),
            "git_dirty": (info.get("git") or {}).get("dirty"),
        }
    return _FINGERPRINT


@pytest.fixture(scope="session")
def hardware() -> dict[str, Any]:
    return trimmed_fingerprint()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    if _enabled(config):
        fp = trimmed_fingerprint()
        machine_info["attnbench"] = {k: fp[k] for k in ("hardware_id", "hardware_tag",
                                                         "hardware_summary", "gpus")}
