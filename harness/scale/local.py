"""``--executor local`` on a machine with several GPUs: one shard process per GPU.

Each process sees exactly one GPU (CUDA_VISIBLE_DEVICES), so two benchmarks never share a GPU;
the parent gathers their records into the run directory every few seconds and when each ends.
With one GPU (or none) the sweep runs in the calling process as usual.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

from rich.console import Console

from harness.store.hardware import fingerprint
from harness.grid.plan import SweepPlan, family_of
from harness.contract.records import Point
from harness.scale.inprocess import SweepResult
from harness.scale.sharded import (
    Shard,
    finish,
    gather,
    incomplete,
    open_sharded_run,
    python_command,
)
from harness.store.run_dir import RunDir, default_run_path


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    try:
        import torch

        from harness.contract.frameworks import torch_fw

        count = torch_fw.cuda_device_count(torch)   # no device context in the parent
    except ImportError:
        count = 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in listed.split(",") if d.strip()][:count]


def gpus_for(points: Sequence[Point]) -> list[str]:
    """GPUs to spread points over: only when every point asks for plain 'cuda'."""
    if not points or any(p.device != "cuda" for p in points):
        return []
    return visible_gpus()


def run_shards_in_parallel(run: RunDir, shards: Sequence[Shard], devices: Sequence[str],
                           impl_modules: Sequence[str], console: Console, *,
                           poll_s: float = 2.0) -> dict[int, int]:
    """Run the shards, each in its own process pinned to one free device, at most one process
    per device at a time; exit status per shard index. Records are gathered while they run."""
    logs = Path(run.path) / "shards"
    logs.mkdir(parents=True, exist_ok=True)
    queue = list(shards)
    free = list(devices)
    running: dict[int, tuple[subprocess.Popen, str]] = {}
    codes: dict[int, int] = {}
    try:
        while queue or running:
            while queue and free:
                shard, device = queue.pop(0), free.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": device}
                with open(logs / f"shard-{shard.index:03d}.log", "a", encoding="utf-8") as log:
                    process = subprocess.Popen(python_command(shard, run.path, impl_modules),
                                               env=env, stdout=log, stderr=subprocess.STDOUT)
                running[shard.index] = (process, device)
                console.print(f"shard {shard.spec}: {len(shard.point_ids)} point(s), ~"
                              f"{shard.expected_cost_s:.0f} s expected, on "
                              f"CUDA_VISIBLE_DEVICES={device} (pid {process.pid})",
                              highlight=False)
            time.sleep(poll_s)
            for index, (process, device) in list(running.items()):
                if process.poll() is not None:
                    codes[index] = process.returncode
                    free.append(device)
                    del running[index]
                    console.print(f"shard {index}/{shards[0].count} ended (exit status "
                                  f"{process.returncode})", highlight=False)
            gather(run, shards)
    except KeyboardInterrupt:
        for process, _ in running.values():
            process.send_signal(2)   # SIGINT: each shard keeps what it measured
        for index, (process, _) in running.items():
            codes[index] = process.wait()
        gather(run, shards)
        raise
    return codes


def run_sweep_per_gpu(sweep: SweepPlan, gpus: Sequence[str], console: Console) -> SweepResult:
    """The whole grid split into one cost-balanced shard per GPU, run side by side."""
    machine = fingerprint()
    out = Path(sweep.out if sweep.out is not None else default_run_path(machine["hardware_tag"]))
    run, shards = open_sharded_run(sweep, out, len(gpus), {"kind": "local", "gpus": list(gpus)},
                                   machine, family_of)
    console.print(f"[bold]attnbench[/] {len(sweep.points)} point(s) in {len(shards)} shard(s), "
                  f"one process per GPU ({', '.join(gpus)}) -> {run.path}")
    missing = incomplete(run, shards)
    todo = [s for s in shards if s in missing]
    try:
        codes = run_shards_in_parallel(run, todo, gpus, sweep.settings.impl_modules, console)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: continue with: python run_bench.py sweep "
                      f"--resume {run.path}")
        return SweepResult(130, run.path, complete=False)
    status = finish(run, shards, console, logs=run.path / "shards",
                    resume=f"python run_bench.py sweep --resume {run.path}",
                    shard_exit_status={str(k): v for k, v in codes.items()})
    return SweepResult(status, run.path, complete=False)   # as before: no report from here
