"""Predicted time of every preset on every device kind, in both isolation modes: the table
``--dry-run`` prints under its grid (the model: harness.grid.cost).

Which points count: on a device kind present here, those the static checks let run (packages
installed, capabilities); on another kind (CUDA seen from a CPU machine), those the methods'
capabilities allow, as if every optional package (flash-attn, xformers, triton) were installed
there. Settings are the defaults a plain ``sweep --preset NAME --device KIND`` gets (timing
defaults; 0.5 s cool-down between implementations on CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

from harness.contract.records import Point
from harness.contract.registry import REGISTRY, Query, static_check
from harness.grid import presets
from harness.grid.cost import ISOLATIONS, CostConstants, Method, RunCost, device_kind, run_cost
from harness.grid.settings import TimingSettings
from harness.grid.spec import expand

KINDS = ("cpu", "cuda")
COOLDOWN_S = {"cuda": 0.5}    # harness.grid.plan's default cool-down per device kind


def method_of(name: str) -> Method:
    """The registry's implementation as the model sees it (an unknown name: exact, torch)."""
    if name not in REGISTRY.names():
        return Method(name)
    impl = REGISTRY.get(name)
    return Method(name, impl.family, impl.framework, impl.compiles,
                  scores=impl.traits.memory == "scores",
                  compile_scope=impl.traits.compile_scope)


def runnable(point: Point, here: Collection[str]) -> bool:
    """Whether a point is expected to run: static checks on a kind present here, capabilities
    alone on another."""
    impl = REGISTRY.get(point.impl)
    kind = device_kind(point.device)
    if kind in here:
        return static_check(impl, point) is None
    return not impl.not_supported_reasons(Query(kind, point.dtype, point.all_features()))


def preset_points(name: str, kind: str, here: Collection[str]) -> list[Point]:
    """The points of a preset on a device kind that are expected to run."""
    points = expand(presets.preset_groups(name, kind), REGISTRY.names())
    return [p for p in points if runnable(p, here)]


@dataclass(frozen=True)
class PresetPrediction:
    preset: str
    kind: str
    points: int
    cost: dict[str, RunCost]       # isolation -> the run's cost


def predict_preset(name: str, kind: str, constants: CostConstants, here: Collection[str], *,
                   timing: TimingSettings | None = None) -> PresetPrediction:
    points = preset_points(name, kind, here)
    cost = {mode: run_cost(points, method_of, lambda _device: constants, timing=timing,
                           isolate=mode, cooldown_s=COOLDOWN_S.get(kind, 0.0))
            for mode in ISOLATIONS}
    return PresetPrediction(name, kind, len(points), cost)


def predict_presets(constants: Mapping[str, CostConstants], here: Collection[str], *,
                    names: Sequence[str] | None = None,
                    timing: TimingSettings | None = None) -> list[PresetPrediction]:
    """Every preset (or ``names``) on every kind of ``constants``."""
    return [predict_preset(name, kind, constants[kind], here, timing=timing)
            for name in (names or list(presets.PRESETS)) for kind in constants]


def format_duration(seconds: float) -> str:
    """'45 s', '4.2 min', '1.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def cost_line(cost: RunCost) -> str:
    """One line: the total and where it goes."""
    return (f"{format_duration(cost.total_s)} ({cost.isolation} isolation): {cost.points} "
            f"point(s), {cost.workers} worker start(s) {cost.worker_start_s:.0f} s, "
            f"{cost.probes} probe(s) {cost.probe_s:.0f} s, {cost.compiled_shapes} "
            f"compilation(s) {cost.compile_s:.0f} s, samples {cost.samples_s:.0f} s, other "
            f"calls {cost.calls_s - cost.samples_s:.0f} s, per point {cost.fixed_s:.0f} s, "
            f"cool-down {cost.cooldown_s:.0f} s, run {cost.run_s:.0f} s" +
            (f"; {cost.failures} expected to run out of memory or time, {cost.skipped} "
             f"larger T then skipped" if cost.failures else "") +
            (f"; up to {format_duration(cost.busy_extra_s)} more on a busy machine (samples "
             f"to --max-time while the spread is above --noise-target)"
             if cost.busy_extra_s >= 1 else ""))
