"""What each method claims about itself, read from the traits it declared when it registered.

The report never names a method: the scaling table's claimed exponents, the prose that says which
methods hold the T x T scores, the default baseline and the Hrrformer pair come from here. A
method recorded in a run but not registered in this process (a plug-in whose module was not
loaded) has no traits here, and the report says so.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from harness.contract.registry import REGISTRY
from harness.contract.traits import SCALINGS, UNDECLARED, Traits

NOT_REGISTERED = ("not registered in this process, so its traits are unknown here (load its "
                  "module with --impl-module)")


def registered_traits() -> dict[str, Traits]:
    """name -> declared traits of every registered implementation."""
    return {impl.name: impl.traits for impl in REGISTRY.all()}


def registered_families() -> dict[str, str]:
    return {impl.name: impl.family for impl in REGISTRY.all()}


def frameworks(*frames: pd.DataFrame) -> dict[str, str]:
    """name -> framework: as recorded in ``frames`` (a "framework" column), else as registered."""
    out = {impl.name: impl.framework for impl in REGISTRY.all()}
    for frame in frames:
        if "framework" in frame.columns and "impl" in frame.columns:
            recorded = frame.dropna(subset=["framework"])
            out.update(zip(recorded["impl"], recorded["framework"]))
    return out


def theoretical_exponents(traits: Traits | None,
                          family: str) -> tuple[float | None, float | None, str]:
    """(time exponent, memory exponent, why) of seq_len, as the method declared them. Exact
    attention does T^2 work whatever its kernel, so its time exponent stands without a trait."""
    if traits is None:
        return (2.0 if family == "exact" else None), None, NOT_REGISTERED
    scaling = traits.scaling
    if scaling is None:
        why = (f"memory scaling {UNDECLARED} (register(..., traits=Traits(memory=...)), "
               f"one of {', '.join(SCALINGS)})")
        if family == "exact":
            return 2.0, None, "exact attention (T^2 work); " + why
        return None, None, why
    return scaling.time_exponent, scaling.memory_exponent, scaling.basis


def scaling_prose(impls: Iterable[str], traits: Mapping[str, Traits]) -> str:
    """One clause per declared memory class among ``impls``, then the methods without one."""
    groups: dict[str, list[str]] = {name: [] for name in SCALINGS}
    undeclared: list[str] = []
    unknown: list[str] = []
    for impl in impls:
        declared = traits.get(impl)
        if declared is None:
            unknown.append(impl)
        elif declared.memory is None:
            undeclared.append(impl)
        else:
            groups[declared.memory].append(impl)
    sentences = []
    parts = [f"{', '.join(names)}: {SCALINGS[memory].summary}"
             for memory, names in groups.items() if names]
    if parts:
        sentences.append("; ".join(parts) + ".")
    if undeclared:
        sentences.append(f"{', '.join(undeclared)}: memory scaling {UNDECLARED}, so no claimed "
                         f"memory exponent.")
    if unknown:
        sentences.append(f"{', '.join(unknown)}: {NOT_REGISTERED}.")
    return " ".join(sentences)


def baseline_candidates(traits: Mapping[str, Traits], order: Iterable[str]) -> list[str]:
    """Methods that declared a baseline preference, most preferred first (ties: ``order``)."""
    rank = {name: i for i, name in enumerate(order)}
    chosen = [name for name, t in traits.items() if t.baseline is not None]
    return sorted(chosen, key=lambda n: (traits[n].baseline, rank.get(n, len(rank)), n))


def default_baseline(ok_impls: Iterable[str], traits: Mapping[str, Traits],
                     order: Iterable[str]) -> str | None:
    """The most preferred declared baseline with successful points; None when there is none."""
    ok = set(ok_impls)
    return next((name for name in baseline_candidates(traits, order) if name in ok), None)
