"""HRR attention (Hrrformer, Alam et al. 2023) in torch, as defined in the paper (arXiv 2305.19534).

    beta    = sum_t bind(k_t, v_t)             bind = circular convolution
    vhat_t  = unbind(beta, q_t)                unbind = circular correlation
    a_t     = cosine(v_t, vhat_t)              guarded: dot / max(|v_t| |vhat_t|, 1e-12)
    w       = softmax_T(a)                     per head, over tokens
    o_t     = w_t * v_t

Masking (differs from the original code, which still binds padded keys into beta): masked keys
are excluded from beta and masked positions get weight 0 (an all-masked row is all 0). There is
no causal variant. GQA (Hkv < Hq): beta depends on k, v only, so it is computed once per
key/value head and read by the Hq / Hkv query heads of its group (query head h reads key/value
head h // (Hq / Hkv)); the loops index (B, Hkv, G, T, D) views of q and (B, Hkv, 1, T, D) views
of k, v, nothing is copied per query head, and the gradients of k, v sum over the group.
float16/bfloat16 inputs are computed in float32 and the output is cast back;
the output dtype is the input dtype.

Two formulations, one code path each; ``choose_formulation(device, head_dim)`` picks one:

* ``gemm`` (``hrr_scores_gemm``): circular correlation with the fixed beta of a (batch, head)
  is multiplication by the D x D matrix C[m, j] = beta[(m + j) mod D], and beta is K^T V summed
  along its wrapped diagonals, beta[j] = sum_i (K^T V)[i, (j - i) mod D]. So the scores are one
  GEMM for K^T V, one GEMM P = Q C, and row reductions dot = P.v, |P|, |v|. O(T D^2) FLOPs at
  GEMM speed. The forward and backward are written out by hand (``HRRGemm``, an
  autograd.Function): T is walked in chunks of about CHUNK_ELEMENTS per tensor, every chunk
  temporary lives in one buffer reused by all chunks (``_Scratch``), and the backward needs
  only q, k, v, C and per-token scalars (5 GEMMs: P again, dP C, Q^T dP, V dM, K dM).
* ``fft`` (``hrr_scores_fft``): real FFTs over D, beta accumulated in the frequency domain, the
  dot product and |vhat_t| from the spectra by Parseval, so no inverse transform at all.
  O(T D log D). Chunked over T as well; its backward is torch autograd.

Measured choice, CPU (2-core Xeon, AVX-512; torch 2.13, 2 threads; quiet machine, load
average ~1; B=1, H=8, float32 forward, T = 2^22 / D; median of 3 rounds; ``python
benchmarks/hrr/bench_hrr.py --dims 32,64,128,256,512 --repeats 3``), ms:

    D     T        q+k+v    gemm     fft
    32    131072     70       89      522
    64    65536      71       98      382
    128   32768      73      117      355
    256   16384      70      153      364
    512   8192       71      247      365

so on CPU ``gemm`` up to D = 512 (the largest measured; above it the D^2 GEMM work against
D log D FFT work favours ``fft`` at some point, which is where the limit sits until measured).

Where the time goes (T=65536, D=64, in-process, glibc returning freed blocks of 256 KiB and
more to the OS as the harness's workers do): each GEMM ~23 ms from memory, a fresh
(B, H, T, D) tensor ~18-24 ms of page faults on first touch, the elementwise passes the rest.
Chunk buffers are reused rather than allocated per chunk (a fresh temporary per chunk measured
140 ms forward and 460 ms forward+backward against 100 and 360 ms). Chunk sizes from 2^16 to 2^21 elements
changed forward+backward by under 3% at 2^18..2^21 (2^16: 13% slower, per-op overhead), and
keeping P from the forward instead of recomputing it gained nothing (its write and page
faults cost what the GEMM saves). torch.compile of the whole backward (Inductor, CPU) ran
260 ms, no faster than this one.
GPU: ``gemm`` for D <= 256 by the same FLOP/bandwidth argument, not measured on a GPU. No
GPU-only code (Triton, torch.compile) is included. On CUDA the GEMM loops are
``batched`` (``choose_batched``): one step per T chunk over every (batch, head) at once, since a
Python iteration per (batch, head, chunk) issuing 5-7 small kernels would be launch bound on a
GPU (about 1.5k launches at B=1, H=16, T=512K); the per-head loop stays on the CPU, where it is
what was measured above.
"""

from __future__ import annotations

import torch

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, register
from harness.contract.traits import Traits
from harness.metrics.traffic import hrr as hrr_traffic
from implementations._hrr_reasons import HRR_REASONS

COSINE_EPS = 1e-12  # cosine = dot / max(|v| |vhat|, eps): a zero vector gives 0, never NaN
CHUNK_ELEMENTS = 1 << 21  # per-tensor chunk (tokens x D) walked at once: 8 MiB in float32
CPU_GEMM_MAX_HEAD_DIM = 512  # gemm measured faster up to D=512 on CPU: see the table above
CUDA_GEMM_MAX_HEAD_DIM = 256  # not measured (no GPU at hand)
FORMULATIONS = ("gemm", "fft")
# CUDA: the GEMM formulation's loops run over T only, all (batch, head) at once (``batched``);
# a chunk is then about CUDA_CHUNK_ELEMENTS per tensor over all heads: 64 MiB in float32, a
# few microseconds of kernel time per launch at HBM bandwidth instead of one launch per head
CUDA_CHUNK_ELEMENTS = 1 << 24


def choose_formulation(device: str | torch.device, head_dim: int) -> str:
    """'gemm' or 'fft' for this device kind and head dim (pure; the numbers: module docstring)."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]
    limit = CUDA_GEMM_MAX_HEAD_DIM if kind == "cuda" else CPU_GEMM_MAX_HEAD_DIM
    return "gemm" if head_dim <= limit else "fft"


def choose_batched(device: str | torch.device) -> bool:
    """True on CUDA: chunk only along T, every (batch, head) in one batched kernel per step.

    On a GPU a Python iteration per (batch, head, chunk) issuing 5-7 small kernels is launch
    bound (about 1.5k launches at B=1, H=16, T=512K). On the CPU the per-(batch, head) 2-D
    loop is what was measured fast (module docstring) and stays.
    """
    kind = device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]
    return kind == "cuda"


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _Chunk:
    """One step of the GEMM formulation's loops over a query-side (B, Hq, T, D) shape.

    GQA by sharing: the loops index 5-D views, query side (B, Hkv, G, T, D) (``q.unflatten(1,
    (Hkv, G))``, query head h = kv * G + g) and key/value side (B, Hkv, 1, T, D)
    (``k.unsqueeze(2)``), so that the group of query heads of one key/value head reads that
    head's k, v and C; nothing of k or v is copied per query head. Per head (CPU): ``x[c.idx]``
    is a 2-D (rows, D) slice of one query head and ``x[c.kv]`` of its key/value head. Batched
    (CUDA): 5-D slices of every head, the key/value ones broadcasting over G. ``c.corr``
    indexes C (B, Hkv, 1, D, D); ``c.keep`` indexes the (B, T) keep mask so that it broadcasts
    against ``x[c.kv]``; ``c.col`` indexes a per-token (B, Hkv, G, T) tensor as a column.
    """

    __slots__ = ("idx", "kv", "corr", "keep", "col", "rows")

    def __init__(self, b, kv, g, t0: int, t1: int) -> None:
        tokens = slice(t0, t1)
        one = 0 if isinstance(b, int) else slice(None)
        self.idx = (b, kv, g, tokens)
        self.kv = (b, kv, one, tokens)
        self.corr = (b, kv, one)
        self.col = (b, kv, g, tokens, None)
        self.keep = (b, tokens, None) if isinstance(b, int) else (b, None, None, tokens, None)
        self.rows = t1 - t0


def _chunk_len(dim: int, lead: int = 1, batched: bool = False) -> int:
    if not batched:
        return max(1, CHUNK_ELEMENTS // max(1, dim))
    return max(1, CUDA_CHUNK_ELEMENTS // max(1, dim * lead))


def _chunks(shape, batched: bool = False, group: int = 1):
    """The steps over a query-side (B, Hq, T, D) shape whose query heads come in groups of
    ``group`` per key/value head: per (batch, query head) and T chunk of about CHUNK_ELEMENTS,
    or (batched) per T chunk of about CUDA_CHUNK_ELEMENTS over all heads (see _Chunk)."""
    batch, heads, tokens, dim = shape
    if batched:
        step = _chunk_len(dim, batch * heads, batched=True)
        every = slice(None)
        for t0 in range(0, tokens, step):
            yield _Chunk(every, every, every, t0, min(tokens, t0 + step))
        return
    step = _chunk_len(dim)
    for b in range(batch):
        for h in range(heads):
            for t0 in range(0, tokens, step):
                yield _Chunk(b, h // group, h % group, t0, min(tokens, t0 + step))


def _grouped(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(B, Hq, ...) -> (B, Hkv, G, ...), a view (splitting one dim never copies)."""
    return x.unflatten(1, (kv_heads, x.shape[1] // kv_heads))


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a @ b: torch.mm for 2-D chunks, a batched matmul for 5-D ones (b broadcast over
    the group dim when a has G > 1 query heads per key/value head)."""
    if a.dim() == 2:
        return torch.mm(a, b, out=out)
    if a.shape[:-2] == b.shape[:-2]:
        torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]),
                  out=out.view(-1, *out.shape[-2:]))
        return out
    return torch.matmul(a, b, out=out)


def _add_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """acc += a @ b in place, summed over the group dim when a, b have G > 1 where acc has 1
    (``acc`` must be viewable as (B*H, m, n): a slice along T of a contiguous tensor is)."""
    if acc.dim() == 2:
        return acc.addmm_(a, b)
    if a.shape[:-2] != acc.shape[:-2]:
        return acc.add_(torch.matmul(a, b).sum(dim=-3, keepdim=True))
    acc.view(-1, *acc.shape[-2:]).baddbmm_(a.reshape(-1, *a.shape[-2:]),
                                           b.reshape(-1, *b.shape[-2:]))
    return acc


class _Scratch:
    """Named chunk work buffers, allocated once per call and reused by every chunk: (rows, D)
    per head, (*lead, rows, D) batched with lead = shape[:-2] (the 5-D views' (B, Hkv, G) or
    (B, Hkv, 1)); a shorter last chunk is a contiguous view of the front.

    A fresh chunk-sized temporary per chunk is a fresh mmap (and page faults) per chunk once it
    is over glibc's mmap threshold; reusing one buffer keeps it hot in cache as well.
    """

    def __init__(self, shape, dtype: torch.dtype, device, batched: bool = False) -> None:
        self.lead = tuple(shape[:-2]) if batched else ()
        lead_size = 1
        for n in self.lead:
            lead_size *= n
        self.rows = min(shape[-2], _chunk_len(shape[-1], lead_size, batched))
        self.dim, self.dtype, self.device = shape[-1], dtype, device
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None:
            size = self.rows * self.dim
            for n in self.lead:
                size *= n
            buf = self.buffers[name] = torch.empty(size, dtype=self.dtype, device=self.device)
        if not self.lead:
            return buf[:rows * self.dim].view(rows, self.dim)
        count = rows * self.dim
        for n in self.lead:
            count *= n
        return buf[:count].view(*self.lead, rows, self.dim)

    def load(self, name: str, chunk: torch.Tensor) -> torch.Tensor:
        """chunk in the work dtype: itself when it already is, else a copy into buffer name."""
        if chunk.dtype == self.dtype:
            return chunk
        return self.get(name, chunk.shape[-2]).copy_(chunk)


def _keep_mask(key_padding_mask, batch: int, tokens: int, device) -> torch.Tensor | None:
    if key_padding_mask is None:
        return None
    return key_padding_mask.to(device=device, dtype=torch.bool).reshape(batch, tokens)


# ---- the circulant bookkeeping of the GEMM formulation ---------------------------------------

def _wrap_index(dim: int, device) -> torch.Tensor:
    """idx[i, j] = (i + j) mod D."""
    ar = torch.arange(dim, device=device)
    return (ar[:, None] + ar[None, :]) % dim


def wrapped_diagonal_sums(mat: torch.Tensor) -> torch.Tensor:
    """out[..., n] = sum over i + j = n (mod D) of mat[..., i, j]; mat (..., D, D)."""
    dim = mat.shape[-1]
    index = _wrap_index(dim, mat.device).reshape(-1).expand(*mat.shape[:-2], dim * dim)
    out = torch.zeros(*mat.shape[:-2], dim, dtype=mat.dtype, device=mat.device)
    return out.scatter_add_(-1, index, mat.reshape(*mat.shape[:-2], dim * dim))


def wrapped_matrix(vec: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = vec[..., (i + j) mod D] (symmetric); vec (..., D)."""
    return vec[..., _wrap_index(vec.shape[-1], vec.device)]


def _masked_chunk(chunk, keep, c: _Chunk, scratch: _Scratch, name: str) -> torch.Tensor:
    """A chunk slice in the work dtype with masked tokens zeroed (a copy only if needed)."""
    if keep is None:
        return scratch.load(name, chunk)
    out = scratch.get(name, c.rows)
    return torch.mul(chunk, keep[c.keep], out=out)


def beta_from_kv(k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
                 work: torch.dtype, batched: bool = False) -> torch.Tensor:
    """beta = sum_t bind(k_t, v_t) over kept tokens, via K^T V: (B, H, D) in dtype work.

    bind(k, v)[j] = sum_i k[i] v[(j - i) mod D], so beta[j] = sum_i (K^T V)[i, (j - i) mod D];
    with M = K^T V that is the sum of M[i, l] over i + l = j (mod D).
    """
    batch, heads, tokens, dim = k.shape
    if keep is None and k.dtype == work and v.dtype == work:
        mats = torch.matmul(k.transpose(-1, -2), v)       # one pass, nothing of size T kept
    else:
        mats = torch.zeros(batch, heads, 1, dim, dim, dtype=work, device=k.device)
        k5, v5 = k.unsqueeze(2), v.unsqueeze(2)
        scratch = _Scratch(k5.shape, work, k.device, batched)
        for c in _chunks(k.shape, batched):
            k_c = _masked_chunk(k5[c.kv], keep, c, scratch, "k")
            _add_mm(mats[c.corr], k_c.mT, scratch.load("v", v5[c.kv]))
        mats = mats.squeeze(2)
    return wrapped_diagonal_sums(mats)


def _gemm_score_parts(q, v, corr, work, batched: bool = False):
    """dot = P.v, |P|, |v| per token with P = Q C, walking T in chunks: three (B, Hq, T).

    q (B, Hq, T, D); v (B, Hkv, T, D) and C (B, Hkv, D, D) shared by the query heads of a
    group (GQA). P never exists beyond one chunk (a reused buffer).
    """
    batch, heads, tokens, dim = q.shape
    kv_heads = v.shape[1]
    group = heads // kv_heads
    q5, v5, corr5 = _grouped(q, kv_heads), v.unsqueeze(2), corr.unsqueeze(2)
    dot = torch.empty(batch, kv_heads, group, tokens, dtype=work, device=q.device)
    p_norm = torch.empty_like(dot)
    v_norm = torch.empty_like(dot)
    scratch = _Scratch(q5.shape, work, q.device, batched)
    kv_scratch = _Scratch(v5.shape, work, q.device, batched)
    for c in _chunks(q.shape, batched, group):
        v_c = kv_scratch.load("v", v5[c.kv])
        p_c = _mm(scratch.load("q", q5[c.idx]), corr5[c.corr], out=scratch.get("p", c.rows))
        torch.linalg.vector_norm(p_c, dim=-1, out=p_norm[c.idx])
        if batched:   # |v| once per key/value head, broadcast over the group
            v_norm[c.idx].copy_(torch.linalg.vector_norm(v_c, dim=-1))
        else:
            torch.linalg.vector_norm(v_c, dim=-1, out=v_norm[c.idx])
        torch.sum(p_c.mul_(v_c), dim=-1, out=dot[c.idx])
    return dot.flatten(1, 2), p_norm.flatten(1, 2), v_norm.flatten(1, 2)


def hrr_scores_gemm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """cosine(v_t, unbind(beta, q_t)) for every token by the GEMM formulation: (B, H, T).

    Not differentiable by itself (it is the forward of ``HRRGemm``); use ``hrr_torch``.
    """
    work = _work_dtype(q.dtype)
    keep = _keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    batched = choose_batched(q.device)
    corr = wrapped_matrix(beta_from_kv(k, v, keep, work, batched))
    dot, p_norm, v_norm = _gemm_score_parts(q, v, corr, work, batched)
    return dot / (v_norm * p_norm).clamp_min(COSINE_EPS)


# ---- the FFT formulation --------------------------------------------------------------------

def parseval_weights(dim: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weight of each rfft bin in a full-spectrum sum: 1 for DC (and Nyquist if D even), else 2."""
    weights = torch.full((dim // 2 + 1,), 2.0, dtype=dtype, device=device)
    weights[0] = 1.0
    if dim % 2 == 0:
        weights[-1] = 1.0
    return weights / dim


def hrr_scores_fft(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """cosine(v_t, unbind(beta, q_t)) for every token by rfft + Parseval: (B, H, T).

    Differentiable with torch autograd. T is walked in chunks (beta first, then the scores).
    GQA by sharing: beta's spectrum is computed once per key/value head and read by the group
    of query heads through a (B, Hkv, G, T, F) view of q's spectrum.
    """
    batch, heads, tokens, dim = q.shape
    kv_heads = k.shape[1]
    work = _work_dtype(q.dtype)
    keep = _keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    step = max(1, _chunk_len(dim) // max(1, heads))
    beta_parts = []
    for t0 in range(0, tokens, step):
        bound = torch.fft.rfft(k[:, :, t0:t0 + step].to(work), dim=-1) * \
            torch.fft.rfft(v[:, :, t0:t0 + step].to(work), dim=-1)
        if keep is not None:
            bound = bound * keep[:, None, t0:t0 + step, None].to(work)
        beta_parts.append(bound.sum(dim=-2, keepdim=True))
    beta_f = torch.stack(beta_parts, 0).sum(0).unsqueeze(2)        # (B, Hkv, 1, 1, F)
    weights = parseval_weights(dim, dtype=work, device=q.device)
    root_weights = weights.sqrt()
    parts = []
    for t0 in range(0, tokens, step):
        q_f = _grouped(torch.fft.rfft(q[:, :, t0:t0 + step].to(work), dim=-1), kv_heads)
        v_c = v[:, :, t0:t0 + step].to(work).unsqueeze(2)          # (B, Hkv, 1, t, D)
        v_f = torch.fft.rfft(v_c, dim=-1)
        vhat_f = beta_f * q_f.conj()                               # spectrum of unbind(beta, q)
        dot = ((v_f * vhat_f.conj()).real * weights).sum(-1)      # v_t . vhat_t
        vhat_norm = torch.linalg.vector_norm(vhat_f * root_weights, dim=-1)  # 0 grad at 0
        v_norm = torch.linalg.vector_norm(v_c, dim=-1)
        parts.append((dot / (v_norm * vhat_norm).clamp_min(COSINE_EPS)).flatten(1, 2))
    return torch.cat(parts, dim=-1)


# ---- softmax, output, and the GEMM forward/backward -----------------------------------------

def hrr_weights(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Softmax over tokens; masked positions get weight exactly 0 (all-masked rows: all 0)."""
    if keep is None:
        return torch.softmax(scores, dim=-1)
    keep = keep[:, None, :]
    # an all-masked row softmaxes zeros instead of -inf (no NaN, also not in autograd)
    scores = scores.masked_fill(~keep, float("-inf")).masked_fill(~keep.any(-1, keepdim=True), 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)


def _weighted_values(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """o = w * v into one fresh (B, Hq, T, D) tensor of v's dtype (computed in w's dtype, cast
    once); weights (B, Hq, T), v (B, Hkv, T, D) broadcast over each group of query heads."""
    kv_heads = v.shape[1]
    out = v.new_empty(weights.shape + v.shape[-1:])
    torch.mul(_grouped(weights, kv_heads).unsqueeze(-1), v.unsqueeze(2),
              out=_grouped(out, kv_heads))
    return out


def gemm_forward(ctx, q, k, v, keep, score_parts, batched: bool = False):
    """The GEMM formulation's forward; ``score_parts(q, v, C, work) -> (dot, |P|, |v|)`` is
    the one step that has another implementation (hrr_triton's fused kernel). ``batched``:
    the loops over T take every (batch, head) at once (CUDA), also in the backward."""
    work = _work_dtype(q.dtype)
    corr = wrapped_matrix(beta_from_kv(k, v, keep, work, batched))
    dot, p_norm, v_norm = score_parts(q, v, corr, work)
    denom = v_norm * p_norm
    scores = dot / denom.clamp_min(COSINE_EPS)
    weights = hrr_weights(scores, keep)
    ctx.save_for_backward(q, k, v, keep, corr, scores, weights, p_norm, v_norm, denom)
    ctx.batched = batched
    return _weighted_values(weights, v)


class HRRGemm(torch.autograd.Function):
    """HRR attention by the GEMM formulation with a hand-written, chunked backward."""

    @staticmethod
    def forward(ctx, q, k, v, keep, batched=False):
        return gemm_forward(ctx, q, k, v, keep,
                            lambda q_, v_, c_, w_: _gemm_score_parts(q_, v_, c_, w_, batched),
                            batched)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, keep, corr, scores, weights, p_norm, v_norm, denom = ctx.saved_tensors
        batched = getattr(ctx, "batched", False)
        work = corr.dtype
        kv_heads = k.shape[1]
        group = q.shape[1] // kv_heads
        # GQA by sharing: 5-D views, query side (B, Hkv, G, T, D), key/value side (B, Hkv, 1,
        # T, D); the gradients of k, v (and C) sum over the group of query heads
        q5, k5, v5, dout5 = _grouped(q, kv_heads), k.unsqueeze(2), v.unsqueeze(2), \
            _grouped(grad_out, kv_heads)
        corr5 = corr.unsqueeze(2)
        scratch = _Scratch(q5.shape, work, q.device, batched)
        kv_scratch = _Scratch(k5.shape, work, q.device, batched)
        # softmax: g_t = dO_t . v_t, ds = w (g - sum w g)   (w = 0 where masked, so ds = 0 there)
        g = torch.empty_like(scores)
        g5 = _grouped(g, kv_heads)
        for c in _chunks(q.shape, batched, group):
            prod = torch.mul(scratch.load("dout", dout5[c.idx]),
                             kv_scratch.load("v", v5[c.kv]), out=scratch.get("prod", c.rows))
            torch.sum(prod, dim=-1, out=g5[c.idx])
        g.sub_((weights * g).sum(-1, keepdim=True)).mul_(weights)      # g is now ds
        d_dot, c_p, c_v = (_grouped(x, kv_heads) for x in
                           _cosine_backward(g, scores, denom, p_norm, v_norm))
        weights5 = _grouped(weights, kv_heads)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        # contiguous: a T-slice of each is then a (B*H, rows, D) view for the batched GEMMs
        fresh = dict(dtype=work, memory_format=torch.contiguous_format)
        dq = torch.empty_like(q, **fresh) if need_q else None
        dq5 = None if dq is None else _grouped(dq, kv_heads)
        dv = (torch.empty_like if group == 1 else torch.zeros_like)(v, **fresh)
        dv5 = dv.unsqueeze(2)
        d_corr = torch.zeros_like(corr5)
        # P = Q C is recomputed (one GEMM per chunk into a reused buffer): storing it in the
        # forward cost a (B, H, T, D) tensor written and read back, which measured slower
        for c in _chunks(q.shape, batched, group):
            q_c = scratch.load("q", q5[c.idx])
            v_c = kv_scratch.load("v", v5[c.kv])
            p_c = _mm(q_c, corr5[c.corr], out=scratch.get("p", c.rows))
            d_dot_c, c_p_c, c_v_c = (x[c.col] for x in (d_dot, c_p, c_v))
            dp_c = torch.mul(v_c, d_dot_c, out=scratch.get("dp", c.rows)).addcmul_(p_c, c_p_c)
            if need_q:
                _mm(dp_c, corr5[c.corr], out=dq5[c.idx])
            _add_mm(d_corr[c.corr], q_c.mT, dp_c)
            if group == 1:
                dv_c = torch.mul(dout5[c.idx], weights5[c.col], out=dv5[c.kv])
            else:   # this query head's share, added into its key/value head's gradient
                dv_c = torch.mul(dout5[c.idx], weights5[c.col], out=scratch.get("dv", c.rows))
            dv_c.addcmul_(p_c, d_dot_c).addcmul_(v_c, c_v_c)
            if group > 1:
                dv5[c.kv].add_(dv_c.sum(dim=-3, keepdim=True) if batched else dv_c)
        # C = wrapped_matrix(beta): dbeta[n] = sum over i + j = n of dC[i, j]; beta from M = K^T V
        # gives dM[i, l] = dbeta[(i + l) mod D] (symmetric): dK = V dM (masked), dV += K dM.
        d_mat = wrapped_matrix(wrapped_diagonal_sums(d_corr))
        dk = torch.empty_like(k, **fresh) if need_k else None
        dk5 = None if dk is None else dk.unsqueeze(2)
        for c in _chunks(k.shape, batched):
            if need_k:
                dk_c = _mm(kv_scratch.load("v", v5[c.kv]), d_mat[c.corr], out=dk5[c.kv])
                if keep is not None:
                    dk_c.mul_(keep[c.keep])
            if need_v:
                k_c = _masked_chunk(k5[c.kv], keep, c, kv_scratch, "k")
                _add_mm(dv5[c.kv], k_c, d_mat[c.corr])
        if q.dtype != work:
            dq = None if dq is None else dq.to(q.dtype)
            dk = None if dk is None else dk.to(k.dtype)
        return dq, dk, (dv.to(v.dtype) if need_v else None), None, None


def _cosine_backward(ds, scores, denom, p_norm, v_norm):
    """Per-token coefficients of s = dot / max(|v||p|, eps) given ds: (d_dot, c_p, c_v).

    ds/dp = d_dot v + c_p p and ds/dv = d_dot p + c_v v (times ds); the clamp gives the same
    subgradient as torch's clamp_min (0 through the norms where |v||p| < eps).
    """
    inv = denom.clamp_min(COSINE_EPS).reciprocal_()
    d_dot = ds * inv
    coef = (d_dot * scores).neg_().masked_fill_(denom < COSINE_EPS, 0.0)
    c_p = coef * v_norm / p_norm.clamp_min(COSINE_EPS)
    c_v = coef.mul_(p_norm).div_(v_norm.clamp_min(COSINE_EPS))
    return d_dot, c_p, c_v


def _hrr_fft(q, k, v, keep):
    work = _work_dtype(q.dtype)
    scores = hrr_scores_fft(q, k, v, keep)
    weights = hrr_weights(scores, keep)
    if torch.is_grad_enabled() and (weights.requires_grad or v.requires_grad):
        kv_heads = v.shape[1]     # GQA: w (B, Hkv, G, T, 1) * v (B, Hkv, 1, T, D), no copy of v
        out = _grouped(weights, kv_heads).unsqueeze(-1) * v.to(work).unsqueeze(2)
        return out.flatten(1, 2).to(v.dtype)
    return _weighted_values(weights, v)


@register("hrr_torch", framework="torch", family="hrr",
          traits=Traits(memory="linear"),
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=False, key_padding_mask=True, backward=True,
                                    gqa=True, reasons=HRR_REASONS,
                                    paths=(("gqa", "beta = sum_t bind(k_t, v_t) computed once "
                                                   "per key/value head and read by its group "
                                                   "of query heads (no copy of k, v)"),)),
          traffic=hrr_traffic)
def hrr_torch(q, k, v, *, causal=False, key_padding_mask=None, formulation: str | None = None,
              batched: bool | None = None):
    """HRR attention; ``formulation`` ('gemm' or 'fft') overrides choose_formulation, and
    ``batched`` (the GEMM loops over T only, all heads at once) overrides choose_batched."""
    if causal:
        raise UnsupportedError("hrr_torch: HRR attention has no causal variant")
    if q.shape[-2] != k.shape[-2]:
        raise UnsupportedError("hrr_torch: HRR needs Tq == Tk")
    if q.shape[1] % k.shape[1] or v.shape[1] != k.shape[1]:
        raise ValueError(f"hrr_torch: query heads {q.shape[1]} not a multiple of key/value "
                         f"heads {k.shape[1]} (v: {v.shape[1]})")
    # GQA: query head h reads key/value head h // (Hq / Hkv); beta is computed once per
    # key/value head and shared by its group of query heads (no copy of k or v)
    formulation = formulation or choose_formulation(q.device, q.shape[-1])
    if formulation not in FORMULATIONS:
        raise ValueError(f"hrr_torch: unknown formulation {formulation!r}; "
                         f"valid: {', '.join(FORMULATIONS)}")
    keep = _keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    if formulation == "fft":
        return _hrr_fft(q, k, v, keep)
    return HRRGemm.apply(q, k, v, keep, choose_batched(q.device) if batched is None
                         else bool(batched))
