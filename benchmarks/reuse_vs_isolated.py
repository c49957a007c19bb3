"""Reused worker vs fresh processes: the same points measured side by side, taking turns.

    python benchmarks/reuse_vs_isolated.py [--impl softmax_torch,sdpa_math,hrr_torch,performer_torch]
        [--seq-len 1024,2048] [--pass forward] [--rounds 3] [--min-time 0.5]

Each round measures every point once in each isolation mode, point by point, with the
harness's own Runner: ``worker`` (harness.measure.pool.WorkerPool: per implementation one worker
probes, gates, then measures that implementation's points one after the other, as in a default
sweep; a fresh one each round) and ``point`` (harness.measure.processes.LocalExecutor: a probe
worker, then a fresh memory worker and a fresh timing worker per point). The two modes measure a
point back to back, and which goes first alternates from one point to the next and from round
to round, so that a drift in the machine's load falls on both. Per point: the median over
rounds of each mode's median time and their ratio (reused / isolated; ``paired``: the median of
the rounds' own ratios, less sensitive to a drift between rounds), the peak memory of each mode
(CPU: peak RSS above the inputs; the median over rounds) and their difference, and PASS or FAIL
against the issue's thresholds: times within 5% (the ratio of medians), peak memory within 5% or
1 MiB. The spread columns give the fastest and slowest round's time over the median, per mode:
a ratio outside 5% with spreads as wide says the machine was noisier than the threshold.
Exit status 1 when a threshold fails. B=1, H=8, D=64, float32 on the CPU by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.contract.parsers import parse_int_list  # noqa: E402
from harness.contract.records import Point, SpeedRecord  # noqa: E402
from harness.grid.settings import RunSettings, TimingSettings  # noqa: E402
from harness.measure.pool import WorkerPool  # noqa: E402
from harness.measure.processes import LocalExecutor  # noqa: E402
from harness.measure.runner import Runner  # noqa: E402
from harness.store.run_dir import RunDir  # noqa: E402

DEFAULT_IMPLS = "softmax_torch,sdpa_math,hrr_torch,performer_torch"
MODES = ("worker", "point")        # reused, isolated: the record's ``isolation``
TIME_TOLERANCE = 0.05              # |reused / isolated - 1|
MEMORY_TOLERANCE = 0.05            # |difference| / the larger peak ...
MEMORY_SLACK_BYTES = 2 ** 20       # ... or at most 1 MiB
MIB = 2.0 ** 20


# -- what was measured (pure) ------------------------------------------------------------------
@dataclass(frozen=True)
class Observation:
    """One point measured once in one mode."""
    label: str                  # impl T=... pass
    mode: str                   # "worker" or "point"
    round: int
    status: str
    time_s: float | None = None
    peak_mem_bytes: int | None = None
    worker_point: int | None = None
    mem_method: str = ""


def observation(record: SpeedRecord, round_: int) -> Observation:
    return Observation(label=point_label(record.impl, record.seq_len, record.pass_),
                       mode=record.isolation, round=round_, status=record.status,
                       time_s=record.time_s, peak_mem_bytes=record.peak_mem_bytes,
                       worker_point=record.worker_point, mem_method=record.mem_method)


def point_label(impl: str, seq_len: int, pass_: str) -> str:
    return f"{impl} T={seq_len} {pass_}"


@dataclass(frozen=True)
class Row:
    """One point's comparison: reused (``worker``) against isolated (``point``)."""
    label: str
    rounds: int
    time_reused_s: float | None
    time_isolated_s: float | None
    spread_reused: tuple[float, float] | None      # (min, max) round time / median
    spread_isolated: tuple[float, float] | None
    mem_reused: float | None
    mem_isolated: float | None
    worker_points: tuple[int, ...] = ()             # the reused rounds' worker_point
    paired_ratio: float | None = None               # median of the rounds' own ratios
    problem: str = ""                               # why no comparison (a failed status ...)

    @property
    def time_ratio(self) -> float | None:
        if not self.time_reused_s or not self.time_isolated_s:
            return None
        return self.time_reused_s / self.time_isolated_s

    @property
    def mem_diff(self) -> float | None:
        if self.mem_reused is None or self.mem_isolated is None:
            return None
        return self.mem_reused - self.mem_isolated

    @property
    def time_ok(self) -> bool:
        ratio = self.time_ratio
        return ratio is not None and abs(ratio - 1.0) <= TIME_TOLERANCE

    @property
    def mem_ok(self) -> bool:
        return memory_agrees(self.mem_reused, self.mem_isolated)

    @property
    def passed(self) -> bool:
        return not self.problem and self.time_ok and self.mem_ok


def memory_agrees(a: float | None, b: float | None) -> bool:
    """Within MEMORY_TOLERANCE of the larger peak, or within MEMORY_SLACK_BYTES."""
    if a is None or b is None:
        return False
    diff = abs(a - b)
    return diff <= MEMORY_SLACK_BYTES or diff <= MEMORY_TOLERANCE * max(abs(a), abs(b))


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _spread(values: list[float]) -> tuple[float, float] | None:
    middle = _median(values)
    if not middle:
        return None
    return min(values) / middle, max(values) / middle


def compare(observations: Iterable[Observation]) -> list[Row]:
    """One Row per point (in order of first appearance): the median over rounds of each mode's
    time and peak memory. A point with a round whose status is not ``ok`` in either mode, or
    missing from a mode, gets a ``problem`` (and fails)."""
    by_label: dict[str, list[Observation]] = {}
    for obs in observations:
        by_label.setdefault(obs.label, []).append(obs)
    rows = []
    for label, group in by_label.items():
        modes = {mode: [o for o in group if o.mode == mode] for mode in MODES}
        failed = [f"{o.mode} round {o.round}: {o.status}" for o in group if o.status != "ok"]
        missing = [mode for mode, obs in modes.items() if not obs]
        problem = "; ".join(failed + [f"not measured in mode {m}" for m in missing])
        times = {m: [o.time_s for o in obs if o.status == "ok" and o.time_s is not None]
                 for m, obs in modes.items()}
        mems = {m: [float(o.peak_mem_bytes) for o in obs
                    if o.status == "ok" and o.peak_mem_bytes is not None]
                for m, obs in modes.items()}
        rows.append(Row(label=label, rounds=max(len(obs) for obs in modes.values()),
                        time_reused_s=_median(times["worker"]),
                        time_isolated_s=_median(times["point"]),
                        spread_reused=_spread(times["worker"]),
                        spread_isolated=_spread(times["point"]),
                        mem_reused=_median(mems["worker"]), mem_isolated=_median(mems["point"]),
                        worker_points=tuple(o.worker_point or 0 for o in modes["worker"]),
                        paired_ratio=paired_ratio(modes["worker"], modes["point"]),
                        problem=problem))
    return rows


def paired_ratio(reused: list[Observation], isolated: list[Observation]) -> float | None:
    """The median over rounds measured ok in both modes of that round's reused / isolated."""
    times = {o.round: o.time_s for o in isolated if o.status == "ok" and o.time_s}
    ratios = [o.time_s / times[o.round] for o in reused
              if o.status == "ok" and o.time_s and o.round in times]
    return _median(ratios)


def mode_order(turn: int) -> tuple[str, str]:
    """The modes in the order turn ``turn`` (0-based) measures a point: alternating."""
    return MODES if turn % 2 == 0 else MODES[::-1]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.2f}"


def _range(spread: tuple[float, float] | None) -> str:
    return "-" if spread is None else f"{spread[0]:.2f}-{spread[1]:.2f}"


def table(rows: Sequence[Row]) -> list[str]:
    """A Markdown table of the rows, one verdict column per threshold."""
    lines = ["| point | reused ms | isolated ms | ratio | paired | spread reused "
             "| spread isolated | time | reused MiB | isolated MiB | diff MiB | memory "
             "| worker_point |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = row.time_ratio
        diff = row.mem_diff
        lines.append(
            f"| {row.label} | {_ms(row.time_reused_s)} | {_ms(row.time_isolated_s)} | "
            f"{'-' if ratio is None else f'{ratio:.3f}'} | "
            f"{'-' if row.paired_ratio is None else f'{row.paired_ratio:.3f}'} | "
            f"{_range(row.spread_reused)} | "
            f"{_range(row.spread_isolated)} | {'PASS' if row.time_ok else 'FAIL'} | "
            f"{_mib(row.mem_reused)} | {_mib(row.mem_isolated)} | "
            f"{'-' if diff is None else f'{diff / MIB:+.2f}'} | "
            f"{'PASS' if row.mem_ok else 'FAIL'} | "
            f"{','.join(map(str, row.worker_points)) or '-'} |")
    for row in rows:
        if row.problem:
            lines.append(f"\n{row.label}: {row.problem}")
    return lines


def verdict(rows: Sequence[Row]) -> tuple[int, str]:
    """(exit status, one line): 0 when every row passes both thresholds."""
    failed = [r for r in rows if not r.passed]
    time_failed = sum(not r.time_ok for r in rows)
    mem_failed = sum(not r.mem_ok for r in rows)
    text = (f"{len(rows) - len(failed)} of {len(rows)} point(s) pass; time outside "
            f"{TIME_TOLERANCE:.0%}: {time_failed}; memory outside {MEMORY_TOLERANCE:.0%} and "
            f"{MEMORY_SLACK_BYTES / MIB:g} MiB: {mem_failed}")
    return (1 if failed or not rows else 0), text


# -- measuring (side effects) ------------------------------------------------------------------
class HeldPool(WorkerPool):
    """A WorkerPool that outlives Runner.run: the runner closes its executor at the end of each
    call, and this one keeps its live worker instead, so that one worker serves a round's points
    of one key across calls (as it serves a series in one sweep). ``shutdown`` ends it."""

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        WorkerPool.close(self)


class Side:
    """One isolation mode: its executor, a Runner and a throw-away run directory, kept for the
    whole benchmark (the Runner counts each point's turn in its worker, ``worker_point``)."""

    def __init__(self, mode: str, settings: RunSettings, root: Path) -> None:
        self.executor = HeldPool() if mode == "worker" else LocalExecutor()
        self.run_dir = RunDir.create(root / mode, {})
        self.runner = Runner(self.run_dir, settings, executor=self.executor)

    def new_round(self) -> None:
        """A round starts as a sweep does: fresh workers, every combination probed again."""
        self.runner.probe_cache.clear()
        if isinstance(self.executor, HeldPool):
            self.executor.retire(kill=False)

    def measure(self, point: Point) -> SpeedRecord:
        return self.runner.run([point]).records[0]

    def close(self) -> None:
        if isinstance(self.executor, HeldPool):
            self.executor.shutdown()
        self.run_dir.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default=DEFAULT_IMPLS, help="comma-separated names")
    parser.add_argument("--seq-len", default="1024,2048")
    parser.add_argument("--pass", dest="passes", default="forward",
                        help="comma-separated: forward, forward_backward, backward")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of samples per measurement (the sweep's default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS and MKL_NUM_THREADS for both modes' workers "
                             "(default: the machine's; 1 keeps a loaded machine's spin-waiting "
                             "thread pools out of the comparison)")
    args = parser.parse_args(argv)
    if args.threads is not None:   # before the workers' forkserver starts: they inherit it
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    import implementations  # noqa: F401  (registers the bundled implementations)

    names = [n for n in args.impl.split(",") if n]
    lengths = parse_int_list(args.seq_len, axis="seq_len")
    passes = [p for p in args.passes.split(",") if p]
    settings = RunSettings(timing=TimingSettings(min_time_s=args.min_time))
    load_before = os.getloadavg()
    observations: list[Observation] = []
    with tempfile.TemporaryDirectory(prefix="attnbench-reuse-") as tmp:
        sides = {mode: Side(mode, settings, Path(tmp)) for mode in MODES}
        try:
            for round_ in range(args.rounds):
                for side in sides.values():
                    side.new_round()
                turn = 0
                for name in names:
                    for pass_ in passes:
                        for seq_len in lengths:
                            point = Point(impl=name, seq_len=seq_len, head_dim=args.head_dim,
                                          heads=args.heads, pass_=pass_)
                            for mode in mode_order(round_ + turn):
                                obs = observation(sides[mode].measure(point), round_)
                                observations.append(obs)
                                print(f"round {round_ + 1} {mode:6s} {obs.label:38s} "
                                      f"{obs.status:6s} {_ms(obs.time_s):>9s} ms "
                                      f"{_mib(obs.peak_mem_bytes):>8s} MiB "
                                      f"worker_point={obs.worker_point}", flush=True)
                            turn += 1
        finally:
            for side in sides.values():
                side.close()
    load_after = os.getloadavg()
    rows = compare(observations)
    threads = "the machine's" if args.threads is None else str(args.threads)
    print(f"\nB=1 H={args.heads} D={args.head_dim} float32 on the CPU, {threads} thread(s); "
          f"{args.rounds} round(s), modes alternating; --min-time {args.min_time:g}")
    print(f"load average (1/5/15 min) before {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after {', '.join(f'{x:.2f}' for x in load_after)}\n")
    print("\n".join(table(rows)))
    status, text = verdict(rows)
    print("\n" + text)
    return status


if __name__ == "__main__":
    sys.exit(main())
