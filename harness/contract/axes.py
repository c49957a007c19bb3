"""The axis table: every sweep axis declared once.

An axis is one row (``Axis``): its name (the Point's, the record's and the TOML key's), its
flag, the parser of flag text or TOML values, its default, the capability feature a method needs
to take a non-default value (None: any method may), the generic reason when a method lacks that
feature, how a point's label shows it, how a record stores it and how it is read back. Sweep
flags, TOML keys, ``SweepSpec``, ``Point`` (fields, id, label, series key, features),
``SpeedRecord``, the capability checks and their reasons, the report's columns, compare's and
ab's keys, ``check``'s workload flags and ``list``'s workloads column iterate ``axes()``.

Point ids: a workload axis enters the point id only where its value is not the default, so a
point at every default has the id it had before the axis existed, and old records (which lack
the axis, or hold None) read as the default.

Adding an axis
--------------
A built-in axis: one ``register_axis(Axis(...))`` row below (``field=None``: the Point keeps it
in ``Point.extra_axes`` and the record in ``SpeedRecord.axes``), the methods that take it
(``Capabilities(features=...)`` naming ``feature``; with ``keyword`` set the method's function
receives the value as that keyword argument), and their tests. A plug-in module loaded with
``--impl-module`` (or an entry point) does the same from outside attnbench::

    from harness.contract.axes import Axis, register_axis
    from harness.contract.parsers import parse_int_list
    from harness import Capabilities, register

    register_axis(Axis("block", parse=lambda v: parse_int_list(v, axis="block"), default=0,
                       feature="block", reason="no block size", keyword="block",
                       help="kernel block size"))

    @register("my_attn", framework="torch", family="exact",
              capabilities=Capabilities(features={"backward", "block"}))
    def my_attn(q, k, v, *, causal=False, key_padding_mask=None, block=0): ...

``sweep --block 64,128`` then sweeps it; methods without the feature are recorded
``unsupported`` (with ``reason``) at a non-default value.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from harness.contract.parsers import (
    parse_bools,
    parse_devices,
    parse_dtypes,
    parse_int_list,
    parse_passes,
    parse_softcaps,
    parse_windows,
)
from harness.contract.quant import label as kv_label
from harness.contract.quant import parse_kv_dtypes


@dataclass(frozen=True)
class Axis:
    """One sweep axis (see the module docstring)."""

    name: str                                   # Point / record / TOML name
    parse: Callable[[Any], tuple]               # flag text or TOML value -> values
    default: Any                                # the point's value when not given
    help: str = ""                              # the sweep flag's help
    feature: str | None = None                  # capability a non-default value needs
    reason: str = ""                            # why, when a method lacks ``feature``
    label: Callable[[Any], str] | None = None   # non-default value -> 'Hkv=8' (workload axes)
    keyword: str | None = None                  # the method receives the value as this keyword
    workload: bool = True                       # False: a basic axis (shape, dtype, pass, device)
    field: str | None = None                    # Point attribute; None: in Point.extra_axes
    type: type = int                            # the value's type (records, report columns)
    # (value, point) -> value: a value that means the default spelled another way -> default
    normalise: Callable[[Any, Any], Any] | None = None
    # (point value, point) -> what the record stores; None: the value itself
    store: Callable[[Any, Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination (and SweepRequest/SweepSpec field) of its flag."""
        return self.field or self.name

    def read(self, raw: Any) -> Any:
        """A record's or a dict's value -> the point's value; absent (None) = the default."""
        if raw is None:
            return self.default
        if self.type is bool:
            return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1")
        return self.type(raw)

    def stored(self, value: Any, point: Any) -> Any:
        return value if self.store is None else self.store(value, point)

    def text(self, value: Any) -> str:
        """The label of a non-default value."""
        return self.label(value) if self.label is not None else f"{self.name}={value}"


_AXES: dict[str, Axis] = {}
_LOCK = threading.Lock()
# names an axis cannot take: a record's fields and the columns tables add beside the axes
# (harness.contract.records reserves them); an axis of that name would shadow the field in the
# report's frame, the CSV files and Point.from_dict
_RESERVED: set[str] = set()
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


def reserve_names(names: Iterable[str]) -> None:
    """Names no axis may take (the record's fields, the tables' own columns)."""
    with _LOCK:
        _RESERVED.update(n for n in names if n not in _AXES)


def register_axis(axis: Axis, *, replace: bool = False) -> Axis:
    """Add a row to the table (built-ins below; a plug-in module calls it when imported)."""
    with _LOCK:
        existing = _AXES.get(axis.name)
        if existing is not None and not replace and existing != axis:
            raise ValueError(f"axis {axis.name!r} is already declared; choose another name")
        if axis.field is None and axis.workload is False:
            raise ValueError(f"axis {axis.name!r}: a plug-in axis is a workload axis")
        if not NAME_PATTERN.fullmatch(axis.name):
            raise ValueError(f"axis {axis.name!r}: a name is lower-case letters, digits and "
                             f"'_' (it is a flag, a TOML key and a column)")
        if axis.name in _RESERVED:
            raise ValueError(f"axis {axis.name!r}: the name is taken (a record field, a table "
                             f"column or a command-line name); choose another name")
        _AXES[axis.name] = axis
    return axis


def axes() -> tuple[Axis, ...]:
    """Every axis, in table order (basic axes, then workload axes, then plug-in ones)."""
    return tuple(_AXES.values())


def get_axis(name: str) -> Axis | None:
    return _AXES.get(name)


def basic_axes() -> tuple[Axis, ...]:
    return tuple(a for a in _AXES.values() if not a.workload)


def workload_axes() -> tuple[Axis, ...]:
    return tuple(a for a in _AXES.values() if a.workload)


def extra_axes() -> tuple[Axis, ...]:
    """The axes a Point keeps in ``extra_axes`` (no dataclass field of their own)."""
    return tuple(a for a in _AXES.values() if a.field is None)


def keyword_axes() -> tuple[Axis, ...]:
    return tuple(a for a in _AXES.values() if a.keyword)


# -- capability features ------------------------------------------------------------------------
# features that are no sweep axis (run_bench.py check's padded cases) and their generic reasons
OTHER_FEATURES = {"key_padding_mask": "no key-padding mask support"}


def feature_names() -> tuple[str, ...]:
    """Every known feature, in the order reasons are given."""
    basic = [a.feature for a in basic_axes() if a.feature]
    names = [*basic[:1], *OTHER_FEATURES, *basic[1:],
             *(a.feature for a in workload_axes() if a.feature)]
    return tuple(dict.fromkeys(names))


def workload_feature_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.feature for a in workload_axes() if a.feature))


def generic_reason(feature: str) -> str:
    if feature in OTHER_FEATURES:
        return OTHER_FEATURES[feature]
    for axis in _AXES.values():
        if axis.feature == feature:
            return axis.reason or f"no {feature}"
    return f"no {feature}"


def method_keywords(features: Iterable[str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments a method with these capability features receives for the axis
    values given (name -> value; absent: the default)."""
    have = set(features)
    return {a.keyword: values.get(a.name, a.default) for a in keyword_axes()
            if a.feature in have and a.keyword}


# -- the built-in rows -------------------------------------------------------------------------
def _ints(name: str) -> Callable[[Any], tuple]:
    return lambda value: parse_int_list(value, axis=name)


for _axis in (
    Axis("seq_len", _ints("seq_len"), 1024, "sequence lengths, e.g. 1024,2048 or 1K..128K",
         workload=False, field="seq_len"),
    Axis("head_dim", _ints("head_dim"), 64, "head dimensions, e.g. 64,128", workload=False,
         field="head_dim"),
    Axis("batch", _ints("batch"), 1, "batch sizes", workload=False, field="batch"),
    Axis("heads", _ints("heads"), 8, "head counts", workload=False, field="heads"),
    Axis("dtype", parse_dtypes, "float32", "float32, float16 (fp16), bfloat16 (bf16), float64",
         workload=False, field="dtype", type=str),
    Axis("causal", parse_bools, False, "true, false or both (bottom-right aligned when "
                                       "q-len < seq-len)",
         feature="causal", reason="no causal mode", workload=False, field="causal", type=bool),
    Axis("pass", parse_passes, "forward", "forward, backward, forward_backward (aliases fwd, "
                                          "bwd, fwd_bwd)",
         feature="backward", reason="no backward pass", workload=False, field="pass_", type=str),
    Axis("device", parse_devices, "cpu", "cpu, cuda, cuda:N (default: cuda if present, else "
                                         "cpu)",
         workload=False, field="device", type=str),
    # workload axes (harness.contract.masking has the conventions); kv_heads == heads and
    # q_len == seq_len are the defaults spelled another way
    Axis("kv_heads", _ints("kv_heads"), 0, "key/value heads (GQA; 1 = MQA; default: = heads)",
         feature="gqa", reason="no grouped-query attention (fewer key/value heads than query "
                               "heads)",
         label=lambda v: f"Hkv={v}", field="kv_heads",
         normalise=lambda v, p: 0 if v == p.heads else v,
         store=lambda v, p: v or p.heads),
    Axis("q_len", _ints("q_len"), 0, "query lengths (default: = seq-len; --seq-len is the "
                                     "key/value length; 1 = a decode step)",
         feature="q_len", reason="needs as many queries as keys (Tq == Tk)",
         label=lambda v: f"Tq={v}", field="q_len",
         normalise=lambda v, p: 0 if v == p.seq_len else v,
         store=lambda v, p: v or p.seq_len),
    Axis("window", parse_windows, -1, "sliding windows of LEFT keys back (right side 0 with "
                                      "--causal, LEFT otherwise); 'none' = no window",
         feature="window", reason="no sliding-window mask", label=lambda v: f"window={v}",
         field="window", store=lambda v, p: None if v < 0 else v),
    Axis("alibi", lambda v: parse_bools(v, axis="alibi"), False,
         "ALiBi biases (BLOOM's slopes): true, false or both",
         feature="alibi", reason="no ALiBi bias", label=lambda v: "alibi", field="alibi",
         type=bool),
    Axis("documents", _ints("documents"), 0, "split T into N packed documents of seeded random "
                                             "lengths",
         feature="documents", reason="no packed-documents mask", label=lambda v: f"docs={v}",
         field="documents", store=lambda v, p: v or None),
    # FP8 keys and values with per-tensor scales (harness.contract.quant); q stays in dtype
    Axis("kv_dtype", parse_kv_dtypes, "", "keys and values stored in FP8 with per-tensor "
                                          "scales: float8_e4m3fn, float8_e5m2, none "
                                          "(default: the point's dtype)",
         feature="fp8_kv", reason="no FP8 key/value inputs", label=kv_label, field="kv_dtype",
         type=str, store=lambda v, p: v or None),
):
    register_axis(_axis)


# score modifications (harness.contract.reference.exact_attention has their order: the scaled
# score is capped, ALiBi added, the mask applied, and the sink joins the softmax's denominator).
# No Point field: the point keeps them in extra_axes, the record in ``axes``; the gate builds
# their inputs (harness.contract.point_masks.point_mask).
for _axis in (
    Axis("softcap", parse_softcaps, 0.0, "logit softcap: scaled scores s become "
                                         "cap * tanh(s / cap) before masking and softmax "
                                         "(Gemma 2: 50); 0 or none = no cap",
         feature="softcap", reason="no logit softcapping (cap * tanh(s / cap))",
         label=lambda v: f"softcap={v:g}", type=float),
    Axis("sinks", lambda v: parse_bools(v, axis="sinks"), False,
         "attention sinks (gpt-oss): one seeded logit per query head joins each row's softmax "
         "denominator and adds no value; true, false or both",
         feature="sinks", reason="no attention sinks (a per-head logit in the softmax "
                                 "denominator)",
         label=lambda v: "sinks", type=bool),
):
    register_axis(_axis)


# -- paged KV cache and ragged batches (harness.contract.paging, harness.contract.ragged) -----
def _page_sizes(value: Any) -> tuple:
    """'16,32', with 0 or 'dense' for the dense cache."""
    items = value.split(",") if isinstance(value, str) else list(value) \
        if isinstance(value, (list, tuple)) else [value]
    dense = [i for i in items if str(i).strip().lower() in ("0", "dense")]
    rest = [i for i in items if str(i).strip().lower() not in ("0", "dense")]
    return tuple(dict.fromkeys((0,) * bool(dense) + (parse_int_list(
        ",".join(str(i) for i in rest), axis="page_size") if rest else ())))


def _lengths(value: Any) -> tuple:
    from harness.contract.ragged import parse_lengths

    return parse_lengths(value)


for _axis in (
    Axis("page_size", _page_sizes, 0, "paged KV cache: keys and values in pages of N "
                                             "tokens reached through a page table (seeded "
                                             "shuffled pages); 0 or dense = dense cache",
         feature="paged", reason="no paged KV cache (keys and values through a page table)",
         label=lambda v: f"page={v}"),
    Axis("lengths", _lengths, "", "ragged batch: per-sequence lengths, e.g. "
                                  "uniform:512-8K, zipf:1.1:16-4K, file:PATH, then @SEED and "
                                  "+mixed:P (P prefills beside decodes); --q-len 1 = decode; "
                                  "'' = full length",
         feature="ragged", reason="no ragged batch (per-sequence query/key lengths)",
         label=lambda v: f"lengths={v}", type=str),
):
    register_axis(_axis)


# v's head dimension D_v (q and k keep head_dim; the output has D_v): MLA's shapes. A value equal
# to head_dim is the default spelled another way; the point keeps it in extra_axes, the record in
# ``axes`` (resolved: D_v itself). harness.contract.head_dims reads it.
register_axis(Axis(
    "head_dim_v", _ints("head_dim_v"), 0, "v's head dimension D_v (q and k keep --head-dim; "
                                          "the output has D_v; default: = head-dim)",
    feature="head_dim_v", reason="needs v's head dimension equal to q's and k's (D_v == D)",
    label=lambda v: f"Dv={v}", normalise=lambda v, p: 0 if v == p.head_dim else v,
    store=lambda v, p: v or p.head_dim))
