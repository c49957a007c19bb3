"""The maths of an A/B gate: per-round paired ratios, their confidence interval, each side's
noise over rounds. The class comes from harness.verdicts.decide, as compare's does.

Each round measures both sides a few seconds apart, so the load of the machine hits both alike;
the quantity judged is the ratio HEAD/BASE *within* a round. Over rounds the log ratios are
treated as independent draws: the estimate is their mean (a geometric mean of the ratios) and the
interval Student's t interval of that mean. The order of the two sides alternates (ABBA), so a
drift of the machine's speed during a round favours neither side on average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.verdicts.decide import Decision, decide

DEFAULT_CONFIDENCE = 0.95


def t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` (a positive integer) degrees of freedom.

    Closed forms for integer degrees of freedom (Abramowitz and Stegun 26.7.3 and 26.7.4).
    """
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):   # cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...)
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return (2.0 / math.pi) * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):             # 1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(confidence: float, df: int) -> float:
    """t such that P(|T| < t) = confidence (bisection on the closed form; exact to 1e-10)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie strictly between 0 and 1")
    lo, hi = 0.0, 1.0
    while t_two_sided_mass(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class PairedEstimate:
    """HEAD/BASE over rounds: geometric mean of the per-round ratios and its t interval."""

    ratio: float
    lo: float
    hi: float
    rounds: int
    ratios: tuple[float, ...]


def paired_estimate(ratios: Sequence[float],
                    confidence: float = DEFAULT_CONFIDENCE) -> PairedEstimate:
    """Estimate from per-round ratios; with one round the interval is unbounded (undecidable)."""
    values = np.asarray([float(r) for r in ratios], dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("ratios must be positive finite numbers, at least one")
    logs = np.log(values)
    mean = float(logs.mean())
    if values.size < 2:
        return PairedEstimate(math.exp(mean), 0.0, math.inf, 1, tuple(values.tolist()))
    half = t_quantile(confidence, values.size - 1) * float(logs.std(ddof=1)) / math.sqrt(
        values.size)
    return PairedEstimate(math.exp(mean), math.exp(mean - half), math.exp(mean + half),
                          int(values.size), tuple(values.tolist()))


def side_noise(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> float | None:
    """A side's noise over rounds: the half-width of the t interval of the mean of its log
    per-round values, as a relative figure (exp(half) - 1); None with fewer than two rounds.
    Load that moves both sides alike counts here and cancels in the paired ratio."""
    logs = np.log(np.asarray([float(v) for v in values], dtype=float))
    if logs.size < 2 or not np.all(np.isfinite(logs)):
        return None
    half = t_quantile(confidence, logs.size - 1) * float(logs.std(ddof=1)) / math.sqrt(logs.size)
    return math.expm1(half)


def paired_decision(estimate: PairedEstimate, threshold: float,
                    baseline_noise: float | None = None,
                    current_noise: float | None = None) -> Decision:
    """The class of a paired estimate (harness.verdicts.decide.decide: one round, with its
    unbounded interval, is always ambiguous)."""
    return decide(estimate.ratio, estimate.lo, estimate.hi, threshold, baseline_noise,
                  current_noise)


def base_first(round_index: int) -> bool:
    """ABBA order: rounds 1, 3, 5, ... measure BASE first, rounds 2, 4, ... HEAD first."""
    return round_index % 2 == 1


def side_value(samples: Sequence[float], statistic: str) -> float:
    """One side's value in one round: a statistic of its time samples."""
    values = np.asarray([float(s) for s in samples], dtype=float)
    if values.size == 0:
        raise ValueError("no samples")
    if statistic == "median":
        return float(np.median(values))
    if statistic == "mean":
        return float(values.mean())
    if statistic == "min":
        return float(values.min())
    if statistic.startswith("p"):
        return float(np.percentile(values, float(statistic[1:])))
    raise ValueError(f"unknown statistic {statistic!r}")
