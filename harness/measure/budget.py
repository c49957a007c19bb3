"""How a run under ``--time-budget`` spends its time.

A reused worker serves one implementation's points (harness.measure.runner.worker_key), and
only one implementation's workers are alive at a time. So the points are taken worker by
worker, each worker's points smallest T first across its series, and the budget is shared:
when a worker's points begin, they get the time left divided by the workers still to come.
A worker that finishes early leaves its time to the next ones. Every method gets its smallest
T measured before any method spends the budget on its largest, and no worker is started twice
for the same points (ordering all points by T alone would restart each method's workers once
per T).

Time still left once every worker has had its turn goes to the points the shares left
behind, shared the same way in another pass (harness.measure.runner: their workers start
again then, and only then). A point not started when the budget is spent is left unrecorded:
``--resume`` measures it later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence

from harness.contract.records import Point

GroupOf = Callable[[Point], Hashable]


def now() -> float:
    """The budget's clock (a test replaces it)."""
    return time.monotonic()


def budget_order(points: Iterable[Point], group_of: GroupOf) -> list[Point]:
    """The points worker by worker (in the order of each worker's first point in the usual
    series order), within a worker by T, then series."""
    ordered = sorted(points, key=lambda p: (p.series_key(), p.seq_len))
    groups: dict[Hashable, list[Point]] = {}
    for point in ordered:
        groups.setdefault(group_of(point), []).append(point)
    return [p for members in groups.values()
            for p in sorted(members, key=lambda p: (p.seq_len, p.series_key()))]


@dataclass
class BudgetShares:
    """Whether a point may start: the run's deadline not reached and its worker's share of
    the budget not spent. ``groups``: the workers' keys in the order their points come."""

    budget_s: float
    groups: Sequence[Hashable]
    clock: Callable[[], float] = field(default=lambda: now())
    deadline: float = field(init=False)   # the clock's reading at which the budget ends
    _left: list[Hashable] = field(init=False)
    _current: Hashable = field(init=False, default=None)
    _share_ends: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.budget_s
        self._left = list(dict.fromkeys(self.groups))

    def left_s(self) -> float:
        """Seconds to the run's deadline (0 when past it)."""
        return max(self.deadline - self.clock(), 0.0)

    def allows(self, group: Hashable) -> bool:
        now = self.clock()
        if now >= self.deadline:
            return False
        if group != self._current:
            self._current = group
            if group in self._left:
                self._left.remove(group)
            share = (self.deadline - now) / (len(self._left) + 1)
            self._share_ends = now + share
        return now < self._share_ends

    def spent(self) -> bool:
        """The run's whole budget is spent."""
        return self.clock() >= self.deadline
