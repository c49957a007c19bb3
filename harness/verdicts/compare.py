"""Two runs judged point by point: pairing, noise-aware verdicts, relative normalisation.

Pure logic (records in, rows out: harness.verdicts.row.VerdictRow, with the verdicts of
harness.verdicts.words); ``harness/commands/compare.py`` does the files and printing.

Pairing
    A baseline record and a current record pair when their ``Point`` (implementation and full
    configuration: device, batch, heads, seq_len, head_dim, dtype, causal, pass) is equal, i.e.
    on ``Point.point_id``. When a run holds several records of one point (rounds of the same
    sweep concatenated into one results.jsonl, a re-measured point), the last one gives the
    status and, when it is ok, all its ok records count as rounds (``index_records``, "Rounds").

Time rule (``--metric time``)
    The value of a point in one run is the median of its samples (``time_samples_s``; the
    record's ``time_s`` when no samples were kept), or the ``statistic`` chosen instead (mean,
    min, a percentile such as p25). With ``--relative-to REF`` it is median(samples of the
    point) / median(samples of REF at the same configuration in the same run). The change is
    ``ratio = current value / baseline value``.

    Rounds: a run may hold several records of a point (rounds of the same sweep concatenated).
    Then the value is computed per round (the point divided by the reference measured in the
    same round) and the median over rounds is the run's value; one round disturbed by a load
    burst cannot move it, and normalising within a round keeps the point and its reference under
    the same load.

    Noise: the samples of every set involved (the point in both runs, and REF in both runs when
    normalising) are resampled with replacement, independently, ``BOOTSTRAP_RESAMPLES`` times
    (fixed seed, so a verdict is reproducible), and the ratio is recomputed each time. The
    central ``confidence`` (default 95%) percentile interval [lo, hi] of those ratios is the
    interval of the comparison: it widens with the spread of either run. Each side's noise is
    the half-width of its own value's bootstrap interval, relative to the value.

    The class comes from harness.verdicts.decide.decide, the rule ``ab`` uses too: ``slower``
    when lo > 1 + threshold, ``faster`` when hi < 1 / (1 + threshold), ``same`` when the interval
    lies between, ``ambiguous`` when it straddles a limit.

    Noisy records: a run's record marked ``noisy`` (harness.metrics.noise: other processes took
    the CPUs its worker needed, or its samples did not fix the median) may be slow because of
    the machine, with samples close together. A ``slower`` whose current record is marked, or
    a ``faster`` whose baseline record is, is ``ambiguous`` with that record's reason
    (``machine_noise``); a change the other way stands (a busy machine does not speed a
    point up). ``ab`` times both sides in turns on the same machine, so the load falls on both
    and it has no such rule.

    A side with a single sample has no measurable noise (None): its bootstrap is a constant, so
    the interval only reflects the other side (and collapses to the ratio when both have one
    sample, which then decides alone); such rows carry the note "single sample". A row of
    rounds says how many each run had (``rounds`` "1/3": one round in the baseline, three in the
    current run).

Memory rule (``--metric memory``)
    ``peak_mem_bytes`` is one number per point (no samples), so the noise is a fixed floor
    on the difference (default 1 MiB; on CPU the peak is a page-granular resident-set
    high-water mark that moves by a few hundred KiB between identical runs, on CUDA allocator
    block rounding does the same): the interval is (current - baseline ± mem_floor) relative to
    the baseline (harness.verdicts.decide.memory_interval), each side's noise mem_floor relative
    to its value, and the same ``decide`` classes it: ``slower`` is more memory, ``faster``
    less. Memory is never normalised by ``--relative-to``.

Status
    ok in the baseline and anything else now (oom, timeout, error, skipped, unsupported) is
    ``newly failing``; not ok before and ok now is ``newly running``; not ok on both sides is
    ``not measured`` (each row keeps both statuses). Points only in one run are ``only in
    baseline`` / ``only in current``. With ``--relative-to``, a point whose reference is absent
    or not ok at its configuration in either run is ``not measured`` (the reference's own
    status row carries its change), and the reference's own time row is ``reference``. Which
    classes fail is ``Settings.fail_on`` (harness.verdicts.words.parse_fail_on).

Timing basis
    Two times on different timing bases (the records' ``timing_basis``: CUDA events against
    wall clock with a synchronisation; a record without the field reads it from its ``timer``)
    are not set against each other: the time row is ``not comparable`` with both bases in its
    note (a failure only when --fail-on asks). With ``--relative-to`` the point and its
    reference must share a basis in each run too. The command warns in its header when the
    runs' bases differ.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from harness.errors import UsageError
from harness.contract.records import Point, SpeedRecord
from harness.verdicts.decide import Decision, decide, memory_interval
from harness.verdicts.row import STATUS, VerdictRow
from harness.verdicts.words import (
    ALWAYS_FAILS,
    AMBIGUOUS,
    FASTER,
    NOT_COMPARABLE,
    NOT_MEASURED,
    ONLY_BASELINE,
    ONLY_CURRENT,
    REFERENCE,
    SLOWER,
    status_verdict,
    with_failures,
)
from harness.metrics.stats import (
    DEFAULT_CONFIDENCE,
    RatioEstimate,
    parse_statistic,
    ratio_estimate,
)

DEFAULT_THRESHOLD = 0.10
DEFAULT_MEM_FLOOR = 1 << 20
METRICS = ("time", "memory", "both")


# -- parsing --------------------------------------------------------------------------------
def parse_threshold(text: str | float) -> float:
    """'10%' or '0.1' -> 0.1. A bare number of 1 or more is refused as ambiguous."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*(%?)\s*", text)
        if not match:
            raise UsageError(f"--threshold: cannot read {text!r} (examples: 10%, 0.1)")
        value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
        if not match.group(2) and value >= 1:
            raise UsageError(f"--threshold: {text!r} is ambiguous; write it as a percentage "
                             f"({text}%) or a fraction (0.1)")
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--threshold: must be positive, got {text!r}")
    return value


# -- records --------------------------------------------------------------------------------
def index_records(records: Iterable[SpeedRecord]) -> dict[Point, SpeedRecord]:
    """Point -> record; repeated measurements of a point (rounds) are combined.

    The status of a point is that of its last record. When it is ok, the record carries the
    samples of every ok record of the point (pooled, for display) and the median of their peak
    memories; ``extra["round_samples"]`` keeps each round's samples apart for the time rule.
    """
    groups: dict[Point, list[SpeedRecord]] = {}
    for record in records:
        groups.setdefault(record.point, []).append(record)
    index: dict[Point, SpeedRecord] = {}
    for point, items in groups.items():
        last = items[-1]
        ok = [r for r in items if r.status == "ok"]
        if last.status != "ok" or len(ok) == 1:
            index[point] = last
            continue
        rounds = [samples_of(r) for r in ok]
        rounds = [x for x in rounds if x.size]
        pooled = [float(x) for r in rounds for x in r]
        peaks = [r.peak_mem_bytes for r in ok if r.peak_mem_bytes is not None]
        index[point] = dataclasses.replace(
            last, time_samples_s=pooled, time_s=float(np.median(pooled)) if pooled else None,
            peak_mem_bytes=int(np.median(peaks)) if peaks else None,
            extra={**last.extra, "rounds": len(rounds), "round_samples": rounds})
    return index


def rounds_of(record: SpeedRecord) -> list[np.ndarray]:
    """The samples of a record, one array per round (one round unless index_records combined)."""
    rounds = record.extra.get("round_samples")
    return list(rounds) if rounds else [samples_of(record)]


def samples_of(record: SpeedRecord) -> np.ndarray:
    """The timing samples of a record (its median alone when none were kept); may be empty."""
    values = [float(s) for s in (record.time_samples_s or []) if s is not None]
    if not values and record.time_s is not None:
        values = [float(record.time_s)]
    array = np.asarray(values, dtype=float)
    if array.size and (not np.all(np.isfinite(array)) or np.any(array <= 0)):
        raise UsageError(f"{record.impl} T={record.seq_len}: time samples must be positive "
                         f"finite numbers")
    return array


def time_decision(estimate: RatioEstimate, threshold: float,
                  noise: tuple[float | None, float | None] | None = None) -> Decision:
    """The class of a time ratio (harness.verdicts.decide); ``noise``: each side's, where the
    caller knows better than the estimate (None for a single-sample side)."""
    b_noise, c_noise = noise if noise is not None else (estimate.baseline_spread,
                                                         estimate.current_spread)
    return decide(estimate.ratio, estimate.lo, estimate.hi, threshold, b_noise, c_noise)


def memory_decision(baseline: int, current: int, threshold: float, floor: int) -> Decision:
    """The class of two peak memories, the floor as the noise of their difference."""
    lo, hi = memory_interval(baseline, current, floor)
    return decide(current / baseline, lo, hi, threshold, floor / baseline,
                  floor / current if current > 0 else None)


# -- rows -------------------------------------------------------------------------------------
@dataclass
class Settings:
    threshold: float = DEFAULT_THRESHOLD
    metric: str = "time"
    relative_to: str | None = None
    confidence: float = DEFAULT_CONFIDENCE
    mem_floor: int = DEFAULT_MEM_FLOOR
    fail_on: frozenset[str] = ALWAYS_FAILS   # classes that fail (words.parse_fail_on)
    statistic: str = "median"

    def __post_init__(self) -> None:
        self.statistic = parse_statistic(self.statistic)[0]
        if self.metric not in METRICS:
            raise UsageError(f"--metric: one of {', '.join(METRICS)}, got {self.metric!r}")
        if not 0 < self.confidence < 1:
            raise UsageError(f"--confidence: between 0 and 1, got {self.confidence!r}")
        if self.mem_floor < 0:
            raise UsageError("--mem-floor: must not be negative")


@dataclass
class Comparison:
    rows: list[VerdictRow] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)

    @property
    def failures(self) -> list[VerdictRow]:
        return [r for r in self.rows if r.fails]


def compare_records(baseline: Iterable[SpeedRecord], current: Iterable[SpeedRecord],
                    settings: Settings | None = None) -> Comparison:
    """Pair the two runs' speed records and judge every pair (see the module docstring)."""
    settings = settings or Settings()
    base = index_records(baseline)
    cur = index_records(current)
    ref = settings.relative_to
    if ref is not None and settings.metric != "memory":
        for name, index in (("baseline", base), ("current", cur)):
            if not any(p.impl == ref for p in index):
                raise UsageError(f"--relative-to {ref}: the {name} run has no records of {ref} "
                                 f"(implementations there: "
                                 f"{', '.join(sorted({p.impl for p in index}))})")
    rows: list[VerdictRow] = []
    for point in sorted(set(base) | set(cur)):
        b, c = base.get(point), cur.get(point)
        if b is None:
            rows.append(VerdictRow(point, STATUS, ONLY_CURRENT, current_status=c.status))
            continue
        if c is None:
            rows.append(VerdictRow(point, STATUS, ONLY_BASELINE, baseline_status=b.status))
            continue
        by_status = status_verdict(b.status, c.status)
        if by_status is not None:
            message = c.message if c.status != "ok" else b.message
            rows.append(VerdictRow(point, STATUS, by_status, baseline_status=b.status,
                                   current_status=c.status, note=_first_line(message)))
            continue
        if settings.metric in ("time", "both"):
            rows.append(_time_row(point, b, c, base, cur, settings))
        if settings.metric in ("memory", "both"):
            rows.append(_memory_row(point, b, c, settings))
    return Comparison(with_failures(rows, settings.fail_on), settings)


def _time_row(point: Point, b: SpeedRecord, c: SpeedRecord, base: dict[Point, SpeedRecord],
              cur: dict[Point, SpeedRecord], settings: Settings) -> VerdictRow:
    ref = settings.relative_to
    metric = f"time / {ref}" if ref else "time"
    common = dict(baseline_status=b.status, current_status=c.status)
    b_samples, c_samples = samples_of(b), samples_of(c)
    if not b_samples.size or not c_samples.size:
        return VerdictRow(point, metric, NOT_MEASURED, note="no time recorded", **common)
    differ = basis_difference(b, c)
    if differ:
        return VerdictRow(point, metric, NOT_COMPARABLE, note=differ, **common)
    b_ref = c_ref = rb = rc = None
    if ref:
        if point.impl == ref:
            est = ratio_estimate(rounds_of(b), rounds_of(c), confidence=settings.confidence,
                                 statistic=settings.statistic)
            return _row_from(point, "time", REFERENCE, est, _noise(est, b, c),
                             note="the reference: absolute time, not judged", **common)
        ref_point = dataclasses.replace(point, impl=ref)
        rb, rc = base.get(ref_point), cur.get(ref_point)
        missing = [name for name, r in (("baseline", rb), ("current", rc))
                   if r is None or r.status != "ok" or not samples_of(r).size]
        if missing:
            return VerdictRow(point, metric, NOT_MEASURED,
                              note=f"{ref} not measured (ok) here in the "
                                   f"{' and '.join(missing)} run", **common)
        differ = basis_difference(b, rb) or basis_difference(c, rc)
        if differ:
            return VerdictRow(point, metric, NOT_COMPARABLE,
                              note=f"{differ} (the point against {ref})", **common)
        b_ref, c_ref = rounds_of(rb), rounds_of(rc)
    est = ratio_estimate(rounds_of(b), rounds_of(c), b_ref, c_ref,
                         confidence=settings.confidence, statistic=settings.statistic)
    noise = _noise(est, b, c, *(r for r in (rb, rc) if ref))
    decision = time_decision(est, settings.threshold, noise)
    notes = ["single sample: noise not measurable on that side" if est.single_sample else ""]
    if ref:
        _, stat = parse_statistic(settings.statistic)
        notes.insert(0, f"absolute x{float(stat(c_samples) / stat(b_samples)):.2f}")
    verdict = decision.verdict
    machine = machine_noise(verdict, b, c)
    if machine:
        verdict = AMBIGUOUS
        notes.insert(0, machine)
    return _row_from(point, metric, verdict, est, noise, note=_notes(decision, notes),
                     **common)


def machine_noise(verdict: str, b: SpeedRecord, c: SpeedRecord) -> str:
    """Why a time verdict cannot stand because a side was marked noisy when it was measured
    ('' when it can): a busy machine only slows a point down, so a ``slower`` whose current
    side is marked noisy, or a ``faster`` whose baseline side is, may be the machine's doing
    (harness.metrics.noise; the record's ``noise_reason``). Such a row is ``ambiguous``;
    a change in the other direction stands."""
    side, record = (("current", c) if verdict == SLOWER else
                    ("baseline", b) if verdict == FASTER else ("", None))
    if record is None or not record.noisy:
        return ""
    return (f"{verdict} but the {side} side was marked noisy when measured "
            f"({_first_line(record.noise_reason or 'noisy', 100)}): rerun it on a quiet machine")


def basis_difference(a: SpeedRecord, b: SpeedRecord) -> str:
    """Why two records' times cannot be set against each other ('' when they can): different
    timing bases (harness.contract.records.TIMING_BASES; a record without one reads it from its
    timer, and an unknown basis matches any) or L2 states."""
    if a.timing_basis and b.timing_basis and a.timing_basis != b.timing_basis:
        return f"timing basis differs: {a.timing_basis} vs {b.timing_basis}"
    # the L2 state at each sample (--l2; harness.contract.records.L2_STATES): a warm cache
    # serves a small call from L2, a cold one from memory; an unknown state matches any
    if a.l2 and b.l2 and a.l2 != b.l2:
        return f"L2 state differs: {a.l2} vs {b.l2} (--l2)"
    return ""


def run_bases(records: Iterable[SpeedRecord]) -> set[str]:
    """The timing bases of a run's timed records."""
    return {r.timing_basis for r in records if r.status == "ok" and r.timing_basis}


def _noise(est: RatioEstimate, b: SpeedRecord, c: SpeedRecord,
           *refs: SpeedRecord) -> tuple[float | None, float | None]:
    """Each side's noise: its bootstrap spread, None where a round of it (or of its reference)
    has a single sample."""
    b_ref, c_ref = (refs[0], refs[1]) if len(refs) == 2 else (None, None)

    def single(record: SpeedRecord, ref: SpeedRecord | None) -> bool:
        return any(x.size < 2 for r in (record, ref) if r is not None for x in rounds_of(r))
    return (None if single(b, b_ref) else est.baseline_spread,
            None if single(c, c_ref) else est.current_spread)


def _notes(decision: Decision, notes: Sequence[str]) -> str:
    """The row's note: the reason of an ambiguous class first, then the others."""
    reason = decision.reason if decision.verdict == AMBIGUOUS else ""
    return "; ".join(filter(None, [reason, *notes]))


def _row_from(point: Point, metric: str, verdict: str, est: RatioEstimate,
              noise: tuple[float | None, float | None], **kwargs: Any) -> VerdictRow:
    rounds = "" if est.rounds == (1, 1) else f"{est.rounds[0]}/{est.rounds[1]}"
    return VerdictRow(point, metric, verdict, baseline=est.baseline, current=est.current,
                      baseline_noise=noise[0], current_noise=noise[1],
                      ratio=est.ratio, lo=min(est.lo, est.ratio), hi=max(est.hi, est.ratio),
                      rounds=rounds, **kwargs)


def _memory_row(point: Point, b: SpeedRecord, c: SpeedRecord,
                settings: Settings) -> VerdictRow:
    common = dict(baseline_status=b.status, current_status=c.status)
    if b.peak_mem_bytes is None or c.peak_mem_bytes is None or b.peak_mem_bytes <= 0:
        return VerdictRow(point, "memory", NOT_MEASURED, note="no peak memory recorded",
                          **common)
    bv, cv = int(b.peak_mem_bytes), int(c.peak_mem_bytes)
    decision = memory_decision(bv, cv, settings.threshold, settings.mem_floor)
    note = "" if b.mem_method == c.mem_method else \
        f"mem_method differs: {b.mem_method} vs {c.mem_method}"
    return VerdictRow(point, "memory", decision.verdict, baseline=bv, current=cv,
                      ratio=decision.ratio, lo=decision.lo, hi=decision.hi,
                      baseline_noise=decision.baseline_noise,
                      current_noise=decision.current_noise,
                      note=_notes(decision, [note]), **common)


def _first_line(text: str, limit: int = 120) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


# -- hardware ---------------------------------------------------------------------------------
def hardware_ids(metadata: dict[str, Any], records: Sequence[SpeedRecord]) -> set[str]:
    """Every hardware id a run names: run.json's machine and each record's."""
    ids = {r.hardware_id for r in records if r.hardware_id}
    machine_id = (metadata.get("machine") or {}).get("hardware_id")
    if machine_id:
        ids.add(machine_id)
    return ids


def same_hardware(base_ids: set[str], cur_ids: set[str]) -> bool:
    """True unless both runs name hardware and the names differ (unknown counts as same)."""
    return not base_ids or not cur_ids or base_ids == cur_ids
