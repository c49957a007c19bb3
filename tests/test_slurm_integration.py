"""``--executor slurm`` against a real Slurm controller and daemon started on this machine.

Opt-in (it starts daemons and takes about a minute): ATTNBENCH_SLURM_TEST=1, with Debian's
slurm-wlm and munge installed and root (``scripts/test_slurm.sh`` does all of it). The cluster
is the one of scripts/slurm_local_cluster.sh: one node, two "GPU" resources (stand-in device
files), so one-GPU-per-task requests are scheduled as on a GPU cluster.

One run goes through what a cluster does to a sweep: a task cancelled while it runs (the executor
resubmits it), a task preempted with SIGUSR2 after it recorded points (submitit requeues it and
the shard resumes), every record gathered once; then ``--resume`` submits nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import free_port, run_cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("ATTNBENCH_SLURM_TEST") != "1",
                       reason="opt-in: set ATTNBENCH_SLURM_TEST=1 (scripts/test_slurm.sh)"),
    pytest.mark.skipif(shutil.which("slurmctld") is None or shutil.which("munged") is None,
                       reason="needs slurm-wlm and munge (apt-get install slurm-wlm munge)"),
]
GRID = ["--impl", "softmax_torch,hrr_torch,sdpa_math", "--seq-len", "128,256,512,1024",
        "--head-dim", "16", "--heads", "2", "--pass", "fwd", "--min-time", "0.3",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    script = ROOT / "scripts" / "slurm_local_cluster.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder), str(free_port())],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
    yield env
    subprocess.run(["bash", str(script), "stop", str(folder)], timeout=60)


def squeue(env, state: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", state, "-o", "%i"], capture_output=True,
                         text=True, env=env, timeout=30)
    return out.stdout.split()


def jobs_of(run: Path) -> list[dict]:
    try:
        return json.loads((run / "run.json").read_text()).get("jobs") or []
    except (OSError, json.JSONDecodeError):
        return []


def shard_records(run: Path, shard: int) -> int:
    results = list((run / "shards").glob(f"shard-{shard:03d}-of-*/results.jsonl"))
    return len(results[0].read_text().splitlines()) if results else 0


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_sweep_on_slurm_survives_cancel_and_preemption_and_resumes(cluster, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "run_bench.py"), "sweep", "--executor", "slurm",
               *GRID, "--shards", "3", "--slurm-poll", "1", "--slurm-cpus-per-task", "1",
               "--slurm-max-retries", "2", "--out", str(run)]
    started = time.monotonic()
    parent = subprocess.Popen(command, cwd=ROOT, env=cluster, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        # 1. cancel the first task seen running: a failure the executor must resubmit
        running = wait_for(lambda: squeue(cluster, "R"), 60, "a running task")
        cancelled = running[0]
        subprocess.run(["scancel", cancelled], env=cluster, check=True)
        by_job = {j["job_id"]: j["shard"] for j in jobs_of(run)}
        # 2. preempt another task once its shard has recorded a point
        def preemptable():
            by_job.update({j["job_id"]: j["shard"] for j in jobs_of(run)})
            for job in squeue(cluster, "R"):
                if job != cancelled and job in by_job and shard_records(run, by_job[job]):
                    return job
            return None

        preempted = wait_for(preemptable, 90, "a running task with a record")
        subprocess.run(["scancel", "--signal=USR2", preempted], env=cluster, check=True)
        # Slurm holds a requeued job about 2 minutes (Reason=BeginTime) before it may start
        # again; lift that hold so the test takes one minute, not three
        def held():
            out = subprocess.run(["scontrol", "show", "job", "-o", preempted],
                                 capture_output=True, text=True, env=cluster).stdout
            return "Reason=BeginTime" in out or "JobState=COMPLETED" in out or \
                "JobState=FAILED" in out
        try:
            wait_for(held, 30, "the preempted task to be requeued")
            subprocess.run(["scontrol", "update", f"JobId={preempted}", "StartTime=now"],
                           env=cluster, capture_output=True)
        except AssertionError:
            pass   # not requeued (the signal came first): the executor resubmits it instead
        output, _ = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    took = time.monotonic() - started
    print(output)
    print(f"slurm sweep took {took:.1f} s; cancelled {cancelled}, preempted {preempted}")
    assert parent.returncode == 0, output

    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(records) == 12 and len({r["point_id"] for r in records}) == 12
    assert {(r["impl"], r["seq_len"]) for r in records} == {
        (i, t) for i in ("softmax_torch", "hrr_torch", "sdpa_math") for t in (128, 256, 512, 1024)}
    assert all(r["status"] == "ok" for r in records)

    jobs = jobs_of(run)
    cancelled_shard = by_job[cancelled]
    attempts = [j for j in jobs if j["shard"] == cancelled_shard]
    assert attempts[0]["state"] in ("CANCELLED", "FAILED") and attempts[-1]["attempt"] >= 2
    assert attempts[-1]["state"] == "COMPLETED"
    preempted_job = [j for j in jobs if j["job_id"] == preempted][0]
    # requeued by submitit and completed in place, or (if the signal came before submitit's
    # handler was installed) failed and resubmitted: either way the shard is complete
    assert preempted_job["restarts"] >= 1 or preempted_job["state"] != "COMPLETED"
    for shard_dir in (run / "shards").glob("shard-*"):
        meta = json.loads((shard_dir / "run.json").read_text())
        assert meta["shard"]["slurm_job_id"] and meta["shard"]["cuda_visible_devices"] in ("0", "1")

    again = run_cli("sweep", "--executor", "slurm", "--resume", str(run), env=cluster,
                    timeout=120)
    print(again.stdout)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing submitted" in again.stdout
    assert len((run / "results.jsonl").read_text().splitlines()) == 12


def test_lra_on_slurm_trains_with_ddp_over_two_tasks(cluster, tmp_path):
    """One job of two tasks (one stand-in GPU each), gloo on CPU: the same record as one
    local process, loss falling."""
    data = tmp_path / "listops"
    made = run_cli("data", "listops", "--out", str(data), "--n-train", "97", "--n-val", "33",
                   "--n-test", "33", "--seed", "1", "--min-length", "5", "--max-length", "60",
                   timeout=120)
    assert made.returncode == 0, made.stderr
    common = ["lra", "--task", "listops", "--impl", "softmax_torch", "--data-dir", str(data),
              "--epochs", "4", "--batch-size", "16", "--dropout", "0", "--device", "cpu",
              "--no-progress"]
    started = time.monotonic()
    on_slurm = run_cli(*common, "--executor", "slurm", "--slurm-tasks", "2",
                       "--slurm-cpus-per-task", "1", "--slurm-poll", "1", "--out",
                       str(tmp_path / "slurm"), env=cluster)
    print(on_slurm.stdout, f"\nlra on slurm took {time.monotonic() - started:.1f} s")
    assert on_slurm.returncode == 0, on_slurm.stdout + on_slurm.stderr
    local = run_cli(*common, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr

    def record(run):
        lines = (tmp_path / run / "results.jsonl").read_text().splitlines()
        assert len(lines) == 1                       # rank 0 alone writes
        return json.loads(lines[0])

    ddp, one = record("slurm"), record("local")
    assert ddp["extra"]["world_size"] == 2 and one["extra"]["world_size"] == 1
    assert ddp.keys() == one.keys()
    assert ddp["best_val_accuracy"] == one["best_val_accuracy"]
    assert ddp["test_accuracy"] == one["test_accuracy"]
    losses = [epoch["train_loss"] for epoch in ddp["curve"]]
    assert losses[-1] < losses[0]
    jobs = json.loads((tmp_path / "slurm" / "run.json").read_text())["jobs"]
    assert jobs[-1]["state"] == "COMPLETED"
