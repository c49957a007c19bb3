"""Hyperparameter search on validation only: one grid, the same for every implementation.

``lra --tune lr=1e-3,3e-3 dropout=0,0.1`` (or a TOML file) trains every setting of the grid
(the Cartesian product, in the order given) for one task x implementation x seed, picks the
setting with the best validation accuracy (ties: the first in grid order), and only then reads
the test split, once, with the chosen setting's best-validation weights. The trials never see
the test split: they train on a copy of the task whose test split is sealed (any read raises).

The record keeps the grid (it is part of the record's point id, so resume never mixes grids),
the chosen setting and every trial (status, validation accuracy, speed, memory, curve).
"""

from __future__ import annotations

import itertools
import math
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from harness.accuracy import model as model_lib
from harness.accuracy.tasks.common import Split, TaskData
from harness.accuracy.train import (
    FitResult,
    ProgressLike,
    evaluate,
    fit,
    seed_everything,
    snapshot,
)
from harness.accuracy.training_presets import TaskPreset
from harness.accuracy.training_run import (
    TrainingRunSettings,
    base_record,
    can_train,
    failed,
    fill,
)
from harness.errors import UsageError
from harness.contract.records import AccuracyRecord
from harness.contract.registry import Implementation, first_line

# name -> (where it goes, its type)
KNOBS: dict[str, tuple[str, type]] = {
    "lr": ("train", float), "weight_decay": ("train", float),
    "label_smoothing": ("train", float), "warmup_steps": ("train", int),
    "batch_size": ("train", int), "epochs": ("train", int),
    "dropout": ("model", float), "layers": ("model", int),
}
SELECTION = ("the grid setting with the best validation accuracy (ties: the first in grid "
             "order; a setting whose training failed or diverged is never chosen); test accuracy at that setting's best validation checkpoint, the test "
             "split read once, after every trial")

ProgressFactory = Callable[[str], Any]    # label -> a context manager yielding a ProgressLike


@dataclass(frozen=True)
class TuneGrid:
    """Named axes, each with its values, in the order given; settings() is their product."""

    axes: tuple[tuple[str, tuple[float | int, ...]], ...]

    def settings(self) -> list[dict[str, float | int]]:
        names = [name for name, _ in self.axes]
        return [dict(zip(names, values))
                for values in itertools.product(*(values for _, values in self.axes))]

    def as_dict(self) -> dict[str, list[float | int]]:
        return {name: list(values) for name, values in self.axes}

    def __len__(self) -> int:
        return math.prod(len(values) for _, values in self.axes)


def _value(name: str, text: str) -> float | int:
    kind = KNOBS[name][1]
    try:
        value = kind(text)
    except ValueError:
        what = "a number" if kind is float else "an integer"
        raise UsageError(f"--tune {name}: {text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"--tune {name}: {text!r} is not finite")
    return value


def _axis(name: str, values: list[Any]) -> tuple[str, tuple[float | int, ...]]:
    if name not in KNOBS:
        raise UsageError(f"--tune: unknown setting {name!r}; valid: {', '.join(KNOBS)}")
    if not values:
        raise UsageError(f"--tune {name}: give at least one value")
    parsed = tuple(_value(name, str(v).strip()) for v in values)
    if len(set(parsed)) != len(parsed):
        raise UsageError(f"--tune {name}: a value is repeated in {list(values)}")
    return name, parsed


def parse_grid(items: list[str]) -> TuneGrid:
    """``["lr=1e-3,3e-3", "dropout=0,0.1"]`` or ``["grid.toml"]`` -> a TuneGrid.

    The TOML file holds arrays, at top level or in a ``[tune]`` table: ``lr = [1e-3, 3e-3]``."""
    if len(items) == 1 and items[0].endswith(".toml"):
        return grid_from_toml(Path(items[0]))
    axes = []
    for item in items:
        name, sep, values = item.partition("=")
        if not sep:
            raise UsageError(f"--tune: expected NAME=V1,V2,... or a .toml file, got {item!r}")
        axes.append(_axis(name.strip(), [v for v in values.split(",") if v.strip()]))
    return _grid(axes)


def grid_from_toml(path: Path) -> TuneGrid:
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"--tune {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--tune {path}: not valid TOML ({exc})") from None
    table = data.get("tune", data)
    if not isinstance(table, dict):
        raise UsageError(f"--tune {path}: [tune] must be a table")
    axes = []
    for name, values in table.items():
        values = values if isinstance(values, list) else [values]
        if any(isinstance(v, (dict, list, bool)) for v in values):
            raise UsageError(f"--tune {path}: {name} must be a number or an array of numbers")
        axes.append(_axis(name, values))
    return _grid(axes)


def _grid(axes: list[tuple[str, tuple[float | int, ...]]]) -> TuneGrid:
    if not axes:
        raise UsageError("--tune: give at least one NAME=V1,V2,...")
    names = [name for name, _ in axes]
    if len(set(names)) != len(names):
        raise UsageError(f"--tune: a setting is named twice in {names}")
    return TuneGrid(tuple(axes))


def apply(preset: TaskPreset, setting: dict[str, float | int]) -> TaskPreset:
    """The preset with one grid setting applied (bad values: UsageError)."""
    model, train = preset.model, preset.train
    for name, value in setting.items():
        where = KNOBS[name][0]
        if not math.isfinite(value):
            raise UsageError(f"--tune {name} must be a finite number, got {value}")
        if name == "lr" and value <= 0:
            raise UsageError(f"--tune lr must be above 0, got {value}")
        if name == "dropout" and not 0.0 <= value < 1.0:
            raise UsageError(f"--tune dropout must be in [0, 1), got {value}")
        if name in ("lr", "weight_decay", "label_smoothing") and value < 0:
            raise UsageError(f"--tune {name} must not be negative, got {value}")
        if name == "warmup_steps" and value < 0:
            raise UsageError(f"--tune warmup_steps must not be negative, got {value}")
        if where == "model":
            model = replace(model, **{name: value})
        else:
            train = replace(train, **{name: value})
    return replace(preset, model=model, train=train)


# -- the test split, sealed while the trials run ---------------------------------------------
class SealedSplitError(RuntimeError):
    """Something read the test split while the grid search was choosing a setting."""


class SealedSplit(Split):
    """A stand-in for the test split during the trials: its size is known, its contents are
    not; reading tokens, lengths or labels raises SealedSplitError."""

    def __init__(self, size: int, seq_len: int) -> None:   # no dataclass fields set
        object.__setattr__(self, "_size", size)
        object.__setattr__(self, "_seq_len", seq_len)

    def __getattribute__(self, name: str) -> Any:
        if name in ("tokens", "lengths", "labels", "tokens2", "lengths2"):
            raise SealedSplitError(f"the test split was read during the grid search "
                                   f"({name}); only the chosen setting may read it")
        return object.__getattribute__(self, name)

    def __len__(self) -> int:
        return object.__getattribute__(self, "_size")

    @property
    def seq_len(self) -> int:
        return object.__getattribute__(self, "_seq_len")


def sealed(data: TaskData) -> TaskData:
    """The task with its test split sealed (train and validation as they are)."""
    return replace(data, test=SealedSplit(len(data.test), data.seq_len))


# -- one task x implementation x seed ---------------------------------------------------------
def tuned_base_record(impl: Implementation, data: TaskData, settings: TrainingRunSettings,
                      grid: TuneGrid, *, status: str, message: str = "",
                      hardware_id: str = "") -> AccuracyRecord:
    """The record of a tuned run before training: the grid is part of its config (point id)."""
    record = base_record(impl, data, settings, status=status, message=message,
                         hardware_id=hardware_id)
    record.config["tune_grid"] = grid.as_dict()
    record.selection = SELECTION
    record.tuning = {"grid": grid.as_dict(), "selection": SELECTION, "chosen": None,
                     "trials": [], "note": "config is the preset before the grid; the chosen "
                                           "setting overrides its values"}
    return record


@dataclass
class Trial:
    setting: dict[str, float | int]
    status: str = "ok"
    message: str = ""
    result: FitResult | None = None
    state: dict[str, torch.Tensor] | None = None    # best-validation weights (chosen only)
    params: int | None = None

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"setting": self.setting, "status": self.status, "message": self.message,
                "best_val_accuracy": r.best_val_accuracy if r else None,
                "epochs_to_best": r.epochs_to_best if r else None,
                "epochs_run": r.epochs_run if r else 0,
                "train_time_s": r.train_time_s if r else None,
                "examples_per_s": r.examples_per_s if r else None,
                "peak_mem_bytes": r.peak_mem_bytes if r else None,
                "bad_steps": r.bad_steps if r else 0,
                "curve": r.curve if r else []}


def run_trial(impl: Implementation, data: TaskData, settings: TrainingRunSettings,
              setting: dict[str, float | int], progress: ProgressLike | None) -> Trial:
    """Train one grid setting on train, select on validation; never touches test."""
    preset = apply(settings.preset, setting)
    trial = Trial(setting)
    seed_everything(settings.seed)
    try:
        network = model_lib.build(preset.model, vocab_size=data.vocab_size,
                                  seq_len=data.seq_len, num_classes=data.num_classes,
                                  core=impl.fn, pad_id=data.pad_id, pair=data.pair)
        trial.params = model_lib.count_parameters(network)
        trial.result = fit(network, sealed(data), preset.train,
                           device=torch.device(settings.device), seed=settings.seed,
                           amp=settings.uses_amp, progress=progress, dist=settings.dist,
                           test=False)
    except torch.cuda.OutOfMemoryError as exc:
        trial.status, trial.message = "oom", first_line(str(exc))
        return trial
    except SealedSplitError:
        raise
    except Exception as exc:  # a failed trial is a row of the record, not a crash
        trial.status = "error"
        trial.message = f"{type(exc).__name__}: {first_line(str(exc))}"
        if settings.dist.enabled:
            raise
        return trial
    trial.status, trial.message = trial.result.status, trial.result.message
    if trial.status == "ok" and trial.result.best_val_accuracy is not None:
        trial.state = snapshot(network)     # fit left the best-validation weights in place
    return trial


def choose(trials: list[Trial]) -> Trial | None:
    """The trial with the best validation accuracy; ties go to the earliest in grid order."""
    best = None
    for trial in trials:
        if trial.state is None or trial.result is None:
            continue
        if best is None or trial.result.best_val_accuracy > best.result.best_val_accuracy:
            best = trial
    return best


def tune_one(impl: Implementation, data: TaskData, settings: TrainingRunSettings,
             grid: TuneGrid, *, hardware_id: str = "",
             progress: ProgressFactory | None = None) -> AccuracyRecord:
    """Grid search on validation, then one test evaluation: one AccuracyRecord."""
    ok, reason = can_train(impl, data, settings)
    if not ok:
        return tuned_base_record(impl, data, settings, grid, status="unsupported",
                                 message=reason, hardware_id=hardware_id)
    record = tuned_base_record(impl, data, settings, grid, status="ok", hardware_id=hardware_id)
    started = time.perf_counter()
    trials: list[Trial] = []
    try:
        for k, setting in enumerate(grid.settings()):
            label = (f"{data.task}/{impl.name} seed {settings.seed} trial {k + 1}/{len(grid)} "
                     + " ".join(f"{n}={v}" for n, v in setting.items()))
            if progress is None:
                trials.append(run_trial(impl, data, settings, setting, None))
            else:
                with progress(label) as bar:
                    trials.append(run_trial(impl, data, settings, setting, bar))
            best = choose(trials)       # keep only the weights of the best so far
            for trial in trials:
                if trial is not best:
                    trial.state = None
        chosen = choose(trials)
        record.tuning["trials"] = [t.as_dict() for t in trials]
        record.tuning["search_time_s"] = time.perf_counter() - started
        if chosen is None:
            record.status = "error"
            record.message = ("no setting of the grid finished training: "
                              + "; ".join(f"{t.setting}: {t.status} {t.message}".strip()
                                          for t in trials))[:2000]
            return record
        record.tuning["chosen"] = chosen.setting
        fill(record, chosen.result)
        record.params = chosen.params
        preset = apply(settings.preset, chosen.setting)
        record.epochs = preset.train.epochs
        record.test_accuracy, test_loss = test_once(impl, data, settings, preset, chosen.state)
        record.extra["test_loss"] = test_loss
    except torch.cuda.OutOfMemoryError as exc:
        record.status, record.message = "oom", first_line(str(exc))
        return failed(record, settings.dist, exc)
    except Exception as exc:
        record.status = "error"
        record.message = f"{type(exc).__name__}: {first_line(str(exc))}"
        record.extra["traceback"] = traceback.format_exc(limit=6)
        record.tuning["trials"] = [t.as_dict() for t in trials]
        return failed(record, settings.dist, exc)
    return record


def test_once(impl: Implementation, data: TaskData, settings: TrainingRunSettings,
              preset: TaskPreset, state: dict[str, torch.Tensor]) -> tuple[float, float]:
    """The one read of the test split: the chosen setting's best-validation weights."""
    network = model_lib.build(preset.model, vocab_size=data.vocab_size, seq_len=data.seq_len,
                              num_classes=data.num_classes, core=impl.fn, pad_id=data.pad_id,
                              pair=data.pair)
    network.load_state_dict(state)
    device = torch.device(settings.device)
    network.to(device)
    return evaluate(network, data.test, batch_size=max(preset.train.batch_size, 1) * 2,
                    device=device, amp=settings.uses_amp, dist=settings.dist)
