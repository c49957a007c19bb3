"""The training loop: seeded, schedule from the preset, label smoothing, gradient clipping,
autocast on CUDA, a guard against non-finite losses, and the test score taken at the best
validation checkpoint (never the last one).
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

from harness.accuracy import memory
from harness.accuracy.presets import TrainConfig
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
             amp: bool) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on a split, in eval mode."""
    model.eval()
    correct, loss_sum = 0, 0.0
    for index in batch_indices(len(split), batch_size, generator=None):
        inputs, labels = batch_tensors(split, index, device)
        with autocast(device, amp):
            logits = model(*inputs)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
    return correct / len(split), loss_sum / len(split)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def fit(model: nn.Module, data: TaskData, config: TrainConfig, *, device: torch.device,
        seed: int, amp: bool = False, progress: "ProgressLike | None" = None) -> FitResult:
    """Train, validate each epoch, keep the best-validation weights, test with those."""
    result = FitResult()
    model.to(device)
    optimizer = make_optimizer(model, config)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    eval_batch = max(config.batch_size, 1) * 2
    best_state: dict[str, torch.Tensor] | None = None
    memory.reset_peak(device)
    started = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        if progress is not None:
            progress.start_epoch(epoch + 1, config.epochs, steps_per_epoch)
        epoch_start = time.perf_counter()
        for index in batch_indices(len(data.train), config.batch_size, generator=generator):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step=step, epoch=epoch,
                                            total_steps=total_steps)
            inputs, labels = batch_tensors(data.train, index, device)
            with autocast(device, amp):
                logits = model(*inputs)
            loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
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
            loss_sum += float(loss.detach()) * len(index)
            correct += int((logits.argmax(-1) == labels).sum())
            seen += len(index)
            if progress is not None:
                progress.advance(loss=loss_sum / seen, accuracy=correct / seen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.step_time_s += time.perf_counter() - epoch_start
        result.examples_seen += seen
        if result.status != "ok":
            break
        val_accuracy, val_loss = evaluate(model, data.val, batch_size=eval_batch, device=device,
                                          amp=amp)
        result.epochs_run = epoch + 1
        result.curve.append({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                             "train_accuracy": correct / max(seen, 1),
                             "val_loss": val_loss, "val_accuracy": val_accuracy,
                             "lr": optimizer.param_groups[0]["lr"],
                             "elapsed_s": time.perf_counter() - started})
        if progress is not None:
            progress.end_epoch(val_accuracy=val_accuracy)
        if result.best_val_accuracy is None or val_accuracy > result.best_val_accuracy:
            result.best_val_accuracy = val_accuracy
            result.epochs_to_best = epoch + 1
            best_state = snapshot(model)
    result.train_time_s = time.perf_counter() - started
    result.peak_mem_bytes, result.mem_method = memory.read_peak(device)
    if best_state is not None:
        model.load_state_dict(best_state)
        result.test_accuracy, result.test_loss = evaluate(model, data.test, batch_size=eval_batch,
                                                          device=device, amp=amp)
    return result


class ProgressLike:
    """What fit() tells a progress display."""

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...

    def advance(self, *, loss: float, accuracy: float) -> None: ...

    def end_epoch(self, *, val_accuracy: float) -> None: ...
