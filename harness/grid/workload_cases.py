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
    and two-sided, ALiBi, packed documents, key padding with a window, and FP8 keys and values
    (e4m3 causal; e5m2 in a GQA decode step)."""
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
        # FP8 keys and values (per-tensor scales): gated against the dequantised inputs
        WorkloadCase("kv fp8e4m3 causal", case_point(kv_dtype="float8_e4m3fn", causal=True)),
        WorkloadCase("kv fp8e5m2 decode Tq=1 Hkv=2",
                     case_point(kv_dtype="float8_e5m2", q_len=1, kv_heads=2, causal=True)),
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
