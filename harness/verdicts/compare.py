"""Regression checking between two runs: pairing, noise-aware verdicts, relative normalisation.

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
    measured noise of the comparison: it widens with the spread of either run.

    With ``limit = 1 + threshold``:

    * ``regressed``    ratio > limit AND lo > limit: the slowdown is beyond the threshold even at
                       the optimistic end of the noise of both runs;
    * ``improved``     ratio < 1/limit AND hi < 1/limit (the mirror image);
    * ``within noise`` the ratio is beyond the threshold but the interval reaches back across it:
                       reported, not a regression;
    * ``unchanged``    otherwise.

    A side with a single sample has no measurable noise: its bootstrap is a constant, so the
    interval only reflects the other side (and collapses to the ratio when both have one sample);
    such rows carry the note "single sample". A row of rounds says how many each run had
    (``rounds`` "1/3": one round in the baseline, three in the current run).

Memory rule (``--metric memory``)
    ``peak_mem_bytes`` is one number per point (no samples), so the noise is a fixed floor:
    ``regressed`` when current > baseline * (1 + threshold) AND current - baseline > mem_floor
    (default 1 MiB; on CPU the peak is a page-granular resident-set high-water mark that moves by
    a few hundred KiB between identical runs, on CUDA allocator block rounding does the same).
    ``improved`` mirrors it. Memory is never normalised by ``--relative-to``.

Status
    ok in the baseline and anything else now (oom, timeout, error, skipped, unsupported) is a
    regression (``status ok -> oom``); not ok before and ok now is ``fixed``; a change between two
    non-ok statuses is listed (``status oom -> timeout``) but not a regression. Points only in
    the current run are ``new``; points only in the baseline are ``missing`` (a regression only
    with ``fail_on_missing``). With ``--relative-to``, a point whose reference is absent or not ok
    at its configuration in either run is ``no reference`` (listed; the reference's own status
    row carries the regression), and the reference's own time row is ``reference``.

Timing basis
    Two times on different timing bases (the records' ``timing_basis``: CUDA events against
    wall clock with a synchronisation; a record without the field reads it from its ``timer``)
    are not set against each other: the time row is ``not comparable`` with both bases in its
    note, never a regression. With ``--relative-to`` the point and its reference must share
    a basis in each run too. The command warns in its header when the runs' bases differ.
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
from harness.verdicts.row import STATUS, VerdictRow
from harness.verdicts.words import (
    FIXED,
    IMPROVED,
    MISSING,
    NEW,
    NO_REFERENCE,
    NOISY,
    NOT_COMPARABLE,
    REFERENCE,
    REGRESSED,
    UNCHANGED,
    status_change,
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


def time_verdict(estimate: RatioEstimate, threshold: float) -> str:
    limit = 1.0 + threshold
    if estimate.ratio > limit:
        return REGRESSED if estimate.lo > limit else NOISY
    if estimate.ratio < 1.0 / limit:
        return IMPROVED if estimate.hi < 1.0 / limit else NOISY
    return UNCHANGED


def memory_verdict(baseline: int, current: int, threshold: float, floor: int) -> str:
    delta = current - baseline
    if delta > floor and current > baseline * (1.0 + threshold):
        return REGRESSED
    if -delta > floor and baseline > current * (1.0 + threshold):
        return IMPROVED
    return UNCHANGED


# -- rows -------------------------------------------------------------------------------------
@dataclass
class Settings:
    threshold: float = DEFAULT_THRESHOLD
    metric: str = "time"
    relative_to: str | None = None
    confidence: float = DEFAULT_CONFIDENCE
    mem_floor: int = DEFAULT_MEM_FLOOR
    fail_on_missing: bool = False
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
    def regressions(self) -> list[VerdictRow]:
        return [r for r in self.rows if r.regression]


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
    result = Comparison(settings=settings)
    for point in sorted(set(base) | set(cur)):
        b, c = base.get(point), cur.get(point)
        if b is None:
            result.rows.append(VerdictRow(point, STATUS, NEW, current_status=c.status))
            continue
        if c is None:
            result.rows.append(VerdictRow(point, STATUS, MISSING,
                                          regression=settings.fail_on_missing,
                                          baseline_status=b.status))
            continue
        if b.status != c.status:
            verdict = FIXED if c.status == "ok" else status_change(b.status, c.status)
            result.rows.append(VerdictRow(point, STATUS, verdict, regression=b.status == "ok",
                                          baseline_status=b.status, current_status=c.status,
                                          note=_first_line(c.message)))
            continue
        if b.status != "ok":
            result.rows.append(VerdictRow(point, STATUS, UNCHANGED, baseline_status=b.status,
                                          current_status=c.status, note=f"{b.status} in both"))
            continue
        if settings.metric in ("time", "both"):
            result.rows.append(_time_row(point, b, c, base, cur, settings))
        if settings.metric in ("memory", "both"):
            result.rows.append(_memory_row(point, b, c, settings))
    return result


def _time_row(point: Point, b: SpeedRecord, c: SpeedRecord, base: dict[Point, SpeedRecord],
              cur: dict[Point, SpeedRecord], settings: Settings) -> VerdictRow:
    ref = settings.relative_to
    metric = f"time / {ref}" if ref else "time"
    common = dict(baseline_status=b.status, current_status=c.status)
    b_samples, c_samples = samples_of(b), samples_of(c)
    if not b_samples.size or not c_samples.size:
        return VerdictRow(point, metric, UNCHANGED, note="no time recorded", **common)
    differ = basis_difference(b, c)
    if differ:
        return VerdictRow(point, metric, NOT_COMPARABLE, note=differ, **common)
    b_ref = c_ref = None
    if ref:
        if point.impl == ref:
            est = ratio_estimate(rounds_of(b), rounds_of(c), confidence=settings.confidence,
                                 statistic=settings.statistic)
            return _row_from(point, "time", REFERENCE, est,
                             note="the reference: absolute time, not judged", **common)
        ref_point = dataclasses.replace(point, impl=ref)
        rb, rc = base.get(ref_point), cur.get(ref_point)
        missing = [name for name, r in (("baseline", rb), ("current", rc))
                   if r is None or r.status != "ok" or not samples_of(r).size]
        if missing:
            return VerdictRow(point, metric, NO_REFERENCE,
                              note=f"{ref} not measured (ok) here in the "
                                   f"{' and '.join(missing)} run", **common)
        differ = basis_difference(b, rb) or basis_difference(c, rc)
        if differ:
            return VerdictRow(point, metric, NOT_COMPARABLE,
                              note=f"{differ} (the point against {ref})", **common)
        b_ref, c_ref = rounds_of(rb), rounds_of(rc)
    est = ratio_estimate(rounds_of(b), rounds_of(c), b_ref, c_ref,
                         confidence=settings.confidence, statistic=settings.statistic)
    verdict = time_verdict(est, settings.threshold)
    note = "single sample: noise not measurable on that side" if est.single_sample else ""
    if ref:
        _, stat = parse_statistic(settings.statistic)
        abs_ratio = float(stat(c_samples) / stat(b_samples))
        note = "; ".join(filter(None, [f"absolute x{abs_ratio:.2f}", note]))
    return _row_from(point, metric, verdict, est, note=note, **common)


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


def _row_from(point: Point, metric: str, verdict: str, est: RatioEstimate,
              **kwargs: Any) -> VerdictRow:
    rounds = "" if est.rounds == (1, 1) else f"{est.rounds[0]}/{est.rounds[1]}"
    return VerdictRow(point, metric, verdict, regression=verdict == REGRESSED,
                      baseline=est.baseline, current=est.current,
                      baseline_spread=est.baseline_spread, current_spread=est.current_spread,
                      ratio=est.ratio, lo=est.lo, hi=est.hi, rounds=rounds, **kwargs)


def _memory_row(point: Point, b: SpeedRecord, c: SpeedRecord,
                settings: Settings) -> VerdictRow:
    common = dict(baseline_status=b.status, current_status=c.status)
    if b.peak_mem_bytes is None or c.peak_mem_bytes is None:
        return VerdictRow(point, "memory", UNCHANGED, note="no peak memory recorded", **common)
    bv, cv = int(b.peak_mem_bytes), int(c.peak_mem_bytes)
    verdict = memory_verdict(bv, cv, settings.threshold, settings.mem_floor)
    ratio = cv / bv if bv > 0 else (1.0 if cv == bv else math.inf)
    note = "" if b.mem_method == c.mem_method else \
        f"mem_method differs: {b.mem_method} vs {c.mem_method}"
    return VerdictRow(point, "memory", verdict, regression=verdict == REGRESSED, baseline=bv,
                      current=cv, ratio=ratio, note=note, **common)


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
