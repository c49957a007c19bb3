"""Checks of hrr_triton's kernel in Triton's interpreter, on CPU tensors.

Run by tests/test_hrr_triton.py in a subprocess with TRITON_INTERPRET=1 (the variable must be
set before the kernel is built, so it cannot be switched on inside a pytest process that may
already have built it). Exits non-zero with the first failed check; prints one line per check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.contract.reference import hrr_attention
from implementations import hrr_torch, hrr_triton  # noqa: E402


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def main() -> int:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    rng = np.random.default_rng(0)
    cases = [((2, 3, 37, 5), "random"), ((1, 2, 300, 64), "none"),
             ((2, 1, 20, 130), "row_all_masked"), ((1, 2, 17, 16), "random"),
             ((1, 2, 40, 256), "random")]  # D = 256: the K loop in 8 steps of 32
    for shape, mask_kind in cases:
        q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
        mask = None
        if mask_kind != "none":
            mask = rng.random((shape[0], shape[2])) > 0.3
            mask[:, 0] = True
            if mask_kind == "row_all_masked":
                mask[0] = False
        mask_t = None if mask is None else torch.from_numpy(mask)
        ref = hrr_attention(q, k, v, key_padding_mask=mask)
        # a non-contiguous layout: (B, T, H, D) memory seen as (B, H, T, D)
        t = [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3))).transpose(1, 2)
             for x in (q, k, v)]
        out = hrr_triton.hrr_triton(*t, key_padding_mask=mask_t)
        err = rel_err(out.numpy(), ref)
        print(f"forward {shape} mask={mask_kind}: rel err {err:.2e}")
        assert err <= 1e-5, err
        half = hrr_triton.hrr_triton(*(x.to(torch.float16) for x in t), key_padding_mask=mask_t)
        assert half.dtype == torch.float16
        assert rel_err(half.float().numpy(), ref) <= 5e-3
        # gradients: the same as hrr_torch's (the backward is shared, the forward's parts not)
        grad = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        a = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
        b = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
        hrr_torch.hrr_torch(*a, key_padding_mask=mask_t, formulation="gemm").backward(grad)
        hrr_triton.hrr_triton(*b, key_padding_mask=mask_t).backward(grad)
        errs = [rel_err(y.grad.numpy(), x.grad.numpy()) for x, y in zip(a, b)]
        print(f"  gradients vs hrr_torch: {', '.join(f'{e:.1e}' for e in errs)}")
        assert max(errs) <= 1e-5, errs
    assert hrr_triton.k_block(hrr_triton.block_sizes(256)[1]) == 32
    # GQA (Hq 4, Hkv 2) and MQA (Hq 3, Hkv 1): the kernel reads key/value head h // group
    for heads, kv_heads in ((4, 2), (3, 1)):
        q = rng.standard_normal((2, heads, 19, 16)).astype(np.float32)
        k, v = (rng.standard_normal((2, kv_heads, 19, 16)).astype(np.float32) for _ in range(2))
        mask = rng.random((2, 19)) > 0.3
        mask_t = torch.from_numpy(mask)
        err = rel_err(hrr_triton.hrr_triton(*(torch.from_numpy(x) for x in (q, k, v)),
                                            key_padding_mask=mask_t).numpy(),
                      hrr_attention(q, k, v, key_padding_mask=mask))
        grad = torch.from_numpy(rng.standard_normal(q.shape).astype(np.float32))
        a = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
        b = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
        hrr_torch.hrr_torch(*a, key_padding_mask=mask_t, formulation="gemm").backward(grad)
        hrr_triton.hrr_triton(*b, key_padding_mask=mask_t).backward(grad)
        errs = [rel_err(y.grad.numpy(), x.grad.numpy()) for x, y in zip(a, b)]
        print(f"gqa Hq={heads} Hkv={kv_heads}: rel err {err:.2e}, "
              f"grads vs hrr_torch {', '.join(f'{e:.1e}' for e in errs)}")
        assert err <= 1e-5 and max(errs) <= 1e-5, (err, errs)
    # tf32x3 (the interpreter accepts it and computes in float32: this checks the plumbing;
    # its tensor-core numerics are a GPU test) and the 64-bit offsets, forced on a small input
    q, k, v = (rng.standard_normal((2, 4, 33, 24)).astype(np.float32) for _ in range(3))
    k, v = k[:, :2], v[:, :2]
    ref = hrr_attention(q, k, v)
    t = [torch.from_numpy(np.ascontiguousarray(x)) for x in (q, k, v)]
    err = rel_err(hrr_triton.hrr_triton(*t, input_precision="tf32x3").numpy(), ref)
    print(f"tf32x3: rel err {err:.2e}")
    assert err <= hrr_triton.TF32_X3_GATE_TOLERANCE["float32"], err
    corr = torch.from_numpy(rng.standard_normal((2, 2, 24, 24)).astype(np.float32))
    narrow = hrr_triton.triton_score_parts(t[0], t[2], corr, torch.float32, wide=False)
    wide = hrr_triton.triton_score_parts(t[0], t[2], corr, torch.float32, wide=True)
    assert all(torch.equal(a, b) for a, b in zip(narrow, wide))
    print("64-bit offsets: the same score parts as 32-bit")
    zero = torch.zeros(1, 1, 8, 16)
    out = hrr_triton.hrr_triton(zero, zero, zero)
    assert torch.isfinite(out).all() and (out == 0).all()
    print("zero inputs: finite, all zero")
    return 0


if __name__ == "__main__":
    sys.exit(main())
