"""Parsers of axis values: raw flag text or a TOML value -> a tuple of values (pure).

Each raises UsageError with one line naming the flag. The axis table (harness.contract.axes) says
which parser reads which axis.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from harness.errors import UsageError

DTYPES = ("float64", "float32", "float16", "bfloat16")
PASSES = ("forward", "backward", "forward_backward")
PASS_ALIASES = {"fwd": "forward", "forward": "forward", "bwd": "backward",
                "backward": "backward", "fwd_bwd": "forward_backward",
                "forward_backward": "forward_backward", "fwdbwd": "forward_backward",
                "forward+backward": "forward_backward"}
DTYPE_ALIASES = {"fp32": "float32", "float32": "float32", "f32": "float32",
                 "fp16": "float16", "float16": "float16", "half": "float16", "f16": "float16",
                 "bf16": "bfloat16", "bfloat16": "bfloat16",
                 "fp64": "float64", "float64": "float64", "double": "float64"}
MAX_SIZE = 2 ** 31 - 1
SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
BYTE_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
              "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}


# -- parsing ---------------------------------------------------------------------------------
def parse_int(text: str, *, axis: str = "size") -> int:
    """'4096', '4K', '2^12', '1M' -> int."""
    token = text.strip().upper()
    match = re.fullmatch(r"2\^(\d+)", token)
    if match:
        return 2 ** int(match.group(1))
    match = re.fullmatch(r"(\d+)([KMG]?)", token)
    if not match:
        raise UsageError(f"--{axis.replace('_', '-')}: cannot read {text!r} as a size "
                         f"(examples: 4096, 4K, 2^12)")
    return int(match.group(1)) * SIZE_SUFFIXES[match.group(2)]


def parse_int_list(text: str | Iterable[Any], *, axis: str) -> tuple[int, ...]:
    """'1024,2048', '1K..128K' (powers of two), '512..4096:+512' (step), lists from TOML."""
    if isinstance(text, bool) or isinstance(text, float):
        raise UsageError(f"--{axis.replace('_', '-')}: expected whole numbers, got {text!r}")
    if isinstance(text, int):
        text = [text]
    items = text.split(",") if isinstance(text, str) else [str(x) for x in text]
    values: list[int] = []
    if not any(i.strip() for i in items):
        raise UsageError(f"--{axis.replace('_', '-')}: empty list")
    for item in (i.strip() for i in items):
        if not item:
            raise UsageError(f"--{axis.replace('_', '-')}: empty item in {text!r}")
        if ".." in item:
            values.extend(_parse_range(item, axis=axis))
        else:
            values.append(parse_int(item, axis=axis))
    if not values:
        raise UsageError(f"--{axis.replace('_', '-')}: empty list")
    bad = [v for v in values if v <= 0]
    if bad:
        raise UsageError(f"--{axis.replace('_', '-')}: sizes must be positive, got {bad[0]}")
    huge = [v for v in values if v > MAX_SIZE]
    if huge:
        raise UsageError(f"--{axis.replace('_', '-')}: {huge[0]} is beyond any tensor "
                         f"dimension (at most 2^31 - 1)")
    return tuple(dict.fromkeys(values))


def _parse_range(item: str, *, axis: str) -> list[int]:
    lo_text, hi_text = item.split("..", 1)
    step = None
    if ":" in hi_text:
        hi_text, step_text = hi_text.split(":", 1)
        if not step_text.startswith("+"):
            raise UsageError(f"--{axis.replace('_', '-')}: step must look like ':+512' "
                             f"in {item!r}")
        step = parse_int(step_text[1:], axis=axis)
    lo, hi = parse_int(lo_text, axis=axis), parse_int(hi_text, axis=axis)
    if hi > MAX_SIZE:
        raise UsageError(f"--{axis.replace('_', '-')}: {hi} is beyond any tensor dimension "
                         f"(at most 2^31 - 1)")
    if lo <= 0 or hi < lo:
        raise UsageError(f"--{axis.replace('_', '-')}: bad range {item!r} (need 0 < low <= high)")
    if step is not None:
        if step <= 0:
            raise UsageError(f"--{axis.replace('_', '-')}: step must be positive in {item!r}")
        return list(range(lo, hi + 1, step))
    values = []
    value = lo
    while value <= hi:
        values.append(value)
        value *= 2
    return values


def parse_dtypes(text: str | Iterable[str]) -> tuple[str, ...]:
    items = _items(text, flag="--dtype")
    out = []
    for item in items:
        name = DTYPE_ALIASES.get(item.lower())
        if name is None:
            raise UsageError(f"--dtype: unknown dtype {item!r}; valid: {', '.join(DTYPES)}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def parse_passes(text: str | Iterable[str]) -> tuple[str, ...]:
    out = []
    for item in _items(text, flag="--pass"):
        name = PASS_ALIASES.get(item.lower())
        if name is None:
            raise UsageError(f"--pass: unknown pass {item!r}; valid: {', '.join(PASSES)}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def parse_bools(text: str | Iterable[Any], *, axis: str = "causal") -> tuple[bool, ...]:
    if isinstance(text, bool):
        return (text,)
    out = []
    for item in _items(text, flag=f"--{axis}"):
        lowered = str(item).lower()
        if lowered in ("true", "1", "yes", "on", "causal"):
            out.append(True)
        elif lowered in ("false", "0", "no", "off", "noncausal", "non-causal"):
            out.append(False)
        elif lowered == "both":
            out.extend([False, True])
        else:
            raise UsageError(f"--{axis}: expected true/false/both, got {item!r}")
    return tuple(dict.fromkeys(out))


def parse_devices(text: str | Iterable[str]) -> tuple[str, ...]:
    out = []
    for item in _items(text, flag="--device"):
        if not re.fullmatch(r"cpu|cuda(:\d+)?", item):
            raise UsageError(f"--device: unknown device {item!r}; valid: cpu, cuda, cuda:N")
        out.append(item)
    return tuple(dict.fromkeys(out))


def parse_bytes(text: str | int | float) -> int:
    """'4GB', '512MiB', '2e9', 1000000 -> bytes."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UsageError(f"--max-memory: cannot read {text!r} (examples: 4GB, 512MiB)")
    if isinstance(text, (int, float)):
        if not math.isfinite(text):
            raise UsageError(f"--max-memory: cannot read {text!r} (examples: 4GB, 512MiB)")
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([\d.]+(?:e\d+)?)\s*([a-zA-Z]*)\s*", text)
        unit = match.group(2).upper() if match else None
        if not match or (unit and unit not in BYTE_UNITS and unit + "B" not in BYTE_UNITS):
            raise UsageError(f"--max-memory: cannot read {text!r} (examples: 4GB, 512MiB)")
        factor = BYTE_UNITS.get(unit or "B") or BYTE_UNITS[unit + "B"]
        try:
            number = float(match.group(1)) * factor
        except ValueError:   # "1.2.3"
            raise UsageError(f"--max-memory: cannot read {text!r} (examples: 4GB, 512MiB)") \
                from None
        if not math.isfinite(number) or number > MAX_MEMORY_BYTES:
            raise UsageError(f"--max-memory: {text!r} is more than any machine has (at most "
                             f"{MAX_MEMORY_BYTES // 2 ** 60} EiB)")
        value = int(number)
    if value <= 0:
        raise UsageError(f"--max-memory: must be positive, got {text!r}")
    if value > MAX_MEMORY_BYTES:
        raise UsageError(f"--max-memory: {text!r} is more than any machine has (at most "
                         f"{MAX_MEMORY_BYTES // 2 ** 60} EiB)")
    return value


# the largest --max-memory taken: far above any machine, and well inside what setrlimit and the
# frameworks' allocator settings take (64-bit)
MAX_MEMORY_BYTES = 2 ** 60


def _items(text: str | Iterable[Any], *, flag: str) -> list[str]:
    if isinstance(text, (bool, int, float)):   # a TOML scalar where a list or string goes
        text = [text]
    if isinstance(text, dict):
        raise UsageError(f"{flag}: expected a list or comma-separated text, got a table")
    items = text.split(",") if isinstance(text, str) else [str(x) for x in text]
    items = [i.strip() for i in items if str(i).strip()]
    if not items:
        raise UsageError(f"{flag}: empty list; give at least one value")
    return items



def parse_windows(text: str | Iterable[Any]) -> tuple[int, ...]:
    """'128,4096' (keys back), 'none' = no window; a window of 0 keys back is allowed."""
    out = []
    for item in _items(text, flag="--window"):
        if str(item).lower() in ("none", "off", "-1"):
            out.append(-1)
        else:
            try:
                value = parse_int(str(item), axis="window")
            except UsageError:
                raise UsageError(f"--window: cannot read {item!r} (examples: 128, 4K, none)") \
                    from None
            out.append(value)
    return tuple(dict.fromkeys(out))


def parse_softcaps(text: str | Iterable[Any]) -> tuple[float, ...]:
    """'50,30' (the cap of cap * tanh(s / cap)), 'none' or 0 = no cap; a cap is positive."""
    out = []
    for item in _items(text, flag="--softcap"):
        if str(item).lower() in ("none", "off"):
            out.append(0.0)
            continue
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"--softcap: cannot read {item!r} (examples: 50, 30.0, none)") \
                from None
        if not math.isfinite(value) or value < 0:
            raise UsageError(f"--softcap: a cap is a positive number (0 or none: no cap), "
                             f"got {item!r}")
        out.append(value)
    return tuple(dict.fromkeys(out))


def parse_names(text: str | Iterable[Any], *, flag: str = "--impl") -> tuple[str, ...]:
    """'a,b' or a TOML list -> names, in order."""
    return tuple(_items(text, flag=flag))
