"""The gradient check's plan: which inputs move together, by how much, and how close the two
sides must be, per dtype (pure; the frameworks' adapters run it, harness.measure.output_checks
judges it).

For L = <upstream, f(q, k, v)> and a seeded direction u over some of the inputs, a method's
backward gives <dL/dx, u>; a central difference of its own forward gives the same number up to
rounding and the step's curvature. Each side is taken on the inputs as the dtype can hold
them: x+ = round(x + h u), x- = round(x - h u), so that the backward's side is
<dL/dx, (x+ - x-) / 2> and the forward's (L(x+) - L(x-)) / 2, both in float64.

Each of v, q and k is its own part, moved along the method's own gradient (scaled to unit rms)
plus half a random direction. A random direction alone makes the backward's side a sum of
terms of both signs that can nearly cancel: on softmax_torch at the default seed (B=1, H=8,
T=64, D=32, float32) it was 0.027 where the rounding of L was a few 1e-5 per step, a 5.6%
"mismatch" of a correct backward; along the gradient the terms add up. In half precision the
output's rounding (about 2^-11 of each element in float16, 2^-8 in bfloat16) swamped a random
direction's step entirely (errors up to 0.58 on exact attention). The step is small enough for
the curvature (HRR's k is the most curved: at a step of 0.01 it alone reached 0.08).

Each part's central difference is extrapolated from two steps (Richardson: the h^2 curvature
term cancels) and tried on a ladder of steps, largest first (LADDER). Measured with the
adapters' own check (torch and JAX; softmax, sdpa, HRR; T = 16 to 4096, D = 16 to 128, H = 1
and 8, 3 to 60 seeds a shape): honest gradients at most 0.58 of the tolerance (HRR's k, bfloat16,
T=2048), 0.066 in float32 at T=4096, none in float64; gradients 1.2x too large give 0.16 and
more, a zero dq 1.0, a constant fill 0.8 and more. So the check catches gradients that are not
the method's (zero, constant, scaled by a fifth or more, a wrong formula), not the last digits
of a correct one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Part:
    """One direction of the check: the inputs it moves (indices into q, k, v), the step, and
    the largest relative difference |forward's - backward's| / max(|either|) that passes."""
    name: str
    inputs: tuple[int, ...]
    step: float
    tolerance: float
    # the direction: the method's gradient scaled to unit rms plus RANDOM_SHARE of a seeded
    # random one (True), or the random one alone (False)
    aligned: bool = False


# the random share of an aligned direction (all of it where the method's gradient is zero)
RANDOM_SHARE = 0.5


def per_input(step: float, tolerance: float) -> tuple[Part, ...]:
    """v, q and k each along the method's own gradient (plus RANDOM_SHARE of a random one)."""
    return tuple(Part(name, (index,), step, tolerance, aligned=True)
                 for name, index in (("v", 2), ("q", 0), ("k", 1)))


PARTS: dict[str, tuple[Part, ...]] = {
    "float64": per_input(1e-5, 1e-6),
    "float32": per_input(3e-3, 0.03),
    "float16": per_input(0.05, 0.1),
    "bfloat16": per_input(0.05, 0.2),
}


@dataclass(frozen=True)
class GradientCheck:
    """One part's two sides: ``difference`` the forward's central difference, ``along`` the
    backward's directional derivative (both for the rounded step, float64)."""
    part: Part
    difference: float
    along: float

    @property
    def error(self) -> float:
        return abs(self.difference - self.along) / max(abs(self.difference), abs(self.along),
                                                       1e-30)


def parts_for(dtype: str) -> tuple[Part, ...]:
    """The check's parts in this dtype; () where there is none (FP8 and other dtypes without
    a backward)."""
    return PARTS.get(dtype, ())


# the seed of the check's directions, offset from the workload's (its inputs' and upstream's)
DIRECTION_SEED_OFFSET = 7919

# each part's central difference is taken at its step and half of it, and the two combined by
# Richardson extrapolation: the curvature's h^2 term cancels (HRR's k, whose curvature grows
# with T, reached 0.053 at T=4096 in float32 with one step of 3e-3)
STEP_FRACTIONS = (1.0, 0.5)


# the steps tried, as fractions of the part's: the largest first (half precision's rounding
# wants a large step), smaller ones only when it fails (HRR's k at long T is curved so strongly
# that only a small step fits it: in float16 at T=2048 the first step fails by 4.6x, the third
# passes at 0.14 of the tolerance). A backward that is not the forward's derivative fails at
# every step: its error does not come from the step.
LADDER = (1.0, 0.25, 0.0625)


def check_part(part: Part, measure: Callable[[float], "GradientCheck"]) -> "GradientCheck":
    """The part's check: ``measure(step)`` at each step of the ladder until one passes; the
    closest one when none does."""
    best = None
    for fraction in LADDER:
        result = measure(part.step * fraction)
        if result.error <= part.tolerance:
            return result
        best = result if best is None or result.error < best.error else best
    return best


def extrapolated(part: Part, steps: list[tuple[float, float, float]]) -> GradientCheck:
    """The part's check from (step, forward's central difference, backward's side) at each of
    STEP_FRACTIONS: both sides divided by their step (a slope each), then Richardson's
    (4 s(h/2) - s(h)) / 3."""
    (h1, d1, a1), (h2, d2, a2) = steps
    ratio = (h1 / h2) ** 2
    slope = lambda value1, value2: (ratio * value2 / h2 - value1 / h1) / (ratio - 1)  # noqa: E731
    return GradientCheck(part, slope(d1, d2), slope(a1, a2))


def run_parts(parts: tuple[Part, ...],
              one_step: Callable[[Part, float], tuple[float, float]]) -> list[GradientCheck]:
    """Each part's check, from ``one_step(part, step)``: (the forward's central difference, the
    backward's side) on the inputs moved by that step (a framework's adapter supplies it), at
    each of STEP_FRACTIONS (extrapolated) and down the LADDER as check_part goes."""
    def measure(part: Part, first: float) -> GradientCheck:
        return extrapolated(part, [(first * fraction, *one_step(part, first * fraction))
                                   for fraction in STEP_FRACTIONS])
    return [check_part(part, lambda step, part=part: measure(part, step)) for part in parts]
