"""scripts/gpu_validate.sh: its logic, run on the CPU (the GPU run itself needs a CUDA machine).

Without CUDA the GPU steps must say "no CUDA device" and the script must still run to the end;
``--device cpu`` rehearses every step (install, tests, sweep, LRA, report) at tiny sizes. The
rehearsals are given generous deadlines: they assert on step statuses and files, never on how
fast this machine is.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_validate.sh"
torch = pytest.importorskip("torch")


def run_script(*args: str, timeout: int = 900, python: str | None = None
               ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python or sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def steps(work: Path) -> dict[str, dict[str, str]]:
    with open(work / "steps.tsv", newline="") as handle:
        return {row["step"]: row for row in csv.DictReader(handle, delimiter="\t")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_cuda_the_gpu_steps_say_so_and_a_failed_step_does_not_stop_the_script(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = run_script(str(out), "--work", str(work), "--wheels", str(tmp_path / "no-such-folder"),
                        "--deadline", "1200")
    assert result.returncode == 1, result.stderr     # the wheels step failed...
    done = steps(work)
    assert done["wheels"]["status"] == "failed"
    assert done["environment"]["status"] == "ok" and done["install"]["status"] == "ok"
    for name in ("gpu-tests", "sweep", "lra-data", "lra"):  # ...and the script went on
        assert done[name]["status"] == "no-cuda"
        assert "no CUDA device" in done[name]["detail"]
    assert done["report"]["status"] == "skipped"
    summary = (out / "summary.md").read_text()
    assert "Failed or timed out: wheels" in summary and "no CUDA device" in summary
    assert "torch" in (work / "environment.txt").read_text()
    assert (work / "log.txt").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu_validate.tar.gz", "summary.md"]


@pytest.mark.slow
def test_cpu_rehearsal_twice_into_one_folder_resumes_and_leaves_one_archive(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    args = (str(out), "--work", str(work), "--device", "cpu", "--impl", "hrr_torch,softmax_torch",
            "--deadline", "3000")
    measured = ("sweep", "gpu-tests", "hrr-floor", "profile", "lra-data", "lra")
    first = run_script(*args, timeout=3600)
    assert first.returncode == 0, first.stdout[-3000:]
    done = steps(work)
    assert done["wheels"]["status"] == "skipped" and done["cudagraph"]["status"] == "skipped"
    for name in ("environment", "install", *measured, "report"):
        assert done[name]["status"] == "ok", (name, done[name])
        assert "earlier run" not in done[name]["detail"]
    sweep = (work / "results" / "sweep" / "results.jsonl").read_text().splitlines()
    assert len(sweep) == 6                        # 2 implementations x 3 points of the preset
    assert len((work / "results" / "lra" / "results.jsonl").read_text().splitlines()) == 2
    assert (work / "report" / "report.html").exists()
    environment = (work / "environment.txt").read_text()
    assert "api probe:" in environment and "none missing" in environment
    assert "hrr_torch" in environment             # `list --device cpu` ran (DEVICE exported)
    progress = (work / "gpu-tests.progress.tsv").read_text().splitlines()
    assert progress and all(line.startswith("skipped\t") for line in progress)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_validate.tar.gz", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert "No step failed" in summary and "| sweep | ok |" in summary
    assert "no CUDA device" in summary            # the gpu tests' skip reason
    with tarfile.open(out / "gpu_validate.tar.gz") as archive:
        names = archive.getnames()
    assert "./results/sweep/results.jsonl" in names and "./steps.tsv" in names
    assert not [n for n in names if "compile-cache" in n or "jax-cache" in n
                or n.startswith("./data")]

    # the second run: every measurement finished, none is redone, the records are unchanged
    second = run_script(*args, timeout=3600)
    assert second.returncode == 0, second.stdout[-3000:]
    again = steps(work)
    for name in measured:
        assert again[name]["status"] == "ok" and "earlier run" in again[name]["detail"], name
    assert again["report"]["status"] == "ok" and "earlier run" in again["report"]["detail"]
    assert (work / "results" / "sweep" / "results.jsonl").read_text().splitlines() == sweep
    assert sorted(p.name for p in out.iterdir()) == ["gpu_validate.tar.gz", "summary.md"]

    # a fresh machine: no working folder, the archive in OUTDIR: unpacked and resumed
    shutil.rmtree(work)
    third = run_script(*args, timeout=3600)
    assert third.returncode == 0, third.stdout[-3000:]
    resumed = steps(work)
    for name in ("sweep", "gpu-tests", "hrr-floor", "profile", "lra"):
        assert "earlier run" in resumed[name]["detail"], name
    assert "resumed from" in (work / "log.txt").read_text()


def test_a_failing_list_fails_the_environment_step(tmp_path):
    """`list` failing inside the `environment | tee` pipe is a failed step (pipefail)."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = run_bench.py ] && [ "$2" = list ]; then echo "list: broken" >&2; exit 3; fi
exec {sys.executable} "$@"
""")
    wrapper.chmod(0o755)
    out, work = tmp_path / "out", tmp_path / "work"
    result = run_script(str(out), "--work", str(work), "--device", "cpu", "--only", "environment",
                        "--deadline", "1200", python=str(wrapper))
    assert result.returncode == 1
    done = steps(work)
    assert done["environment"]["status"] == "failed", done["environment"]
    assert done["sweep"]["status"] == "skipped" and "--only" in done["sweep"]["detail"]


def test_deadline_stops_starting_steps_and_says_so(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = run_script(str(out), "--work", str(work), "--device", "cpu", "--deadline", "3")
    assert result.returncode == 1
    done = steps(work)
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


def load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module            # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_test_plan_names_collected_tests_and_keeps_one_flex_case():
    """The plan's first tests exist (collected with -m gpu on the CPU), run first, in order."""
    plan = load("pytest_gpu_plan")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_gpu_plan", "--gpu-plan", "-m", "gpu",
         "--collect-only", "-q", *plan.FILES], capture_output=True, text=True,
        cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "scripts"), str(ROOT)])})
    assert result.returncode == 0, result.stdout[-2000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected[:len(plan.FIRST)] == list(plan.FIRST)
    flex = [n for n in collected if "flex_attention" in n]
    assert flex == [n for n in plan.FIRST if "flex_attention" in n] and len(flex) == 1
    script = (ROOT / "scripts" / "gpu_validate.sh").read_text()
    assert all(name in script for name in plan.FILES)   # the step collects the same files


def test_gpu_test_plan_alarm_and_progress_lines(tmp_path):
    """--test-timeout fails a test that never ends; each test's line is written as it ends, and
    --skip-reported leaves out what a progress file already holds."""
    (tmp_path / "test_sample.py").write_text(
        "import time, pytest\n"
        "def test_passes():\n    pass\n"
        "def test_hangs():\n    while True:\n        time.sleep(1)\n"
        "def test_skips():\n    pytest.skip('no device here')\n")
    progress = tmp_path / "progress.tsv"

    def pytest_run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "pytest_gpu_plan", "-p", "no:cacheprovider",
             "--progress-file", str(progress), *extra, "test_sample.py"],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT / "scripts")})

    first = pytest_run("--test-timeout", "1")
    assert first.returncode == 1, first.stdout[-2000:]
    lines = [line.split("\t") for line in progress.read_text().splitlines()]
    outcomes = {fields[1].split("::")[-1]: (fields[0], fields[3]) for fields in lines}
    assert outcomes["test_passes"][0] == "passed"
    assert outcomes["test_hangs"][0] == "failed" and "test-timeout" in outcomes["test_hangs"][1]
    assert outcomes["test_skips"] == ("skipped", "Skipped: no device here")
    again = pytest_run("--skip-reported")
    assert again.returncode == 5          # nothing left to run
    assert len(progress.read_text().splitlines()) == 3


def test_api_probe_on_the_cpu_checks_attributes_and_says_n_a_for_cuda_calls():
    probe = load("gpu_api_probe")
    checks = {c.name: c for c in probe.run_checks(cuda=False)}
    assert checks["torch.cuda.memory_stats"].status == "ok"
    assert checks["torch fp32 matmul precision"].status == "ok"
    assert checks["torch.nn.attention.SDPBackend"].status == "ok"
    assert checks["torch.cuda allocator calls"].status == "n/a"
    assert checks["get_device_properties().L2_cache_size"].detail.startswith("no CUDA")
    jax_checks = [c for name, c in checks.items() if "MEM_FRACTION" in name]
    assert jax_checks and all(c.status in ("ok", "n/a") for c in jax_checks)
    names = probe.nvml_names()
    assert "nvmlDeviceGetClockInfo" in names and "NVML_CLOCK_SM" in names


def test_api_probe_reports_what_is_missing(monkeypatch):
    probe = load("gpu_api_probe")
    monkeypatch.delattr(torch.cuda, "max_memory_allocated")
    checks = {c.name: c for c in probe.torch_checks(cuda=False)}
    assert checks["torch.cuda.max_memory_allocated"].status == "missing"
    assert probe.main(["--device", "cpu"]) == 1


def test_the_step_limits_in_the_code_add_up_to_the_deadline_the_header_states():
    """The header's budget arithmetic is the code's: every step's limit as the script passes
    it, plus the final reserve, sums to the default deadline (6 minutes on a GPU)."""
    import re

    text = SCRIPT.read_text()
    limits = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"^\s*(?:gpu_)?step ([a-z-]+) (\d+) ", text, re.MULTILINE)}
    reserve = int(re.search(r"FINAL_RESERVE=\$\(\((\d+) \* SCALE\)\)", text).group(1))
    deadline = int(re.search(r'DEADLINE_S="\$\{DEADLINE_S:-\$\(\((\d+) \* SCALE\)\)\}"',
                             text).group(1))
    header = re.search(r"#   sum: ([\d +]+) = (\d+) s", text)
    stated = [int(x) for x in header.group(1).split("+")]
    optional = {"wheels"}                         # only with --wheels, taken from later steps
    assert sum(v for k, v in limits.items() if k not in optional) + reserve == deadline
    assert sum(stated) == int(header.group(2)) == deadline == 360
    assert sorted(stated) == sorted([v for k, v in limits.items() if k not in optional]
                                    + [reserve])
    for name, limit in limits.items():            # each step named in the header with its limit
        assert re.search(rf"\b{name} {limit}\b", text.split("set -uo pipefail")[0]), name
