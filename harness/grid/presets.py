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
        # B * T = 16K tokens (batch 16, 4, 1), so that every point has work enough to measure
        # throughput, not launch latency; bf16 and D 128 as in today's models; causal and not.
        # Sized by the run cost model (harness.grid.cost with its assumed H100 constants, a
        # model, not a measurement; `sweep --dry-run` prints it): 144 points predicted 4.7 min
        # with reused workers (compilations 1.5 min of it), 27 min with --isolate point.
        # Both D 64 and 128 (276 points) was predicted 7.6 min, fp16 beside bf16 9.0 min:
        # the `paper` preset has them.
        "cuda": [dict(seq_len=(1 * K, 4 * K, 16 * K), tokens=PAPER_TOKENS, heads=(16,),
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
        # script's settings (--min-time 0.1 --max-repeats 10, assumed H100 constants): 84
        # points, 4.2 min, most of it the 31 workers' start-up and 38 probes; the script's
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

# What a preset changes on the CPU, shown by --dry-run.
CPU_NOTES = {
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
