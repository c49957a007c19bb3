"""The workloads ``run_bench.py check --workloads`` checks against the float64 reference.

Each case is a small Point (B=2, Hq=4, T=64, D=32) with the sweep's workload axes (kv_heads,
q_len, window, alibi, documents; windows and documents as a sweep builds them, see
harness.contract.point_masks) and an optional key-padding mask (the last quarter of the keys masked).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from harness.contract.axes import workload_axes
from harness.contract.head_dims import MLA_DECODE_DIMS, MLA_DECODE_KV_HEADS, MLA_PREFILL_DIMS
from harness.contract.records import Point

CASE_SEQ_LEN = 64
CASE_HEADS = 4
CASE_SHAPE = dict(batch=2, head_dim=32)


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
    base: dict[str, Any] = dict(impl="", seq_len=CASE_SEQ_LEN, heads=CASE_HEADS, **CASE_SHAPE)
    return Point(**{**base, **axes})


def builtin_cases() -> list[WorkloadCase]:
    """GQA, MQA, Tq != Tk causal (a decode step Tq=1, a chunk Tq=7), windows one-sided (causal)
    and two-sided, ALiBi, packed documents, key padding with a window, and v's head dim
    differing from q's and k's (MLA's shapes among them)."""
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
        *head_dim_cases(),
    ]


def head_dim_cases() -> list[WorkloadCase]:
    """D_v != D: v's head dim half of q's and k's, and DeepSeek-V3's MLA shapes
    (harness.contract.head_dims) at B=2, Hq=4: prefill D=192, D_v=128 causal; absorbed decode
    D=576, D_v=512 against one key/value head, Tq=1."""
    (prefill, prefill_v), (decode, decode_v) = MLA_PREFILL_DIMS, MLA_DECODE_DIMS
    return [
        WorkloadCase("Dv=16 (D=32)", case_point(extra_axes=(("head_dim_v", 16),))),
        WorkloadCase(f"mla prefill D={prefill} Dv={prefill_v} causal",
                     case_point(head_dim=prefill, causal=True,
                                extra_axes=(("head_dim_v", prefill_v),))),
        WorkloadCase(f"mla decode D={decode} Dv={decode_v} Hkv=1 Tq=1",
                     case_point(head_dim=decode, kv_heads=MLA_DECODE_KV_HEADS, q_len=1,
                                causal=True, extra_axes=(("head_dim_v", decode_v),))),
    ]


def flag_cases(axes: dict[str, tuple]) -> list[WorkloadCase]:
    """Every combination of the given workload axes (parsed as sweep parses them), with and
    without causal. Query heads: 4, or twice --kv-heads when 4 is not a multiple of it.
    Raises ValueError with the first combination that is not a workload."""
    table = [a for a in workload_axes() if a.field is not None]
    lists = [axes.get(a.field) or (a.default,) for a in table]
    cases = []
    for values in itertools.product(*lists, (False, True)):
        chosen = dict(zip((*(a.field for a in table), "causal"), values))
        kv = chosen.get("kv_heads", 0)
        heads = CASE_HEADS if not kv or CASE_HEADS % kv == 0 else 2 * kv
        point = case_point(heads=heads, **chosen)
        problem = point.workload_problem()
        if problem:
            raise ValueError(problem)
        label = point.workload_label() or "self-attention"
        cases.append(WorkloadCase(f"{label}{' causal' if point.causal else ''}", point))
    return cases
