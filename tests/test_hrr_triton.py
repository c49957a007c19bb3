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
    assert "tf32x3: rel err" in result.stdout
    assert "64-bit offsets: the same score parts as 32-bit" in result.stdout


# ---- the tf32x3 variant and the 64-bit offsets ---------------------------------------------

def test_both_precisions_are_registered_with_their_own_gate():
    ieee, tf32x3 = harness.get("hrr_triton"), harness.get("hrr_triton_tf32x3")
    assert ieee.gate_tolerance is None                    # the default float32 gate, 2e-5
    assert tf32x3.gate_tolerance == hrr_triton.TF32_X3_GATE_TOLERANCE
    assert "tf32x3" in tf32x3.description and "IEEE" in ieee.description
    for impl in (ieee, tf32x3):
        assert impl.family == "hrr" and impl.requires == ("triton",)
        assert impl.capabilities == ieee.capabilities
        verdict = impl.supports(device="cpu", dtype="float32")
        assert not verdict and "does not run on cpu (supports cuda)" in verdict.reason


@pytest.mark.parametrize("name,precision", [("hrr_triton", "ieee"),
                                            ("hrr_triton_tf32x3", "tf32x3")])
def test_each_name_asks_the_kernel_for_its_precision(monkeypatch, name, precision):
    """The registered call reaches the kernel launcher with its input precision (the launcher
    replaced by hrr_torch's score parts: no Triton needed); the result is HRR's."""
    import numpy as np

    from harness.contract.reference import hrr_attention
    from implementations import hrr_torch

    asked = []

    def parts(q, v, corr, work, *, input_precision="ieee", wide=None):
        asked.append(input_precision)
        return hrr_torch._gemm_score_parts(q, v, corr, work, True)

    monkeypatch.setattr(hrr_triton, "interpreting", lambda: True)
    monkeypatch.setattr(hrr_triton, "triton_score_parts", parts)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 12, 8)).astype(np.float32) for _ in range(3))
    out = harness.get(name).fn(*(torch.from_numpy(x) for x in (q, k, v)))
    assert asked == [precision]
    np.testing.assert_allclose(out.numpy(), hrr_attention(q, k, v), rtol=1e-4, atol=1e-5)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="tf32x9"):
        hrr_triton.register_hrr_triton("nope", input_precision="tf32x9")
    t = torch.zeros(1, 1, 4, 8)
    with pytest.raises(ValueError, match="tf32x9"):
        hrr_triton.triton_score_parts(t, t, torch.zeros(1, 1, 8, 8), torch.float32,
                                      input_precision="tf32x9")


def meta(*shape):
    return torch.empty(*shape, device="meta")


def test_offsets_go_64_bit_where_an_index_reaches_two_to_the_31():
    block_t = hrr_triton.block_sizes(64)[0]
    # B*H*T*D = 2^31 exactly: q's last element sits at 2^31 - 1, and a block overruns it
    big = meta(8, 16, 2 ** 18, 64)
    assert big.numel() == 2 ** 31
    assert hrr_triton.wide_offsets(big, big, block_t=block_t)
    small = meta(8, 16, 2 ** 16, 64)
    assert not hrr_triton.wide_offsets(small, small, block_t=block_t)
    # just under the limit, the overrun of the last block still counts
    edge = meta(1, 1, (2 ** 31 - 64 * block_t) // 64 + 1, 64)
    assert hrr_triton.wide_offsets(edge, edge, block_t=block_t)
    # a (B, T, H, D) layout seen as (B, H, T, D): the offsets follow the strides, not the shape
    transposed = meta(8, 2 ** 18, 16, 64).transpose(1, 2)
    assert hrr_triton.wide_offsets(transposed, transposed, block_t=block_t)
    # GQA: v has fewer heads, q decides
    assert hrr_triton.wide_offsets(big, meta(8, 1, 2 ** 18, 64), block_t=block_t)
    assert hrr_triton.largest_offset((2, 3), (3, 1)) == 5


def test_more_programs_than_the_grid_takes_are_refused(monkeypatch):
    monkeypatch.setattr(hrr_triton, "interpreting", lambda: True)
    q = meta(2, 32768, 4, 8)
    with pytest.raises(UnsupportedError, match="65535"):
        hrr_triton.hrr_triton(q, q, q)


@pytest.mark.gpu
def test_tf32x3_on_cuda_is_within_its_tolerance():
    if not torch.cuda.is_available() or not HAS_TRITON:
        pytest.skip("needs a CUDA GPU and triton (tf32x3 runs on tensor cores)")
    import numpy as np

    from harness.contract.reference import hrr_attention

    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 4, 1024, 64)).astype(np.float32) for _ in range(3))
    ref = hrr_attention(q, k, v)
    t = [torch.from_numpy(x).cuda() for x in (q, k, v)]
    for name, tolerance in (("hrr_triton", 2e-5), ("hrr_triton_tf32x3",
                                                   hrr_triton.TF32_X3_GATE_TOLERANCE["float32"])):
        out = harness.get(name).fn(*t).cpu().numpy()
        assert np.abs(out - ref).max() / np.abs(ref).max() <= tolerance, name


@pytest.mark.gpu
def test_an_input_of_two_to_the_31_elements_runs_with_64_bit_offsets():
    """B*H*T*D = 2^31 (4 GiB per float16 tensor): the last batch row, where 32-bit offsets
    would wrap, equals the same row run alone."""
    if not torch.cuda.is_available() or not HAS_TRITON:
        pytest.skip("needs a CUDA GPU and triton")
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2 ** 30:
        pytest.skip("needs 40 GiB of GPU memory")
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(8, 16, 2 ** 16, 256, device="cuda", dtype=torch.float16,
                           generator=gen) for _ in range(3))
    assert hrr_triton.wide_offsets(q, v, block_t=hrr_triton.block_sizes(256)[0])
    with torch.no_grad():
        last = hrr_triton.hrr_triton(q, k, v)[-1:].float()
        alone = hrr_triton.hrr_triton(q[-1:], k[-1:], v[-1:]).float()
    torch.testing.assert_close(last, alone, rtol=2e-3, atol=2e-3)


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

    def measure(name, dtype, tokens, args, bandwidth, admitted=None):
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


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed: pip install triton to compile "
                                           "the kernel for sm_90 on the CPU")
@pytest.mark.parametrize("precision,wide", [("ieee", False), ("tf32x3", True)])
def test_kernel_compiles_for_hopper_and_tf32x3_uses_the_tensor_cores(precision, wide):
    """Triton compiles for a target without a GPU (its own ptxas): both precisions and the
    64-bit offsets build for sm_90 at D = 256; tf32x3's product is an mma, ieee's is not, and
    the shared memory stays under an H100's."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    block_t, block_d = hrr_triton.block_sizes(256)
    constants = dict(DIM=256, BLOCK_T=block_t, BLOCK_D=block_d, BLOCK_K=hrr_triton.k_block(block_d),
                     INPUT_PRECISION=precision, WIDE=wide)
    signature = {name: "*fp32" for name in ("q_ptr", "v_ptr", "c_ptr", "dot_ptr", "p_norm_ptr",
                                            "v_norm_ptr")}
    signature.update({name: "i32" for name in ("tokens", "heads", "group", "sq_b", "sq_h",
                                               "sq_t", "sq_d", "sv_b", "sv_h", "sv_t", "sv_d")})
    signature.update({name: "constexpr" for name in constants})
    compiled = triton.compile(ASTSource(hrr_triton._kernel(), signature, constexprs=constants),
                              target=GPUTarget("cuda", 90, 32))
    assert ("mma" in compiled.asm["ptx"]) == (precision == "tf32x3")
    assert compiled.metadata.shared <= hrr_triton.H100_SHARED_MEMORY_BYTES
