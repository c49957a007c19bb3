"""Sweep presets: data, not code. Sources of the shapes: docs/workloads.md (Presets): the Pythia
suite, LRA, the Hrrformer study, Llama 3, Mistral 7B and BLOOM.

Each preset maps a device kind ("cpu" or "cuda") to a list of groups; every group is the cross
product of its axes (see harness.grid.spec.SweepSpec). Axes a group leaves out take the
SweepSpec defaults; ``device`` is filled in by the runner.
"""

from __future__ import annotations

from typing import Any

from harness.errors import UnknownNameError
from harness.grid.spec import SweepSpec

K = 1024

# Pythia suite: (heads, head_dim) = (heads, width / heads); training context 2048.
PYTHIA_MODELS = {
    "70m": (8, 64), "160m": (12, 64), "410m": (16, 64), "1b": (8, 256), "1.4b": (16, 128),
    "2.8b": (32, 80), "6.9b": (32, 128), "12b": (40, 128),
}

# LRA task shapes with the Hrrformer settings: (seq_len, heads, emb / heads, batch per device).
LRA_SHAPES = {
    "listops": (2000, 8, 64, 2), "text": (4000, 8, 64, 2), "retrieval": (4000, 4, 32, 4),
    "image": (1024, 4, 64, 2), "pathfinder": (1024, 8, 128, 8), "pathx": (16384, 8, 128, 16),
}

HRRFORMER_TOKENS = 2 ** 16  # B * T in the Hrrformer malware (EMBER) sweep

# The form attention papers report speed in (FlashAttention-2, Dao 2023, section 4.1;
# FlashAttention-3, Shah et al. 2024, section 4.1): B * T = 16K tokens, hidden width 2048 (H = 2048 / D),
# T 512..16K, D 64 and 128, causal and not, fp16 and bf16, forward and forward+backward.
PAPER_TOKENS = 16 * 1024
PAPER_WIDTH = 2048
PAPER_SEQ_LENS = (512, 1024, 2048, 4096, 8192, 16384)


PRESETS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "quick": {
        # a 2-core CPU with every CPU implementation: about 75 s of run with the compile cache
        # warm, about 2 minutes on a first run (FlexAttention compiling its four shapes)
        "cpu": [dict(seq_len=(512, 1 * K, 2 * K, 4 * K), head_dim=(64,), heads=(8,), batch=(1,),
                     dtype=("float32",), pass_=("forward",)),
                dict(seq_len=(512, 1 * K, 2 * K), head_dim=(64,), heads=(8,), batch=(1,),
                     dtype=("float32",), pass_=("forward_backward",))],
        # B * T = 16K tokens (batch 16, 1), so that every point has work enough to measure
        # throughput, not launch latency; bf16 and D 128 as in today's models; causal and not.
        # Sized by the run cost model (harness.grid.cost with its assumed H100 constants, a
        # model, not a measurement; `sweep --dry-run` prints it): 16 methods, 108 points
        # predicted 4.8 min with reused workers, of it 1.3 min compiling and 1.3 min probing.
        # T 1K, 4K, 16K (162 points) was predicted 5.9 min, both D 64 and 128 or fp16 beside
        # bf16 longer still: the `paper` preset has them.
        "cuda": [dict(seq_len=(1 * K, 16 * K), tokens=PAPER_TOKENS, heads=(16,),
                      head_dim=(128,), causal=(False, True), dtype=("bfloat16",),
                      pass_=("forward", "forward_backward"))],
    },
    "gpu": {
        "cuda": [dict(seq_len=tuple(2 ** e for e in range(10, 19)), head_dim=(32, 64, 128),
                      heads=(16,), batch=(1,), dtype=("float16", "bfloat16"),
                      pass_=("forward", "forward_backward"))],
    },
    "validate": {
        # scripts/gpu_validate.sh: every axis value at least once (fp16 and bf16, D 64 and 128,
        # causal and not, forward and forward+backward), T past softmax's OOM (64K at H=16
        # needs 128 GiB of fp16 scores) and 256K for the linear methods. Cost model at the
        # script's settings (--min-time 0.1 --max-repeats 10, assumed H100 constants): 94
        # points, 5.7 min, most of it the 35 workers' start-up and 43 probes; the script's
        # --time-budget cuts it to what its window holds, each method's smallest T first.
        # CPU: a rehearsal.
        "cuda": [dict(seq_len=(1 * K, 8 * K, 64 * K), head_dim=(64,), heads=(16,),
                      batch=(1,), dtype=("float16",), pass_=("forward",)),
                 dict(seq_len=(2 * K, 16 * K), head_dim=(128,), heads=(16,), batch=(1,),
                      dtype=("bfloat16",), pass_=("forward_backward",)),
                 dict(seq_len=(4 * K,), head_dim=(128,), heads=(16,), batch=(1,),
                      dtype=("bfloat16",), causal=(True,), pass_=("forward",)),
                 dict(impl=("hrr_torch", "hrr_triton", "hrr_jax", "performer_torch"),
                      seq_len=(256 * K,), head_dim=(64,), heads=(16,), batch=(1,),
                      dtype=("float16",), pass_=("forward",))],
        "cpu": [dict(seq_len=(256, 512), head_dim=(64,), heads=(2,), batch=(1,),
                     dtype=("float32",), pass_=("forward",)),
                dict(seq_len=(256,), head_dim=(32,), heads=(2,), batch=(1,),
                     dtype=("float32",), pass_=("forward_backward",))],
    },
    "paper": {
        "cuda": [dict(seq_len=PAPER_SEQ_LENS, tokens=PAPER_TOKENS, heads=(PAPER_WIDTH // d,),
                      head_dim=(d,), causal=(False, True), dtype=("float16", "bfloat16"),
                      pass_=("forward", "forward_backward"), label=f"paper-D{d}")
                 for d in (64, 128)],
        # the same form scaled to a CPU: B * T = 2K tokens, width 256, float32
        "cpu": [dict(seq_len=(256, 512, 1024, 2048), tokens=2048, heads=(256 // d,),
                     head_dim=(d,), causal=(False, True), dtype=("float32",),
                     pass_=("forward", "forward_backward"), label=f"paper-D{d}")
                for d in (64, 128)],
    },
    "pythia": {
        kind: [dict(heads=(h,), head_dim=(d,), seq_len=(512, 1 * K, 2 * K), batch=(1,),
                    dtype=(dtype,), causal=(True,), pass_=("forward", "forward_backward"),
                    label=f"pythia-{name}")
               for name, (h, d) in PYTHIA_MODELS.items()]
        for kind, dtype in (("cpu", "float32"), ("cuda", "float16"))
    },
    "hrrformer": {
        kind: [dict(seq_len=tuple(2 ** e for e in range(8, 20)), tokens=HRRFORMER_TOKENS,
                    heads=(8,), head_dim=(32,), dtype=(dtype,), pass_=("forward",),
                    label="hrrformer")]
        for kind, dtype in (("cpu", "float32"), ("cuda", "float16"))
    },
    "lra": {
        kind: [dict(seq_len=(t,), heads=(h,), head_dim=(d,), batch=(b,), dtype=(dtype,),
                    pass_=("forward", "forward_backward"), label=f"lra-{task}")
               for task, (t, h, d, b) in LRA_SHAPES.items()]
        for kind, dtype in (("cpu", "float32"), ("cuda", "float16"))
    },
}

# Workloads of today's models: (query heads, key/value heads, head dim); sources in
# docs/workloads.md:
# Llama 3 (Meta, "The Llama 3 Herd of Models", 2024, table 3), Mistral 7B (Jiang et al. 2023,
# table 1), BLOOM-7b1 (BigScience model card; ALiBi: Press et al. 2022).
LLAMA3_8B = dict(heads=(32,), kv_heads=(8,), head_dim=(128,))
LLAMA3_70B = dict(heads=(64,), kv_heads=(8,), head_dim=(128,))
MISTRAL_7B = dict(heads=(32,), kv_heads=(8,), head_dim=(128,))
BLOOM_7B1 = dict(heads=(32,), head_dim=(128,))
MISTRAL_WINDOW = 4096
CPU_WINDOW = 256     # Mistral's window scaled down so that it binds at CPU sequence lengths
PRESETS.update({
    "llama3-8b": {
        "cuda": [dict(**LLAMA3_8B, seq_len=tuple(2 ** e for e in range(10, 18)), causal=(True,),
                      batch=(1,), dtype=("bfloat16",), pass_=("forward", "forward_backward"))],
        "cpu": [dict(**LLAMA3_8B, seq_len=(256, 512, 1 * K), causal=(True,), batch=(1,),
                     dtype=("float32",), pass_=("forward",))],
    },
    "llama3-70b": {
        "cuda": [dict(**LLAMA3_70B, seq_len=tuple(2 ** e for e in range(10, 18)),
                      causal=(True,), batch=(1,), dtype=("bfloat16",),
                      pass_=("forward", "forward_backward"))],
        "cpu": [dict(**LLAMA3_70B, seq_len=(256, 512), causal=(True,), batch=(1,),
                     dtype=("float32",), pass_=("forward",))],
    },
    "mistral-7b": {
        "cuda": [dict(**MISTRAL_7B, seq_len=tuple(2 ** e for e in range(12, 18)),
                      window=(MISTRAL_WINDOW,), causal=(True,), batch=(1,),
                      dtype=("bfloat16",), pass_=("forward", "forward_backward"))],
        "cpu": [dict(**MISTRAL_7B, seq_len=(512, 1 * K), window=(CPU_WINDOW,), causal=(True,),
                     batch=(1,), dtype=("float32",), pass_=("forward",))],
    },
    "decode": {
        # one decode step with a KV cache: 1 new query against Tk cached keys/values
        "cuda": [dict(**LLAMA3_8B, q_len=(1,), seq_len=tuple(2 ** e for e in range(10, 18)),
                      batch=(1, 8, 64), causal=(True,), dtype=("bfloat16",),
                      pass_=("forward",))],
        # B=4 stops at Tk 4K: at Tk 16K its points took a third of a 15-minute 2-core run
        # (performer_torch alone 132 s)
        "cpu": [dict(**LLAMA3_8B, q_len=(1,), seq_len=(1 * K, 4 * K, 16 * K), batch=(1,),
                     causal=(True,), dtype=("float32",), pass_=("forward",)),
                dict(**LLAMA3_8B, q_len=(1,), seq_len=(1 * K, 4 * K), batch=(4,),
                     causal=(True,), dtype=("float32",), pass_=("forward",))],
    },
    "bloom": {
        "cuda": [dict(**BLOOM_7B1, seq_len=(512, 1 * K, 2 * K), alibi=(True,), causal=(True,),
                      batch=(1,), dtype=("bfloat16",), pass_=("forward", "forward_backward"))],
        "cpu": [dict(**BLOOM_7B1, seq_len=(512, 1 * K), alibi=(True,), causal=(True,),
                     batch=(1,), dtype=("float32",), pass_=("forward",))],
    },
    "documents": {
        "cuda": [dict(**LLAMA3_8B, seq_len=(8 * K, 16 * K, 32 * K, 64 * K), documents=(8,),
                      causal=(True,), batch=(1,), dtype=("bfloat16",),
                      pass_=("forward", "forward_backward"))],
        "cpu": [dict(**LLAMA3_8B, seq_len=(1 * K, 2 * K), documents=(8,), causal=(True,),
                     batch=(1,), dtype=("float32",), pass_=("forward",))],
    },
})

# Workloads of 2026 (sources in each comment). Axes without a SweepSpec field (softcap, sinks,
# page_size, lengths, head_dim_v) go in ``extra_axes`` as (name, values) pairs.
# Gemma 2 9B (Gemma Team, "Gemma 2", arXiv 2408.00118, table 1 and section 2): 16 query heads,
# 8 key/value heads, head size 256, context 8192; attention logits soft-capped at 50.0; local
# sliding-window (4096) and global layers alternate: two groups.
GEMMA2_9B = dict(heads=(16,), kv_heads=(8,), head_dim=(256,))
GEMMA2_SOFTCAP = (("softcap", (50.0,)),)
GEMMA2_WINDOW = 4096
# gpt-oss-20b (OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card", arXiv 2508.10925, section 2):
# 64 query heads of dim 64, 8 key/value heads, a learned sink logit per head, banded windows
# of 128 tokens alternating with dense layers, context 131072.
GPT_OSS_20B = dict(heads=(64,), kv_heads=(8,), head_dim=(64,))
GPT_OSS_SINKS = (("sinks", (True,)),)
GPT_OSS_WINDOW = 128
# DeepSeek-V3 multi-head latent attention (DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv
# 2412.19437, section 2.1.1 and 4.2): 128 heads; prefill q/k head dim 128 + 64 (rotary) = 192,
# v head dim 128; decode in the absorbed form: one latent key/value head of 512 + 64 = 576 dims
# read by every query head, v = the 512-dim latent.
MLA_HEADS = 128
MLA_PREFILL = dict(heads=(MLA_HEADS,), head_dim=(192,), extra_axes=(("head_dim_v", (128,)),))
MLA_DECODE = dict(heads=(MLA_HEADS,), kv_heads=(1,), head_dim=(576,), q_len=(1,),
                  extra_axes=(("head_dim_v", (512,)),))
# Serving (vLLM's and FlashInfer's attention benchmarks: paged KV, per-request lengths, batches of
# requests): Llama 3 8B heads, pages of 16 tokens, lengths drawn per request (seed 0), decode
# steps; "mixed" batches put prefill requests beside decode requests.
SERVING_PAGE = 16
PRESETS.update({
    "gemma2-9b": {
        "cuda": [dict(**GEMMA2_9B, seq_len=(1 * K, 2 * K, 4 * K, 8 * K), window=window,
                      causal=(True,), batch=(1,), dtype=("bfloat16",),
                      pass_=("forward", "forward_backward"), extra_axes=GEMMA2_SOFTCAP,
                      label=f"gemma2-9b-{layers}")
                 for layers, window in (("global", (-1,)), ("local", (GEMMA2_WINDOW,)))],
        "cpu": [dict(**GEMMA2_9B, seq_len=(256, 512, 1 * K), window=window, causal=(True,),
                     batch=(1,), dtype=("float32",), pass_=("forward",),
                     extra_axes=GEMMA2_SOFTCAP, label=f"gemma2-9b-{layers}")
                for layers, window in (("global", (-1,)), ("local", (CPU_WINDOW,)))],
    },
    "gpt-oss-20b": {
        "cuda": [dict(**GPT_OSS_20B, seq_len=(1 * K, 4 * K, 16 * K), window=window,
                      causal=(True,), batch=(1,), dtype=("bfloat16",),
                      pass_=("forward", "forward_backward"), extra_axes=GPT_OSS_SINKS,
                      label=f"gpt-oss-20b-{layers}")
                 for layers, window in (("dense", (-1,)), ("banded", (GPT_OSS_WINDOW,)))],
        "cpu": [dict(**GPT_OSS_20B, seq_len=(256, 512, 1 * K), window=window, causal=(True,),
                     batch=(1,), dtype=("float32",), pass_=("forward",),
                     extra_axes=GPT_OSS_SINKS, label=f"gpt-oss-20b-{layers}")
                for layers, window in (("dense", (-1,)), ("banded", (GPT_OSS_WINDOW,)))],
    },
    "deepseek-v3-mla": {
        "cuda": [dict(**MLA_PREFILL, seq_len=(1 * K, 4 * K, 16 * K), causal=(True,), batch=(1,),
                      dtype=("bfloat16",), pass_=("forward", "forward_backward"),
                      label="mla-prefill"),
                 dict(**MLA_DECODE, seq_len=(1 * K, 4 * K, 16 * K, 32 * K), causal=(True,),
                      batch=(1, 16, 64), dtype=("bfloat16",), pass_=("forward",),
                      label="mla-decode")],
        "cpu": [dict(**MLA_PREFILL, seq_len=(256, 512), causal=(True,), batch=(1,),
                     dtype=("float32",), pass_=("forward",), label="mla-prefill"),
                dict(**MLA_DECODE, seq_len=(1 * K, 4 * K), causal=(True,), batch=(1, 4),
                     dtype=("float32",), pass_=("forward",), label="mla-decode")],
    },
    "serving-decode": {
        "cuda": [dict(**LLAMA3_8B, q_len=(1,), seq_len=(8 * K,), batch=(1, 16, 64, 256),
                      causal=(True,), dtype=("bfloat16",), pass_=("forward",),
                      extra_axes=(("lengths", ("uniform:512-8192",)),
                                  ("page_size", (SERVING_PAGE,))),
                      label="serving-decode")],
        "cpu": [dict(**LLAMA3_8B, q_len=(1,), seq_len=(2 * K,), batch=(1, 4, 16),
                     causal=(True,), dtype=("float32",), pass_=("forward",),
                     extra_axes=(("lengths", ("uniform:128-2048",)),
                                 ("page_size", (SERVING_PAGE,))),
                     label="serving-decode")],
    },
    "serving-mixed": {
        "cuda": [dict(**LLAMA3_8B, seq_len=(4 * K,), batch=(16, 64), causal=(True,),
                      dtype=("bfloat16",), pass_=("forward",),
                      extra_axes=(("lengths", ("uniform:512-4096+mixed:2",)),
                                  ("page_size", (SERVING_PAGE,))),
                      label="serving-mixed")],
        "cpu": [dict(**LLAMA3_8B, seq_len=(512,), batch=(4, 8), causal=(True,),
                     dtype=("float32",), pass_=("forward",),
                     extra_axes=(("lengths", ("uniform:64-512+mixed:2",)),
                                 ("page_size", (SERVING_PAGE,))),
                     label="serving-mixed")],
    },
})

# What a preset changes on the CPU, shown by --dry-run.
CPU_NOTES = {
    "gemma2-9b": f"CPU sizes T 256..1K forward only, the local layers' window scaled down to "
                 f"{CPU_WINDOW} (GPU: T 1K..8K bf16, window {GEMMA2_WINDOW}, forward and "
                 f"forward+backward); softcap 50 either way; a few minutes",
    "gpt-oss-20b": "CPU sizes T 256..1K forward only (GPU: T 1K..16K bf16, forward and "
                   "forward+backward); sinks and the 128-token bands either way; a few minutes",
    "deepseek-v3-mla": "CPU sizes: prefill T 256..512, absorbed decode Tk 1K, 4K at B 1, 4 "
                       "(GPU: prefill T 1K..16K, decode Tk 1K..32K at B 1, 16, 64); 128 heads "
                       "and MLA's head dims either way; a few minutes",
    "serving-decode": "CPU sizes B 1, 4, 16 requests, lengths uniform 128..2K (GPU: B 1..256, "
                      "lengths uniform 512..8K); pages of 16 tokens either way; a few minutes",
    "serving-mixed": "CPU sizes B 4, 8 requests (2 prefills each), lengths uniform 64..512 "
                     "(GPU: B 16, 64, lengths 512..4K); a few minutes",
    "paper": "CPU sizes B*T 2K tokens, width 256 (H 4 at D 64, 2 at D 128), T 256..2K, "
             "float32 (GPU: B*T 16K tokens, width 2048, T 512..16K, fp16 and bf16)",
    "llama3-8b": "CPU sizes T 256..1K forward only (the GPU grid is T 1K..128K, bf16, "
                 "forward and forward+backward); a few minutes on 2 cores",
    "llama3-70b": "CPU sizes T 256..512 forward only (GPU: T 1K..128K); a few minutes",
    "mistral-7b": f"CPU sizes T 512..1K with the window scaled down to {CPU_WINDOW} keys so "
                  f"that it binds (GPU: window {MISTRAL_WINDOW}, T 4K..128K); a few minutes",
    "decode": "CPU sizes Tk 1K, 4K, 16K at B 1 and Tk 1K, 4K at B 4 (GPU: Tk 1K..128K, "
              "B 1, 8, 64); about 4 minutes on a 2-core CPU at load 1 (B 4 at Tk 16K as well: "
              "15 minutes at load 2 to 7)",
    "bloom": "CPU sizes T 512..1K forward only (GPU: T 512..2K, bf16); about 2 minutes on "
             "a 2-core CPU at load 1 (3 at load up to 6)",
    "documents": "CPU sizes T 1K..2K (GPU: T 8K..64K); 8 packed documents either way; "
                 "a few minutes",
}
COMPILE_NOTE = ("; flex_attention compiles each new shape once (3-6 s a shape on an idle "
                "2-core CPU, 20 s for the first; a later run loads them from the compile cache): "
                "leave it out with --impl for a quicker first run")
DEFAULT_PRESET = "quick"


def note(name: str, devices: set[str]) -> str:
    """What --dry-run says about a preset's sizes on these devices ('' when nothing)."""
    if any(d.split(":", 1)[0] == "cpu" for d in devices) and name in CPU_NOTES:
        return CPU_NOTES[name] + COMPILE_NOTE
    return ""


def preset_groups(name: str, device: str) -> list[SweepSpec]:
    """The groups of a preset for a device ('cpu', 'cuda' or 'cuda:N')."""
    try:
        by_device = PRESETS[name]
    except KeyError:
        raise UnknownNameError("preset", name, PRESETS) from None
    kind = device.split(":", 1)[0]
    groups = by_device.get(kind)
    if groups is None:
        # a GPU-only preset asked for on the CPU: keep its shapes, use the CPU's dtype
        other = next(iter(by_device.values()))
        groups = [{**g, "dtype": ("float32",)} for g in other]
    return [SweepSpec(device=(device,), **group) for group in groups]
