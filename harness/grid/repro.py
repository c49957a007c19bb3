"""The reproducer of a record: the ``run_bench.py sweep ...`` command that measures its point
alone, with the settings of the run that measured it.

Derived from the record and its run's run.json settings (``RunSettings.as_dict()``), so records
written before reproducers existed get one too. The point's axes come from the axis table
(harness.contract.axes: every basic axis, and each workload axis at a non-default value, by its
flag); the settings from ``SETTING_FLAGS``, one entry per ``RunSettings``/``TimingSettings``
field that a sweep flag sets. The fields no flag sets are listed in ``NOT_FLAGS`` with the
reason; tests/test_repro.py checks that every field is in one of the two, so that a setting
added later cannot be left out of the reproducer silently. Where a run used a value of a
``NOT_FLAGS`` field other than today's default, ``reproducer`` says so (``notes``).

Values the record itself holds win over run.json's: the timing basis (a grid's ``auto``
resolves by all its frameworks, one point alone might resolve otherwise) and the isolation.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from harness.contract.axes import axes
from harness.contract.records import Point
from harness.grid.settings import RunSettings, TimingSettings

# the preset the command names: its groups all take the command's axis values, so the grid is
# the one point (every basic axis is given; workload axes at their default in the preset)
REPRO_PRESET = "quick"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# settings field ("timing.<name>" for TimingSettings') -> (sweep flag, value -> flag text or
# None for "not given")
SETTING_FLAGS: dict[str, tuple[str, Callable[[Any], str | None]]] = {
    "timeout_s": ("--timeout", _number),
    "max_memory_bytes": ("--max-memory", lambda v: None if v is None else str(int(v))),
    "timing.warmup": ("--warmup", _number),
    "timing.min_time_s": ("--min-time", _number),
    "timing.max_repeats": ("--max-repeats", _number),
    "timing.noise_target": ("--noise-target", _number),
    "timing.max_time_s": ("--max-time", _number),
    "timing.cuda_flush_l2": ("--l2", lambda v: "cold" if v else "warm"),
    "timing.timer": ("--timer", str),
    "timing.timing_basis": ("--timing-basis", str),
    "seed": ("--seed", _number),
    "cooldown_s": ("--cooldown", _number),
    "isolate": ("--isolate", str),
    "compile_cache": ("--compile-cache", lambda v: None if v is None else str(v)),
    # a global option, given before the command (see reproducer)
    "impl_modules": ("--impl-module", lambda v: None),
}

# settings fields no sweep flag sets, and why a reproducer can do without them
NOT_FLAGS: dict[str, str] = {
    "device_memory_fraction": "no flag: the GPU memory share without --max-memory is fixed",
    "timing.warmup_time_s": "no flag: the warm-up's time cap is fixed",
    "timing.min_repeats": "no flag: the least number of samples is fixed",
    "timing.lockstep": "run_bench.py ab's turn-taking, set by ab for its own workers",
    "probe_timeout_s": "no flag: the probe's time limit is fixed",
    "compile_allowance_s": "no flag: the compile allowance is fixed",
    "time_budget_s": "a budget stops a grid part way; one point runs whole",
}


def settings_fields() -> list[str]:
    """Every settings field by its SETTING_FLAGS name (TimingSettings' as 'timing.<name>')."""
    names = []
    for f in dataclasses.fields(RunSettings):
        if f.name == "timing":
            names += [f"timing.{t.name}" for t in dataclasses.fields(TimingSettings)]
        else:
            names.append(f.name)
    return names


def setting_value(settings: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(present, value) of a settings field in run.json's ``settings``."""
    where: Any = settings
    for part in name.split("."):
        if not isinstance(where, Mapping) or part not in where:
            return False, None
        where = where[part]
    return True, where


def default_value(name: str) -> Any:
    if name.startswith("timing."):
        return getattr(TimingSettings(), name.split(".", 1)[1])
    return getattr(RunSettings(), name)


def axis_text(axis: Any, value: Any) -> str:
    """An axis value as its flag reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number(value)


def axis_arguments(point: Point) -> list[str]:
    """impl, every basic axis, and the workload axes at a non-default value."""
    args = ["--impl", point.impl]
    for axis in axes():
        value = point.value(axis.name)
        if axis.workload and value == axis.default:
            continue
        args += [f"{axis.flag}={axis_text(axis, value)}"]
    return args


@dataclass
class Reproducer:
    argv: list[str]                         # after run_bench.py
    notes: list[str] = field(default_factory=list)

    def command(self) -> str:
        return shlex.join(["python", "run_bench.py", *self.argv])


def reproducer(record: Mapping[str, Any], settings: Mapping[str, Any] | None) -> Reproducer:
    """The sweep command that measures ``record``'s point alone (a record's JSON dict, as
    results.jsonl holds it) with ``settings`` (run.json's; None: an unknown run's, defaults)."""
    from harness.contract.records import Point

    settings = settings or {}
    point = Point.from_dict(record)
    values: dict[str, Any] = {}
    for name in SETTING_FLAGS:
        present, value = setting_value(settings, name)
        if present:
            values[name] = value
    # a run whose settings predate the noise target sampled for --min-time alone: the time
    # cap at the minimum samples the same way (the target then never extends it)
    present, min_time = setting_value(settings, "timing.min_time_s")
    if present and "timing.max_time_s" not in values:
        values["timing.max_time_s"] = min_time
    # what the record says it had wins over the run's request
    if record.get("timing_basis") and point.device.split(":")[0] == "cuda":
        values["timing.timing_basis"] = record["timing_basis"]
    if record.get("isolation"):
        values["isolate"] = record["isolation"]
    if values.get("timing.timing_basis") == "auto":
        del values["timing.timing_basis"]
    if point.device.split(":")[0] != "cuda" and values.get("timing.timer") == "events":
        del values["timing.timer"]   # a CPU run's only timer
    global_args = [arg for module in (values.pop("impl_modules", None) or ())
                   for arg in ("--impl-module", str(module))]
    args = [*global_args, "sweep", "--preset", REPRO_PRESET, *axis_arguments(point)]
    for name, value in values.items():
        flag, text = SETTING_FLAGS[name]
        shown = text(value)
        if shown is not None:
            args += [f"{flag}={shown}"]
    notes = []
    for name, why in NOT_FLAGS.items():
        present, value = setting_value(settings, name)
        if present and value != default_value(name) and name != "time_budget_s" \
                and name != "timing.lockstep":
            notes.append(f"{name} was {value!r} in the run, {default_value(name)!r} here "
                         f"({why})")
    return Reproducer(args, notes)
