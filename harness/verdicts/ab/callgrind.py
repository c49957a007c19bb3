"""``ab --metric instructions``: count the instructions of each point with valgrind's callgrind.

Per side and round, one process runs under ``valgrind --tool=callgrind --instr-atstart=no
--collect-atstart=no`` with that side's tree first on the path: it imports torch and the side's
registry uninstrumented, says it is ready, ``callgrind_control -i on`` switches instrumentation on,
and it builds the inputs of every point (seeded), calls the implementation twice to warm up, then
collects only around ``CALLS`` calls (``torch._C._valgrind_toggle`` / ``_valgrind_toggle_and_dump_stats``, the hooks
torch.utils.benchmark uses) and dumps one count per point. One thread; no timing, no correctness
gate (the time metric runs the gate). Both sides run at once (a count does not depend on what
else runs); two rounds, so that a count that moves between processes shows as noise.

Measured on a 2-core CPU (docs/regression.md, "Instruction counts"): starting a side takes about
16 s (Python and torch imported uninstrumented), then about 7 s a point for hrr_torch and
sdpa_math at T=128 (29 s for sdpa_math at T=256); the counts of one tree were identical in
every process, and two copies of one tree differed by at most 0.05%. An instruction count
hardly moves with the machine's load, but it misses memory-bound slowdowns: pair it with time.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.verdicts.ab.rounds import (
    LABELS,
    Outcome,
    Plan,
    add_round,
    judge_all,
    side_environment,
)
from harness.verdicts.ab.sides import Side
from harness.errors import UsageError
from harness.contract.records import Point

CALLS = 5
ROUNDS = 2
DRIVER = r'''
import json, sys
spec = json.loads(sys.argv[1])
import torch
torch.set_num_threads(1)
from harness.contract.registry import REGISTRY, load_impl_modules
load_impl_modules(spec["impl_modules"])
REGISTRY.names()
print("ATTNBENCH-READY", flush=True)   # imported without instrumentation; wait for it
sys.stdin.readline()
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
results = []
for p in spec["points"]:
    entry = {"point": p, "status": "ok", "message": ""}
    try:
        impl = REGISTRY.get(p["impl"])
        if impl.framework != "torch" or p["pass"] != "forward" or p["device"] != "cpu":
            raise NotImplementedError("instructions: torch implementations, forward pass, CPU")
        g = torch.Generator().manual_seed(spec["seed"])
        q, k, v = (torch.randn(p["batch"], p["heads"], p["seq_len"], p["head_dim"],
                               generator=g).to(DTYPES[p["dtype"]]) for _ in range(3))
        call = lambda: impl.fn(q, k, v, causal=p["causal"])
        with torch.no_grad():
            call(); call()
            torch._C._valgrind_toggle()
            for _ in range(spec["calls"]):
                call()
            torch._C._valgrind_toggle_and_dump_stats()
    except BaseException as exc:
        entry = {"point": p, "status": "unsupported" if isinstance(exc, NotImplementedError)
                 else "error", "message": f"{type(exc).__name__}: {exc}"[:200]}
    results.append(entry)
print("ATTNBENCH-CALLGRIND " + json.dumps(results), flush=True)
import os
os._exit(0)   # skip the interpreter's and libtorch's teardown, slow under instrumentation
'''


def require_valgrind(device: str | None) -> None:
    if device and "cuda" in device:
        raise UsageError("--metric instructions: CPU only (callgrind cannot count GPU work); "
                         "use --device cpu")
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"--metric instructions needs valgrind ({' and '.join(missing)} not "
                         f"found here; e.g. apt-get install valgrind); the time metric needs "
                         f"nothing")


def count_side(plan: Plan, side: Side, points: list[Point], round_dir: Path,
               seed: int) -> list[dict[str, Any]]:
    """Run the driver under callgrind for ``side``; one pseudo-record per point, with the
    instructions per call in ``time_samples_s`` (so the paired rule applies unchanged)."""
    round_dir.mkdir(parents=True, exist_ok=True)
    spec = {"points": [p.as_dict() for p in points], "impl_modules": list(plan.impl_modules),
            "seed": seed, "calls": CALLS}
    prefix = round_dir / "callgrind.out"
    env = {**side_environment(side.root, threads=1), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0"}
    # Python and torch start without instrumentation (--instr-atstart=no: with it, importing
    # torch under callgrind takes many minutes); callgrind_control switches it on once the
    # driver is ready, and the driver collects only around the measured calls.
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
            "--dump-instr=no", f"--callgrind-out-file={prefix}.%p", plan.python, "-c", DRIVER,
            json.dumps(spec)]
    log = round_dir / "valgrind.log"
    with open(log, "w", encoding="utf-8") as err:
        process = subprocess.Popen(argv, cwd=side.root, env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            lines = []
            for line in process.stdout:  # type: ignore[union-attr]
                lines.append(line)
                if line.startswith("ATTNBENCH-READY"):
                    control = subprocess.run(["callgrind_control", "-i", "on",
                                              str(process.pid)], capture_output=True, text=True)
                    err.write(control.stdout + control.stderr)
                    process.stdin.write("go\n")  # type: ignore[union-attr]
                    process.stdin.flush()  # type: ignore[union-attr]
                    break
            lines += process.stdout.readlines()  # type: ignore[union-attr]
            code = process.wait()
        except BaseException:
            process.kill()
            raise
    stdout = "".join(lines)
    marker = [x for x in stdout.splitlines() if x.startswith("ATTNBENCH-CALLGRIND ")]
    if code != 0 or not marker:
        last = (log.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise UsageError(f"{side.label.upper()} {side.describe()}: the callgrind run failed "
                         f"(exit {code}): {last} (log: {log})")
    results = json.loads(marker[-1].split(" ", 1)[1])
    counts = dump_counts(round_dir)
    records, dumps = [], iter(counts)
    for entry in results:
        record = {**entry["point"], "status": entry["status"], "message": entry["message"]}
        if entry["status"] == "ok":
            total = next(dumps, None)
            if total is None:
                raise UsageError(f"{side.label.upper()}: fewer callgrind dumps than points "
                                 f"(log: {round_dir / 'valgrind.log'})")
            record["time_samples_s"] = [total / CALLS]
            record["instructions_per_call"] = total / CALLS
        records.append(record)
    with open(round_dir / "results.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return records


def dump_counts(round_dir: Path) -> list[float]:
    """Instruction totals of the numbered dumps (``callgrind.out.PID.N``), in order."""
    found = []
    for path in round_dir.glob("callgrind.out.*"):
        match = re.fullmatch(r"callgrind\.out\.\d+\.(\d+)", path.name)
        if not match:
            continue
        text = path.read_text(errors="replace")
        total = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
        if total:
            found.append((int(match.group(1)), float(total.group(1))))
    return [count for _, count in sorted(found)]


def run_instructions(plan: Plan, points: list[Point], seed: int = 0) -> Outcome:
    histories: dict = {}
    start = time.monotonic()
    durations = []
    for index in range(1, ROUNDS + 1):
        t0 = time.monotonic()
        # both sides at once: an instruction count does not depend on what else runs, and a
        # side's process spends most of its minute under valgrind's instrumentation
        with ThreadPoolExecutor(max_workers=len(LABELS)) as pool:
            futures = {label: pool.submit(count_side, plan, plan.sides[label], points,
                                          plan.out / "rounds" / f"{label}-{index:02d}", seed)
                       for label in LABELS}
            records = {label: future.result() for label, future in futures.items()}
        add_round(histories, records, "median")
        durations.append(time.monotonic() - t0)
    rows = judge_all(histories, plan.threshold, plan.confidence, "instructions")
    return Outcome(rows, ROUNDS, time.monotonic() - start,
                   f"{ROUNDS} rounds (instruction counts)", durations)
