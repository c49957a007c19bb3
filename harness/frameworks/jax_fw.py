"""JAX adapter: devices, dtypes, conversion, synchronisation, and the tiny availability run.

attnbench's device name for a GPU is 'cuda' in both frameworks; JAX calls the platform 'gpu'.
float64 needs JAX's x64 mode, which is switched on only around float64 calls (a context, not a
global setting).
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from harness.registry import Availability, device_kind, first_line

if TYPE_CHECKING:
    from harness.registry import Implementation

TINY_SHAPE = (1, 2, 16, 16)


def installed() -> Availability:
    if importlib.util.find_spec("jax") is None:
        return Availability(False, "package jax not installed (pip install 'attnbench[jax]')")
    return Availability(True)


def jax_device(device: str) -> Any:
    import jax

    kind = device_kind(device)
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    platform = "gpu" if kind == "cuda" else kind
    return jax.devices(platform)[index]


def device_present(device: str) -> Availability:
    ok = installed()
    if not ok:
        return ok
    kind = device_kind(device)
    if kind not in ("cpu", "cuda"):
        return Availability(False, f"unknown device {device!r}")
    try:
        jax_device(device)
    except (RuntimeError, IndexError) as exc:
        return Availability(False, f"no JAX {kind} device: {first_line(str(exc))}")
    return Availability(True)


def jnp_dtype(name: str) -> Any:
    import jax.numpy as jnp

    return {"float64": jnp.float64, "float32": jnp.float32,
            "float16": jnp.float16, "bfloat16": jnp.bfloat16}[name]


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """Enable JAX's 64-bit mode for the duration of a float64 computation only."""
    if dtype == "float64":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def from_numpy(array: np.ndarray, device: str, dtype: str | None = None) -> Any:
    import jax

    if dtype is not None and array.dtype != np.bool_:
        if dtype in ("float64", "float32", "float16"):
            array = array.astype(dtype)
        else:  # bfloat16 has no numpy dtype: convert on device
            return jax.device_put(array.astype(np.float32), jax_device(device)).astype(
                jnp_dtype(dtype))
    return jax.device_put(array, jax_device(device))


def to_numpy(array: Any) -> np.ndarray:
    import jax.numpy as jnp

    if array.dtype in (jnp.float16, jnp.bfloat16):
        array = array.astype(jnp.float32)
    return np.asarray(array)


def synchronize(device: str, value: Any = None) -> None:
    if value is not None:
        import jax

        jax.block_until_ready(value)


def call(impl: "Implementation", q: Any, k: Any, v: Any, *, causal: bool = False,
         key_padding_mask: Any = None) -> Any:
    return impl.fn(q, k, v, causal=causal, key_padding_mask=key_padding_mask)


def tiny_run(impl: "Implementation", device: str, dtype: str) -> Availability:
    try:
        rng = np.random.default_rng(0)
        with precision(dtype):
            q, k, v = (from_numpy(rng.standard_normal(TINY_SHAPE, dtype=np.float32), device,
                                  dtype) for _ in range(3))
            out = impl.fn(q, k, v, causal=False, key_padding_mask=None)
            out = to_numpy(out)
        if out.shape != TINY_SHAPE:
            return Availability(False, f"{impl.name}: returned shape {out.shape}")
        if not np.isfinite(out).all():
            return Availability(False, f"{impl.name}: non-finite output on a tiny input")
    except Exception as exc:
        return Availability(False, f"{impl.name}: fails on {device}/{dtype}: "
                                   f"{type(exc).__name__}: {first_line(str(exc))}")
    return Availability(True, "")
