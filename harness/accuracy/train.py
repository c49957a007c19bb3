"""The training loop: seeded, schedule from the preset, label smoothing, gradient clipping,
autocast on CUDA, a guard against non-finite losses, and the test score taken at the best
validation checkpoint (never the last one). The same loop trains on several processes with
DistributedDataParallel when given a distributed context (semantics: harness.accuracy.distributed).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from harness.accuracy import distributed, memory
from harness.accuracy.distributed import SINGLE, DistContext
from harness.accuracy.training_presets import TrainConfig
from harness.accuracy.tasks.common import Split, TaskData


@dataclass
class FitResult:
    status: str = "ok"
    message: str = ""
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    epochs_to_best: int | None = None
    epochs_run: int = 0
    train_time_s: float = 0.0          # the whole fit: training steps and validation passes
    step_time_s: float = 0.0           # training steps only
    examples_seen: int = 0
    bad_steps: int = 0
    peak_mem_bytes: int | None = None
    mem_method: str = ""
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def examples_per_s(self) -> float | None:
        return self.examples_seen / self.step_time_s if self.step_time_s > 0 else None


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def learning_rate(config: TrainConfig, *, step: int, epoch: int, total_steps: int) -> float:
    """lr at a global step (0-based) in an epoch (0-based): warmup, then the preset's schedule."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "exponential":
        return config.lr * config.decay_rate ** epoch
    if config.schedule == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr


def batch_indices(count: int, batch_size: int, *, generator: torch.Generator | None
                  ) -> Iterator[np.ndarray]:
    order = torch.randperm(count, generator=generator).numpy() if generator is not None \
        else np.arange(count)
    for start in range(0, count, batch_size):
        yield order[start:start + batch_size]


def batch_tensors(split: Split, index: np.ndarray, device: torch.device) -> tuple[tuple, torch.Tensor]:
    """Model inputs and labels for the rows in index, trimmed to the longest row."""
    def one(tokens: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = lengths[index]
        width = max(1, int(rows.max()))
        return (torch.from_numpy(np.ascontiguousarray(tokens[index, :width])).long().to(device),
                torch.from_numpy(rows).long().to(device))

    inputs = one(split.tokens, split.lengths)
    if split.tokens2 is not None:
        inputs = inputs + one(split.tokens2, split.lengths2)
    return inputs, torch.from_numpy(split.labels[index]).long().to(device)


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, *, batch_size: int, device: torch.device,
             amp: bool, dist: DistContext = SINGLE) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a split, in eval mode. Distributed: each rank takes a
    contiguous shard of the split; the sums are all-reduced, so every rank returns the same."""
    model.eval()
    start, stop = distributed.shard_bounds(len(split), dist.rank, dist.world_size)
    correct, loss_sum = 0, 0.0
    for first in range(start, stop, batch_size):
        index = np.arange(first, min(first + batch_size, stop))
        inputs, labels = batch_tensors(split, index, device)
        with autocast(device, amp):
            logits = model(*inputs)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
    if dist.enabled:
        total_correct, loss_sum = distributed.all_reduce_sum([correct, loss_sum], dist, device)
        correct = round(total_correct)
    return correct / len(split), loss_sum / len(split)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class StepTally:
    """One training step on this rank: the loss to back-propagate, and the summed loss, the
    correct predictions and the number of examples that count towards the epoch's numbers."""

    loss: torch.Tensor
    loss_sum: float
    correct: int
    count: int


def step_loss(logits: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
              dist: DistContext, share: distributed.RankBatch | None) -> StepTally:
    """The batch-mean loss for one process; distributed, this rank's summed loss over its real
    rows times world_size / global batch size, whose DDP average is the global batch's mean."""
    if share is None:
        loss = nn.functional.cross_entropy(logits.float(), labels,
                                           label_smoothing=config.label_smoothing)
        return StepTally(loss, float(loss.detach()) * len(labels),
                         int((logits.argmax(-1) == labels).sum()), len(labels))
    real_logits, real_labels = logits[:share.real], labels[:share.real]
    summed = nn.functional.cross_entropy(real_logits.float(), real_labels, reduction="sum",
                                         label_smoothing=config.label_smoothing)
    return StepTally(summed * (dist.world_size / share.global_size), float(summed.detach()),
                     int((real_logits.argmax(-1) == real_labels).sum()), share.real)


def diverged_loss(num_classes: int) -> float:
    """The mean cross-entropy above which a run has diverged: 100 times what a uniform guess
    over the classes scores (ln C). A loss of 1e8 is a finite number that trains nothing."""
    return 100.0 * math.log(max(2, num_classes))


def fit(model: nn.Module, data: TaskData, config: TrainConfig, *, device: torch.device,
        seed: int, amp: bool = False, progress: "ProgressLike | None" = None,
        dist: DistContext = SINGLE, test: bool = True) -> FitResult:
    """Train, validate each epoch, keep the best-validation weights, test with those.

    ``test=False`` (the grid search of harness.accuracy.tune): the test split is not read;
    the model is left holding its best-validation weights.

    ``dist`` places this process in a distributed run (default: a single process). With
    world_size > 1 the model trains wrapped in DistributedDataParallel, each rank on its share
    of every global batch of ``config.batch_size`` (harness.accuracy.distributed says how), and
    the result is the same on every rank: the curve and accuracies are all-reduced,
    ``examples_seen`` counts all ranks, the times are the slowest rank's; only
    ``peak_mem_bytes`` is this rank's own. ``progress`` shows this rank's running numbers.
    """
    result = FitResult()
    distributed.check_batch_size(config.batch_size, dist)
    model.to(device)
    net = distributed.wrap(model, dist, device)
    if dist.enabled:
        torch.manual_seed(seed + dist.rank)   # dropout differs per rank; init came before
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(seed)   # the same permutation on every rank
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    eval_batch = max(config.batch_size, 1) * 2
    best_state: dict[str, torch.Tensor] | None = None
    memory.reset_peak(device)
    started = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        if progress is not None:
            progress.start_epoch(epoch + 1, config.epochs, steps_per_epoch)
        epoch_start = time.perf_counter()
        for index in batch_indices(len(data.train), config.batch_size, generator=generator):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step=step, epoch=epoch,
                                            total_steps=total_steps)
            share = distributed.rank_batch(index, dist.rank, dist.world_size) \
                if dist.enabled else None
            inputs, labels = batch_tensors(data.train, index if share is None else share.index,
                                           device)
            with autocast(device, amp):
                logits = net(*inputs)
            tally = step_loss(logits, labels, config, dist, share)
            optimizer.zero_grad(set_to_none=True)
            # distributed: every rank must join backward's all-reduce, so the check is on the
            # averaged gradients' norm, which every rank sees alike
            finite = dist.enabled or bool(torch.isfinite(tally.loss))
            if finite:
                tally.loss.backward()
                norm = nn.utils.clip_grad_norm_(model.parameters(),
                                                config.grad_clip or float("inf"))
                finite = bool(torch.isfinite(norm))
            step += 1
            if not finite:
                result.bad_steps += 1
                optimizer.zero_grad(set_to_none=True)
                if result.bad_steps > config.max_bad_steps:
                    result.status = "error"
                    result.message = (f"training diverged: {result.bad_steps} non-finite "
                                      f"losses or gradients (last at epoch {epoch + 1}, step "
                                      f"{step}); stopped")
                    break
                continue
            optimizer.step()
            loss_sum += tally.loss_sum
            correct += tally.correct
            seen += tally.count
            if progress is not None:
                progress.advance(loss=loss_sum / max(seen, 1), accuracy=correct / max(seen, 1))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - epoch_start
        if dist.enabled:
            loss_sum, total_correct, total_seen = distributed.all_reduce_sum(
                [loss_sum, correct, seen], dist, device)
            correct, seen = round(total_correct), round(total_seen)
            (epoch_time,) = distributed.all_reduce_max([epoch_time], dist, device)
        result.step_time_s += epoch_time
        result.examples_seen += seen
        if result.status == "ok" and seen == 0:
            result.status = "error"
            result.message = (f"training diverged: every step of epoch {epoch + 1} had a "
                              f"non-finite loss or gradient and was skipped; stopped")
        train_loss = loss_sum / max(seen, 1)
        if result.status == "ok" and train_loss > diverged_loss(data.num_classes):
            result.status = "error"
            result.message = (f"training diverged: mean training loss {train_loss:.3g} at "
                              f"epoch {epoch + 1}, above {diverged_loss(data.num_classes):.3g} "
                              f"(100 x ln {data.num_classes}: a uniform guess scores "
                              f"ln {data.num_classes}); stopped")
        if result.status != "ok":
            break
        val_accuracy, val_loss = evaluate(model, data.val, batch_size=eval_batch, device=device,
                                          amp=amp, dist=dist)
        result.epochs_run = epoch + 1
        result.curve.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                             "train_accuracy": correct / max(seen, 1),
                             "val_loss": val_loss, "val_accuracy": val_accuracy,
                             "lr": optimizer.param_groups[0]["lr"],
                             "elapsed_s": time.perf_counter() - started})
        if progress is not None:
            progress.end_epoch(val_accuracy=val_accuracy)
        if not math.isfinite(val_loss):   # diverged: a result, recorded as such, not a crash
            result.status = "error"
            result.message = (f"training diverged: non-finite validation loss at epoch "
                              f"{epoch + 1}; stopped")
            break
        if result.best_val_accuracy is None or val_accuracy > result.best_val_accuracy:
            result.best_val_accuracy = val_accuracy
            result.epochs_to_best = epoch + 1
            best_state = snapshot(model)
    result.train_time_s = time.perf_counter() - started
    if dist.enabled:
        (result.train_time_s,) = distributed.all_reduce_max([result.train_time_s], dist, device)
    result.peak_mem_bytes, result.mem_method = memory.read_peak(device)
    if dist.enabled and result.mem_method:
        result.mem_method += (f"; this process only (rank {dist.rank} of {dist.world_size}; "
                              f"records hold rank 0's)")
    if best_state is not None:
        model.load_state_dict(best_state)
    if best_state is not None and test:
        result.test_accuracy, result.test_loss = evaluate(model, data.test, batch_size=eval_batch,
                                                          device=device, amp=amp, dist=dist)
    return result


class ProgressLike:
    """What fit() tells a progress display."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def advance(self, *, loss: float, accuracy: float) -> None: ...

    def end_epoch(self, *, val_accuracy: float) -> None: ...
