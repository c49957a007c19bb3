"""The one decision of ``compare`` and ``ab``: a measured ratio, its interval and the noise of
each side in, a class of harness.verdicts.words out. Pure; both commands call ``decide``.

The rule (``limit = 1 + threshold``), on the interval ``[lo, hi]`` of ``current / baseline``
(widened to hold the ratio itself, should a percentile interval leave it out):

* ``slower``     lo > limit: costs more by more than the threshold even at the interval's
                 optimistic end;
* ``faster``     hi < 1 / limit (the mirror image);
* ``same``       1 / limit <= lo and hi <= limit: any change is within the threshold;
* ``ambiguous``  otherwise: the interval straddles a limit. Its half-width (the noise of the
                 comparison) is larger than the ratio's distance to that limit; when it is
                 larger than the threshold itself no ratio could be called ``same``. More
                 samples or rounds narrow it.

Where the interval comes from is each command's business: compare bootstraps the two runs'
samples (harness.metrics.stats.ratio_estimate), ab takes Student's t interval over rounds of
the paired ratios (harness.verdicts.ab.paired_stats), a peak memory's interval is its floor
(``memory_interval``). The noise of a side is how precisely that side's value is known: the
half-width of its value's interval relative to the value (None where it could not be measured,
e.g. a single sample). It is reported beside the interval; the interval alone decides, because
in ab the pairing cancels what moves both sides alike, and the interval of the ratio can be
much narrower than either side's noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.verdicts.words import AMBIGUOUS, FASTER, SAME, SLOWER


@dataclass(frozen=True)
class Decision:
    """A class and what decided it: the ratio current/baseline, its interval, each side's
    relative noise, and one line saying why."""

    verdict: str
    ratio: float
    lo: float
    hi: float
    baseline_noise: float | None = None
    current_noise: float | None = None
    reason: str = ""


def decide(ratio: float, lo: float, hi: float, threshold: float,
           baseline_noise: float | None = None,
           current_noise: float | None = None) -> Decision:
    """The class of a ratio with interval [lo, hi] against ``threshold`` (module docstring)."""
    if not (math.isfinite(ratio) and ratio > 0) or threshold <= 0:
        raise ValueError("the ratio must be a positive finite number, the threshold positive")
    lo, hi = min(lo, ratio), max(hi, ratio)
    limit = 1.0 + threshold
    if lo > limit:
        verdict, reason = SLOWER, f"interval above {limit:.3g}"
    elif hi < 1.0 / limit:
        verdict, reason = FASTER, f"interval below {1 / limit:.3g}"
    elif lo >= 1.0 / limit and hi <= limit:
        verdict, reason = SAME, f"interval within [{1 / limit:.3g}, {limit:.3g}]"
    else:
        verdict = AMBIGUOUS
        half = interval_noise(ratio, lo, hi)
        straddled = limit if hi > limit else 1.0 / limit
        reason = (f"interval straddles {straddled:.3g}"
                  + (f"; its noise ±{half:.1%} exceeds the threshold {threshold:.1%}"
                     if half > threshold else "")
                  + ": more samples or rounds could decide it")
    return Decision(verdict, ratio, lo, hi, baseline_noise, current_noise, reason)


def interval_noise(ratio: float, lo: float, hi: float) -> float:
    """The half-width of the interval relative to the ratio (the comparison's noise); inf for
    an unbounded interval."""
    if not math.isfinite(hi):
        return math.inf
    return (hi - lo) / 2.0 / ratio


def memory_interval(baseline: float, current: float, floor: float) -> tuple[float, float]:
    """The interval of current/baseline for one number per side whose difference is known to
    ``floor`` bytes (a resident-set high-water mark or an allocator's block rounding): the
    difference ± floor, relative to the baseline."""
    return max(current - floor, 0.0) / baseline, (current + floor) / baseline
