"""The workloads ``run_bench.py check --workloads`` checks against the float64 reference.

Each case is a small Point (B=2, Hq=4, T=64, D=32) with the sweep's workload axes (kv_heads,
q_len, window, alibi, documents, softcap, sinks; windows, documents and sink logits as a sweep
builds them, see harness.contract.point_masks) and an optional key-padding mask (the last quarter
of the keys masked).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from harness.contract.axes import extra_axes, workload_axes
from harness.contract.point_masks import SCORE_MOD_AXES
from harness.contract.head_dims import MLA_DECODE_DIMS, MLA_DECODE_KV_HEADS, MLA_PREFILL_DIMS
from harness.contract.records import Point

# the axes without a Point field whose inputs the gate builds (check takes them as flags)
GATE_INPUT_AXES = ("page_size", "lengths", "head_dim_v")
CASE_SEQ_LEN = 64
CASE_HEADS = 4
CASE_SHAPE = dict(batch=2, head_dim=32)
# N(0, 1) inputs give scaled scores of about N(0, 1): a cap of 2 bends them (50 would not)
CASE_SOFTCAP = 2.0


@dataclass(frozen=True)
class WorkloadCase:
    name: str
    point: Point          # impl/device/dtype filled in per implementation
    padded: bool = False  # a key-padding mask on the last quarter of the keys

    def features(self) -> frozenset[str]:
        return self.point.features()

    def for_impl(self, impl: str, device: str, dtype: str) -> WorkloadCase:
        return replace(self, point=replace(self.point, impl=impl, device=device, dtype=dtype))


def case_point(**axes: Any) -> Point:
    """A case's Point; axes without a Point field (softcap, sinks) go to its extra_axes."""
    base: dict[str, Any] = dict(impl="", seq_len=CASE_SEQ_LEN, heads=CASE_HEADS, **CASE_SHAPE)
    names = {a.name for a in extra_axes()}
    extra = tuple(sorted((k, v) for k, v in axes.items() if k in names))
    fields = {k: v for k, v in axes.items() if k not in names}
    return Point(**{**base, **fields}, extra_axes=extra)


def builtin_cases() -> list[WorkloadCase]:
    """GQA, MQA, Tq != Tk causal (a decode step Tq=1, a chunk Tq=7), windows one-sided (causal)
    and two-sided, ALiBi, packed documents, key padding with a window, v's head dim differing
    from q's and k's (MLA's shapes among them), and FP8 keys and values (e4m3 causal; e5m2 in a
    GQA decode step)."""
    return [
        WorkloadCase("gqa Hkv=2", case_point(kv_heads=2)),
        WorkloadCase("mqa Hkv=1", case_point(kv_heads=1)),
        WorkloadCase("decode Tq=1 causal", case_point(q_len=1, causal=True)),
        WorkloadCase("chunk Tq=7 causal", case_point(q_len=7, causal=True)),
        WorkloadCase("window 16 one-sided causal", case_point(window=16, causal=True)),
        WorkloadCase("window 16 two-sided", case_point(window=16)),
        WorkloadCase("alibi causal", case_point(alibi=True, causal=True)),
        WorkloadCase("documents 3 causal", case_point(documents=3, causal=True)),
        WorkloadCase("padding + window 16", case_point(window=16), padded=True),
        *score_mod_cases(),
        *paged_ragged_cases(),
        *head_dim_cases(),
        # FP8 keys and values (per-tensor scales): gated against the dequantised inputs
        WorkloadCase("kv fp8e4m3 causal", case_point(kv_dtype="float8_e4m3fn", causal=True)),
        WorkloadCase("kv fp8e5m2 decode Tq=1 Hkv=2",
                     case_point(kv_dtype="float8_e5m2", q_len=1, kv_heads=2, causal=True)),
    ]


def score_mod_cases() -> list[WorkloadCase]:
    """Softcap (Gemma 2) and sinks (gpt-oss), alone and with the masks they are used with."""
    return [
        WorkloadCase(f"softcap {CASE_SOFTCAP:g} causal",
                     case_point(softcap=CASE_SOFTCAP, causal=True)),
        WorkloadCase(f"softcap {CASE_SOFTCAP:g} + window 16 causal",
                     case_point(softcap=CASE_SOFTCAP, window=16, causal=True)),
        WorkloadCase("sinks gqa Hkv=2 causal", case_point(sinks=True, kv_heads=2, causal=True)),
        WorkloadCase("sinks + window 16 decode Tq=1 causal",
                     case_point(sinks=True, window=16, q_len=1, causal=True)),
        WorkloadCase(f"softcap {CASE_SOFTCAP:g} + sinks + padding",
                     case_point(softcap=CASE_SOFTCAP, sinks=True), padded=True),
    ]


def paged_ragged_cases() -> list[WorkloadCase]:
    """A paged cache (dense lengths), ragged decode, ragged prefill, a mixed batch (one
    prefill beside decodes) and a paged ragged decode with GQA (harness.contract.paging,
    harness.contract.ragged)."""
    return [
        WorkloadCase("paged page=16 causal", case_point(causal=True, page_size=16)),
        WorkloadCase("ragged decode", case_point(q_len=1, causal=True, lengths="uniform:8-64")),
        WorkloadCase("ragged prefill causal", case_point(causal=True, lengths="uniform:8-64")),
        WorkloadCase("mixed 1 prefill + decodes", case_point(causal=True, lengths="uniform:8-64+mixed:1")),
        WorkloadCase("paged ragged decode Hkv=2", case_point(
            q_len=1, causal=True, kv_heads=2, page_size=16, lengths="zipf:1.1:4-64")),
    ]


def head_dim_cases() -> list[WorkloadCase]:
    """D_v != D: v's head dim half of q's and k's, and DeepSeek-V3's MLA shapes
    (harness.contract.head_dims) at B=2, Hq=4: prefill D=192, D_v=128 causal; absorbed decode
    D=576, D_v=512 against one key/value head, Tq=1."""
    (prefill, prefill_v), (decode, decode_v) = MLA_PREFILL_DIMS, MLA_DECODE_DIMS
    return [
        WorkloadCase("Dv=16 (D=32)", case_point(head_dim_v=16)),
        WorkloadCase(f"mla prefill D={prefill} Dv={prefill_v} causal",
                     case_point(head_dim=prefill, causal=True, head_dim_v=prefill_v)),
        WorkloadCase(f"mla decode D={decode} Dv={decode_v} Hkv=1 Tq=1",
                     case_point(head_dim=decode, kv_heads=MLA_DECODE_KV_HEADS, q_len=1,
                                causal=True, head_dim_v=decode_v)),
    ]


def flag_cases(axes: dict[str, tuple]) -> list[WorkloadCase]:
    """Every combination of the given workload axes (parsed as sweep parses them), with and
    without causal. Query heads: 4, or twice --kv-heads when 4 is not a multiple of it.
    Raises ValueError with the first combination that is not a workload."""
    table = gate_built_axes()
    lists = [axes.get(a.dest) or (a.default,) for a in table]
    cases = []
    for values in itertools.product(*lists, (False, True)):
        chosen = dict(zip((*(a.dest for a in table), "causal"), values))
        kv = chosen.get("kv_heads", 0)
        heads = CASE_HEADS if not kv or CASE_HEADS % kv == 0 else 2 * kv
        point = case_point(heads=heads, **chosen)
        problem = point.workload_problem()
        if problem:
            raise ValueError(problem)
        label = point.workload_label() or "self-attention"
        cases.append(WorkloadCase(f"{label}{' causal' if point.causal else ''}", point))
    return cases


def gate_built_axes() -> tuple:
    """The workload axes whose inputs the gate builds: those with a Point field, the score
    modifications (harness.contract.point_masks.SCORE_MOD_AXES) and the paged/ragged layout
    (GATE_INPUT_AXES); a plug-in's axis has none of these."""
    return tuple(a for a in workload_axes() if a.field is not None
                 or a.name in SCORE_MOD_AXES or a.name in GATE_INPUT_AXES)
