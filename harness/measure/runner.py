"""The runner: grid of points -> records, one worker per task, failures as data, resumable.

Order of work for a run:
1. static checks in this process (capabilities, packages, device present: nothing executed);
2. each (implementation, device, dtype, causal[, workload]) is probed once: availability by a
   real tiny input, then the correctness gate against the float64 reference;
3. per point, in order of increasing T within each series, the memory pass then the timing
   pass. After an out-of-memory (or a timeout), larger T of the same series are recorded as
   skipped without being tried.
Isolation (``--isolate``, harness.measure.pool): by default reused workers per
(implementation, device, dtype) probe its combinations before its first point, then measure
point after point (``worker_roles``: on the CPU a memory worker and a timing worker, on a GPU
one worker running both passes on one workload); a failure retires the worker that failed and
the next point gets a fresh one. With ``point``, one probe worker for all combinations, then two
fresh processes per point (memory, then timing).
With a time budget, points are taken worker by worker, each worker's smallest T first, with
the budget shared among the workers (harness.measure.budget: running out of time costs the
largest T, not whole implementations); points not started when the budget is spent get no
record, so ``--resume`` picks them up. The budget counts from the start of the run
(probes included), and no task is given a timeout beyond the budget left (compile allowance
included): a task cut by the budget's end leaves its point unrecorded, not tried, like the
points after it.
Every point ends as exactly one record appended to results.jsonl the moment it is known.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, TypeVar

from harness.measure.compile_cache import (
    COMPILE_CACHE_ENV,
    DEFAULT_DIRNAME,
    RUN_CACHE,
    unusable,
    user_compile_cache,
)
from harness.errors import UsageError
from harness.measure.budget import BudgetShares, budget_order
from harness.measure.overhead import Overhead, OverheadSummary
from harness.measure.pool import WorkerPool
from harness.measure.processes import ExecutorStats, LocalExecutor, Outcome
from harness.metrics.flops import derived
from harness.metrics.peaks import bandwidth_peak, flops_peak, peaks_against, under_measured
from harness.contract.ragged import point_lengths
from harness.contract.probe import ProbeResult
from harness.contract.records import MemoryResult, Measurement, Point, SpeedRecord, TimingResult
from harness.contract.registry import REGISTRY, Implementation, device_kind, load_impl_modules
from harness.store.run_dir import RunDir, now_iso
from harness.metrics.traffic import traffic_metrics
from harness.grid.settings import RunSettings, resolve_timing_basis
from harness.contract.registry import static_check

Combo = tuple  # impl, device, dtype, causal[, workload features, keyword axis values]


def combo_of(point: Point) -> Combo:
    """The probe/gate combination of a point: (impl, device, dtype, causal), plus (its
    workload features sorted, its keyword axes' (name, value) pairs) when it has any; square
    self-attention keeps the 4-tuple."""
    base = (point.impl, point.device, point.dtype, point.causal)
    features = tuple(sorted(point.features()))
    keywords = tuple(sorted(point.keyword_values().items()))
    return base + (features, keywords) if features or keywords else base


def worker_key(point: Point) -> tuple[str, str, str]:
    """The points one reused worker serves: same implementation, device and dtype."""
    return point.impl, point.device, point.dtype


def worker_roles(point: Point) -> tuple[str, ...]:
    """The reused workers a point's passes run in. On the CPU the memory pass (peak RSS) and
    the timing pass have a worker each: the timing pass holds freed memory for reuse, and a
    later memory pass in the same process would fill those free heap chunks and count them
    (performer_torch at T=2048: 68 MiB in a fresh process, up to 104 MiB after timing passes).
    On a GPU the memory figure is the allocator's, not the process's RSS: one worker runs
    both passes on one workload (``point`` task: one build, one compilation)."""
    return ("memory", "timing") if device_kind(point.device) == "cpu" else ("point",)


def make_executor(isolate: str) -> LocalExecutor | WorkerPool:
    return WorkerPool() if isolate == "worker" else LocalExecutor()


R = TypeVar("R", MemoryResult, TimingResult)


class BudgetSpent(Exception):
    """A task whose timeout was cut to the --time-budget left ran out of it (or none was left):
    its point is not tried, so ``--resume`` measures it."""



@dataclass
class RunSummary:
    records: list[SpeedRecord] = field(default_factory=list)
    resumed_skips: int = 0
    interrupted: bool = False
    not_tried: int = 0           # points left unmeasured because the time budget was spent
    overhead: OverheadSummary | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)


Listener = Callable[[str, Any], None]  # event name, payload



def compile_cache_dir(settings: RunSettings, run_dir: RunDir | None) -> str | None:
    """The compile cache a run's workers use: --compile-cache DIR, or ``run`` for the run
    directory's own compile-cache/ (the run stands alone: its first call of each shape
    compiles), else $ATTNBENCH_COMPILE_CACHE, else the user's cache (user_compile_cache: later
    runs load what earlier ones compiled, and the records say so, ``compile_cache`` = hit);
    None without a run directory (ab's round server gating): the frameworks' defaults.
    A named cache that cannot be made or written (a file, a read-only folder) is a UsageError;
    an unusable default user cache gives way to the run directory's own."""
    chosen = settings.compile_cache or os.environ.get(COMPILE_CACHE_ENV)
    path = getattr(run_dir, "path", None)
    if path is None:
        return None
    own = str(Path(path, DEFAULT_DIRNAME).resolve())
    if chosen == RUN_CACHE:
        return own
    directory = str(Path(chosen).expanduser().resolve()) if chosen else str(user_compile_cache())
    problem = unusable(directory)
    if problem is None:
        return directory
    if settings.compile_cache:
        raise UsageError(f"--compile-cache {directory}: cannot hold a compile cache ({problem})")
    if chosen:
        raise UsageError(f"${COMPILE_CACHE_ENV}={chosen}: cannot hold a compile cache "
                         f"({problem})")
    # the default user cache is not writable here (a read-only home, a cluster's shared
    # one): the run stands alone with its own cache rather than failing every point
    return own


def with_timing_basis(settings: RunSettings, points: list[Point]) -> RunSettings:
    """``settings`` with --timing-basis ``auto`` resolved for these points (a plan resolves it
    for its grid first; a Runner given settings directly resolves it for what it runs), so that
    every framework of the run is timed on one basis."""
    if settings.timing.timing_basis != "auto":
        return settings
    cuda = {REGISTRY.get(p.impl).framework for p in points
            if device_kind(p.device) == "cuda" and p.impl in REGISTRY.names()}
    return replace(settings, timing=replace(
        settings.timing, timing_basis=resolve_timing_basis("auto", cuda)))


class Runner:
    def __init__(self, run_dir: RunDir, settings: RunSettings, *,
                 executor: LocalExecutor | WorkerPool | None = None, hardware_id: str = "",
                 listener: Listener | None = None,
                 peaks: dict[str, dict[str, Any]] | None = None,
                 probe_cache: dict[Combo, ProbeResult] | None = None,
                 overhead: Overhead | None = None) -> None:
        self.run_dir = run_dir
        # one compile cache for every worker of the run (harness.measure.compile_cache): a
        # shape compiles once, not once per worker
        self.settings = replace(settings, compile_cache=compile_cache_dir(settings, run_dir))
        self.executor = executor or make_executor(settings.isolate)
        self.isolation = getattr(self.executor, "mode", "point")
        # executors from tests or other code may keep no statistics
        self.stats: ExecutorStats = getattr(self.executor, "stats", None) or ExecutorStats()
        self.overhead = overhead or Overhead()
        self.hardware_id = hardware_id
        self.listener = listener or (lambda event, payload: None)
        self.peaks = peaks or {}   # device -> run.json's peaks for it (harness.metrics.peaks)
        # combination -> probe result, shared by runners that measure the same code (ab's round
        # server gates each combination once, then measures many rounds)
        self.probe_cache = {} if probe_cache is None else probe_cache
        self.shares: BudgetShares | None = None   # the --time-budget's clock and shares
        load_impl_modules(settings.impl_modules)  # the workers load them too

    # -- public --------------------------------------------------------------------------
    def run(self, points: Iterable[Point], *, resume: bool = False) -> RunSummary:
        if self.settings.time_budget_s is None:
            points = sorted(points, key=lambda p: (p.series_key(), p.seq_len))
        else:   # worker by worker, each its smallest T first (harness.measure.budget)
            points = budget_order(points, worker_key)
        self.settings = with_timing_basis(self.settings, points)
        summary = RunSummary()
        done = self.run_dir.done_point_ids() if resume else set()
        todo = [p for p in points if p.point_id not in done]
        summary.resumed_skips = len(points) - len(todo)
        self.listener("start", {"total": len(points), "todo": len(todo),
                                "resumed": summary.resumed_skips})
        start_before = self.stats.start_s
        budget = self.settings.time_budget_s
        # the runner's clock (time.monotonic, read through this module so a test can fake it)
        self.shares = None if budget is None else BudgetShares(
            budget, [worker_key(p) for p in todo], clock=lambda: time.monotonic())
        try:
            runnable = self._static_stage(todo, summary)
            # a reused worker probes its own combinations before its first point
            try:
                probes = self.probe(runnable) if self.isolation == "point" else {}
            except BudgetSpent:
                self._budget_spent(summary, len(runnable))
            else:
                self._measure_stage(runnable, probes, summary)
        except KeyboardInterrupt:
            self.executor.interrupt()
            summary.interrupted = True
            self.listener("interrupted", summary)
        finally:
            close = getattr(self.executor, "close", None)
            if close is not None:
                close()
        if summary.not_tried:
            self.listener("budget_spent", summary.not_tried)
        self.overhead.add_start(self.stats.start_s - start_before)
        summary.overhead = replace(self.overhead.summary(),
                                   workers_started=self.stats.workers_started,
                                   isolation=self.isolation)
        self.listener("end", summary)
        return summary

    # -- stages --------------------------------------------------------------------------
    def _static_stage(self, points: list[Point], summary: RunSummary) -> list[Point]:
        runnable = []
        for point in points:
            impl = REGISTRY.get(point.impl)
            reason = static_check(impl, point)
            if reason is None:
                runnable.append(point)
            else:
                self._emit(summary, self._record(point, impl, "unsupported", reason))
        return runnable

    def probe(self, points: list[Point]) -> dict[Combo, ProbeResult]:
        """Probe results of the points' combinations (cached: each probed once)."""
        combos = sorted({combo_of(p) for p in points}, key=repr)
        missing = [c for c in combos if c not in self.probe_cache]
        if missing:
            self.listener("probing", len(missing))
            self.probe_cache.update(probe_combos(missing, self._run, self.settings))
        return {c: self.probe_cache[c] for c in combos}

    def _measure_stage(self, points: list[Point], probes: dict[Combo, ProbeResult],
                       summary: RunSummary) -> None:
        """The points in order. Under a time budget, a pass gives every worker its share; the
        points a share left behind get the time still left in another pass (their workers
        start again, only when every worker has had its turn), until none is left or the
        budget is spent. What is left then is not tried: no record, for --resume."""
        stopped_at: dict[tuple, tuple[int, str]] = {}  # series -> (T, status) of first failure
        todo = points
        while True:
            deferred = self._measure_pass(todo, probes, summary, stopped_at)
            shares = self.shares
            if not deferred or shares is None or shares.spent() or len(deferred) == len(todo):
                summary.not_tried += len(deferred)
                return
            self.shares = BudgetShares(shares.left_s(), [worker_key(p) for p in deferred],
                                       clock=shares.clock)
            todo = deferred

    def _measure_pass(self, points: list[Point], probes: dict[Combo, ProbeResult],
                      summary: RunSummary, stopped_at: dict[tuple, tuple[int, str]]
                      ) -> list[Point]:
        """One pass over ``points``; returns those the time budget left unstarted."""
        previous_impl = None
        shares = self.shares
        deferred: list[Point] = []
        for index, point in enumerate(points):
            if shares is not None and not shares.allows(worker_key(point)):
                # this worker's share of the budget is spent (or the whole budget)
                if shares.spent():
                    return deferred + points[index:]
                deferred.append(point)
                continue
            impl = REGISTRY.get(point.impl)
            probe = probes.get(combo_of(point))
            if probe is None and self.isolation == "worker":
                try:
                    probe = self._probe_in_worker(point)
                except BudgetSpent:
                    return deferred + points[index:]
            if probe is None:   # not ``or``: a result that is not available is falsy
                probe = ProbeResult(False, "not probed")
            gate_fields = probe.gate_fields()
            if not probe:
                self._emit(summary, self._record(point, impl, probe.status, probe.reason))
                continue
            if probe.gate is not None and probe.gate.unsupported:
                # the method refused the gate's inputs when called: a limit, not a wrong answer
                self._emit(summary, self._record(point, impl, "unsupported",
                                                 probe.gate.message, **gate_fields))
                continue
            if probe.gate is None or not probe.gate.passed:
                message = "no gate result" if probe.gate is None else probe.gate.message
                self._emit(summary, self._record(
                    point, impl, "error", f"failed the correctness gate before timing: "
                                          f"{message}", **gate_fields))
                continue
            failure = stopped_at.get(point.series_key())
            if failure is not None and point.seq_len > failure[0]:
                self._emit(summary, self._record(
                    point, impl, "skipped", f"not tried: {failure[1]} at seq_len={failure[0]} "
                                            f"for the same implementation and configuration",
                    **gate_fields))
                continue
            if previous_impl is not None and previous_impl != point.impl and \
                    self.settings.cooldown_s > 0:
                time.sleep(self.settings.cooldown_s)
            previous_impl = point.impl
            self.listener("point", point)
            try:
                record = self._measure_point(point, impl, gate_fields)
            except BudgetSpent:
                return deferred + points[index:]
            if record.status in ("oom", "timeout"):
                stopped_at[point.series_key()] = (point.seq_len, "out of memory"
                                                  if record.status == "oom" else "timed out")
            self._emit(summary, record)
        return deferred

    @staticmethod
    def _budget_spent(summary: RunSummary, not_tried: int) -> None:
        summary.not_tried += not_tried

    def _probe_in_worker(self, point: Point) -> ProbeResult:
        """The point's combination probed (and gated) in the worker that will measure it."""
        combo = combo_of(point)
        if combo in self.probe_cache:
            return self.probe_cache[combo]
        self.listener("probing", 1)
        settings = self.settings
        timeout = min(settings.probe_timeout_s, settings.timeout_s) + (
            settings.compile_allowance_s if REGISTRY.get(point.impl).compiles else 0.0)
        outcome = self._run("probe", [combo], settings.worker_context(), timeout=timeout,
                            key=(worker_key(point), worker_roles(point)[-1]),
                            group=worker_key(point))
        if outcome.status == "ok" and combo in outcome.result:
            result = outcome.result[combo]
        else:
            result = ProbeResult(False, f"{point.impl}: probe worker failed ({outcome.status}): "
                                        f"{outcome.message}", crashed=True,
                                 timed_out=outcome.status == "timeout")
        self.probe_cache[combo] = result
        return result

    def _measure_point(self, point: Point, impl: Implementation,
                       gate_fields: dict[str, Any]) -> SpeedRecord:
        started = now_iso()
        context = self.settings.worker_context()
        t0 = time.perf_counter()
        timeout = self.settings.timeout_s + (self.settings.compile_allowance_s
                                             if impl.compiles else 0.0)
        conditions: dict[str, Any] = {"isolation": self.isolation}
        roles = worker_roles(point) if self.isolation == "worker" else ("memory", "timing")
        group = worker_key(point) if self.isolation == "worker" else None
        if roles == ("point",):
            # both passes in one task: --timeout for each
            outcome = self._run("point", point, self.settings.timing, context,
                                timeout=timeout + self.settings.timeout_s,
                                key=(group, "point"), group=group)
            conditions["worker_point"] = outcome.worker_turn
            if outcome.status != "ok":
                return self._record(point, impl, outcome.status, f"worker: {outcome.message}",
                                    started_at=started, wall_s=time.perf_counter() - t0,
                                    **conditions, **gate_fields)
            memory, timing = outcome.result.memory, outcome.result.timing
        else:
            memory, turn = self._task("memory", MemoryResult, point, context, timeout=timeout,
                                      key=None if group is None else (group, "memory"),
                                      group=group)
            conditions["worker_point"] = memory_turn = turn
            timing = None
            if memory.status == "ok":
                timing, timing_turn = self._task(
                    "timing", TimingResult, point, self.settings.timing, context,
                    timeout=timeout, key=None if group is None else (group, "timing"),
                    group=group)
                # the timing worker's turn; the memory worker's beside it (two reused workers)
                conditions["worker_point"] = timing_turn
        if memory.status != "ok" or timing is None:
            return self._record(point, impl, memory.status,
                                f"memory pass: {memory.message}", started_at=started,
                                wall_s=time.perf_counter() - t0, **conditions, **gate_fields)
        if timing.status == "ok":
            self.overhead.add_timing(timing.time_samples_s)
        values, extra = Measurement(memory, timing).record_values()
        values.update(conditions)
        if roles == ("memory", "timing") and group is not None:
            extra["memory_worker_point"] = memory_turn
        if point.features() and impl.capabilities.paths:
            extra["paths"] = dict(impl.capabilities.paths)
        lengths = point_lengths(point)
        if lengths is not None:   # a ragged batch's real lengths (tokens, min/median/max)
            extra["lengths_summary"] = lengths.summary()
        values.update(gate_fields)
        if timing.status == "ok":
            values.update(derived(point, impl.family, timing.time_s))
            peaks = self.peaks.get(point.device)
            values.update(traffic_metrics(
                point, impl.traffic, time_s=timing.time_s, flops=values.get("flops"),
                peak_bytes_per_s=bandwidth_peak(peaks),
                peak_flops_per_s=flops_peak(peaks, point.dtype)))
            # above 100% of the peak known now: the record names the measurement it beat
            values.update(peaks_against=peaks_against(peaks),
                          peak_under_measured=under_measured(
                              values.get("pct_peak_flops"), values.get("pct_peak_bandwidth"),
                              peaks, point.dtype))
        return self._record(point, impl, timing.status,
                            timing.message if timing.status == "ok"
                            else f"timing pass: {timing.message}",
                            started_at=started, wall_s=time.perf_counter() - t0,
                            extra=extra, **values)

    def _task(self, name: str, result_type: type[R], *args: Any,
              timeout: float | None = None, key: Any = None,
              group: Any = None) -> tuple[R, int | None]:
        """(the worker's typed result, the point's turn in that worker); a worker that died,
        hung or was killed: its status."""
        outcome = self._run(name, *args, timeout=timeout or self.settings.timeout_s, key=key,
                            group=group)
        turn = outcome.worker_turn if outcome.worker_turn is not None else 1
        if outcome.status == "ok":
            return outcome.result, turn
        return result_type(status=outcome.status, message=outcome.message), turn

    def _run(self, name: str, *args: Any, timeout: float, key: Any = None,
             group: Any = None) -> Outcome:
        """One task through the executor, its time counted (harness.measure.overhead); under a
        time budget its timeout is cut to the budget left (BudgetSpent: none left, or the cut
        task ran out of it)."""
        # executors without keys (one process per task) are called without them
        keyed = {} if key is None else {"key": key, "group": group}
        cut = False
        if self.shares is not None:
            left = self.shares.left_s()
            if left <= 0:
                raise BudgetSpent(name)
            cut, timeout = timeout > left, min(timeout, left)
        outcome: Outcome = self.executor.run(name, *args, timeout=timeout, **keyed)
        self.overhead.add_task(outcome.wall_s, outcome.task_s, outcome.compile_s)
        if cut and outcome.status == "timeout":
            raise BudgetSpent(name)
        return outcome

    # -- records -------------------------------------------------------------------------
    def _record(self, point: Point, impl: Implementation, status: str, message: str = "",
                **values: Any) -> SpeedRecord:
        values.setdefault("started_at", now_iso())
        return SpeedRecord.for_point(point, framework=impl.framework, family=impl.family,
                                     status=status, message=message,
                                     hardware_id=self.hardware_id, **values)

    def _emit(self, summary: RunSummary, record: SpeedRecord) -> None:
        self.run_dir.append(record)
        summary.records.append(record)
        self.listener("record", record)


def probe_combos(combos: list[Combo], run: Callable[..., Outcome],
                 settings: RunSettings) -> dict[Combo, ProbeResult]:
    """Availability and the correctness gate of each combination, in one probe worker; if that
    worker crashes or hangs, each combination alone (so one bad combination is isolated)."""
    # --timeout bounds the probe too: each combination may take one task's timeout
    # methods that compile get compile_allowance_s on top (compilation is not run time)
    compiling = sum(REGISTRY.get(c[0]).compiles for c in combos)
    single_timeout = min(settings.probe_timeout_s, settings.timeout_s)
    outcome = run("probe", combos, settings.worker_context(),
                           timeout=min(settings.probe_timeout_s, settings.timeout_s * len(combos))
                           + compiling * settings.compile_allowance_s)
    if outcome.status == "ok":
        return outcome.result
    results: dict[Combo, ProbeResult] = {}
    for combo in combos:
        single = run("probe", [combo], settings.worker_context(),
                              timeout=single_timeout + (settings.compile_allowance_s
                                                        if REGISTRY.get(combo[0]).compiles
                                                        else 0.0))
        if single.status == "ok":
            results.update(single.result)
        else:
            results[combo] = ProbeResult(False, f"{combo[0]}: probe worker failed "
                                                f"({single.status}): {single.message}",
                                         crashed=True, timed_out=single.status == "timeout")
    return results



