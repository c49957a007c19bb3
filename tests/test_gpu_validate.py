"""scripts/gpu_validate.sh: its logic, run on the CPU (the GPU run itself needs a CUDA machine).

Without CUDA the GPU steps must say "no CUDA device" and the script must still run to the end;
``--device cpu`` rehearses every step (install, tests, sweep, LRA, report) at tiny sizes.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_validate.sh"
torch = pytest.importorskip("torch")


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def steps(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "steps.tsv", newline="") as handle:
        return {row["step"]: row for row in csv.DictReader(handle, delimiter="\t")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_the_gpu_steps_say_so_and_a_failed_step_does_not_stop_the_script(tmp_path):
    out = tmp_path / "out"
    result = run_script(str(out), "--wheels", str(tmp_path / "no-such-folder"))
    assert result.returncode == 1, result.stderr     # the wheels step failed...
    done = steps(out)
    assert done["wheels"]["status"] == "failed"
    assert done["environment"]["status"] == "ok" and done["install"]["status"] == "ok"
    for name in ("gpu-tests", "sweep", "lra-data", "lra"):  # ...and the script went on
        assert done[name]["status"] == "no-cuda"
        assert "no CUDA device" in done[name]["detail"]
    assert done["report"]["status"] == "skipped"
    summary = (out / "summary.md").read_text()
    assert "Failed or timed out: wheels" in summary and "no CUDA device" in summary
    assert "torch" in (out / "environment.txt").read_text()
    assert (out / "log.txt").stat().st_size > 0


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_step_and_leaves_results_report_and_log(tmp_path):
    out = tmp_path / "out"
    result = run_script(str(out), "--device", "cpu", "--impl", "hrr_torch,softmax_torch")
    assert result.returncode == 0, result.stdout[-3000:]
    done = steps(out)
    assert done["wheels"]["status"] == "skipped"
    for name in ("environment", "install", "gpu-tests", "sweep", "lra-data", "lra", "report"):
        assert done[name]["status"] == "ok", (name, done[name])
    sweep = (out / "results" / "sweep" / "results.jsonl").read_text().splitlines()
    assert len(sweep) == 6                        # 2 implementations x 3 points of the preset
    assert len((out / "results" / "lra" / "results.jsonl").read_text().splitlines()) == 2
    assert (out / "report" / "report.html").exists()
    summary = (out / "summary.md").read_text()
    assert "No step failed" in summary and "| sweep | ok |" in summary
    assert "skipped" in summary and "no CUDA device" in summary  # the gpu tests' skip reason


def test_deadline_stops_starting_steps_and_says_so(tmp_path):
    out = tmp_path / "out"
    result = run_script(str(out), "--device", "cpu", "--deadline", "3")
    assert result.returncode == 1
    done = steps(out)
    assert done["environment"]["status"] == "timeout"
    assert "not started" in done["environment"]["detail"]
    assert (out / "summary.md").exists()


@pytest.mark.parametrize("args, message", [
    ([], "OUTDIR is required"),
    (["x", "--device", "tpu"], "--device must be cuda or cpu"),
    (["x", "--deadline", "soon"], "--deadline must be whole seconds"),
    (["x", "--frobnicate"], "unknown option"),
])
def test_bad_arguments_exit_2(args, message, tmp_path):
    result = run_script(*[str(tmp_path / a) if a == "x" else a for a in args])
    assert result.returncode == 2
    assert message in result.stderr


def test_summary_says_when_the_floor_step_stopped_early(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("gpu_validate_summary",
                                                  ROOT / "scripts" / "gpu_validate_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "hrr_floor.json"
    row = {"impl": "hrr_torch", "dtype": "float32", "seq_len": 65536, "status": "ok",
           "time_s": 2e-3, "floor_s": 1e-3, "ratio": 2.0}
    path.write_text(json.dumps({"copy_bandwidth_bytes_s": 4e12, "complete": False,
                                "rows": [row]}))
    assert module.floor_counts(path) == "1 ok, incomplete (stopped before its last row)"
    path.write_text(json.dumps({"copy_bandwidth_bytes_s": 4e12, "complete": True,
                                "rows": [row]}))
    assert module.floor_counts(path) == "1 ok"
