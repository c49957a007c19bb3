"""sdpa_flash with causal Tq != Tk: torch's lower-right CausalBias runs on the flash kernel on
CUDA, so the registry does not refuse it there; on the CPU the same call matches the float64
reference (query i sees keys j <= i + Tk - Tq)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness
from harness.contract.reference import exact_attention
from harness.contract.registry import Query


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_flash_takes_causal_with_fewer_or_more_queries(dtype):
    impl = harness.get("sdpa_flash")
    assert impl.not_supported_reasons(Query(device="cuda", dtype=dtype, causal=True,
                                            q_len=True, gqa=True, backward=True)) == []
    verdict = impl.supports(device="cuda", dtype=dtype, causal=True, q_len=True,
                            run_probe=False)
    assert not any("attn_mask" in r or "Tq != Tk" in r for r in verdict.reasons)


@pytest.mark.parametrize("feature", ["key_padding_mask", "window", "alibi", "documents"])
def test_cuda_flash_still_refuses_a_mask_tensor(feature):
    reasons = harness.get("sdpa_flash").not_supported_reasons(
        Query(device="cuda", dtype="float16", causal=True, q_len=True, **{feature: True}))
    assert len(reasons) == 1 and "attn_mask" in reasons[0]


@pytest.mark.parametrize("name", ["sdpa_flash", "sdpa_math"])
@pytest.mark.parametrize("t_q,t_k,kv_heads", [(3, 11, 2), (1, 9, 4), (7, 4, 1), (5, 5, 4)])
def test_causal_lower_right_matches_the_reference_on_cpu(name, t_q, t_k, kv_heads):
    rng = np.random.default_rng(t_q * 100 + t_k)
    q = rng.standard_normal((2, 4, t_q, 16))
    k, v = (rng.standard_normal((2, kv_heads, t_k, 16)) for _ in range(2))
    ref = exact_attention(q, k, v, causal=True)
    out = harness.get(name).fn(*(torch.from_numpy(x) for x in (q, k, v)), causal=True)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)
    if t_q > t_k:   # the first Tq - Tk queries see no key: output 0 (the reference's rule)
        assert not ref[..., : t_q - t_k, :].any()


def test_lower_right_reaches_the_flash_kernel_with_no_mask(monkeypatch):
    """Where torch's can_use_flash_attention says yes (a CUDA GPU), the pinned call with causal
    and Tq != Tk goes to aten's flash kernel with is_causal=True and no mask tensor."""
    import torch.nn.attention.bias as bias

    calls = []

    def flash(q, k, v, dropout_p, is_causal, return_debug_mask, scale):
        calls.append({"q": tuple(q.shape), "k": tuple(k.shape), "is_causal": is_causal})
        t_q, t_k = q.shape[-2], k.shape[-2]
        allowed = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)
        heads = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(heads, 1), v.repeat_interleave(heads, 1)
        scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
        return (torch.softmax(scores, -1).nan_to_num(0.0) @ v,)

    monkeypatch.setattr(bias, "can_use_flash_attention", lambda params: True)
    monkeypatch.setattr(torch.ops.aten, "_scaled_dot_product_flash_attention", flash)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 4, 3, 16))
    k, v = (rng.standard_normal((1, 2, 10, 16)) for _ in range(2))
    out = harness.get("sdpa_flash").fn(*(torch.from_numpy(x) for x in (q, k, v)), causal=True)
    assert calls == [{"q": (1, 4, 3, 16), "k": (1, 2, 10, 16), "is_causal": True}]
    np.testing.assert_allclose(out.numpy(), exact_attention(q, k, v, causal=True), rtol=1e-10)


@pytest.mark.gpu
def test_sdpa_flash_causal_decode_on_cuda_matches_the_reference():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (the flash kernel's lower-right causal)")
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 8, 16, 64))
    k, v = (rng.standard_normal((2, 2, 1024, 64)) for _ in range(2))
    ref = exact_attention(q, k, v, causal=True)
    t = [torch.from_numpy(x).to("cuda", torch.float16) for x in (q, k, v)]
    out = harness.get("sdpa_flash").fn(*t, causal=True).float().cpu().numpy()
    assert np.abs(out - ref).max() / np.abs(ref).max() < 5e-3
