"""Implementations that fail in the ways tests/test_faults.py injects (registered only there).

Like tests/impls_for_tests.py they are exact attention at the probe and gate shapes (T <= 64)
and misbehave at T >= 128, where the runner measures; the ``fault_mid_*`` ones misbehave at
T == 128 only, so that a series has measured points on both sides of the fault.
"""

from __future__ import annotations

import os
import signal
import time

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


# -- faults in the middle of a series: exact attention at every T but MID ----------------------
MID = 128


def _segfault(q):
    os.kill(os.getpid(), signal.SIGSEGV)


def _sigkill(q):
    os.kill(os.getpid(), signal.SIGKILL)


def _abort(q):
    os.abort()


def _exit(q):
    os._exit(3)


def _allocate_too_much(q):
    """8 GiB, never touched, beyond the tests' --max-memory: the allocation fails (out of memory)."""
    import torch

    torch.empty(2 ** 31, dtype=torch.float32)


def _hang(q):
    time.sleep(600)


def _half_the_queries(q):
    return q[..., : q.shape[-2] // 2, :]


MID_FAULTS = {"segfault": _segfault, "sigkill": _sigkill, "abort": _abort, "exit": _exit,
              "oom": _allocate_too_much, "hang": _hang, "shape": _half_the_queries}


def _faulting_at_mid(fault):
    def method(q, k, v, *, causal=False, key_padding_mask=None):
        out = _exact(q, k, v)
        if q.shape[-2] == MID:
            wrong = fault(out)
            if wrong is not None and wrong.shape != out.shape:
                return wrong
        return out

    method.__doc__ = f"Exact attention, except at T == {MID}: {fault.__name__.strip('_')}."
    return method


for _name, _fault in MID_FAULTS.items():
    register(f"fault_mid_{_name}", framework="torch", family="exact",
             capabilities=CAPS)(_faulting_at_mid(_fault))


@register("fault_hang_if_told", framework="torch", family="exact", capabilities=CAPS)
def hang_if_told(q, k, v, *, causal=False, key_padding_mask=None):
    """At T == MID, while $ATTNBENCH_TEST_HANG names a file: writes that file, then hangs
    (tests/test_faults.py kills the sweep once the file is there); exact attention otherwise."""
    marker = os.environ.get("ATTNBENCH_TEST_HANG")
    if marker and q.shape[-2] == MID:
        with open(marker, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(600)
    return _exact(q, k, v)


@register("fault_hang_always", framework="torch", family="exact", capabilities=CAPS)
def hang_always(q, k, v, *, causal=False, key_padding_mask=None):
    """Hangs at the correctness gate's shape (T=64, D=32: the sweep's probe runs it), exact
    attention otherwise (so that `list`, which runs a tiny input only, does not wait on it)."""
    if tuple(q.shape[-2:]) == (64, 32):
        time.sleep(600)
    return _exact(q, k, v)


@register("fault_float64_out", framework="torch", family="exact", capabilities=CAPS)
def float64_out(q, k, v, *, causal=False, key_padding_mask=None):
    """Right values, answered in float64 for float32 inputs."""
    return _exact(q, k, v).double()


@register("fault_off_when_long", framework="torch", family="exact", capabilities=CAPS)
def off_when_long(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention, 5% too large from T >= 256 on: the gate (T=64) passes it."""
    out = _exact(q, k, v)
    return out * 1.05 if q.shape[-2] >= 256 else out


_CALLS = {"n": 0}


@register("fault_every_other_call", framework="torch", family="exact", capabilities=CAPS)
def every_other_call(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention on odd calls, half of it on even ones."""
    _CALLS["n"] += 1
    out = _exact(q, k, v)
    return out if _CALLS["n"] % 2 else out * 0.5


@register("fault_scales_q_in_place", framework="torch", family="exact", capabilities=CAPS)
def scales_q_in_place(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention of its inputs, then q scaled by 1.01 in place: over many calls q drifts."""
    out = _exact(q, k, v)
    q.data.mul_(1.01)
    return out


_CACHE: dict = {}


@register("fault_cached_by_tensor", framework="torch", family="exact", capabilities=CAPS)
def cached_by_tensor(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention, computed once per (q, k, v) tensor objects and answered from a cache
    after: timed as a dictionary lookup."""
    key = (id(q), id(k), id(v), q.shape)
    if key not in _CACHE:
        _CACHE[key] = _exact(q, k, v)
    return _CACHE[key]


def _fake_gradients():
    import torch

    class FakeGradients(torch.autograd.Function):
        """Exact attention forward; a backward that returns the inputs' shapes filled with
        a tenth of the upstream gradient's mean: fast, and wrong."""

        @staticmethod
        def forward(ctx, q, k, v):
            ctx.save_for_backward(q, k, v)
            with torch.no_grad():
                return _exact(q, k, v)

        @staticmethod
        def backward(ctx, grad):
            q, k, v = ctx.saved_tensors
            fill = 0.1 * grad.mean()
            return (torch.full_like(q, float(fill)), torch.full_like(k, float(fill)),
                    torch.full_like(v, float(fill)))

    return FakeGradients


HALF_CAPS = Capabilities(devices=("cpu",), dtypes=("float32", "float16", "bfloat16"),
                         causal=False, backward=True)


@register("fault_fake_gradients", framework="torch", family="exact", capabilities=HALF_CAPS)
def fake_gradients(q, k, v, *, causal=False, key_padding_mask=None):
    """Right forward, fake dq, dk, dv."""
    return _fake_gradients().apply(q, k, v)


@register("fault_memory_error", framework="torch", family="exact", capabilities=CAPS)
def memory_error(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention below T=64; at 64 and above the allocation fails (as a CPU allocator's
    MemoryError)."""
    if q.shape[-2] >= 64:
        raise MemoryError("cannot allocate the scores")
    return _exact(q, k, v)


_PENDING: dict = {}


@register("fault_fills_on_thread", framework="torch", family="kernel", capabilities=CAPS)
def fills_on_thread(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention below LONG; from LONG on it returns zeros at once and a thread of its own
    fills them with the answer once the next call has started (a launch queue one call deep):
    timed, it would be a launch's time."""
    import threading

    import torch

    if q.shape[-2] < LONG:
        return _exact(q, k, v)
    previous = _PENDING.pop("go", None)
    if previous is not None:
        previous.set()          # the previous call's output may now be filled
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    go = threading.Event()

    def fill() -> None:
        go.wait()
        with torch.no_grad():
            out.copy_(_exact(q, k, v))

    threading.Thread(target=fill, daemon=True).start()
    _PENDING["go"] = go
    return out


_POOL: dict = {}


@register("fault_pooled_exact", framework="torch", family="exact", capabilities=CAPS)
def pooled_exact(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention computed per head on a thread pool it keeps (threads started lazily, left
    idle between calls) and waited for before it returns: honest, and must not be taken for a
    method leaving work running."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    pool = _POOL.setdefault("pool", ThreadPoolExecutor(max_workers=2))
    heads = list(pool.map(lambda h: _exact(q[:, h], k[:, h], v[:, h]), range(q.shape[1])))
    return torch.stack(heads, dim=1)


def _fake_gradients_jax():
    import jax
    import jax.numpy as jnp

    def exact(q, k, v):
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
        return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)

    @jax.custom_vjp
    def attention(q, k, v):
        return exact(q, k, v)

    def forward(q, k, v):
        return exact(q, k, v), (q, k, v)

    def backward(saved, grad):
        """Each input's shape filled with a tenth of the upstream gradient's mean."""
        fill = 0.1 * grad.mean()
        return tuple(jnp.full_like(x, fill) for x in saved)

    attention.defvjp(forward, backward)
    return attention


@register("fault_fake_gradients_jax", framework="jax", family="exact", requires=("jax",),
          capabilities=Capabilities(devices=("cpu",), dtypes=("float32", "bfloat16"),
                                    causal=False, backward=True))
def fake_gradients_jax(q, k, v, *, causal=False, key_padding_mask=None):
    """Right forward (jitted), fake dq, dk, dv through a custom_vjp."""
    return _fake_gradients_jax()(q, k, v)


_LAST_CONTENT: dict = {}


@register("fault_cached_by_content", framework="torch", family="exact", capabilities=CAPS)
def cached_by_content(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention computed when its inputs' contents differ from the previous call's (a
    fingerprint: storage, shape, the sum of every 97th element); the same contents again are
    answered from that one-entry cache, 5% off, so that an answer from the cache shows in the
    values of the call it answered (a timing loop calling it on unchanged inputs would time
    lookups, the last of them wrong)."""
    key = tuple((x.data_ptr(), tuple(x.shape), float(x.detach().reshape(-1)[::97].sum()))
                for x in (q, k, v))
    if _LAST_CONTENT.get("key") == key:
        return _LAST_CONTENT["out"] * 1.05
    _LAST_CONTENT.update(key=key, out=_exact(q, k, v))
    return _LAST_CONTENT["out"]


def _cached_backward():
    import torch

    class CachedBackward(torch.autograd.Function):
        """Exact attention; its backward computed once per graph and answered from that cache
        by every later backward through the same graph (a backward-only point reuses one)."""

        @staticmethod
        def forward(ctx, q, k, v):
            ctx.save_for_backward(q, k, v)
            ctx.cached = None
            with torch.no_grad():
                return _exact(q, k, v)

        @staticmethod
        def backward(ctx, grad):
            if ctx.cached is None:
                q, k, v = (x.detach().requires_grad_() for x in ctx.saved_tensors)
                with torch.enable_grad():
                    ctx.cached = torch.autograd.grad(_exact(q, k, v), (q, k, v), grad)
            return ctx.cached

    return CachedBackward


@register("fault_backward_cached", framework="torch", family="exact", capabilities=CAPS)
def backward_cached(q, k, v, *, causal=False, key_padding_mask=None):
    """Right forward; a backward-only point's calls after the first answered from a cache."""
    return _cached_backward().apply(q, k, v)


@register("fault_sampled_rows_only", framework="torch", family="exact", capabilities=CAPS)
def sampled_rows_only(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention of every other query row only (zeros elsewhere) from T > 256 on: the
    rows a check reading 256 evenly spaced rows of T=512 would look at."""
    import torch

    if q.shape[-2] <= 256:
        return _exact(q, k, v)
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    out[..., ::2, :] = _exact(q[..., ::2, :], k, v)
    return out


_BY_NORM: dict = {}


@register("fault_cached_by_norm", framework="torch", family="kernel", capabilities=CAPS)
def cached_by_norm(q, k, v, *, causal=False, key_padding_mask=None):
    """A 'kernel approximation' answering from a cache keyed on its inputs' sums of squares
    (kept by any permutation or negation of q): no gate compares its values."""
    key = (tuple(q.shape), round(float(q.detach().double().square().sum()), 6))
    if key not in _BY_NORM:
        _BY_NORM[key] = _exact(q, k, v)
    return _BY_NORM[key]


# the command line of the process fault_child_then_hang leaves behind (tests look for it)
ORPHAN_MARKER = "attnbench-test-orphan-of-a-killed-worker"


@register("fault_child_then_hang", framework="torch", family="exact", capabilities=CAPS)
def child_then_hang(q, k, v, *, causal=False, key_padding_mask=None):
    """At T >= LONG: starts a process of its own (a Python sleeping 10 minutes, ORPHAN_MARKER
    on its command line, as a plug-in's helper server would be), then hangs; exact attention
    below."""
    import subprocess
    import sys

    if q.shape[-2] >= LONG:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", ORPHAN_MARKER])
        time.sleep(600)
    return _exact(q, k, v)
