"""hrr_triton: its availability on a CPU machine, the pure helpers, and the kernel's logic in
Triton's interpreter (CPU tensors; tests/hrr_triton_interpret.py in a subprocess). The CUDA
numerics are in tests/test_gpu.py (every HRR implementation against the float64 reference)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
from benchmarks.hrr import bandwidth_floor
from harness.errors import UnsupportedError
from implementations import hrr_triton

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None


def test_unavailable_on_cpu_with_the_reason():
    verdict = harness.get("hrr_triton").supports(device="cpu", dtype="float32")
    assert not verdict and "does not run on cpu (supports cuda)" in verdict.reason
    if not hrr_triton.interpreting():
        t = torch.zeros(1, 1, 4, 8)
        with pytest.raises(UnsupportedError, match="needs a CUDA device"):
            hrr_triton.hrr_triton(t, t, t)


def test_refuses_what_it_does_not_do():
    t = torch.zeros(1, 1, 4, 8)
    with pytest.raises(UnsupportedError, match="no causal"):
        hrr_triton.hrr_triton(t, t, t, causal=True)


def test_block_sizes_pad_d_to_a_power_of_two_of_at_least_16():
    assert hrr_triton.block_sizes(5) == (128, 16)
    assert hrr_triton.block_sizes(64) == (64, 64)
    assert hrr_triton.block_sizes(130) == (16, 256)
    assert hrr_triton.block_sizes(256) == (16, 256)
    for dim in range(1, 257):
        block_t, block_d = hrr_triton.block_sizes(dim)
        assert block_d >= max(16, dim) and block_d & (block_d - 1) == 0
        assert block_t >= 16 and block_t * block_d <= max(hrr_triton.BLOCK_ELEMENTS, 16 * 256)


def test_k_loop_keeps_the_shared_memory_of_every_head_dim_under_an_h100s():
    # one tl.dot operand of the whole C at D = 256 would be 256 x 256 float32 = 256 KiB
    assert 256 * 256 * 4 > hrr_triton.H100_SHARED_MEMORY_BYTES
    for dim in range(1, hrr_triton.MAX_HEAD_DIM + 1):
        block_t, block_d = hrr_triton.block_sizes(dim)
        step = hrr_triton.k_block(block_d)
        assert 16 <= step <= block_d and block_d % step == 0
        assert step * block_d <= hrr_triton.CORR_CHUNK_ELEMENTS or step == 16
        assert hrr_triton.shared_bytes_estimate(dim) <= 160 * 1024   # under an A100's 163 KiB
    assert hrr_triton.k_block(64) == 64          # D <= 64: one step, as before the loop
    assert hrr_triton.k_block(256) == 32


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed: pip install triton to check "
                                           "the kernel in Triton's CPU interpreter")
def test_kernel_matches_the_reference_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "hrr_triton_interpret.py")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("gradients vs hrr_torch") == 5
    assert "forward (1, 2, 40, 256) mask=random" in result.stdout
    assert "zero inputs: finite, all zero" in result.stdout
    assert "gqa Hq=4 Hkv=2" in result.stdout and "gqa Hq=3 Hkv=1" in result.stdout


# ---- benchmarks/hrr/bandwidth_floor.py ---------------------------------------------------------

def test_floor_bytes_are_q_k_v_and_the_output():
    assert bandwidth_floor.io_bytes(1, 8, 65536, 64, "float32") == 4 * 8 * 65536 * 64 * 4
    assert bandwidth_floor.io_bytes(2, 1, 10, 4, "bfloat16") == 4 * 2 * 10 * 4 * 2


def test_floor_script_on_the_cpu(tmp_path):
    out = tmp_path / "floor.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hrr" / "bandwidth_floor.py"), "--device",
         "cpu", "--impl", "hrr_torch,hrr_triton", "--seq-len", "512", "--dtypes", "float32",
         "--copy-mib", "16", "--min-time", "0.01", "--repeats", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["copy_bandwidth_bytes_s"] > 1e8 and data["complete"] is True
    assert not out.with_name(out.name + ".tmp").exists()
    rows = {r["impl"]: r for r in data["rows"]}
    assert rows["hrr_torch"]["status"] == "ok" and rows["hrr_torch"]["ratio"] > 1
    assert rows["hrr_torch"]["ratio"] == pytest.approx(
        rows["hrr_torch"]["time_s"] / rows["hrr_torch"]["floor_s"])
    assert rows["hrr_triton"]["status"] == "unsupported"
    assert "does not run on cpu" in rows["hrr_triton"]["message"]


def test_floor_json_is_written_row_by_row(tmp_path, monkeypatch):
    """A floor run killed at its time limit keeps the rows it measured."""
    out = tmp_path / "floor.json"
    seen = []

    def measure(name, dtype, tokens, args, bandwidth):
        seen.append(json.loads(out.read_text()))        # what a kill now would leave
        return bandwidth_floor.FloorRow(name, dtype, tokens, "ok", 1.0, 0.5, 2.0)
    monkeypatch.setattr(bandwidth_floor, "measure", measure)
    monkeypatch.setattr(bandwidth_floor, "copy_bandwidth", lambda device, mib: 1e9)
    assert bandwidth_floor.main(["--device", "cpu", "--impl", "hrr_torch", "--seq-len",
                                 "256,512", "--dtypes", "float32", "--json", str(out)]) == 0
    assert [len(s["rows"]) for s in seen] == [0, 1]
    assert not any(s["complete"] for s in seen)
    final = json.loads(out.read_text())
    assert final["complete"] and [r["seq_len"] for r in final["rows"]] == [256, 512]


@pytest.mark.parametrize("argv,message", [(["--dtypes", "float8"], "unknown dtype 'float8'"),
                                          (["--impl", "nope"], "nope"),
                                          (["--seq-len", "4K..1K"], "bad range")])
def test_floor_script_bad_input(argv, message, capsys):
    assert bandwidth_floor.main(["--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bandwidth_floor: ") and message in err
