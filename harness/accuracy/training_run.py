"""One task x one implementation -> one AccuracyRecord (never an exception for a failed run,
except in a distributed run, where one rank cannot fail alone: see RankFailure)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import torch

from harness.accuracy import distributed
from harness.accuracy import model as model_lib
from harness.accuracy.distributed import SINGLE, DistContext
from harness.accuracy.training_presets import TaskPreset
from harness.accuracy.tasks.common import TaskData
from harness.accuracy.train import FitResult, ProgressLike, fit, seed_everything
from harness.contract.records import AccuracyRecord
from harness.contract.registry import Implementation, first_line
from harness.store.run_dir import now_iso


@dataclass(frozen=True)
class TrainingRunSettings:
    preset_name: str
    preset: TaskPreset
    seed: int = 0
    device: str = "cpu"               # distributed CUDA: "cuda", each rank on cuda:LOCAL_RANK
    amp: bool = True                  # autocast to bfloat16, on CUDA only
    dist: DistContext = SINGLE        # this process's place in a torch.distributed run

    @property
    def uses_amp(self) -> bool:
        return self.amp and self.device.startswith("cuda")

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.uses_amp else "float32"


def record_config(data: TaskData, settings: TrainingRunSettings) -> dict[str, Any]:
    """The full configuration of a run, as it goes into the record (and its point id)."""
    return {**settings.preset.as_dict(), "seq_len": data.seq_len,
            "preset_seq_len": settings.preset.seq_len, "amp": settings.uses_amp,
            "precision": "bfloat16 autocast" if settings.uses_amp else "float32",
            "split_sizes": data.sizes(), "data_notes": data.notes}


def base_record(impl: Implementation, data: TaskData, settings: TrainingRunSettings, *, status: str,
                message: str = "", hardware_id: str = "") -> AccuracyRecord:
    return AccuracyRecord(
        impl=impl.name, task=data.task, status=status, message=message,
        data_source=data.data_source, preset=settings.preset_name, seed=settings.seed,
        device=settings.device, dtype=settings.dtype, seq_len=data.seq_len,
        config=record_config(data, settings), epochs=settings.preset.train.epochs,
        hardware_id=hardware_id, started_at=now_iso(), data_path=data.data_path,
        split_sizes=data.sizes(),
        extra={"framework": impl.framework, "family": impl.family,
               "notes": list(settings.preset.notes), **settings.dist.record_fields()})


class RankFailure(Exception):
    """A run raised on one rank of a distributed run. The other ranks may be waiting in a
    collective and cannot go on in step, so the command ends (the launcher stops the rest);
    ``record`` is the error record (rank 0 writes it when the failure is its own)."""

    def __init__(self, record: AccuracyRecord, rank: int) -> None:
        super().__init__(f"rank {rank}: {record.task}/{record.impl}: {record.message}")
        self.record = record
        self.rank = rank


def can_train(impl: Implementation, data: TaskData, settings: TrainingRunSettings) -> tuple[bool, str]:
    if impl.framework != "torch":
        return False, (f"{impl.name}: a {impl.framework} implementation cannot be trained here "
                       f"(the accuracy track trains torch models only)")
    verdict = impl.supports(device=settings.device, dtype=settings.dtype, causal=False,
                            key_padding_mask=data.pad_id is not None, backward=True)
    return bool(verdict), verdict.reason


def run_one(impl: Implementation, data: TaskData, settings: TrainingRunSettings, *,
            hardware_id: str = "", progress: ProgressLike | None = None) -> AccuracyRecord:
    ok, reason = can_train(impl, data, settings)
    if settings.dist.enabled:   # every rank trains, or none does (else the others would wait)
        everywhere = distributed.all_true(ok, settings.dist, torch.device(settings.device))
        if ok and not everywhere:
            reason = f"{impl.name}: cannot be trained on another rank of this distributed run"
        ok = everywhere
    if not ok:
        return base_record(impl, data, settings, status="unsupported", message=reason,
                           hardware_id=hardware_id)
    record = base_record(impl, data, settings, status="ok", hardware_id=hardware_id)
    device = torch.device(settings.device)
    seed_everything(settings.seed)
    try:
        network = model_lib.build(settings.preset.model, vocab_size=data.vocab_size,
                                  seq_len=data.seq_len, num_classes=data.num_classes,
                                  core=impl.fn, pad_id=data.pad_id, pair=data.pair)
        record.params = model_lib.count_parameters(network)
        result = fit(network, data, settings.preset.train, device=device, seed=settings.seed,
                     amp=settings.uses_amp, progress=progress, dist=settings.dist)
    except torch.cuda.OutOfMemoryError as exc:
        record.status, record.message = "oom", first_line(str(exc))
        return failed(record, settings.dist, exc)
    except Exception as exc:  # a failed run is a record, not a crash of the whole command
        record.status = "error"
        record.message = f"{type(exc).__name__}: {first_line(str(exc))}"
        record.extra["traceback"] = traceback.format_exc(limit=6)
        return failed(record, settings.dist, exc)
    return fill(record, result)


def failed(record: AccuracyRecord, dist: DistContext, exc: BaseException) -> AccuracyRecord:
    """The record of a run that raised; distributed, a RankFailure carrying it."""
    if dist.enabled:
        raise RankFailure(record, dist.rank) from exc
    return record


def fill(record: AccuracyRecord, result: FitResult) -> AccuracyRecord:
    record.status = result.status
    record.message = result.message
    record.best_val_accuracy = result.best_val_accuracy
    record.test_accuracy = result.test_accuracy
    record.epochs_to_best = result.epochs_to_best
    record.train_time_s = result.train_time_s
    record.examples_per_s = result.examples_per_s
    record.peak_mem_bytes = result.peak_mem_bytes
    record.mem_method = result.mem_method
    record.curve = result.curve
    record.bad_steps = result.bad_steps
    record.extra.update(epochs_run=result.epochs_run, step_time_s=result.step_time_s,
                        test_loss=result.test_loss,
                        timing=("train_time_s: whole fit (training steps and validation "
                                "passes); examples_per_s: training examples per second of "
                                "training steps"))
    return record


def summary_row(record: AccuracyRecord) -> dict[str, Any]:
    """The columns of the accuracy table printed at the end of a command."""
    return {"task": record.task, "impl": record.impl, "status": record.status,
            "data": record.data_source, "best_val_acc": record.best_val_accuracy,
            "test_acc": record.test_accuracy, "epochs_to_best": record.epochs_to_best,
            "train_time_s": record.train_time_s, "examples_per_s": record.examples_per_s,
            "params": record.params, "message": record.message}
