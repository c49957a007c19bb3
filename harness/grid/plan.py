"""The sweep plan: a typed request (what the user asked for) -> the points and settings to run.

Commands parse their flags into a ``SweepRequest``; ``plan`` turns it into a ``SweepPlan``
(preset, config file, stored grid of ``--resume``/``--grid-from``, overrides, shard); executors
(harness.scale) receive plans, never argparse objects.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.grid import presets
from harness.errors import UsageError
from harness.grid.settings import TimingSettings, resolve_timing_basis
from harness.contract.records import L2_STATES, TIMING_BASES, Point
from harness.contract.registry import REGISTRY, device_kind
from harness.grid.settings import ISOLATION_MODES, RunSettings
from harness.contract.frameworks import best_device
from harness.contract.registry import static_check
from harness.grid.sharding import ShardSpec, parse_shard, select_shard
from harness.grid.spec import (
    SETTING_NAMES,
    SweepSpec,
    axis_dest,
    grid_names,
    expand,
    overrides_from,
    read_config,
)
from harness.contract.parsers import parse_bytes, parse_devices

INPUT_DISTRIBUTION = ("q, k, v ~ N(0, 1), seeded (seed in settings); no key-padding mask; "
                      "packed documents (--documents) split T at seeded random points "
                      "(seed 0); --kv-dtype: k, v drawn in the point's dtype, then quantised to "
                      "FP8 with one scale per tensor (amax / FP8 max)")


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as asked for: the flag values as given (None: not given), in the flags' names."""
    impl: str | None = None
    seq_len: str | None = None
    head_dim: str | None = None
    batch: str | None = None
    heads: str | None = None
    dtype: str | None = None
    causal: str | None = None
    pass_: str | None = None
    device: str | None = None
    kv_heads: str | None = None
    q_len: str | None = None
    window: str | None = None
    alibi: str | None = None
    documents: str | None = None
    kv_dtype: str | None = None
    # axes without a field here (a plug-in's): (name, flag text) pairs
    extra_axes: tuple[tuple[str, str], ...] = ()
    preset: str | None = None
    config: str | None = None
    out: str | None = None
    resume: str | None = None
    grid_from: str | None = None
    timeout: float | None = None
    max_memory: str | None = None
    min_time: float | None = None
    max_repeats: int | None = None
    noise_target: float | None = None
    max_time: float | None = None
    warmup: int | None = None
    seed: int | None = None
    cooldown: float | None = None
    time_budget: float | None = None
    shard: str | None = None
    timer: str | None = None
    timing_basis: str | None = None
    l2: str | None = None
    reuse_peaks: bool | None = None
    isolate: str | None = None
    compile_cache: str | None = None
    impl_modules: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class SweepPlan:
    points: list[Point]          # this run's points (one shard's with --shard)
    settings: RunSettings
    out: Path | None             # None: the default results/<time>-<hardware>
    resume: bool
    description: dict[str, Any]
    shard: ShardSpec | None = None
    grid_points: int = 0         # points in the whole grid
    reuse_peaks: bool = False    # take the machine's peaks from the cache when there


# the largest input seed (torch.manual_seed takes a 64-bit signed integer)
MAX_SEED = 2 ** 63 - 1

# the request's fields that are no grid key and no setting of a config file
NOT_CONFIG_KEYS = ("config", "resume", "grid_from", "impl_modules", "extra_axes")


def setting_arguments() -> tuple[str, ...]:
    """The settings (flag name = TOML key) besides the grid and preset/out."""
    return tuple(n for n in SETTING_NAMES if n not in ("preset", "out"))


def grid_arguments() -> tuple[str, ...]:
    """The keys that choose the grid (refused with --resume)."""
    return (*grid_names(), "preset")


def request_values(request: SweepRequest) -> dict[str, Any]:
    """The values a request gives (flag name -> raw value), None: not given."""
    raw: dict[str, Any] = {}
    for name in grid_names():
        value = getattr(request, axis_dest(name), None)
        if value is not None:
            raw[name] = value
    for name, value in request.extra_axes:
        if value is not None:
            raw[name] = value
    for name in SETTING_NAMES:
        value = getattr(request, name, None)
        if value is not None:
            raw[name] = value
    return raw


@dataclass(frozen=True)
class StoredGrids:
    """The grid arguments stored in the run directories a request names (read by
    harness.store.resume): ``--grid-from``'s and ``--resume``'s (None: it stored none)."""
    grid_from: dict[str, Any] | None = None
    resume: dict[str, Any] | None = None


def plan_timing_basis(requested: Any, points: list[Point]) -> str:
    """--timing-basis for the grid: one of TIMING_BASES, resolved from ``auto`` (the default)
    by the frameworks timed on CUDA (harness.grid.settings.resolve_timing_basis); a basis that
    a framework of the grid cannot be timed on is a usage error."""
    requested = "auto" if requested is None else str(requested)
    if requested not in ("auto", *TIMING_BASES):
        raise UsageError(f"--timing-basis: {requested!r} is not one of auto, "
                         f"{', '.join(TIMING_BASES)}")
    cuda = {REGISTRY.get(p.impl).framework for p in points if device_kind(p.device) == "cuda"}
    if requested == "device_events" and not cuda:
        raise UsageError("--timing-basis device_events: no point of this grid runs on a CUDA "
                         "device (CPU points are timed by the host's clock: host_sync)")
    if requested == "device_events" and cuda - {"torch"}:
        raise UsageError(f"--timing-basis device_events: {', '.join(sorted(cuda - {'torch'}))} "
                         f"has no CUDA-event timer; use host_sync (or auto) for a grid that "
                         f"times it on CUDA")
    return resolve_timing_basis(requested, cuda)


def plan(request: SweepRequest, *, check_devices: bool = True,
         default_device: str | None = None, stored: StoredGrids | None = None) -> SweepPlan:
    """The plan of a request. A request that names run directories (``--resume``,
    ``--grid-from``) is planned with what they store: ``harness.store.resume.plan_sweep``."""
    if (request.resume or request.grid_from) and stored is None:
        raise ValueError("plan: --resume/--grid-from need the stored grids "
                         "(harness.store.resume.plan_sweep reads them)")
    stored = stored or StoredGrids()
    raw: dict[str, Any] = {}
    if request.grid_from:
        raw.update(stored.grid_from or {})
    if request.config:
        if request.resume:
            raise UsageError(f"--resume keeps the stored grid; --config {request.config} cannot "
                             f"be given with it")
        raw.update(read_config(request.config))
    raw.update(request_values(request))
    resume = request.resume
    if resume:
        raw = resumed_arguments(resume, raw, stored.resume)
    overrides = overrides_from({k: v for k, v in raw.items() if k not in SETTING_NAMES})
    if "impl" in overrides.values:
        REGISTRY.resolve(overrides.values["impl"])  # unknown names: exit 2, listing valid ones
    devices = overrides.values.get("device") or (default_device or best_device(),)
    preset_name = raw.get("preset", presets.DEFAULT_PRESET)
    groups: list[SweepSpec] = []
    for device in parse_devices(devices):
        groups.extend(overrides.apply(g) for g in presets.preset_groups(preset_name, device))
    points = expand(groups, REGISTRY.names())
    validate_points(points, check_devices=check_devices)
    timing_basis = plan_timing_basis(raw.get("timing_basis"), points)   # the whole grid's
    shard = parse_shard(raw["shard"]) if raw.get("shard") is not None else None
    grid_points = len(points)
    if shard is not None:
        points = select_shard(points, shard, family_of)
    timer = str(raw.get("timer", "events"))
    if timer not in ("events", "cudagraph"):
        raise UsageError(f"--timer: {timer!r} is not one of events, cudagraph")
    if timer == "cudagraph" and not any(device_kind(d) == "cuda" for d in devices):
        raise UsageError("--timer cudagraph: needs a CUDA device (--device cuda)")
    l2 = str(raw.get("l2", "cold"))
    if l2 not in L2_STATES:
        raise UsageError(f"--l2: {l2!r} is not one of {', '.join(L2_STATES)}")
    min_time = setting(raw, "min_time", 0.5, minimum=0)
    max_time = setting(raw, "max_time", max(TimingSettings.max_time_s, min_time), minimum=0)
    if max_time < min_time:
        raise UsageError(f"--max-time {max_time:g} is below --min-time {min_time:g}: the time "
                         f"cap ends sampling that the minimum has not")
    timing = TimingSettings(
        warmup=setting(raw, "warmup", 2, integer=True, minimum=0),
        min_time_s=min_time,
        max_repeats=setting(raw, "max_repeats", TimingSettings.max_repeats, integer=True,
                            minimum=1),
        noise_target=setting(raw, "noise_target", TimingSettings.noise_target, minimum=0),
        max_time_s=max_time,
        timer=timer, timing_basis=timing_basis, cuda_flush_l2=l2 == "cold")
    timeout = setting(raw, "timeout", 120.0, positive=True)
    if raw.get("max_time") is not None and max_time >= timeout:
        raise UsageError(f"--max-time {max_time:g} is not below --timeout {timeout:g}: a point "
                         f"still sampling at the cap would be killed as a timeout and its "
                         f"samples lost; raise --timeout or lower --max-time")
    max_memory = parse_bytes(raw["max_memory"]) if raw.get("max_memory") is not None else None
    cooldown = setting(raw, "cooldown", 0.5 if any(device_kind(d) == "cuda" for d in devices)
                       else 0.0, minimum=0)
    budget = setting(raw, "time_budget", None, positive=True)
    isolate = str(raw.get("isolate", "worker"))
    if isolate not in ISOLATION_MODES:
        raise UsageError(f"--isolate: {isolate!r} is not one of {', '.join(ISOLATION_MODES)}")
    settings = RunSettings(timeout_s=timeout, max_memory_bytes=max_memory, timing=timing,
                           seed=setting(raw, "seed", 0, integer=True, minimum=0,
                                        maximum=MAX_SEED),
                           impl_modules=tuple(
                               request.impl_modules or ()), cooldown_s=cooldown,
                           time_budget_s=budget, isolate=isolate,
                           compile_cache=compile_cache_setting(raw.get("compile_cache")))
    if raw.get("out") is not None and not isinstance(raw["out"], str):
        raise UsageError(f"--out: expected a folder name, got {raw['out']!r}")
    out = Path(resume) if resume else Path(raw["out"]) if raw.get("out") else None
    description = {"arguments": {k: v for k, v in raw.items() if k != "out"},
                   "preset": preset_name, "overrides": {k: list(v) for k, v in
                                                        overrides.values.items()},
                   "config_file": request.config,
                   "input_distribution": INPUT_DISTRIBUTION}
    reuse_peaks = raw.get("reuse_peaks")
    if reuse_peaks is not None and not isinstance(reuse_peaks, bool):   # "false" is truthy
        raise UsageError(f"--reuse-peaks: expected true or false, got {reuse_peaks!r}")
    return SweepPlan(points, settings, out, bool(resume), description, shard, grid_points,
                     reuse_peaks=bool(reuse_peaks))


def compile_cache_setting(value: Any) -> str | None:
    """--compile-cache: ``run`` (the run directory's own), or a folder made absolute (workers and
    shards may run elsewhere)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"--compile-cache: expected a folder name or 'run', got {value!r}")
    if value == "run":
        return value
    path = Path(value).expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())   # "/" exists
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        # checked before the run directory is made (nothing created here: --dry-run)
        raise UsageError(f"--compile-cache {path}: {existing} is "
                         f"{'not a folder' if not existing.is_dir() else 'not writable'}")
    return str(path)


def setting(raw: dict[str, Any], name: str, default: Any, *, integer: bool = False,
            positive: bool = False, minimum: float | None = None,
            maximum: float | None = None) -> Any:
    """A numeric setting from flags or a config: finite, of the right kind and range, or
    one clear line (exit 2)."""
    value = raw.get(name)
    if value is None:
        return default
    flag = f"--{name.replace('_', '-')}"
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool):
        raise UsageError(f"{flag}: expected {kind}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag}: expected {kind}, got {value!r}") from None
    if not math.isfinite(number) or (integer and number != int(number)):
        raise UsageError(f"{flag}: expected {kind}, got {value!r}")
    if positive and number <= 0:
        raise UsageError(f"{flag}: must be positive, got {value!r}")
    if minimum is not None and number < minimum:
        raise UsageError(f"{flag}: must be at least {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise UsageError(f"{flag}: must be at most {maximum:g}, got {value!r}")
    return int(number) if integer else number


def family_of(impl: str) -> str:
    return REGISTRY.get(impl).family if impl in REGISTRY.names() else "exact"



def validate_points(points: list[Point], *, check_devices: bool = True) -> None:
    """Bad input that no implementation could run: one clear line, exit 2."""
    if not points:
        raise UsageError("the grid is empty")
    for device in sorted({p.device for p in points}):
        kind = device_kind(device)
        if kind == "cuda" and not check_devices:
            continue   # checked where the points run (e.g. on a Slurm node, not the login node)
        if kind == "cuda":
            from harness.contract.frameworks import torch_fw

            present = torch_fw.device_present(device)
            if not present:
                raise UsageError(f"--device {device}: {present.reason}")
        for dtype in sorted({p.dtype for p in points if p.device == device}):
            if not any(static_check(REGISTRY.get(p.impl), p) is None for p in points
                       if p.device == device and p.dtype == dtype):
                raise UsageError(f"--dtype {dtype}: no selected implementation supports it on "
                                 f"{device}")


def resumed_arguments(resume: str, given: dict[str, Any],
                      stored: dict[str, Any] | None) -> dict[str, Any]:
    """On --resume, the grid (and settings) of the run being resumed.

    The rule: a resumed run keeps its stored grid, exactly. Grid flags (or a --config, or --out)
    given with --resume are refused rather than silently replacing or changing the stored grid;
    settings flags (--timeout, --min-time, ...) apply to the points still to measure.
    """
    flags = sorted(f"--{name.replace('_', '-')}" for name in grid_arguments()
                   if name in given)
    if flags:
        raise UsageError(f"--resume keeps the stored grid of {resume}; {', '.join(flags)} cannot "
                         f"be given with it (start a new run with --out to measure another "
                         f"grid, and merge the two)")
    if "out" in given:
        raise UsageError("--resume RUN_DIR writes into RUN_DIR; --out cannot be given with it")
    if stored is None:
        raise UsageError(f"--resume {resume}: its run.json records no grid (a merge, or a run "
                         f"from an attnbench too old to store it), so there is no grid to "
                         f"finish; measure the points still wanted into a new run (--out) and "
                         f"merge the two")
    if "shard" in given and str(given["shard"]) != str((stored or {}).get("shard")):
        held = (stored or {}).get("shard")
        raise UsageError(f"--resume {resume} --shard {given['shard']}: the run holds "
                         f"{f'shard {held}' if held else 'the whole grid'}; another shard would "
                         f"be measured into it. Resume it without --shard, or measure that "
                         f"shard into its own run (--out) and merge")
    return given if stored is None else {**stored, **given}
