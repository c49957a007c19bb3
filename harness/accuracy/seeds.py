"""Summaries over seeds: mean, sample standard deviation and n (pure functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable


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
