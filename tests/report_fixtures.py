"""Results fixtures for the report tests.

``make_speed_run`` runs a REAL tiny sweep with the Runner (worker processes, tiny shapes), then
appends a few SYNTHETIC failure records (marked "SYNTHETIC" in their message) so that the
report's failure paths are exercised without waiting for a real out-of-memory or timeout.
``make_second_run`` and ``make_accuracy_run`` are entirely SYNTHETIC: derived from the first run
(times doubled, other hardware) and hand-written AccuracyRecords.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.grid.settings import TimingSettings
from harness.contract.records import AccuracyRecord, Point, SpeedRecord
from harness.measure.runner import Runner
from harness.grid.settings import RunSettings
from harness.store.run_dir import RunDir

FAST = TimingSettings(warmup=1, min_time_s=0.02, min_repeats=3, max_repeats=4)
MACHINE_A = {"hardware_tag": "cpu-test-a", "hardware_id": "aaaa", "cpu_model": "Test CPU A",
             "cpu_count_logical": 2, "python": "3.11", "packages": {"torch": "x"}}
MACHINE_B = {**MACHINE_A, "hardware_tag": "cpu-test-b", "hardware_id": "bbbb",
             "cpu_model": "Test CPU B"}

# Lengths large enough that every peak-memory reading is well above zero (a report with no
# measurable memory draws no memory-ratio figure), small enough to take seconds.
REAL_GRID = {"softmax_torch": (256, 512, 1024), "hrr_torch": (256, 512, 1024, 2048),
             "performer_torch": (256, 512, 1024), "flash_attn": (256,)}
SHAPE = {"head_dim": 32, "heads": 4, "pass_": "forward"}


def make_speed_run(path: Path) -> Path:
    run_dir = RunDir.create(path, {"kind": "speed", "machine": MACHINE_A,
                                   "command": ["run_bench.py", "sweep", "(test fixture)"]})
    points = [Point(impl=impl, seq_len=t, **SHAPE) for impl, lengths in REAL_GRID.items()
              for t in lengths]
    Runner(run_dir, RunSettings(timeout_s=120, timing=FAST), hardware_id="aaaa").run(points)
    synthetic = [
        ("softmax_torch", 2048, "oom", "SYNTHETIC (test fixture): out of memory"),
        ("softmax_torch", 4096, "skipped", "SYNTHETIC: not tried: oom at seq_len=2048"),
        ("performer_torch", 2048, "timeout", "SYNTHETIC (test fixture): timed out after 1 s"),
    ]
    for impl, t, status, message in synthetic:
        family = {"softmax_torch": "exact", "performer_torch": "kernel"}[impl]
        run_dir.append(SpeedRecord.for_point(Point(impl=impl, seq_len=t, **SHAPE),
                                             framework="torch", family=family, status=status,
                                             message=message))
    return path


def make_second_run(first: Path, path: Path) -> Path:
    """SYNTHETIC: the first run "on other hardware": every time doubled, peak memory equal;
    hrr_torch T=256 missing from it (so it must not be paired)."""
    path.mkdir(parents=True)
    meta = json.loads((first / "run.json").read_text())
    meta["machine"] = MACHINE_B
    (path / "run.json").write_text(json.dumps(meta))
    lines = []
    for line in (first / "results.jsonl").read_text().splitlines():
        data = json.loads(line)
        if data["impl"] == "hrr_torch" and data["seq_len"] == 256:
            continue
        if data["status"] == "ok":
            data["time_s"] *= 2
            data["time_samples_s"] = [s * 2 for s in data["time_samples_s"]]
        lines.append(json.dumps(data))
    (path / "results.jsonl").write_text("\n".join(lines) + "\n")
    return path


ACCURACY = {("listops", "softmax_torch"): 0.40, ("listops", "hrr_torch"): 0.35,
            ("text", "softmax_torch"): 0.60, ("text", "hrr_torch"): 0.62}


def make_accuracy_run(path: Path) -> Path:
    """SYNTHETIC accuracy records (no training is run)."""
    run_dir = RunDir.create(path, {"kind": "accuracy", "machine": MACHINE_A})
    for (task, impl), acc in ACCURACY.items():
        curve = [{"epoch": e, "val_accuracy": acc * e / 3, "elapsed_s": 10.0 * e}
                 for e in (1, 2, 3)]
        run_dir.append(AccuracyRecord(impl=impl, task=task, status="ok",
                                      data_source="generated", preset="tiny",
                                      test_accuracy=acc, best_val_accuracy=acc, epochs=3,
                                      train_time_s=30.0 if impl == "hrr_torch" else 60.0,
                                      curve=curve))
    run_dir.append(AccuracyRecord(impl="softmax_jax", task="listops", status="unsupported",
                                  message="softmax_jax: a jax implementation cannot be trained "
                                          "here"))
    return path


# SYNTHETIC energy: mean watts per implementation over the timed window (NVML-like values)
ENERGY_WATTS = {"softmax_torch": 300.0, "hrr_torch": 200.0}
ENERGY_TIMES_S = {"softmax_torch": {256: 2e-4, 512: 6e-4, 1024: 2e-3},
                  "hrr_torch": {256: 1.5e-4, 512: 3e-4, 1024: 6e-4}}
SHORT_WINDOW = ("window shorter than the counter's update interval: 0.012 s < 2 updates "
                "(counter updates every 20 ms)")


def make_energy_run(path: Path) -> Path:
    """SYNTHETIC records whose ok points carry energy as NVML's counter would give it (energy
    per call = mean watts x time per call), but hrr_torch at T=256, whose window was too short
    for the counter (no value, the reason instead). No sweep is run."""
    run_dir = RunDir.create(path, {"kind": "speed", "machine": MACHINE_A,
                                   "command": ["run_bench.py", "sweep", "(energy fixture)"]})
    for impl, times in ENERGY_TIMES_S.items():
        family = "exact" if impl == "softmax_torch" else "hrr"
        for t, seconds in times.items():
            point = Point(impl=impl, seq_len=t, device="cuda:0", **SHAPE)
            samples = [seconds * f for f in (0.98, 1.0, 1.02)]
            energy = {"energy_counter_resolution_j": 1e-3, "energy_counter_interval_s": 0.02,
                      "energy_window_s": 1.0}
            if impl == "hrr_torch" and t == 256:
                energy.update(energy_reason=SHORT_WINDOW, energy_source="nvml_total_energy",
                              energy_window_s=0.012)
            else:
                per_call = ENERGY_WATTS[impl] * seconds
                energy.update(energy_j_per_call=per_call,
                              energy_j_per_token=per_call / point.tokens,
                              mean_power_w=ENERGY_WATTS[impl], energy_error_max=0.02,
                              energy_source="nvml_total_energy")
            run_dir.append(SpeedRecord.for_point(
                point, framework="torch", family=family, status="ok", time_s=seconds,
                time_samples_s=samples, timer="cuda_event", timing_basis="device_events",
                peak_mem_bytes=t * t * 64, mem_method="torch_cuda_max_allocated",
                tokens_per_s=point.tokens / seconds, hardware_id="aaaa", **energy))
    run_dir.release()
    return path


# -- a run with points marked noisy (harness.metrics.noise) --------------------------------------
NOISY_GRID = {"softmax_torch": (256, 512, 1024, 2048), "hrr_torch": (256, 512, 1024, 2048)}
NOISY_POINT = ("hrr_torch", 2048)   # marked noisy: 40x its quiet time, as under a busy core
NOISY_REASON = ("other processes used 0.67 of 2 CPUs while the worker's 2 thread(s) "
                "needed 2: 0.67 CPU short")


def make_noisy_run(path: Path) -> Path:
    """SYNTHETIC ok records (no worker runs): softmax_torch quadratic, hrr_torch linear in T and
    faster at every T, except hrr_torch at T=2048, marked noisy with a median 40x its quiet
    value (slower than softmax_torch there)."""
    run_dir = RunDir.create(path, {"kind": "speed", "machine": MACHINE_A})
    for impl, lengths in NOISY_GRID.items():
        family = "exact" if impl == "softmax_torch" else "hrr"
        for t in lengths:
            quiet = 1e-3 * (t / 256) ** 2 if impl == "softmax_torch" else 2e-4 * t / 256
            noisy = (impl, t) == NOISY_POINT
            median = quiet * 40 if noisy else quiet
            samples = [median * f for f in (0.98, 1.0, 1.02)]
            run_dir.append(SpeedRecord.for_point(
                Point(impl=impl, seq_len=t, **SHAPE), framework="torch", family=family,
                status="ok", message="SYNTHETIC (test fixture)", time_s=median,
                time_samples_s=samples, time_iqr_s=median * 0.02, time_min_s=samples[0],
                peak_mem_bytes=4 * t * 1024, threads=2, time_rel_spread=0.02,
                noise_target=0.05, stop_rule="spread target met", noisy=noisy,
                noise_reason=NOISY_REASON if noisy else "", cpus_available=2, cpus_needed=2,
                other_cpus=0.67 if noisy else 0.01, cpu_steal_fraction=0.0,
                load_avg_1m=1.2 if noisy else 0.1, state_window_s=0.5))
    run_dir.release()
    return path
