"""The gradient check's plan: which inputs move together, by how much, and how close the two
sides must be, per dtype (pure; the frameworks' adapters run it, harness.measure.output_checks
judges it).

For L = <upstream, f(q, k, v)> and a seeded direction u over some of the inputs, a method's
backward gives <dL/dx, u>; a central difference of its own forward gives the same number up to
rounding and the step's curvature. Each side is taken on the inputs as the dtype can hold
them: x+ = round(x + h u), x- = round(x - h u), so that the backward's side is
<dL/dx, (x+ - x-) / 2> and the forward's (L(x+) - L(x-)) / 2, both in float64.

In float32 and float64 one random direction over q, k and v together is enough. In half
precision the output's rounding (about 2^-11 of each element in float16, 2^-8 in bfloat16)
swamps what a random direction's step moves L by: on exact attention (sdpa and softmax, lengths
16 to 1024, D = 32 and 128, causal or not) such a check was off by up to 0.58. So in half
precision each of v, q and k is its own part, along the method's own gradient (scaled to unit
rms) plus half a random direction: the signal adds up instead of cancelling, and a step of
0.005 keeps the curvature's error small (HRR's k is the most curved). Measured on that grid
(torch and JAX, two seeds): honest gradients at most 0.039 (exact attention, bfloat16), 0.084
(HRR, bfloat16), 0.024 (HRR, float16); gradients 1.2x too large 0.16 and more; a zero dq 1.0; a
constant fill 0.8 and more (v). In float32 the largest honest error was 0.011 (hrr_jax, T=1024,
D=32: the step's curvature). So the check catches gradients that are not the method's (zero,
constant, scaled by a fifth or more, a wrong formula), not a last-digit error of a correct one.
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


PARTS: dict[str, tuple[Part, ...]] = {
    "float64": (Part("q, k, v", (0, 1, 2), 1e-5, 1e-6),),
    "float32": (Part("q, k, v", (0, 1, 2), 1e-2, 2e-2),),
    **{half: (Part("v", (2,), 5e-3, tolerance, aligned=True),
              Part("q", (0,), 5e-3, tolerance, aligned=True),
              Part("k", (1,), 5e-3, tolerance, aligned=True))
       for half, tolerance in (("float16", 0.1), ("bfloat16", 0.2))},
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
