"""Implementations that fail in the ways tests/test_faults.py injects (registered only there).

Like tests/impls_for_tests.py they are exact attention at the probe and gate shapes (T <= 64)
and misbehave at T >= 128, where the runner measures.
"""

from __future__ import annotations

import os
import signal

from harness import Capabilities, register

CAPS = Capabilities(devices=("cpu",), dtypes=("float32",), causal=False, backward=True)
LONG = 128


def _exact(q, k, v):
    import torch

    return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v


@register("fault_sigkill", framework="torch", family="exact", capabilities=CAPS)
def sigkill(q, k, v, *, causal=False, key_padding_mask=None):
    """SIGKILLs its own process at T == LONG (as a user's `kill -9` would): not an OOM."""
    if q.shape[-2] == LONG:
        os.kill(os.getpid(), signal.SIGKILL)
    return _exact(q, k, v)


@register("fault_shape", framework="torch", family="exact", capabilities=CAPS)
def wrong_shape(q, k, v, *, causal=False, key_padding_mask=None):
    """Drops half the queries at long T: finite numbers of the wrong shape."""
    out = _exact(q, k, v)
    return out[..., : q.shape[-2] // 2, :] if q.shape[-2] >= LONG else out


@register("fault_nan_always", framework="torch", family="exact", capabilities=CAPS)
def nan_always(q, k, v, *, causal=False, key_padding_mask=None):
    """NaN everywhere, at every shape."""
    return _exact(q, k, v) * float("nan")


@register("fault_segfault", framework="torch", family="exact", capabilities=CAPS)
def segfault(q, k, v, *, causal=False, key_padding_mask=None):
    """Kills its process with SIGSEGV at every shape (as a crashing extension would)."""
    os.kill(os.getpid(), signal.SIGSEGV)
    return _exact(q, k, v)


@register("fault_exit", framework="torch", family="exact", capabilities=CAPS)
def hard_exit(q, k, v, *, causal=False, key_padding_mask=None):
    """os._exit at every shape."""
    os._exit(3)
