"""What to sweep: the axes of a benchmark grid, how to parse them, and their expansion to points.

Pure functions and dataclasses only. A preset is a list of ``SweepSpec`` groups (so that tied
axes, e.g. Pythia's (heads, head_dim) pairs or Hrrformer's B * T = 2^16, stay tied); command-line
flags and a TOML config override the same axes in every group.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.contract.axes import Axis, axes, get_axis
from harness.contract.parsers import parse_names
from harness.contract.records import Point
from harness.errors import UsageError


@dataclass(frozen=True)
class SweepSpec:
    """One group of a grid: the cross product of its axes. ``impl`` None means all available."""

    seq_len: tuple[int, ...] = (1024,)
    head_dim: tuple[int, ...] = (64,)
    batch: tuple[int, ...] = (1,)
    heads: tuple[int, ...] = (8,)
    dtype: tuple[str, ...] = ("float32",)
    causal: tuple[bool, ...] = (False,)
    pass_: tuple[str, ...] = ("forward",)
    device: tuple[str, ...] = ("cpu",)
    impl: tuple[str, ...] | None = None
    label: str = ""
    # a fixed number of tokens a step (0: none): each point's batch is tokens // T (at least
    # 1) in place of ``batch``, so that a --seq-len override keeps B * T; a --batch override
    # turns it off
    tokens: int = 0
    # workload axes (see Point): 0 / -1 / False are the defaults (square self-attention)
    kv_heads: tuple[int, ...] = (0,)
    q_len: tuple[int, ...] = (0,)
    window: tuple[int, ...] = (-1,)
    alibi: tuple[bool, ...] = (False,)
    documents: tuple[int, ...] = (0,)
    kv_dtype: tuple[str, ...] = ("",)

    # axes without a field (a plug-in's): (name, values) pairs
    extra_axes: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def values(self, axis: Axis) -> tuple[Any, ...]:
        """The values this group sweeps of an axis (its default alone where not set)."""
        if axis.field is not None:
            return getattr(self, axis.field)
        return dict(self.extra_axes).get(axis.name, (axis.default,))

    def points(self, all_impls: Iterable[str]) -> list[Point]:
        impls = self.impl if self.impl is not None else tuple(all_impls)
        table = axes()
        points = []
        for impl, *values in itertools.product(impls, *(self.values(a) for a in table)):
            fields = {a.field: v for a, v in zip(table, values) if a.field is not None}
            if self.tokens:
                fields["batch"] = max(self.tokens // fields["seq_len"], 1)
            extra = tuple((a.name, v) for a, v in zip(table, values) if a.field is None)
            points.append(Point(impl=impl, **fields, extra_axes=extra))
        return points


@dataclass(frozen=True)
class Overrides:
    """Axis values given on the command line or in a config file (None = keep the preset's)."""

    values: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def apply(self, spec: SweepSpec) -> SweepSpec:
        if not self.values:
            return spec
        fields = {k: v for k, v in self.values.items() if k in SPEC_FIELDS}
        if "batch" in fields:
            fields["tokens"] = 0     # a batch given outright replaces the fixed token count
        extra = {**dict(spec.extra_axes),
                 **{k: v for k, v in self.values.items() if k not in SPEC_FIELDS}}
        return replace(spec, **fields, extra_axes=tuple(sorted(extra.items())))


def expand(groups: Iterable[SweepSpec], all_impls: Iterable[str]) -> list[Point]:
    """All points of all groups, without duplicates, in a stable order (series, then T)."""
    impls = list(all_impls)
    seen: dict[Point, None] = {}
    for group in groups:
        for point in group.points(impls):
            problem = point.workload_problem()
            if problem is not None:
                raise UsageError(f"grid point T={point.seq_len} H={point.heads}: {problem}")
            seen.setdefault(point, None)
    return sorted(seen, key=lambda p: (p.series_key(), p.seq_len))


SPEC_FIELDS = {f.name for f in dataclasses.fields(SweepSpec)}


def parsers() -> dict[str, Callable[[Any], tuple]]:
    """Grid key (flag name, TOML key) -> parser: impl and every axis of the table."""
    return {"impl": parse_names, **{a.name: a.parse for a in axes()}}


def axis_dest(name: str) -> str:
    """A grid key -> the SweepSpec field (or extra axis name) it sets."""
    axis = get_axis(name)
    return axis.dest if axis is not None else name


# settings a sweep takes besides the grid (flag name = TOML key); the sweep command's flags and
# the config's known keys are checked against each other by tests/test_axes.py
SETTING_NAMES = ("preset", "timeout", "max_memory", "out", "min_time", "max_repeats",
                 "noise_target", "max_time",
                 "warmup", "seed", "cooldown", "time_budget", "timer", "shard", "reuse_peaks",
                 "isolate", "compile_cache", "timing_basis", "l2")


def grid_names() -> tuple[str, ...]:
    """The grid keys: impl and every axis."""
    return ("impl", *(a.name for a in axes()))


def overrides_from(raw: dict[str, Any]) -> Overrides:
    """Axis overrides from a dict of flag-name -> raw value (strings or TOML lists)."""
    values = {}
    for name, parse in parsers().items():
        if raw.get(name) is not None:
            values[axis_dest(name)] = parse(raw[name])
    return Overrides(values)


def read_config(path: str | Path) -> dict[str, Any]:
    """A TOML config with the same names as the flags (seq_len = "1K..8K", pass = [...])."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"--config: file {path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"--config: cannot read {path}: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config: {path} is not UTF-8 text (TOML)") from None
    sweep = data.get("sweep", data)
    if sweep is not data:
        if not isinstance(sweep, dict):
            raise UsageError(f"--config: {path}: 'sweep' is a table ([sweep]), not a key")
        outside = sorted(k for k in data if k != "sweep")
        if outside:   # keys above [sweep] would be silently ignored
            raise UsageError(f"--config: {path}: keys outside [sweep]: {', '.join(outside)}; "
                             f"put every key in the [sweep] table or none")
    known = set(grid_names()) | set(SETTING_NAMES)
    normalised = {key.replace("-", "_"): value for key, value in sweep.items()}
    unknown = sorted(set(normalised) - known)
    if unknown:
        raise UsageError(f"--config: {path}: unknown keys {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(known))}")
    return normalised
