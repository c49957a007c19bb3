"""Statistics of timing samples, in one place: median, quartiles, IQR (the worker's summary of a
point, the report's IQR bands) and the bootstrap interval of a ratio of two medians (compare's
noise rule); and the mean, sample standard deviation and n of results over seeds (the accuracy
track). Pure functions of arrays.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from harness.errors import UsageError

BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class SampleStats:
    median: float
    iqr: float
    minimum: float
    count: int


def sample_stats(samples: list[float]) -> SampleStats:
    values = np.asarray(samples, dtype=float)
    q1, q3 = np.percentile(values, [25, 75])
    return SampleStats(float(statistics.median(samples)), float(q3 - q1), float(values.min()),
                       len(samples))


def relative_spread(samples: Sequence[float]) -> float | None:
    """The interquartile range over the median of the samples (None for no samples or a zero
    median): the spread of the values the median is taken from, robust to a single outlier
    (one preempted sample moves neither), and the share torch.utils.benchmark warns on."""
    if len(samples) == 0:
        return None
    values = np.asarray(samples, dtype=float)
    median = float(np.median(values))
    if median <= 0:
        return None
    q1, q3 = np.percentile(values, [25, 75])
    return float((q3 - q1) / median)


# the half-width of a median's ~95% interval, in interquartile ranges over sqrt(n): the notch
# of a box plot (McGill, Tukey and Larsen, "Variations of Box Plots", The American
# Statistician 32(1), 1978), exact for normal samples and close for most others
MEDIAN_NOTCH = 1.57


def median_uncertainty(samples: Sequence[float]) -> float | None:
    """How well the samples fix their median: the half-width of its ~95% interval over the
    median, ``1.57 * IQR / sqrt(n) / median`` (None below three samples or for a zero median).
    Unlike the spread it shrinks with more samples: a method whose calls genuinely vary by 30%
    still has a median known to 3% after 200 samples."""
    if len(samples) < 3:
        return None
    spread = relative_spread(samples)
    if spread is None:
        return None
    return float(MEDIAN_NOTCH * spread / np.sqrt(len(samples)))


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """(q1, q3) of the samples (numpy's linear interpolation, as the IQR above)."""
    q1, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 75])
    return float(q1), float(q3)


# -- bootstrap of a ratio ------------------------------------------------------------------------------------
StatFn = Callable[..., Any]  # (array, axis=...) -> value(s)
Rounds = "np.ndarray | Sequence[np.ndarray]"  # one sample array, or one per round


def parse_statistic(text: str) -> tuple[str, StatFn]:
    """'median', 'mean', 'min' or 'pNN' (a percentile, e.g. p25) -> (name, fn(array, axis))."""
    name = str(text).strip().lower()
    if name in STATISTICS:
        return name, STATISTICS[name]
    match = re.fullmatch(r"p(\d{1,2}(?:\.\d+)?)", name)
    if match and 0 < float(match.group(1)) < 100:
        q = float(match.group(1))
        return name, lambda a, axis=None: np.percentile(a, q, axis=axis)
    raise UsageError(f"--statistic: one of {', '.join(STATISTICS)} or a percentile like p25, "
                     f"got {text!r}")


STATISTICS: dict[str, StatFn] = {"median": np.median, "mean": np.mean, "min": np.min}


def bootstrap_stat(samples: np.ndarray, stat: StatFn, resamples: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``stat`` of ``resamples`` resamples (with replacement) of ``samples``."""
    if samples.size == 1:
        return np.full(resamples, float(samples[0]))
    picks = rng.integers(0, samples.size, size=(resamples, samples.size))
    return stat(samples[picks], axis=1)


@dataclass(frozen=True)
class RatioEstimate:
    """current/baseline of a (possibly normalised) statistic, with its bootstrap interval."""

    baseline: float
    current: float
    ratio: float
    lo: float
    hi: float
    baseline_spread: float   # relative half-width of the baseline value's bootstrap interval
    current_spread: float
    single_sample: bool
    rounds: tuple[int, int] = (1, 1)


def ratio_estimate(base: Rounds, cur: Rounds, base_ref: Rounds | None = None,
                   cur_ref: Rounds | None = None, *, confidence: float = DEFAULT_CONFIDENCE,
                   statistic: str = "median", resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> RatioEstimate:
    """Ratio of current to baseline value, value = stat(x) or stat(x) / stat(ref).

    Each argument is one sample array or a list of them, one per round. With several rounds
    the value of a side is the median over rounds of the per-round value (so with
    ``--relative-to`` a point is divided by the reference measured in the same round, and one
    round hit by a load burst cannot move the result); the bootstrap resamples within each round.
    """
    _, stat = parse_statistic(statistic)
    sides = [_as_rounds(base), _as_rounds(cur)]
    refs = [_as_rounds(base_ref), _as_rounds(cur_ref)] if base_ref is not None else None
    if refs is not None:  # pair the rounds of a point with those of its reference, in order
        for i in (0, 1):
            n = min(len(sides[i]), len(refs[i]))
            sides[i], refs[i] = sides[i][:n], refs[i][:n]
    every = [x for side in sides + (refs or []) for x in side]
    if not every or any(x.size == 0 for x in every):
        raise ValueError("every sample set needs at least one sample")
    rng = np.random.default_rng(seed)
    values, boots = [], []
    for i in (0, 1):
        per_round = np.array([float(stat(x)) for x in sides[i]])
        per_boot = np.stack([bootstrap_stat(x, stat, resamples, rng) for x in sides[i]])
        if refs is not None:
            per_round = per_round / np.array([float(stat(x)) for x in refs[i]])
            per_boot = per_boot / np.stack([bootstrap_stat(x, stat, resamples, rng)
                                            for x in refs[i]])
        values.append(float(np.median(per_round)))
        boots.append(np.median(per_boot, axis=0))
    (b_val, c_val), (b_boot, c_boot) = values, boots
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(c_boot / b_boot, [tail, 100.0 - tail])

    def spread(boot: np.ndarray, value: float) -> float:
        low, high = np.percentile(boot, [tail, 100.0 - tail])
        return float((high - low) / 2.0 / value)

    return RatioEstimate(baseline=b_val, current=c_val, ratio=c_val / b_val, lo=float(lo),
                         hi=float(hi), baseline_spread=spread(b_boot, b_val),
                         current_spread=spread(c_boot, c_val),
                         single_sample=any(x.size < 2 for x in every),
                         rounds=(len(sides[0]), len(sides[1])))


def _as_rounds(samples: Rounds | None) -> list[np.ndarray]:
    if samples is None:
        return []
    if isinstance(samples, np.ndarray):
        return [samples]
    return [np.asarray(x, dtype=float) for x in samples]


# -- results over seeds --------------------------------------------------------------------------
@dataclass(frozen=True)
class MeanStd:
    """The mean of n values and their sample standard deviation (n - 1 in the denominator;
    None when n < 2, where there is no spread to report)."""

    mean: float
    std: float | None
    n: int

    def text(self, digits: int = 2) -> str:
        """``"38.10 ± 0.52 (n=3)"``; a single value says ``(n=1)`` and gives no spread."""
        if self.std is None:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"


def mean_std(values: Iterable[float]) -> MeanStd:
    """Mean, sample std (None for a single value) and n of the finite values given."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        raise ValueError("mean_std of no finite values")
    n = len(kept)
    mean = math.fsum(kept) / n
    if n < 2:
        return MeanStd(mean, None, n)
    var = math.fsum((v - mean) ** 2 for v in kept) / (n - 1)
    return MeanStd(mean, math.sqrt(var), n)
