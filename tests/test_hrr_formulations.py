"""Every HRR formulation (torch gemm/fft, JAX gemm/fft, the original-formulation port) against
the float64 reference ``harness.contract.reference.hrr_attention``; gradients; the formulation choice."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import harness
from benchmarks.hrr.original_port import original_hrr_attention
from harness.errors import UnsupportedError
from harness.contract.reference import hrr_attention
from implementations import hrr_torch as ht

TOL32 = 1e-5


def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    scale = np.abs(ref).max()
    return float(np.abs(out - ref).max() / scale) if scale > 0 else float(np.abs(out).max())


def make(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(3)]


def masks(batch, tokens, seed=0):
    rng = np.random.default_rng(seed + 100)
    random = rng.random((batch, tokens)) > 0.35
    random[:, 0] = True
    some_empty = random.copy()
    some_empty[0] = False                                 # an all-masked row: all-zero output
    return {"none": None, "random": random, "row_all_masked": some_empty}


def torch_run(form, q, k, v, mask):
    t = [torch.from_numpy(x) for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    return ht.hrr_torch(*t, key_padding_mask=m, formulation=form).numpy()


def jax_run(form, q, k, v, mask):
    from implementations import hrr_jax as hj
    return np.asarray(hj.hrr_jax(q, k, v, key_padding_mask=mask, formulation=form))


def port_run(_form, q, k, v, mask):
    t = [torch.from_numpy(x) for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    return original_hrr_attention(*t, key_padding_mask=m).numpy()


RUNNERS = {"torch-gemm": (torch_run, "gemm"), "torch-fft": (torch_run, "fft"),
           "jax-gemm": (jax_run, "gemm"), "jax-fft": (jax_run, "fft"),
           "original-port": (port_run, None)}


def runner(name):
    if name.startswith("jax"):
        pytest.importorskip("jax")
    return RUNNERS[name]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 tokens at D=5..8 so that every chunk loop runs several, uneven steps."""
    monkeypatch.setattr(ht, "CHUNK_ELEMENTS", 24)


# odd and even D; JAX only at D=5 and 64 (each JAX case is a compilation)
CASES = [(name, dim) for name in RUNNERS for dim in (1, 5, 8, 64)
         if not (name.startswith("jax") and dim in (1, 8))]


@pytest.mark.parametrize("name,dim", CASES)
@pytest.mark.parametrize("mask_kind", ["none", "random", "row_all_masked"])
def test_matches_reference_float32(name, dim, mask_kind, small_chunks):
    fn, form = runner(name)
    q, k, v = make((2, 3, 11, dim), seed=dim)
    mask = masks(2, 11)[mask_kind]
    ref = hrr_attention(q, k, v, key_padding_mask=mask)
    out = fn(form, q, k, v, mask)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert rel_err(out, ref) <= TOL32
    if mask is not None:
        assert np.all(out[~np.broadcast_to(mask[:, None, :, None], out.shape)] == 0)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_single_token_and_zero_vectors(name):
    fn, form = runner(name)
    q, k, v = make((1, 2, 1, 6))
    assert rel_err(fn(form, q, k, v, None), hrr_attention(q, k, v)) <= TOL32   # T = 1
    q, k, v = make((2, 2, 7, 6), seed=3)
    q[0, 0] = 0.0          # vhat = 0 for a whole head
    k[1] = 0.0             # beta = 0 for a batch: every vhat = 0
    v[0, 1, 2] = 0.0       # one zero value vector
    out = fn(form, q, k, v, None)
    assert np.isfinite(out).all()
    assert rel_err(out, hrr_attention(q, k, v)) <= TOL32


def test_large_d_and_long_t_both_formulations():
    q, k, v = make((1, 2, 300, 128), seed=5)
    ref = hrr_attention(q, k, v)
    for form in ht.FORMULATIONS:
        assert rel_err(torch_run(form, q, k, v, None), ref) <= TOL32


def test_numpy_entry_point_and_noncontiguous_layout():
    q, k, v = make((2, 4, 9, 16), seed=7)
    mask = masks(2, 9)["random"]
    ref = hrr_attention(q, k, v, key_padding_mask=mask)
    assert rel_err(harness.attention("hrr_torch", q, k, v, key_padding_mask=mask), ref) <= TOL32
    if importlib.util.find_spec("jax") is not None:
        assert rel_err(harness.attention("hrr_jax", q, k, v, key_padding_mask=mask),
                       ref) <= TOL32
    # (B, T, H, D) storage seen as (B, H, T, D), as projections usually produce it
    tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3))).transpose(1, 2)
                  for x in (q, k, v))
    for form in ht.FORMULATIONS:
        out = ht.hrr_torch(tq, tk, tv, key_padding_mask=torch.from_numpy(mask), formulation=form)
        assert rel_err(out.numpy(), ref) <= TOL32


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("form", ht.FORMULATIONS)
def test_half_precision_keeps_dtype(dtype, tol, form):
    q, k, v = make((1, 2, 10, 8), seed=11)
    t = [torch.from_numpy(x).to(dtype) for x in (q, k, v)]
    out = ht.hrr_torch(*t, formulation=form)
    assert out.dtype == dtype
    ref = hrr_attention(*(x.float().numpy() for x in t))
    assert rel_err(out.float().numpy(), ref) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_half_precision_gradients_follow_float32(dtype, tol, small_chunks):
    """fp16/bf16 chunks are converted into float32 work buffers in the backward too."""
    q, k, v = make((1, 2, 10, 8), seed=12)
    m = torch.from_numpy(masks(1, 10)["random"])
    grad = torch.from_numpy(make((1, 2, 10, 8), seed=13)[0]).to(dtype)
    half = [torch.from_numpy(x).to(dtype).requires_grad_() for x in (q, k, v)]
    full = [x.detach().float().requires_grad_() for x in half]
    ht.hrr_torch(*half, key_padding_mask=m, formulation="gemm").backward(grad)
    ht.hrr_torch(*full, key_padding_mask=m, formulation="gemm").backward(grad.float())
    for got, ref in zip(half, full):
        assert got.grad.dtype == dtype
        assert rel_err(got.grad.float().numpy(), ref.grad.numpy().astype(np.float64)) <= tol


def test_causal_and_bad_formulation_are_refused():
    t = [torch.zeros(1, 1, 2, 4) for _ in range(3)]
    with pytest.raises(UnsupportedError):
        ht.hrr_torch(*t, causal=True)
    with pytest.raises(ValueError):
        ht.hrr_torch(*t, formulation="nope")


# ---- gradients ------------------------------------------------------------------------------

def reference_torch64(q, k, v, mask):
    """The definition in float64 torch, by explicit circular convolution (no FFT) and a softmax
    that gives all-masked rows weight 0 with finite gradients: the autograd reference."""
    dim = q.shape[-1]
    ar = torch.arange(dim)
    minus = (ar[:, None] - ar[None, :]) % dim                   # [j, i] = (j - i) mod D
    bound = torch.einsum("...i,...ji->...j", k, v[..., minus])  # bind(k_t, v_t)
    if mask is not None:
        bound = bound * mask[:, None, :, None]
    beta = bound.sum(-2, keepdim=True)
    vhat = torch.einsum("...i,...ji->...j", beta.expand_as(q), q[..., minus.T])  # unbind
    norms = torch.linalg.vector_norm(v, dim=-1) * torch.linalg.vector_norm(vhat, dim=-1)
    scores = (v * vhat).sum(-1) / norms.clamp_min(ht.COSINE_EPS)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    top = scores.amax(-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    expo = torch.exp(scores - top)
    weights = expo / expo.sum(-1, keepdim=True).clamp_min(1e-300)
    return weights[..., None] * v


def reference_autograd(q, k, v, mask):
    """Output and gradients (for a fixed random output gradient) of reference_torch64."""
    t = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    out = reference_torch64(*t, m)
    grad = torch.from_numpy(np.random.default_rng(99).standard_normal(out.shape))
    out.backward(grad)
    return out.detach().numpy(), [x.grad.numpy() for x in t], grad


def test_autograd_reference_is_the_reference():
    q, k, v = make((2, 2, 6, 5), seed=41, dtype=np.float64)
    for mask in masks(2, 6).values():
        out, grads, _ = reference_autograd(q, k, v, mask)
        assert rel_err(out, hrr_attention(q, k, v, key_padding_mask=mask)) <= 1e-12
        assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("form", ht.FORMULATIONS)
@pytest.mark.parametrize("mask_kind", ["none", "random"])
def test_gradcheck_float64(form, mask_kind, monkeypatch):
    if form == "gemm":  # several chunks through the hand-written backward
        monkeypatch.setattr(ht, "CHUNK_ELEMENTS", 15)
    q, k, v = (torch.tensor(x, dtype=torch.float64, requires_grad=True)
               for x in make((1, 2, 6, 5), seed=13, dtype=np.float64))
    mask = masks(1, 6, seed=2)[mask_kind]
    m = None if mask is None else torch.from_numpy(mask)
    assert torch.autograd.gradcheck(
        lambda a, b, c: ht.hrr_torch(a, b, c, key_padding_mask=m, formulation=form), (q, k, v),
        fast_mode=True)


@pytest.mark.parametrize("form", ht.FORMULATIONS)
@pytest.mark.parametrize("mask_kind", ["none", "random", "row_all_masked"])
@pytest.mark.parametrize("dim", [7, 16])
def test_float32_gradients_match_float64_autograd(form, mask_kind, dim, small_chunks):
    q, k, v = make((2, 2, 13, dim), seed=dim + 1)
    mask = masks(2, 13, seed=dim)[mask_kind]
    _, ref_grads, grad = reference_autograd(q, k, v, mask)
    t = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    ht.hrr_torch(*t, key_padding_mask=m, formulation=form).backward(grad.float())
    for got, ref in zip(t, ref_grads):
        assert rel_err(got.grad.numpy(), ref) <= 1e-4


@pytest.mark.parametrize("form", ht.FORMULATIONS)
def test_gradients_partial_requires_grad_and_zero_vectors(form):
    q, k, v = make((1, 2, 5, 6), seed=21)
    q[0, 0, 1] = 0.0                          # |vhat| = 0: the guarded cosine, finite gradient
    v[0, 1, 3] = 0.0
    _, ref_grads, grad = reference_autograd(q, k, v, None)
    for which in range(3):
        t = [torch.from_numpy(x).requires_grad_(i == which) for i, x in enumerate((q, k, v))]
        ht.hrr_torch(*t, formulation=form).backward(grad.float())
        got = t[which].grad.numpy()
        assert np.isfinite(got).all()
        assert rel_err(got, ref_grads[which]) <= 1e-4


def test_jax_gradients_match_float64_autograd():
    jax = pytest.importorskip("jax")
    from implementations import hrr_jax as hj
    q, k, v = make((1, 2, 9, 8), seed=31)
    mask = masks(1, 9)["random"]
    _, ref_grads, grad = reference_autograd(q, k, v, mask)
    for form in hj.FORMULATIONS:
        def loss(a, b, c):
            out = hj.hrr_jax(a, b, c, key_padding_mask=mask, formulation=form)
            return (out * grad.numpy().astype(np.float32)).sum()
        grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
        for got, ref in zip(grads, ref_grads):
            assert rel_err(np.asarray(got), ref) <= 1e-4


def test_jax_gradients_finite_and_right_with_zero_vectors():
    """The guarded cosine's select must not leak the inf of the branch it does not take."""
    jax = pytest.importorskip("jax")
    from implementations import hrr_jax as hj
    q, k, v = make((1, 2, 5, 6), seed=21)
    q[0, 0, 1] = 0.0                          # |vhat| = 0 for one token
    v[0, 1, 3] = 0.0                          # and |v| = 0 for another
    _, ref_grads, grad = reference_autograd(q, k, v, None)
    for form in hj.FORMULATIONS:
        def loss(a, b, c):
            out = hj.hrr_jax(a, b, c, formulation=form)
            return (out * grad.numpy().astype(np.float32)).sum()
        grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
        for got, ref in zip(grads, ref_grads):
            assert np.isfinite(np.asarray(got)).all()
            assert rel_err(np.asarray(got), ref) <= 1e-4


# ---- the choice -----------------------------------------------------------------------------

def test_choose_formulation_is_pure_and_by_device_and_dim():
    assert ht.choose_formulation("cpu", 64) == "gemm"
    assert ht.choose_formulation(torch.device("cpu"), 64) == "gemm"
    assert ht.choose_formulation("cpu", ht.CPU_GEMM_MAX_HEAD_DIM) == "gemm"
    assert ht.choose_formulation("cpu", ht.CPU_GEMM_MAX_HEAD_DIM + 1) == "fft"
    assert ht.choose_formulation("cuda:1", ht.CUDA_GEMM_MAX_HEAD_DIM + 1) == "fft"
    assert ht.choose_formulation("cuda", 64) == "gemm"
    for d in (1, 7, 64, 4096):
        assert ht.choose_formulation("cpu", d) in ht.FORMULATIONS
        assert ht.choose_formulation("cpu", d) == ht.choose_formulation("cpu", d)


def test_jax_choose_formulation():
    pytest.importorskip("jax")
    from implementations import hrr_jax as hj
    assert hj.choose_formulation("cpu", 64) == "gemm"
    assert hj.choose_formulation("gpu", hj.CUDA_GEMM_MAX_HEAD_DIM + 1) == "fft"
    assert hj.choose_formulation("cpu", hj.CPU_GEMM_MAX_HEAD_DIM + 1) == "fft"


# ---- the CUDA-shaped (batched) GEMM loops, run on the CPU ------------------------------------

@pytest.fixture
def small_batched_chunks(monkeypatch):
    """Batched chunks of 2 tokens over all (B, H) at D <= 8: several, uneven steps."""
    monkeypatch.setattr(ht, "CUDA_CHUNK_ELEMENTS", 2 * 2 * 3 * 8)
    monkeypatch.setattr(ht, "CHUNK_ELEMENTS", 24)


def test_batched_is_chosen_on_cuda_only_and_walks_t_only():
    assert ht.choose_batched("cuda:1") and ht.choose_batched(torch.device("cuda", 0))
    assert not ht.choose_batched("cpu") and not ht.choose_batched(torch.device("cpu"))
    shape = (1, 16, 512 * 1024, 64)      # the launch-bound example: B=1, H=16, T=512K
    per_head = sum(1 for _ in ht._chunks(shape, batched=False))
    batched = list(ht._chunks(shape, batched=True))
    assert per_head == 16 * (shape[2] * 64 // ht.CHUNK_ELEMENTS)          # 256 steps
    assert len(batched) == shape[2] * 16 * 64 // ht.CUDA_CHUNK_ELEMENTS    # 32 steps
    assert all(c.idx[:2] == (slice(None), slice(None)) for c in batched)
    assert sum(c.rows for c in batched) == shape[2]


@pytest.mark.parametrize("mask_kind", ["none", "random", "row_all_masked"])
@pytest.mark.parametrize("dim", [5, 8])
def test_batched_forward_and_gradients_match_float64(mask_kind, dim, small_batched_chunks):
    q, k, v = make((2, 3, 13, dim), seed=dim + 5)
    mask = masks(2, 13, seed=dim)[mask_kind]
    ref_out, ref_grads, grad = reference_autograd(q, k, v, mask)
    t = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    out = ht.hrr_torch(*t, key_padding_mask=m, formulation="gemm", batched=True)
    assert rel_err(out.detach().numpy(), ref_out) <= TOL32
    out.backward(grad.float())
    for got, ref in zip(t, ref_grads):
        assert rel_err(got.grad.numpy(), ref) <= 1e-4


@pytest.mark.parametrize("mask_kind", ["none", "random"])
def test_batched_gradcheck_float64(mask_kind, monkeypatch):
    monkeypatch.setattr(ht, "CUDA_CHUNK_ELEMENTS", 2 * 2 * 5)     # 2 tokens a step over B*H=2
    q, k, v = (torch.tensor(x, dtype=torch.float64, requires_grad=True)
               for x in make((1, 2, 6, 5), seed=13, dtype=np.float64))
    mask = masks(1, 6, seed=2)[mask_kind]
    m = None if mask is None else torch.from_numpy(mask)
    assert torch.autograd.gradcheck(
        lambda a, b, c: ht.hrr_torch(a, b, c, key_padding_mask=m, formulation="gemm",
                                     batched=True), (q, k, v), fast_mode=True)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_batched_half_precision_and_noncontiguous_layout(dtype, tol, small_batched_chunks):
    """fp16/bf16 (K^T V and the backward through float32 work buffers) in a (B, T, H, D)
    storage: the batched path against the per-head one and the reference."""
    q, k, v = make((2, 3, 10, 8), seed=17)
    m = torch.from_numpy(masks(2, 10)["random"])
    grad = torch.from_numpy(make((2, 3, 10, 8), seed=18)[0]).to(dtype)

    def inputs():
        return [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3))).transpose(1, 2)
                .to(dtype).requires_grad_() for x in (q, k, v)]
    batched, per_head = inputs(), inputs()
    out_b = ht.hrr_torch(*batched, key_padding_mask=m, formulation="gemm", batched=True)
    out_p = ht.hrr_torch(*per_head, key_padding_mask=m, formulation="gemm", batched=False)
    assert out_b.dtype == dtype
    ref = hrr_attention(*(x.detach().float().numpy() for x in batched),
                        key_padding_mask=m.numpy())
    assert rel_err(out_b.detach().float().numpy(), ref) <= tol
    out_b.backward(grad)
    out_p.backward(grad)
    for got, other in zip(batched, per_head):
        assert got.grad.dtype == dtype and got.grad.shape == got.shape
        np.testing.assert_allclose(got.grad.float().numpy(), other.grad.float().numpy(),
                                   rtol=0, atol=1e-2 * float(other.grad.float().abs().max()))


# ---- GQA / MQA: beta shared by the query heads of a group, no copy of k, v -----------------

def reference_autograd_gqa(q, k, v, mask):
    """reference_autograd with Hkv < Hq: k, v expanded to the query heads inside the float64
    reference (query head h reads key/value head h // G), so their gradients sum over a group."""
    group = q.shape[1] // k.shape[1]
    t = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    out = reference_torch64(t[0], *(x.repeat_interleave(group, dim=1) for x in t[1:]), m)
    grad = torch.from_numpy(np.random.default_rng(98).standard_normal(out.shape))
    out.backward(grad)
    return out.detach().numpy(), [x.grad.numpy() for x in t], grad


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (3, 1)])          # GQA, MQA
@pytest.mark.parametrize("form,batched", [("gemm", False), ("gemm", True), ("fft", False)])
@pytest.mark.parametrize("mask_kind", ["none", "random", "row_all_masked"])
def test_gqa_shares_beta_and_matches_float64(heads, kv_heads, form, batched, mask_kind,
                                             small_batched_chunks):
    q = make((2, heads, 11, 6), seed=heads)[0]
    k, v = make((2, kv_heads, 11, 6), seed=heads + 50)[:2]
    mask = masks(2, 11, seed=heads)[mask_kind]
    ref_out, ref_grads, grad = reference_autograd_gqa(q, k, v, mask)
    assert rel_err(ref_out, hrr_attention(q, k, v, key_padding_mask=mask)) <= 1e-12
    t = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
    m = None if mask is None else torch.from_numpy(mask)
    with no_kv_copy_ctx():
        out = ht.hrr_torch(*t, key_padding_mask=m, formulation=form, batched=batched)
        out.backward(grad.float())
    assert out.shape == q.shape and rel_err(out.detach().numpy(), ref_out) <= TOL32
    for got, ref in zip(t, ref_grads):          # dk, dv: summed over the group of query heads
        assert got.grad.shape == got.shape and rel_err(got.grad.numpy(), ref) <= 1e-4


class no_kv_copy_ctx:
    """no_kv_copy as a context (the reference above may repeat; the implementation may not)."""

    def __enter__(self):
        self.saved = torch.Tensor.repeat_interleave, torch.repeat_interleave

        def refuse(*args, **kwargs):
            raise AssertionError("repeat_interleave called: k/v copied to the query heads")
        torch.Tensor.repeat_interleave = refuse
        torch.repeat_interleave = refuse

    def __exit__(self, *exc):
        torch.Tensor.repeat_interleave, torch.repeat_interleave = self.saved


@pytest.mark.parametrize("form", ht.FORMULATIONS)
def test_gqa_gradcheck_float64(form, monkeypatch):
    monkeypatch.setattr(ht, "CHUNK_ELEMENTS", 15)
    monkeypatch.setattr(ht, "CUDA_CHUNK_ELEMENTS", 2 * 4 * 5)
    q = torch.tensor(make((1, 4, 6, 5), seed=3, dtype=np.float64)[0], requires_grad=True)
    k, v = (torch.tensor(x, requires_grad=True)
            for x in make((1, 2, 6, 5), seed=4, dtype=np.float64)[:2])
    m = torch.from_numpy(masks(1, 6, seed=2)["random"])
    for batched in ((False, True) if form == "gemm" else (False,)):
        assert torch.autograd.gradcheck(
            lambda a, b, c: ht.hrr_torch(a, b, c, key_padding_mask=m, formulation=form,
                                         batched=batched), (q, k, v), fast_mode=True)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_gqa_half_precision_batched_matches_per_head(dtype, tol, small_batched_chunks):
    q = make((2, 4, 10, 8), seed=17)[0]
    k, v = make((2, 2, 10, 8), seed=19)[:2]
    m = torch.from_numpy(masks(2, 10)["random"])
    grad = torch.from_numpy(make((2, 4, 10, 8), seed=18)[0]).to(dtype)
    runs = []
    for batched in (True, False):
        t = [torch.from_numpy(x).to(dtype).requires_grad_() for x in (q, k, v)]
        out = ht.hrr_torch(*t, key_padding_mask=m, formulation="gemm", batched=batched)
        out.backward(grad)
        runs.append((out, t))
    (out_b, t_b), (out_p, t_p) = runs
    assert out_b.dtype == dtype
    ref = hrr_attention(*(x.detach().float().numpy() for x in t_b), key_padding_mask=m.numpy())
    assert rel_err(out_b.detach().float().numpy(), ref) <= tol
    for got, other in zip(t_b, t_p):
        assert got.grad.dtype == dtype and got.grad.shape == got.shape
        np.testing.assert_allclose(got.grad.float().numpy(), other.grad.float().numpy(),
                                   rtol=0, atol=1e-2 * float(other.grad.float().abs().max()))


def test_gqa_capability_path_says_sharing():
    impl = harness.get("hrr_torch")
    paths = dict(impl.capabilities.paths)
    assert "once per key/value head" in paths["gqa"] and "repeat" not in paths["gqa"]


@pytest.mark.parametrize("heads,kv_heads,mask_kind", [(4, 2, "random"), (3, 1, "none")])
def test_jax_gqa_shares_beta_and_matches_float64(heads, kv_heads, mask_kind, monkeypatch):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from implementations import hrr_jax as hj

    def refuse(*args, **kwargs):
        raise AssertionError("jnp.repeat called: k/v copied to the query heads")
    monkeypatch.setattr(jnp, "repeat", refuse)
    q = make((2, heads, 9, 6), seed=heads + 60)[0]
    k, v = make((2, kv_heads, 9, 6), seed=heads + 70)[:2]
    mask = masks(2, 9, seed=heads)[mask_kind]
    ref_out, ref_grads, grad = reference_autograd_gqa(q, k, v, mask)
    for form in hj.FORMULATIONS:
        out = hj.hrr_jax(q, k, v, key_padding_mask=mask, formulation=form)
        assert out.shape == q.shape and rel_err(np.asarray(out), ref_out) <= TOL32

        def loss(a, b, c):
            return (hj.hrr_jax(a, b, c, key_padding_mask=mask, formulation=form)
                    * grad.numpy().astype(np.float32)).sum()
        grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
        for got, ref in zip(grads, ref_grads):
            assert got.shape == ref.shape and rel_err(np.asarray(got), ref) <= 1e-4
    assert "once per key/value head" in dict(harness.get("hrr_jax").capabilities.paths)["gqa"]
