"""float64 numpy references: the yardsticks every implementation is checked against.

Pure functions, no framework: exact softmax attention and HRR attention with attnbench's
conventions (key_padding_mask True = keep; a query that sees no key outputs 0; HRR excludes
masked keys from beta and gives masked positions weight 0).
"""

from __future__ import annotations

import numpy as np

from harness.contract.masking import Window, alibi_bias, allowed_mask

HRR_COSINE_EPS = 1e-12


def allowed_keys(t_q: int, t_k: int, *, causal: bool,
                 key_padding_mask: np.ndarray | None, window: Window | None = None,
                 document_ids: np.ndarray | None = None,
                 q_lengths: np.ndarray | None = None,
                 kv_lengths: np.ndarray | None = None) -> np.ndarray | None:
    """(B or 1, 1, Tq, Tk) boolean mask, bottom-right aligned (see harness.contract.masking)."""
    return allowed_mask(t_q, t_k, causal=causal, window=window, document_ids=document_ids,
                        key_padding_mask=key_padding_mask, q_lengths=q_lengths,
                        kv_lengths=kv_lengths)


def expand_kv_heads(x: np.ndarray, q_heads: int) -> np.ndarray:
    """(B, Hkv, T, D) -> (B, Hq, T, D): query head h reads key/value head h // (Hq / Hkv)."""
    heads = x.shape[1]
    if q_heads % heads:
        raise ValueError(f"query heads {q_heads} not a multiple of key/value heads {heads}")
    return np.repeat(x, q_heads // heads, axis=1)


def exact_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool = False,
                    key_padding_mask: np.ndarray | None = None, window: Window | None = None,
                    alibi_slopes: np.ndarray | None = None,
                    document_ids: np.ndarray | None = None,
                    rows: np.ndarray | None = None, softcap: float = 0.0,
                    sinks: np.ndarray | None = None,
                    q_lengths: np.ndarray | None = None,
                    kv_lengths: np.ndarray | None = None) -> np.ndarray:
    """softmax(cap(Q K^T / sqrt(D)) + ALiBi) V in float64 over the allowed pairs; GQA by
    sharing. ``rows``: only these query rows (positions in q; masks and biases keep each row's
    place). ``softcap`` > 0: the scaled scores become cap * tanh(s / cap) before ALiBi, the mask
    and the softmax (Gemma 2's order; FlashAttention adds ALiBi after its softcap too).
    ``sinks`` (Hq,): sink logits, one term exp(sink_h) in every row's denominator of head h
    and no value (gpt-oss). ``q_lengths``, ``kv_lengths``: a ragged batch, right-aligned
    (harness.contract.ragged); a paged cache's reference is this dense attention of the
    gathered keys and values."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    t_q = q.shape[-2]
    picked = slice(None) if rows is None else np.asarray(rows)
    k, v = expand_kv_heads(k, q.shape[1]), expand_kv_heads(v, q.shape[1])
    scores = q[..., picked, :] @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    scores = capped_scores(scores, softcap)
    if alibi_slopes is not None:
        scores = scores + alibi_bias(t_q, k.shape[-2], alibi_slopes)[..., picked, :]
    allowed = allowed_keys(t_q, k.shape[-2], causal=causal,
                           key_padding_mask=key_padding_mask, window=window,
                           document_ids=document_ids, q_lengths=q_lengths,
                           kv_lengths=kv_lengths)
    if allowed is not None:
        scores = np.where(allowed[..., picked, :], scores, -np.inf)
    if sinks is not None:
        return softmax_with_sinks(scores, sinks) @ v
    top = scores.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(scores - top)
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return weights @ v


def capped_scores(scores: np.ndarray, softcap: float) -> np.ndarray:
    """cap * tanh(s / cap) for a cap > 0 (logit softcapping); the scores as they are for 0."""
    if not softcap:
        return scores
    return softcap * np.tanh(scores / softcap)


def softmax_with_sinks(scores: np.ndarray, sinks: np.ndarray) -> np.ndarray:
    """Row weights exp(s_ij) / (exp(sink_h) + sum_j exp(s_ij)) of (B, Hq, Tq, Tk) scores
    (-inf: masked) and (Hq,) sink logits; a row without keys weighs nothing (output 0)."""
    sink = np.asarray(sinks, dtype=np.float64)[None, :, None, None]
    top = np.maximum(scores.max(axis=-1, keepdims=True), sink)
    weights = np.exp(scores - top)
    total = weights.sum(axis=-1, keepdims=True) + np.exp(sink - top)
    return weights / total


def hrr_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *,
                  key_padding_mask: np.ndarray | None = None) -> np.ndarray:
    """HRR attention (Alam et al., ICML 2023) in float64, by explicit circular convolution.
    GQA by sharing: query head h reads key/value head h // (Hq / Hkv); needs Tq == Tk (the
    output w_t * v_t needs a value at every query position)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    if q.shape[-2] != k.shape[-2]:
        raise ValueError("HRR attention needs Tq == Tk")
    k, v = expand_kv_heads(k, q.shape[1]), expand_kv_heads(v, q.shape[1])
    dim = q.shape[-1]
    bound = np.fft.irfft(np.fft.rfft(k) * np.fft.rfft(v), n=dim)        # bind(k_t, v_t)
    if key_padding_mask is not None:
        bound = bound * np.asarray(key_padding_mask, dtype=bool)[:, None, :, None]
    beta = bound.sum(axis=-2, keepdims=True)
    vhat = np.fft.irfft(np.fft.rfft(beta) * np.conj(np.fft.rfft(q)), n=dim)  # unbind(beta, q_t)
    dot = (v * vhat).sum(-1)
    norms = np.linalg.norm(v, axis=-1) * np.linalg.norm(vhat, axis=-1)
    scores = dot / np.maximum(norms, HRR_COSINE_EPS)
    if key_padding_mask is not None:
        keep = np.asarray(key_padding_mask, dtype=bool)[:, None, :]
        scores = np.where(keep, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(scores - top)
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return weights[..., None] * v


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """|out - ref|_F / |ref|_F (0 when both are 0)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.linalg.norm(ref)
    diff = np.linalg.norm(out - ref)
    return float(diff / denom) if denom > 0 else float(diff)


# Which reference an implementation family is checked against before it is timed.
REFERENCE_BY_FAMILY = {"exact": "exact", "hrr": "hrr"}

# Tolerances of the correctness gate: max |out - ref| / max(1, max |ref|), per dtype.
GATE_TOLERANCE = {"float64": 1e-10, "float32": 2e-5, "bfloat16": 3e-2, "float16": 5e-3}


def reference_output(family: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, *,
                     causal: bool, key_padding_mask: np.ndarray | None,
                     **mask: object) -> np.ndarray | None:
    """The reference for a family, or None when the family is approximate by design.
    ``mask``: window, alibi_slopes, document_ids, softcap, sinks (exact family only)."""
    kind = REFERENCE_BY_FAMILY.get(family)
    if kind == "exact":
        return exact_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                               **mask)  # type: ignore[arg-type]
    if kind == "hrr":
        return hrr_attention(q, k, v, key_padding_mask=key_padding_mask)
    return None
