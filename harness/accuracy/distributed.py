"""Training on several processes (torch.distributed, DistributedDataParallel): the plumbing.

A run is distributed when the launcher (``torchrun``, or Slurm with the variables exported)
sets ``WORLD_SIZE`` > 1 together with ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. Without them everything here is a no-op for one process (``SINGLE``).

Semantics (see ``harness.accuracy.train.fit``):

- The global batch is the preset's ``batch_size`` whatever the number of processes. Every rank
  draws the same seeded permutation per epoch and takes its own contiguous, disjoint share of
  each global batch (``rank_batch``). Shares differ by at most one example when the batch does
  not divide evenly (the last batch of an epoch, or ``batch_size`` not a multiple of the world
  size); each rank's loss is its *sum* over its share times ``world_size / global batch size``,
  so the gradients DDP averages are exactly the gradient of the global batch's mean loss. A rank
  whose share is empty (a last batch smaller than the world) runs one filler row with weight 0,
  which keeps DDP's collective steps in lockstep and changes nothing.
- Seeds are handled per rank: the shuffling generator and model initialisation use ``seed`` on
  every rank (DDP also broadcasts rank 0's weights); the global torch generator, which draws
  dropout masks, is reseeded with ``seed + rank`` once the model is wrapped.
- Evaluation splits each split into contiguous shards (``shard_bounds``); the correct counts and
  loss sums are all-reduced, so every rank holds the same numbers.
- Only rank 0 writes the run directory and prints progress.
"""

from __future__ import annotations

import datetime
import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.errors import UsageError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a run: rank in [0, world_size), the local rank on its node
    (its GPU index on CUDA), and the process-group backend ("gloo", "nccl"; "none" when the run
    is a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def record_fields(self) -> dict[str, Any]:
        """What every accuracy record says about the run's processes (1 and "none" alone)."""
        return {"world_size": self.world_size, "backend": self.backend}


SINGLE = DistContext()


@dataclass(frozen=True)
class RankBatch:
    """This rank's share of one global batch.

    ``index``: the rows this rank runs (one filler row when its share is empty);
    ``real``: how many leading rows of ``index`` are its share (0 for the filler);
    ``global_size``: examples in the whole global batch, which normalises the loss.
    """

    index: np.ndarray
    real: int
    global_size: int


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def _env_int(env: Mapping[str, str], name: str) -> int:
    text = env.get(name)
    if text is None or text.strip() == "":
        raise UsageError(f"distributed run (WORLD_SIZE={env.get('WORLD_SIZE')}): {name} is not "
                         f"set; launch with torchrun, or export {', '.join(ENV_VARS)} per task")
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"environment variable {name}={text!r} is not an integer") from None


def from_env(env: Mapping[str, str], device_type: str) -> DistContext:
    """The DistContext described by the launcher's variables (SINGLE when WORLD_SIZE is unset
    or 1). A distributed run needs all of ENV_VARS; a missing or inconsistent one is a
    UsageError naming it."""
    if env.get("WORLD_SIZE", "").strip() in ("", "1"):
        return SINGLE
    world = _env_int(env, "WORLD_SIZE")
    rank = _env_int(env, "RANK")
    local_rank = _env_int(env, "LOCAL_RANK")
    if world < 1:
        raise UsageError(f"WORLD_SIZE must be at least 1, got {world}")
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if local_rank < 0:
        raise UsageError(f"LOCAL_RANK must not be negative, got {local_rank}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(name, "").strip():
            raise UsageError(f"distributed run (WORLD_SIZE={world}): {name} is not set; every "
                             f"process needs the address and port of rank 0")
    _env_int(env, "MASTER_PORT")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank,
                       backend=backend_for(device_type))


def resolve_device(ctx: DistContext, requested: str) -> str:
    """The device string of this process. Distributed CUDA runs use cuda:LOCAL_RANK (pinned
    by ``process_group``) and keep "cuda" in the records, as a one-process run does."""
    if not ctx.enabled or not requested.startswith("cuda"):
        return requested
    if requested != "cuda":
        raise UsageError(f"--device {requested}: under torch.distributed each rank uses "
                         f"cuda:LOCAL_RANK; pass --device cuda")
    return requested


def cuda_index(local_rank: int, visible: int) -> int:
    """The CUDA device of a rank: its own when the launcher shows it exactly one (Slurm with
    --gpus-per-task=1, or CUDA_VISIBLE_DEVICES per rank), else the LOCAL_RANK-th (torchrun)."""
    if visible == 1:
        return 0
    if not 0 <= local_rank < visible:
        raise UsageError(f"LOCAL_RANK={local_rank} but only {visible} CUDA devices are visible")
    return local_rank


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of count items: shares differ by at most one,
    the first ``count % world_size`` ranks take the extra one, and they tile 0..count."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def rank_batch(global_index: np.ndarray, rank: int, world_size: int) -> RankBatch:
    """This rank's share of a global batch (see RankBatch and the module docstring)."""
    start, stop = shard_bounds(len(global_index), rank, world_size)
    share = global_index[start:stop]
    if len(share) == 0:
        return RankBatch(index=global_index[:1], real=0, global_size=len(global_index))
    return RankBatch(index=share, real=len(share), global_size=len(global_index))


def check_batch_size(batch_size: int, ctx: DistContext) -> None:
    """A global batch smaller than the world would leave ranks idle on every step."""
    if batch_size < ctx.world_size:
        raise UsageError(f"batch size {batch_size} is smaller than the {ctx.world_size} "
                         f"processes; the batch is global (split across ranks), so use at least "
                         f"one example per process")


# -- the process group and collectives (no-ops for a single process) ----------------------

@contextmanager
def process_group(ctx: DistContext, *, timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Initialise the process group from the env:// variables (pinning cuda:LOCAL_RANK for
    nccl) and destroy it when the block ends, also by an exception: a group left to the
    interpreter's exit, or destroyed while a peer is still working, intermittently aborts the
    process at exit ("terminate called without an active exception", measured about 1 run in
    15 with gloo), so a normal end waits for every rank at a barrier and frees the DDP wrappers
    (gc) first. After a failure on one rank the others may be waiting in a collective: they
    see the lost peer, or the launcher stops them."""
    if not ctx.enabled:
        yield ctx
        return
    if ctx.backend == "nccl":
        torch.cuda.set_device(cuda_index(ctx.local_rank, torch.cuda.device_count()))
    torch.distributed.init_process_group(backend=ctx.backend, init_method="env://",
                                         rank=ctx.rank, world_size=ctx.world_size,
                                         timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield ctx
        torch.distributed.barrier()
    finally:
        gc.collect()
        torch.distributed.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The model DistributedDataParallel trains (the model itself for one process)."""
    if not ctx.enabled:
        return model
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _reduce(values: Sequence[float], ctx: DistContext, device: torch.device,
            op: str) -> list[float]:
    """values reduced over the ranks by torch.distributed.ReduceOp.<op> (float64)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    where = device if ctx.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=where)
    torch.distributed.all_reduce(tensor, op=getattr(torch.distributed.ReduceOp, op))
    return tensor.tolist()


def all_reduce_sum(values: Sequence[float], ctx: DistContext,
                   device: torch.device) -> list[float]:
    """Each value summed over the ranks (float64: counts stay exact), on every rank."""
    return _reduce(values, ctx, device, "SUM")


def all_reduce_max(values: Sequence[float], ctx: DistContext,
                   device: torch.device) -> list[float]:
    return _reduce(values, ctx, device, "MAX")


def all_true(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when flag is true on every rank (a decision all ranks must share)."""
    (lowest,) = _reduce([1.0 if flag else 0.0], ctx, device, "MIN")
    return lowest > 0.5


def broadcast_from_main(value: Any, ctx: DistContext) -> Any:
    """Rank 0's value (any picklable object), on every rank."""
    if not ctx.enabled:
        return value
    holder = [value if ctx.is_main else None]
    torch.distributed.broadcast_object_list(holder, src=0)
    return holder[0]
