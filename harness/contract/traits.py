"""Family traits: what an implementation declares about itself that the report states as a claim.

A method's traits are registration data (``register(..., traits=Traits(...))``), so the report's
tables, prose and baseline choice read them and never a method's name:

- ``memory``: how its time and memory grow with the sequence length T, one of ``SCALINGS``
  ("scores": the T x T score matrix is held; "tiled": T x T work in tiles, never T x T memory;
  "linear": O(T) time and memory; "features": O(T) time and memory through a feature map).
  None: not declared, and the report says so instead of guessing.
- ``baseline``: its preference as the report's baseline (speedups and memory ratios are taken
  against it): the lowest number among the methods with successful points wins. None: never
  chosen by default (``report --baseline NAME`` still may choose it).
"""

from __future__ import annotations

from dataclasses import dataclass

UNDECLARED = "not declared"


@dataclass(frozen=True)
class Scaling:
    """The exponents of T that a memory trait claims, and the claim in words."""

    name: str
    time_exponent: float
    memory_exponent: float
    basis: str          # why, for the scaling table
    summary: str        # the claim after "names:" in the report's prose


SCALINGS: dict[str, Scaling] = {s.name: s for s in (
    Scaling("scores", 2.0, 2.0, "materialises the T x T score matrix",
            "the T x T score matrix is held (T^2 work, memory T^2)"),
    Scaling("tiled", 2.0, 1.0, "tiled kernel: T x T work, never T x T memory",
            "tiled, the T x T scores are never held (T^2 work, memory T)"),
    Scaling("linear", 1.0, 1.0, "linear-time method: O(T) time and memory",
            "linear-time (T for both)"),
    Scaling("features", 1.0, 1.0, "feature-map method: O(T) time and memory "
                                  "(T x features, never T x T)",
            "a feature map instead of the T x T scores (T for both)"),
)}


@dataclass(frozen=True)
class Traits:
    """What a method declares about its family for the report (see the module docstring)."""

    memory: str | None = None
    baseline: int | None = None
    # what a compiling method compiles once for (the run cost model's assumption): "shape"
    # (torch.compile, jax.jit: every new shape), "config" (a kernel configuration: head dims,
    # dtype, masks; any sequence length and batch)
    compile_scope: str = "shape"
    # how the method's backward departs, by design, from the exact derivative of its forward
    # (e.g. a stop-gradient stabiliser): the gradient check (harness.measure.worker) is then
    # not run for it; '' = exact gradients claimed, and checked
    gradient_note: str = ""

    def __post_init__(self) -> None:
        if self.compile_scope not in ("shape", "config"):
            raise ValueError(f"compile_scope trait must be 'shape' or 'config', got "
                             f"{self.compile_scope!r}")
        if self.memory is not None and self.memory not in SCALINGS:
            raise ValueError(f"memory trait must be one of {tuple(SCALINGS)} or None, "
                             f"got {self.memory!r}")
        if self.baseline is not None and (isinstance(self.baseline, bool)
                                          or not isinstance(self.baseline, int)):
            raise ValueError(f"baseline trait must be an int preference or None, "
                             f"got {self.baseline!r}")

    @property
    def scaling(self) -> Scaling | None:
        return None if self.memory is None else SCALINGS[self.memory]
