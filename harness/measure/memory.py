"""Peak-memory readers of the CPU: the worker's resident set (VmHWM, reset by writing 5 to
/proc/self/clear_refs) and the glibc settings the memory and lockstep passes need."""

from __future__ import annotations

from pathlib import Path


STATUS = Path("/proc/self/status")


CLEAR_REFS = Path("/proc/self/clear_refs")


def read_status_kib(field_name: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where that is impossible."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int | None:
    value = read_status_kib("VmRSS")
    return None if value is None else value * 1024


def peak_rss_bytes() -> int | None:
    value = read_status_kib("VmHWM")
    return None if value is None else value * 1024


def hold_freed_memory() -> None:
    """glibc: serve allocations up to 64 MiB from the heap and never trim it, so that a call's
    large buffers are reused memory in every process (lockstep timing for run_bench.py ab).

    With glibc's dynamic thresholds, whether a call's buffers come back as fresh pages (page
    faults on every call) depends on the process's allocation history: sdpa_math at T=256 (a
    2 MiB score matrix) had a median CPU time of 7.5 to 10 ms in one fresh process after another,
    and 4.5 to 6.4 ms with freed memory held. An A/B gate compares code, not that luck.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def release_freed_memory() -> None:
    """glibc: give the heap's free pages back to the OS (malloc_trim(0)), so that a reused
    worker's resident set holds what is in use, not what earlier points freed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def limit_malloc_caching() -> None:
    """Make glibc return large freed blocks to the OS, so RSS tracks what is really in use.

    Fixed mmap/trim thresholds (instead of glibc's dynamic ones) mean a tensor freed by one call
    is not silently reused by the next, which would hide part of its peak.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024)
    except (OSError, AttributeError):
        pass
