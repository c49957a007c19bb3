"""Deterministic, cost-balanced shards of a grid: ``sweep --shard I/N``.

The unit of assignment is a series (one implementation and configuration over T), so a shard
keeps the runner's rule "after an OOM or a timeout, larger T are skipped" and the union of the
shards records exactly what one run would. Series are assigned largest expected cost first,
each to the shard with the least cost so far (ties: the lower index): deterministic for a given
grid whatever its order, and never above (total / N + the largest series), within 4/3 of the
best possible split (Graham's LPT bound). When there are fewer
series than shards, points are assigned one by one instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from harness.errors import UsageError
from harness.contract.records import Point
from harness.grid.cost import expected_cost_s


@dataclass(frozen=True)
class ShardSpec:
    index: int   # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"--shard: expected I/N such as 2/8, got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text}: I must be between 1 and N (shards are numbered "
                         f"1..N)")
    return ShardSpec(index, count)


def assign_shards(points: Sequence[Point], count: int, family_of: Callable[[str], str]
                  ) -> list[list[Point]]:
    """count disjoint lists of points whose union is points, balanced by expected cost."""
    if count < 1:
        raise UsageError(f"the number of shards must be at least 1, got {count}")
    series: dict[tuple, list[Point]] = {}
    for point in points:
        series.setdefault(point.series_key(), []).append(point)
    units = list(series.values()) if len(series) >= count else [[p] for p in points]
    costed = sorted(((points_cost_s(unit, family_of), unit) for unit in units),
                    key=lambda item: (-item[0], min(p.point_id for p in item[1])))
    loads = [0.0] * count
    shards: list[list[Point]] = [[] for _ in range(count)]
    for cost, unit in costed:
        target = min(range(count), key=lambda i: (loads[i], i))
        loads[target] += cost
        shards[target].extend(unit)
    order = {p.point_id: i for i, p in enumerate(points)}
    return [sorted(shard, key=lambda p: order[p.point_id]) for shard in shards]


def points_cost_s(points: Sequence[Point], family_of: Callable[[str], str]) -> float:
    """Expected seconds of some points; fsum, so the order of the points does not matter
    (ties between units are common, and the assignment must not depend on the grid's order)."""
    return math.fsum(expected_cost_s(p, family_of(p.impl)) for p in points)


def select_shard(points: Sequence[Point], spec: ShardSpec, family_of: Callable[[str], str]
                 ) -> list[Point]:
    return assign_shards(points, spec.count, family_of)[spec.index - 1]
