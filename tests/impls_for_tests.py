"""Deliberately misbehaving implementations, registered only by the runner tests.

They behave like exact attention at the probe and gate shapes (T <= 64) and misbehave at
T >= 128, so that the failure happens where the runner measures.
"""

from __future__ import annotations

import os
import time

from harness import Capabilities, register

CAPS = Capabilities(devices=("cpu",), dtypes=("float32",), causal=False, backward=True)
LONG = 128


def _exact(q, k, v):
    import torch

    return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v


@register("test_aborts", framework="torch", family="exact", capabilities=CAPS)
def aborts(q, k, v, *, causal=False, key_padding_mask=None):
    """Kills its own process with SIGABRT at long T."""
    if q.shape[-2] >= LONG:
        os.abort()
    return _exact(q, k, v)


@register("test_nan", framework="torch", family="exact", capabilities=CAPS)
def returns_nan(q, k, v, *, causal=False, key_padding_mask=None):
    """NaN output at long T."""
    out = _exact(q, k, v)
    return out * float("nan") if q.shape[-2] >= LONG else out


@register("test_hangs", framework="torch", family="exact", capabilities=CAPS)
def hangs(q, k, v, *, causal=False, key_padding_mask=None):
    """Sleeps far past any test timeout at long T."""
    if q.shape[-2] >= LONG:
        time.sleep(600)
    return _exact(q, k, v)


@register("test_wrong", framework="torch", family="exact", capabilities=CAPS)
def wrong(q, k, v, *, causal=False, key_padding_mask=None):
    """Finite, right shape, wrong numbers: must be stopped by the correctness gate."""
    return _exact(q, k, v) + 0.01


@register("test_raises", framework="torch", family="exact", capabilities=CAPS)
def raises(q, k, v, *, causal=False, key_padding_mask=None):
    if q.shape[-2] >= LONG:
        raise RuntimeError("boom at long T")
    return _exact(q, k, v)
