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

Measured (harness gradient checks of softmax_torch, sdpa_math, sdpa_flash, hrr_torch,
softmax_jax, hrr_jax; T = 16 to 1024, D = 32 to 128, H = 2 and 8, causal or not, 2 to 4
seeds): honest gradients at most 2.4e-8 (float64), 0.0021 (float32), 0.024 (float16) and 0.084
(bfloat16, HRR at H=2, T=16; 0.02 at H=8); gradients 1.2x too large 0.16 and more, a zero dq
1.0, a constant fill 0.8 and more. So the check catches gradients that are not the method's
(zero, constant, scaled by a fifth or more, a wrong formula), not the last digits of a correct
one.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    "float16": per_input(5e-3, 0.1),
    "bfloat16": per_input(5e-3, 0.2),
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
