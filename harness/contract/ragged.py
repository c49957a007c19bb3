"""Ragged batches: per-sequence key (and query) lengths drawn from a named, seeded distribution.

The ``--lengths`` spec (one value of the ``lengths`` axis; '' = every sequence at the full
length)::

    DIST[@SEED][+mixed:P]

    DIST  uniform:MIN-MAX     integers uniform in [MIN, MAX]
          zipf:A:MIN-MAX      bounded Zipf: P(L = l) proportional to l^-A, l in [MIN, MAX]
                              (most requests short, a heavy tail of long ones; A > 0)
          file:PATH           one length per line, taken in order (cycled when the file has
                              fewer lines than the batch)
    SEED  the draw's seed (default 0): the same lengths in every worker and on every machine
    +mixed:P  P prefill requests beside decode requests in one batch (vLLM's batch
              specifications): the first B - P sequences decode one query each, the last P
              prefill (query length = key length); needs the default --q-len

Sizes take the sweep's spelling (512, 4K). The point's ``seq_len`` is the cap: each drawn key
length is clipped to [1, seq_len], so ``--seq-len`` is the longest (or the cap) key length and
``--batch`` the number of sequences. Without ``+mixed`` the queries follow ``--q-len``: 1 =
decode (one query per sequence), the default = prefill (query length = key length).

Layout (harness.contract.masking): the batch is padded to the longest, each sequence
right-aligned in its row (its Lq queries the last Lq of the Tq rows, its Lk keys the last Lk of
the Tk columns), so that bottom-right causal, windows and ALiBi keep their meaning per sequence.
Padded query rows see no key and output zeros.

Pure functions; no Point import (records imports this module).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError

FLAG = "--lengths"
_SIZE = r"(\d+[KkMm]?)"
_UNIFORM = re.compile(rf"uniform:{_SIZE}-{_SIZE}")
_ZIPF = re.compile(rf"zipf:(\d+(?:\.\d*)?|\.\d+):{_SIZE}-{_SIZE}")
_MIXED = re.compile(r"\+mixed:(\d+)$")
_SEED = re.compile(r"@(\d+)$")


@dataclass(frozen=True)
class LengthSpec:
    dist: str                  # uniform | zipf | file
    low: int = 0
    high: int = 0
    alpha: float = 0.0
    path: str = ""
    seed: int = 0
    prefills: int | None = None   # +mixed:P; None: all decode or all prefill (by --q-len)


@dataclass(frozen=True)
class Lengths:
    """Per-sequence query and key lengths of one point (int64 arrays of shape (B,))."""
    q: np.ndarray
    kv: np.ndarray

    def summary(self) -> dict[str, Any]:
        """What the record keeps: tokens and the key lengths' min/median/max."""
        return {"query_tokens": int(self.q.sum()), "kv_tokens": int(self.kv.sum()),
                "kv_min": int(self.kv.min()), "kv_median": float(np.median(self.kv)),
                "kv_max": int(self.kv.max()), "prefills": int((self.q > 1).sum())}


def _size(text: str) -> int:
    value = int(text[:-1]) * (1024 if text[-1] in "Kk" else 1024 ** 2) \
        if text[-1] in "KkMm" else int(text)
    return value


def parse_spec(text: str) -> LengthSpec:
    """One spec -> LengthSpec; UsageError naming the flag when it cannot be read."""
    rest = text.strip()
    prefills = None
    match = _MIXED.search(rest)
    if match:
        prefills, rest = int(match.group(1)), rest[:match.start()]
    seed = 0
    match = _SEED.search(rest)
    if match:
        seed, rest = int(match.group(1)), rest[:match.start()]
    if (m := _UNIFORM.fullmatch(rest)):
        spec = LengthSpec("uniform", _size(m.group(1)), _size(m.group(2)), seed=seed,
                          prefills=prefills)
    elif (m := _ZIPF.fullmatch(rest)):
        spec = LengthSpec("zipf", _size(m.group(2)), _size(m.group(3)), float(m.group(1)),
                          seed=seed, prefills=prefills)
        if spec.alpha <= 0:
            raise UsageError(f"{FLAG}: zipf's exponent must be > 0, got {text!r}")
    elif rest.startswith("file:") and len(rest) > 5:
        spec = LengthSpec("file", path=rest[5:], seed=seed, prefills=prefills)
        read_lengths_file(spec.path)   # a missing or unreadable file is a usage error here,
        #                               not an error record at every point
    else:
        raise UsageError(f"{FLAG}: cannot read {text!r} (uniform:MIN-MAX, zipf:A:MIN-MAX or "
                         f"file:PATH, then @SEED and +mixed:P optional)")
    if spec.dist != "file" and not 1 <= spec.low <= spec.high:
        raise UsageError(f"{FLAG}: needs 1 <= MIN <= MAX, got {text!r}")
    return spec


def parse_lengths(value: Any) -> tuple[str, ...]:
    """Flag text ('uniform:512-8K,zipf:1.1:16-4K') or a TOML list -> the specs, each checked;
    '' (or 'none', 'full') is every sequence at the full length."""
    items = value.split(",") if isinstance(value, str) else [str(x) for x in value]
    out = []
    for item in (i.strip() for i in items):
        if item.lower() in ("", "none", "full"):
            out.append("")
            continue
        parse_spec(item)
        out.append(item)
    return tuple(dict.fromkeys(out)) or ("",)


def draw_kv_lengths(spec: LengthSpec, batch: int, cap: int) -> np.ndarray:
    """(B,) int64 key lengths, seeded, clipped to [1, cap]."""
    rng = np.random.default_rng(spec.seed)
    if spec.dist == "uniform":
        drawn = rng.integers(spec.low, spec.high + 1, size=batch)
    elif spec.dist == "zipf":
        support = np.arange(spec.low, spec.high + 1, dtype=np.float64)
        weights = support ** -spec.alpha
        drawn = rng.choice(support.astype(np.int64), size=batch, p=weights / weights.sum())
    else:
        listed = read_lengths_file(spec.path)
        drawn = np.resize(np.asarray(listed, dtype=np.int64), batch)
    return np.clip(np.asarray(drawn, dtype=np.int64), 1, cap)


def read_lengths_file(path: str) -> list[int]:
    try:
        lines = Path(path).read_text().split()
    except OSError as exc:
        raise UsageError(f"{FLAG}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        values = [int(x) for x in lines]
    except ValueError:
        raise UsageError(f"{FLAG}: {path!r} must hold one whole number per line") from None
    if not values or min(values) < 1:
        raise UsageError(f"{FLAG}: {path!r} must hold positive lengths")
    return values


def lengths_for(spec_text: str, *, batch: int, seq_len: int, q_len: int) -> Lengths:
    """The lengths of a point (``q_len`` as the Point holds it: 0 = prefill, 1 = decode)."""
    spec = parse_spec(spec_text)
    kv = draw_kv_lengths(spec, batch, seq_len)
    if spec.prefills is not None:
        q = np.ones(batch, dtype=np.int64)
        first = batch - spec.prefills
        q[first:] = kv[first:]
    elif q_len == 1:
        q = np.ones(batch, dtype=np.int64)
    else:
        q = kv.copy()
    return Lengths(q=q, kv=kv)


def point_lengths(point: Any) -> Lengths | None:
    """The lengths of a point with ``lengths`` set, else None (every row at full length)."""
    spec = point.value("lengths")
    if not spec:
        return None
    return lengths_for(spec, batch=point.batch, seq_len=point.seq_len, q_len=point.q_len)


def lengths_problem(point: Any) -> str | None:
    """Why a point's lengths (and paging) are not a workload, or None."""
    page_size = point.value("page_size")
    if page_size < 0:
        return f"page_size must be >= 0, got {page_size}"
    if page_size > point.seq_len:
        return (f"page_size={page_size} > seq_len={point.seq_len}: one page would hold more "
                f"than a whole sequence (the pool holds whole pages)")
    spec_text = point.value("lengths")
    if not spec_text:
        return None
    try:
        spec = parse_spec(spec_text)
    except UsageError as exc:
        return str(exc)
    if point.documents:
        return "lengths and documents are two ways of packing: give one"
    if point.q_len not in (0, 1):
        return "with lengths, q_len is 1 (decode) or the default (prefill: = each key length)"
    if spec.prefills is not None:
        if point.q_len == 1:
            return "lengths +mixed:P needs the default q_len (prefills beside decodes)"
        if spec.prefills > point.batch:
            return f"+mixed:{spec.prefills} asks more prefills than batch={point.batch}"
    return None
