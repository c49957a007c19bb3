"""Register the HRR benchmark variants so that run_bench.py itself measures them.

    python run_bench.py --impl-module benchmarks.hrr.register sweep \
        --impl hrr_original_port,hrr_torch_gemm,hrr_torch_fft,hrr_torch,hrr_jax \
        --seq-len 1K..64K --heads 8 --head-dim 64 --pass fwd

Each variant goes through the same correctness gate (float64 HRR reference) as hrr_torch before
it is timed. They live here, not in implementations/: the original port is the baseline of the
performance issue and the pinned formulations are for comparing formulations, not for users.
"""

from __future__ import annotations

from benchmarks.hrr.original_port import original_hrr_attention
from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, register
from implementations.hrr_torch import hrr_torch

CAPS = Capabilities(devices=("cpu", "cuda"), dtypes=("float64", "float32", "float16", "bfloat16"),
                    causal=False, key_padding_mask=True, backward=True)


@register("hrr_original_port", framework="torch", family="hrr", capabilities=CAPS)
def hrr_original_port(q, k, v, *, causal=False, key_padding_mask=None):
    """Faithful port of the original formulation (complex FFT, bind per token)."""
    if causal:
        raise UnsupportedError("hrr_original_port: HRR attention has no causal variant")
    return original_hrr_attention(q, k, v, key_padding_mask=key_padding_mask)


def _pinned(formulation: str):
    def attention(q, k, v, *, causal=False, key_padding_mask=None):
        return hrr_torch(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                         formulation=formulation)
    attention.__doc__ = f"hrr_torch pinned to the {formulation} formulation"
    return attention


for _formulation in ("gemm", "fft"):
    register(f"hrr_torch_{_formulation}", framework="torch", family="hrr",
             capabilities=CAPS)(_pinned(_formulation))
