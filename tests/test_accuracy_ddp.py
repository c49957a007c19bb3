"""LRA training on several processes (torch.distributed, gloo on CPU): the pure helpers, and
real two-process runs under torchrun compared with a one-process run of the same command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import free_port, read_records

from harness import cli
from harness.accuracy import distributed
from harness.accuracy.distributed import SINGLE, DistContext, RankBatch
from harness.accuracy.training_presets import TrainConfig
from harness.accuracy.train import step_loss
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500"}


# -- pure helpers ---------------------------------------------------------------------------

def test_env_parsing():
    assert distributed.from_env({}, "cpu") == SINGLE
    assert distributed.from_env({**TORCHRUN_ENV, "WORLD_SIZE": "1", "RANK": "0"}, "cuda") == \
        SINGLE
    assert distributed.from_env(TORCHRUN_ENV, "cpu") == DistContext(1, 2, 1, "gloo")
    ctx = distributed.from_env(TORCHRUN_ENV, "cuda")
    assert ctx.backend == "nccl" and ctx.enabled and not ctx.is_main
    assert SINGLE.record_fields() == {"world_size": 1, "backend": "none"}
    for missing in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env = {k: v for k, v in TORCHRUN_ENV.items() if k != missing}
        with pytest.raises(UsageError, match=missing):
            distributed.from_env(env, "cpu")
    with pytest.raises(UsageError, match="outside 0..1"):
        distributed.from_env({**TORCHRUN_ENV, "RANK": "2"}, "cpu")
    with pytest.raises(UsageError, match="not an integer"):
        distributed.from_env({**TORCHRUN_ENV, "LOCAL_RANK": "x"}, "cpu")


def test_devices_and_batch_size_checks():
    ctx = DistContext(0, 2, 0, "nccl")
    assert distributed.resolve_device(ctx, "cuda") == "cuda"
    assert distributed.resolve_device(SINGLE, "cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match="cuda:LOCAL_RANK"):
        distributed.resolve_device(ctx, "cuda:1")
    distributed.check_batch_size(2, ctx)
    with pytest.raises(UsageError, match="smaller than the 4 processes"):
        distributed.check_batch_size(3, DistContext(0, 4, 0, "gloo"))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_shares_tile_each_global_batch(world):
    rng = np.random.default_rng(0)
    for size in range(19):
        bounds = [distributed.shard_bounds(size, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == size
        assert all(a[1] == b[0] for a, b in pairwise(bounds))      # contiguous
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
        if size == 0:
            continue
        batch = rng.permutation(100)[:size]
        shares = [distributed.rank_batch(batch, r, world) for r in range(world)]
        real = [s.index[:s.real] for s in shares]
        assert np.array_equal(np.concatenate(real), batch)              # union, in order
        assert sum(len(r) for r in real) == len(set(np.concatenate(real).tolist()))  # disjoint
        assert all(s.global_size == size for s in shares)
        for share in shares:
            if share.real == 0:                                         # a filler row
                assert len(share.index) == 1 and share.index[0] == batch[0]


@pytest.mark.parametrize("size", [8, 5, 1])
def test_rank_losses_average_to_the_global_batch_loss(size):
    """What DDP averages (each rank's scaled summed loss) is the one-process batch mean, even
    with uneven shares and a rank running only a filler row."""
    config = TrainConfig(label_smoothing=0.1)
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    inputs, labels = torch.randn(size, 4), torch.randint(0, 3, (size,))
    full = step_loss(layer(inputs), labels, config, SINGLE, None)
    expected = torch.autograd.grad(full.loss, layer.weight)[0]
    world, grads, loss_sum = 2, [], 0.0
    for rank in range(world):
        share: RankBatch = distributed.rank_batch(np.arange(size), rank, world)
        tally = step_loss(layer(inputs[share.index]), labels[share.index], config,
                          DistContext(rank, world, rank, "gloo"), share)
        grads.append(torch.autograd.grad(tally.loss, layer.weight)[0])
        loss_sum += tally.loss_sum
    torch.testing.assert_close(sum(grads) / world, expected)
    assert loss_sum == pytest.approx(full.loss_sum, rel=1e-6)


# -- real two-process runs -----------------------------------------------------------------

def torchrun(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "run_bench.py", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory) -> Path:
    # 97 training examples: the last global batch of 16 has one example, so rank 1 runs a
    # filler row there; 33 val/test examples split 17/16 across the ranks
    root = tmp_path_factory.mktemp("listops")
    assert cli.main(["data", "listops", "--out", str(root), "--n-train", "97", "--n-val", "33",
                     "--n-test", "33", "--seed", "1", "--min-length", "5",
                     "--max-length", "60"]) == 0
    return root


def lra_args(data: Path, out: Path, impl: str = "softmax_torch") -> list[str]:
    # dropout 0: dropout masks cannot match between 1 and 2 processes (each rank draws its
    # own, seed + rank); without it the two runs differ only in floating-point sum order
    return ["lra", "--task", "listops", "--impl", impl, "--data-dir", str(data),
            "--epochs", "4", "--batch-size", "16", "--dropout", "0", "--seed", "0",
            "--out", str(out), "--no-progress"]


@pytest.mark.slow
def test_two_processes_train_the_one_process_model(listops_dir, tmp_path, capsys):
    single_out, ddp_out = tmp_path / "one", tmp_path / "two"
    assert cli.main(lra_args(listops_dir, single_out)) == 0
    capsys.readouterr()
    done = torchrun(lra_args(listops_dir, ddp_out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("accuracy (test at the best validation checkpoint)") == 1  # rank 0
    assert sorted(p.name for p in ddp_out.iterdir()) == ["results.jsonl", "run.json"]
    assert json.loads((ddp_out / "run.json").read_text())["processes"] == \
        {"world_size": 2, "backend": "gloo"}
    (one,), (two,) = read_records(single_out), read_records(ddp_out)   # one per (impl, task)
    assert (two["impl"], two["task"], two["status"]) == ("softmax_torch", "listops", "ok")
    assert set(two) == set(one) and set(two["extra"]) == set(one["extra"])
    assert (one["extra"]["world_size"], one["extra"]["backend"]) == (1, "none")
    assert (two["extra"]["world_size"], two["extra"]["backend"]) == (2, "gloo")
    assert two["point_id"] == one["point_id"] and two["split_sizes"]["train"] == 97
    assert "rank 0 of 2" in two["mem_method"]
    losses = [row["train_loss"] for row in two["curve"]]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.03
    # Same global batches, same initial weights, gradients averaged exactly: the curves agree
    # to float32 rounding (measured: about 1e-7 relative) and so the accuracies are identical
    # (an argmax would have to sit within ~1e-6 of a tie to flip).
    for a, b in zip(one["curve"], two["curve"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert (b["train_accuracy"], b["val_accuracy"]) == (a["train_accuracy"],
                                                            a["val_accuracy"])
    assert two["best_val_accuracy"] == one["best_val_accuracy"]
    assert two["test_accuracy"] == one["test_accuracy"]
    assert two["epochs_to_best"] == one["epochs_to_best"]


@pytest.mark.slow
def test_a_failure_on_one_rank_ends_the_run(listops_dir, tmp_path):
    out = tmp_path / "fail"
    args = lra_args(listops_dir, out, impl="softmax_torch,test_fails_on_rank1,hrr_torch")
    done = torchrun(["--impl-module", "impls_ddp", *args])   # no hang: ends well within 120 s
    assert done.returncode != 0
    assert "deliberate failure on rank 1" in done.stderr
    written = read_records(out)
    assert written[0]["impl"] == "softmax_torch" and written[0]["status"] == "ok"
    # rank 0 records the failure when it sees the lost peer before the launcher stops it
    assert [r["status"] for r in written[1:]] in ([], ["error"])


def test_cuda_device_of_a_rank():
    assert distributed.cuda_index(3, 1) == 0      # Slurm --gpus-per-task=1: its own GPU
    assert distributed.cuda_index(3, 4) == 3      # torchrun on a 4-GPU node
    with pytest.raises(UsageError, match="LOCAL_RANK=4"):
        distributed.cuda_index(4, 2)


@pytest.mark.slow
def test_two_processes_tune_and_seeds_like_one(listops_dir, tmp_path, capsys):
    """--tune and --seed lists under DDP: one record per seed, written once (rank 0), the same
    choice and scores as one process."""
    extra = ["--epochs", "2", "--seed", "0,1", "--tune", "lr=1e-3,3e-3"]
    single_out, ddp_out = tmp_path / "one", tmp_path / "two"
    assert cli.main(lra_args(listops_dir, single_out) + extra) == 0
    capsys.readouterr()
    done = torchrun(lra_args(listops_dir, ddp_out) + extra)
    assert done.returncode == 0, done.stderr[-3000:]
    ones, twos = read_records(single_out), read_records(ddp_out)
    assert [r["seed"] for r in twos] == [0, 1] and all(r["status"] == "ok" for r in twos)
    for one, two in zip(ones, twos):
        assert two["point_id"] == one["point_id"]
        assert two["tuning"]["chosen"] == one["tuning"]["chosen"]
        assert [t["best_val_accuracy"] for t in two["tuning"]["trials"]] == \
            [t["best_val_accuracy"] for t in one["tuning"]["trials"]]
        assert two["test_accuracy"] == one["test_accuracy"]
