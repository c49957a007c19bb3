"""HRR attention, GEMM formulation, with the scores step fused in one Triton kernel (CUDA).

Everything but one step is hrr_torch's GEMM formulation (``hrr_torch.gemm_forward`` and its
hand-written backward): beta from K^T V (one batched GEMM), the softmax, o = w * v. The step
replaced is the scores: for a block of tokens the kernel loads q and v once, computes P = Q C
with C = wrapped_matrix(beta) in registers (``tl.dot``) and writes only the three per-token
numbers dot = P.v, |P| and |v|. In plain torch on a GPU, P is a (B, H, T, D) tensor written once
and read back by the reductions. Counting tensor-sized transfers, the forward is then k, v (K^T
V), q, v (scores), v, o (output): 6 against the floor's 4 (read q, k, v, write o), 1.5x if
bandwidth-bound, where plain torch needs about 10 (P written and read twice, v read three
times). GQA: the program of query head h reads v and C of key/value head h // (Hq / Hkv) (C,
i.e. beta, is built once per key/value head; nothing is copied per query head).

The product P = Q C runs at one of two ``tl.dot`` input precisions, each registered under its
own name: ``hrr_triton`` at "ieee" (plain float32 FMAs on the CUDA cores, the 1e-5 match with
the float64 reference) and ``hrr_triton_tf32x3`` at "tf32x3" (each float32 operand split into a
TF32 high part and a TF32 remainder, three TF32 tensor-core products: close to float32
accuracy, checked against its own gate tolerance, TF32_X3_GATE_TOLERANCE).

Offsets: the kernel indexes q, v, C and its outputs from program ids; it does that arithmetic
in 64 bits when an index could reach 2^31 (``wide_offsets``, e.g. B*H*T*D >= 2^31 elements),
in 32 bits below (the common case, fewer registers). The grid's second axis is B*H programs:
CUDA allows at most 65535 there (MAX_GRID_Y), so a larger B*H is refused with that reason.

Not measured on a GPU: the block sizes below are untuned, and whether this beats hrr_torch on
an H100 is unknown. The kernel's
logic is tested on the CPU with Triton's interpreter (TRITON_INTERPRET=1,
tests/test_hrr_triton.py), which checks the numbers but not the compilation for a real GPU.
"""

from __future__ import annotations

import os

import torch

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, register
from harness.contract.traits import Traits
from harness.metrics.traffic import hrr as hrr_traffic
from implementations._hrr_reasons import HRR_REASONS
from implementations import hrr_torch

MAX_HEAD_DIM = 256  # register blocks of BLOCK_T x D floats; larger D: use hrr_torch
BLOCK_ELEMENTS = 4096  # BLOCK_T x BLOCK_D per program: 3 such fp32 tiles in 4 warps ~ 96 registers
# a thread (a guess from the register file, not tuned on a GPU)
CORR_CHUNK_ELEMENTS = 8192  # BLOCK_K x BLOCK_D of C per step of the K loop: 32 KiB in float32
SHARED_MEMORY_STAGES = 3    # Triton's default software pipelining depth for the K loop
H100_SHARED_MEMORY_BYTES = 227 * 1024  # per thread block (H100/H200; A100: 163 KiB)
INPUT_PRECISIONS = ("ieee", "tf32x3")   # tl.dot input precisions offered (one name each)
# tf32x3 drops the product of the two TF32 remainders (~2^-22 relative per product): a float32
# gate looser than the default 2e-5, far tighter than a single TF32 pass (~1e-3)
TF32_X3_GATE_TOLERANCE = {"float32": 1e-4}
INT32_LIMIT = 2 ** 31       # an offset at or above this overflows the kernel's 32-bit arithmetic
MAX_GRID_Y = 65535          # CUDA's limit on a grid's second dimension (B*H programs)


def interpreting() -> bool:
    """Triton's interpreter (CPU tensors, numpy semantics) is on: tests only."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def block_sizes(head_dim: int) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_D): D padded to a power of two >= 16 (tl.dot), T block fills the rest."""
    block_d = max(16, 1 << (head_dim - 1).bit_length())
    return max(16, min(128, BLOCK_ELEMENTS // block_d)), block_d


def k_block(block_d: int) -> int:
    """BLOCK_K: rows of C (and columns of Q) per step of the kernel's K loop.

    The whole C of D = 256 in one ``tl.dot`` operand is a 256 x 256 float32 tile, 256 KiB,
    more than an H100's 227 KiB of shared memory per block; in BLOCK_K-row steps it is 32 KiB
    a step (D <= 64 is one step, as before). At least 16 (``tl.dot``'s smallest K).
    """
    return max(16, min(block_d, CORR_CHUNK_ELEMENTS // block_d))


def shared_bytes_estimate(head_dim: int) -> int:
    """Upper estimate of the kernel's shared memory: each pipelined stage of the K loop holds
    a BLOCK_T x BLOCK_K tile of Q and a BLOCK_K x BLOCK_D tile of C, in float32."""
    block_t, block_d = block_sizes(head_dim)
    step = k_block(block_d)
    return SHARED_MEMORY_STAGES * 4 * (block_t * step + step * block_d)


def largest_offset(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """The largest element offset of a strided view: sum of (size - 1) * |stride|."""
    return sum((size - 1) * abs(stride) for size, stride in zip(shape, strides) if size > 0)


def wide_offsets(q: torch.Tensor, v: torch.Tensor, *, block_t: int) -> bool:
    """Whether the kernel's offsets need 64-bit arithmetic: the largest offset it forms in q,
    v (a block's rows may run up to BLOCK_T - 1 past the last token before the mask drops
    them), C (B*Hkv*D*D) or its outputs (B*H*T) reaches 2^31."""
    batch, heads, tokens, dim = q.shape
    reach = max(largest_offset(x.shape, x.stride()) + block_t * abs(x.stride(2))
                for x in (q, v))
    corr = batch * v.shape[1] * dim * dim
    return max(reach, corr, batch * heads * tokens) >= INT32_LIMIT


_KERNEL = None


def _kernel():
    """The jitted kernel, built on first use (triton is imported only when it is needed)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def hrr_score_parts_kernel(q_ptr, v_ptr, c_ptr, dot_ptr, p_norm_ptr, v_norm_ptr,
                               tokens, heads, group,
                               sq_b, sq_h, sq_t, sq_d, sv_b, sv_h, sv_t, sv_d,
                               DIM: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                               BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                               WIDE: tl.constexpr):
        block = tl.program_id(0)
        bh = tl.program_id(1)
        if WIDE:   # every offset below derives from these: 64-bit arithmetic throughout
            block = block.to(tl.int64)
            bh = bh.to(tl.int64)
        b = bh // heads
        h = bh % heads
        # GQA: query head h reads key/value head h // group (its v and C; nothing copied)
        kv = b * (heads // group) + h // group
        rows = block * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = tl.arange(0, BLOCK_D)
        steps = tl.arange(0, BLOCK_K)
        row_ok = rows < tokens
        col_ok = cols < DIM
        q_rows = q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_t
        # P = Q C accumulated over K in BLOCK_K steps: a step's operands are a BLOCK_T x BLOCK_K
        # tile of Q and a BLOCK_K x BLOCK_D tile of C (not the whole D x D C at once)
        p = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
        for k0 in range(0, DIM, BLOCK_K):
            ks = k0 + steps
            k_ok = ks < DIM
            q = tl.load(q_rows + ks[None, :] * sq_d, mask=row_ok[:, None] & k_ok[None, :],
                        other=0.0).to(tl.float32)
            corr = tl.load(c_ptr + kv * DIM * DIM + ks[:, None] * DIM + cols[None, :],
                           mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            # rows are unbind(beta, q_t)
            p += tl.dot(q, corr, input_precision=INPUT_PRECISION)
        v = tl.load(v_ptr + b * sv_b + (h // group) * sv_h + rows[:, None] * sv_t
                    + cols[None, :] * sv_d,
                    mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        out = bh * tokens + rows
        tl.store(dot_ptr + out, tl.sum(p * v, axis=1), mask=row_ok)
        tl.store(p_norm_ptr + out, tl.sqrt(tl.sum(p * p, axis=1)), mask=row_ok)
        tl.store(v_norm_ptr + out, tl.sqrt(tl.sum(v * v, axis=1)), mask=row_ok)

    _KERNEL = hrr_score_parts_kernel
    return _KERNEL


def triton_score_parts(q: torch.Tensor, v: torch.Tensor, corr: torch.Tensor,
                       work: torch.dtype, *, input_precision: str = "ieee",
                       wide: bool | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                          torch.Tensor]:
    """dot = P.v, |P|, |v| per token (three (B, Hq, T) in float32), P = Q C never stored.

    q (B, Hq, T, D); v (B, Hkv, T, D) and C (B, Hkv, D, D) are read by query head h at key/value
    head h // (Hq / Hkv) (GQA by sharing: the kernel's pointer arithmetic, no copy).
    ``input_precision``: tl.dot's, one of INPUT_PRECISIONS; ``wide``: 64-bit offsets (None:
    as ``wide_offsets`` decides)."""
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"hrr_triton: input_precision {input_precision!r} not one of "
                         f"{', '.join(INPUT_PRECISIONS)}")
    import triton

    batch, heads, tokens, dim = q.shape
    group = heads // v.shape[1]
    parts = torch.empty(3, batch, heads, tokens, dtype=work, device=q.device)
    block_t, block_d = block_sizes(dim)
    if wide is None:
        wide = wide_offsets(q, v, block_t=block_t)
    grid = (triton.cdiv(tokens, block_t), batch * heads)
    _kernel()[grid](q, v, corr.contiguous(), parts[0], parts[1], parts[2], tokens, heads, group,
                    *q.stride(), *v.stride(), DIM=dim, BLOCK_T=block_t, BLOCK_D=block_d,
                    BLOCK_K=k_block(block_d), INPUT_PRECISION=input_precision, WIDE=wide)
    return parts[0], parts[1], parts[2]


def _function(input_precision: str) -> type:
    """The autograd Function: hrr_torch's GEMM formulation with the fused scores kernel at
    this tl.dot precision; the backward is inherited (hrr_torch's)."""

    class HRRTritonFunction(hrr_torch.HRRGemm):
        @staticmethod
        def forward(ctx, q, k, v, keep, batched=True):
            # the kernel takes every (batch, head) in one launch; the rest (K^T V under a mask
            # or in fp16/bf16, the backward) walks T with all heads at once, as hrr_torch on
            # CUDA
            def parts(q_, v_, c_, w_):
                return triton_score_parts(q_, v_, c_, w_, input_precision=input_precision)
            return hrr_torch.gemm_forward(ctx, q, k, v, keep, parts, batched)

    HRRTritonFunction.__name__ = HRRTritonFunction.__qualname__ = \
        f"HRRTriton_{input_precision}"
    return HRRTritonFunction


FUNCTIONS = {precision: _function(precision) for precision in INPUT_PRECISIONS}
HRRTriton = FUNCTIONS["ieee"]



def hrr_triton(q, k, v, *, causal=False, key_padding_mask=None, input_precision="ieee"):
    """HRR attention with the scores fused in a Triton kernel (CUDA; not yet measured)."""
    if causal:
        raise UnsupportedError("hrr_triton: HRR attention has no causal variant")
    if q.device.type != "cuda" and not interpreting():
        raise UnsupportedError(f"hrr_triton: needs a CUDA device (Triton), got {q.device.type}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise UnsupportedError(f"hrr_triton: head dim {q.shape[-1]} > {MAX_HEAD_DIM} "
                               "(use hrr_torch)")
    if q.dtype == torch.float64:
        raise UnsupportedError("hrr_triton: float64 not supported (use hrr_torch)")
    if q.shape[-2] != k.shape[-2]:
        raise UnsupportedError("hrr_triton: HRR needs Tq == Tk")
    if q.shape[0] * q.shape[1] > MAX_GRID_Y:
        raise UnsupportedError(f"hrr_triton: batch x heads = {q.shape[0] * q.shape[1]} programs "
                               f"on the grid's second axis, CUDA allows {MAX_GRID_Y}")
    if q.shape[1] % k.shape[1] or v.shape[1] != k.shape[1]:
        raise ValueError(f"hrr_triton: query heads {q.shape[1]} not a multiple of key/value "
                         f"heads {k.shape[1]} (v: {v.shape[1]})")
    function = FUNCTIONS.get(input_precision)
    if function is None:
        raise ValueError(f"hrr_triton: input_precision {input_precision!r} not one of "
                         f"{', '.join(INPUT_PRECISIONS)}")
    keep = hrr_torch._keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    return function.apply(q, k, v, keep, True)


PRECISION_WORDS = {"ieee": "tl.dot at IEEE float32 (CUDA cores)",
                   "tf32x3": "tl.dot at tf32x3 (three TF32 tensor-core passes, close to "
                             "float32)"}


def register_hrr_triton(name: str, *, input_precision: str = "ieee") -> None:
    """Register hrr_triton at one tl.dot input precision, e.g.
    ``register_hrr_triton("hrr_triton_tf32x3", input_precision="tf32x3")``."""
    if input_precision not in INPUT_PRECISIONS:
        raise ValueError(f"input_precision {input_precision!r} not one of "
                         f"{', '.join(INPUT_PRECISIONS)}")

    def attention(q, k, v, *, causal=False, key_padding_mask=None):
        return hrr_triton(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                          input_precision=input_precision)

    attention.__doc__ = hrr_triton.__doc__
    register(name, framework="torch", family="hrr", requires=("triton",),
             traits=Traits(memory="linear"),
             description=f"HRR attention, scores fused in a Triton kernel, "
                         f"{PRECISION_WORDS[input_precision]}",
             capabilities=Capabilities(devices=("cuda",),
                                       dtypes=("float32", "float16", "bfloat16"),
                                       causal=False, key_padding_mask=True, backward=True,
                                       gqa=True, reasons=HRR_REASONS,
                                       paths=(("gqa", "the kernel reads key/value head h // "
                                                      "(Hq / Hkv) and its C (beta once per "
                                                      "key/value head); the backward is "
                                                      "hrr_torch's, shared the same way"),)),
             gate_tolerance=TF32_X3_GATE_TOLERANCE if input_precision == "tf32x3" else None,
             traffic=hrr_traffic)(attention)


register_hrr_triton("hrr_triton", input_precision="ieee")
register_hrr_triton("hrr_triton_tf32x3", input_precision="tf32x3")
