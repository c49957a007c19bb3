"""A deliberately slowed ``hrr_torch``, for showing that the performance gate catches a slowdown.

Importing this module (``run_bench.py --impl-module impls_slow``, or
``.ci/perf_gate.sh --impl-module impls_slow``) replaces the registered ``hrr_torch`` with a copy
that computes the real result twice: same outputs (so it passes the correctness gate), same
capabilities and name (so its records pair with the baseline's), about 2x the time. Production
code paths are untouched; nothing imports this module unless asked to.
"""

from __future__ import annotations

import dataclasses

from harness.contract.registry import REGISTRY

SLOWDOWN = 2  # calls of the real implementation per call

_original = REGISTRY.get("hrr_torch")  # loads the built-ins first, so nothing re-registers it
_real_fn = _original.fn


def hrr_torch_slowed(q, k, v, *, causal=False, key_padding_mask=None):
    """hrr_torch computed SLOWDOWN times (the result of the last call is returned)."""
    out = None
    for _ in range(SLOWDOWN):
        out = _real_fn(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
    return out


REGISTRY.add(dataclasses.replace(_original, fn=hrr_torch_slowed, module=__name__,
                                 _probe_cache={}), replace=True)
