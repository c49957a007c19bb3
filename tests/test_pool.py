"""harness.measure.pool.WorkerPool with real worker processes and real tasks (tiny ones): which
task keeps a worker, which retires it, and what a fresh one is started for."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from harness.contract.records import Point
from harness.grid.settings import WorkerContext
from harness.measure import pool as pool_module
from harness.measure.pool import WorkerPool

CONTEXT = WorkerContext(impl_modules=("impls_for_tests", "impls_faults"))
SMALL, LONG = 32, 128          # impls_for_tests' methods misbehave at T >= 128


def memory(pool: WorkerPool, impl: str, seq_len: int = SMALL, *, key="a", timeout=None):
    """One memory pass (a real task) of a tiny point through the pool."""
    point = Point(impl, seq_len=seq_len, head_dim=16, heads=2)
    return pool.run("memory", point, CONTEXT, timeout=timeout, key=key)


@pytest.fixture
def pool():
    executor = WorkerPool()
    yield executor
    executor.interrupt()


def test_tasks_of_one_key_share_one_worker(pool):
    first = memory(pool, "softmax_torch")
    pid = pool.pid
    second = memory(pool, "softmax_torch", 64)
    assert first.status == second.status == "ok"
    assert first.result.status == second.result.status == "ok"
    assert pool.pid == pid and pool.worker_tasks == 2
    assert (pool.stats.tasks, pool.stats.workers_started) == (2, 1)
    assert pool.stats.start_s > 0 and pool.stats.retired_after_failure == 0


def test_another_key_retires_the_old_worker(pool):
    memory(pool, "softmax_torch", key="a")
    old = pool.process
    outcome = memory(pool, "softmax_torch", key="b")
    assert outcome.status == "ok" and pool.pid != old.pid
    assert old.exitcode == 0                       # asked to exit, and did
    assert pool.stats.workers_started == 2 and pool.stats.retired_after_failure == 0


def test_a_failed_result_retires_the_worker_and_the_next_task_starts_a_fresh_one(pool):
    memory(pool, "softmax_torch")
    old = pool.process
    failed = memory(pool, "test_raises", LONG)     # raises inside the pass: status error
    assert failed.status == "ok" and failed.result.status == "error"
    assert "boom at long T" in failed.result.message
    assert pool.pid is None and not old.is_alive()
    assert pool.stats.retired_after_failure == 1
    again = memory(pool, "softmax_torch")
    assert again.status == "ok" and pool.worker_tasks == 1
    assert pool.stats.workers_started == 2


def test_a_task_that_raises_in_the_worker_is_an_error_and_retires_it(pool):
    outcome = pool.run("no_such_task", CONTEXT, timeout=None, key="a")
    assert outcome.status == "error" and "KeyError" in outcome.message
    assert pool.pid is None and pool.stats.retired_after_failure == 1


def test_a_timeout_kills_the_worker(pool):
    memory(pool, "softmax_torch")
    old = pool.process
    outcome = memory(pool, "test_hangs", LONG, timeout=1)   # sleeps 600 s: never answers
    assert outcome.status == "timeout" and "worker killed" in outcome.message
    assert old.exitcode == -signal.SIGKILL and pool.pid is None
    assert memory(pool, "softmax_torch").status == "ok" and pool.worker_tasks == 1


def test_a_worker_that_dies_mid_task_is_that_tasks_outcome(pool):
    memory(pool, "softmax_torch")
    old = pool.process
    outcome = memory(pool, "fault_segfault")
    assert outcome.status == "error" and outcome.message == "worker died with SIGSEGV"
    assert old.exitcode == -signal.SIGSEGV and pool.pid is None
    assert memory(pool, "softmax_torch").status == "ok"
    assert pool.stats.workers_started == 2


def test_a_worker_that_dies_while_starting(pool, monkeypatch):
    import pool_helpers

    monkeypatch.setattr(pool_module, "_serve", pool_helpers.dies_at_start)
    outcome = memory(pool, "softmax_torch")
    assert outcome.status == "error", outcome
    assert outcome.message == "worker did not start: worker exited with status 5 without a result"
    assert pool.pid is None and pool.stats.workers_started == 0
    monkeypatch.undo()
    assert memory(pool, "softmax_torch").status == "ok" and pool.stats.workers_started == 1


def test_interrupt_kills_the_live_worker(pool):
    memory(pool, "softmax_torch")
    worker = pool.process
    pool.interrupt()
    assert worker.exitcode == -signal.SIGKILL and pool.pid is None


def test_interrupt_kills_a_worker_that_is_still_starting(pool, monkeypatch):
    """Ctrl-C while a worker starts (the run is in another thread here, waiting for it)."""
    import pool_helpers

    monkeypatch.setattr(pool_module, "_serve", pool_helpers.never_ready)
    outcomes = []
    waiting = threading.Thread(target=lambda: outcomes.append(memory(pool, "softmax_torch")))
    waiting.start()
    deadline = time.monotonic() + 120
    while pool.pid is None:      # the pool holds the starting worker: interrupt() can see it
        assert time.monotonic() < deadline and waiting.is_alive()
        time.sleep(0.01)
    worker = pool.process
    pool.interrupt()
    waiting.join(60)
    # dead (its exit status as the forkserver reports it: SIGKILL, or 255 when the waiting
    # thread's own clean-up read it first)
    assert worker.exitcode is not None and not worker.is_alive() and pool.pid is None
    (outcome,) = outcomes
    assert outcome.status == "error" and "did not start" in outcome.message, outcome


def test_close_ends_the_worker(pool):
    memory(pool, "softmax_torch")
    worker = pool.process
    pool.close()
    assert worker.exitcode == 0 and pool.pid is None and pool.worker_tasks == 0
    pool.close()                                   # nothing left: a no-op


def test_keys_of_one_group_live_together_until_another_group(pool):
    """The CPU's memory and timing workers of one implementation: both stay alive between
    points; the next implementation's group retires both."""
    first = pool.run("memory", Point("softmax_torch", seq_len=SMALL, head_dim=16, heads=2),
                     CONTEXT, timeout=None, key=("g1", "memory"), group="g1")
    memory_process = pool.process
    second = pool.run("memory", Point("softmax_torch", seq_len=SMALL, head_dim=16, heads=2),
                      CONTEXT, timeout=None, key=("g1", "timing"), group="g1")
    timing_process = pool.process
    assert first.status == second.status == "ok"
    assert memory_process.pid != timing_process.pid and pool.live_workers == 2
    assert memory_process.is_alive() and timing_process.is_alive()
    again = pool.run("memory", Point("softmax_torch", seq_len=64, head_dim=16, heads=2),
                     CONTEXT, timeout=None, key=("g1", "memory"), group="g1")
    assert again.worker_turn == 2 and pool.process.pid == memory_process.pid
    pool.run("memory", Point("softmax_torch", seq_len=SMALL, head_dim=16, heads=2),
             CONTEXT, timeout=None, key=("g2", "memory"), group="g2")
    assert pool.live_workers == 1
    assert memory_process.exitcode == 0 and timing_process.exitcode == 0


def test_a_failure_retires_only_the_worker_that_failed(pool):
    pool.run("memory", Point("softmax_torch", seq_len=SMALL, head_dim=16, heads=2),
             CONTEXT, timeout=None, key=("g", "timing"), group="g")
    survivor = pool.process
    failed = pool.run("memory", Point("test_raises", seq_len=LONG, head_dim=16, heads=2),
                      CONTEXT, timeout=None, key=("g", "memory"), group="g")
    assert failed.result.status == "error" and failed.worker_turn == 1
    assert pool.live_workers == 1 and survivor.is_alive()


def test_a_probe_that_fails_the_gate_retires_the_worker(pool):
    from harness.measure.runner import combo_of

    ok = Point("softmax_torch", seq_len=SMALL, head_dim=16, heads=2)
    wrong = Point("test_wrong", seq_len=SMALL, head_dim=16, heads=2)
    first = pool.run("probe", [combo_of(ok)], CONTEXT, timeout=None, key="k")
    assert first.status == "ok" and first.result[combo_of(ok)].gate.passed
    assert pool.pid is not None                      # a passing probe keeps its worker
    second = pool.run("probe", [combo_of(wrong)], CONTEXT, timeout=None, key="k")
    assert second.status == "ok" and not second.result[combo_of(wrong)].gate.passed
    assert pool.pid is None and pool.stats.retired_after_failure == 1
