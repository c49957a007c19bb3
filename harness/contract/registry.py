"""The registry of attention implementations: the one piece of global state in attnbench.

An implementation is declared once, with what it can do (``Capabilities``) and a way to find
out whether it can run here (``probe``). Everything else in attnbench asks the registry before
it schedules or calls anything, so an unsupported combination becomes a reason, not a crash.

Adding your own, from your own module (``run_bench.py --impl-module mypkg.myattn``, or an entry
point in the ``attnbench.implementations`` group)::

    from harness import Capabilities, Traits, register

    @register("my_attn", framework="torch", family="exact",
              capabilities=Capabilities(devices=("cpu", "cuda"), causal=True),
              traits=Traits(memory="tiled"))
    def my_attn(q, k, v, *, causal=False, key_padding_mask=None):
        ...  # (B, H, T, D) tensors in, (B, H, T, D) out
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from harness.contract import probe as probing
from harness.contract.frameworks import device_kind
from harness.contract.probe import Availability, ProbeResult
from harness.contract.traits import Traits
from harness.errors import UnknownNameError, UnsupportedError, UsageError, first_line

FRAMEWORKS = ("torch", "jax")
FAMILIES = ("exact", "kernel", "hrr")
FAMILY_LABELS = {
    "exact": "exact softmax",
    "kernel": "kernel approximation",
    "hrr": "HRR",
}
DTYPES = ("float64", "float32", "float16", "bfloat16")
ENTRY_POINT_GROUP = "attnbench.implementations"

AttentionFn = Callable[..., object]
ProbeFn = Callable[[str, str], "Availability"]


@dataclass(frozen=True)
class Query:
    """What a caller asks an implementation to do (the argument of ``constraints``)."""

    device: str = "cpu"          # a device kind: "cpu" or "cuda"
    dtype: str = "float32"
    causal: bool = False
    key_padding_mask: bool = False
    backward: bool = False
    # the workload (see Capabilities): k, v with fewer heads, Tq != Tk, window, ALiBi, documents
    gqa: bool = False
    q_len: bool = False
    window: bool = False
    alibi: bool = False
    documents: bool = False

    @property
    def explicit_mask(self) -> bool:
        """An explicit mask or bias is needed: padding, windows, documents, ALiBi, and causal
        with Tq != Tk (bottom-right)."""
        return (self.key_padding_mask or self.window or self.alibi or self.documents or
                (self.causal and self.q_len))


# Query -> every reason it cannot run (empty: it can): rules finer than Capabilities
ConstraintFn = Callable[[Query], Iterable[str]]


@dataclass(frozen=True)
class Capabilities:
    """What an implementation can do in principle (before asking the machine)."""

    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ("float32", "float64")
    causal: bool = False
    key_padding_mask: bool = False
    backward: bool = True
    # workloads beyond square self-attention with Hq == Hkv (see harness.contract.masking for the
    # conventions); off by default so that a method never receives what it does not declare
    gqa: bool = False            # k, v with fewer heads than q (grouped-query / multi-query)
    q_len: bool = False          # Tq != Tk (causal then aligned bottom-right)
    window: bool = False         # window=(left, right)
    alibi: bool = False          # alibi_slopes (Hq,)
    documents: bool = False      # document_ids (B, T)
    # feature -> why it is missing (shown instead of the generic reason), and
    # feature -> how it is done (the library's native path), for the records and list-impls
    reasons: tuple[tuple[str, str], ...] = ()
    paths: tuple[tuple[str, str], ...] = ()

    def missing_reasons(self, *, gqa: bool = False, q_len: bool = False,
                        window: bool = False, alibi: bool = False,
                        documents: bool = False) -> list[str]:
        """The reason for each workload feature asked for and not supported (empty: none)."""
        asked = (("gqa", gqa, "no grouped-query attention (fewer key/value heads than query "
                              "heads)"),
                 ("q_len", q_len, "needs as many queries as keys (Tq == Tk)"),
                 ("window", window, "no sliding-window mask"),
                 ("alibi", alibi, "no ALiBi bias"),
                 ("documents", documents, "no packed-documents mask"))
        own = dict(self.reasons)
        return [own.get(name, generic) for name, wanted, generic in asked
                if wanted and not getattr(self, name)]


@dataclass
class Implementation:
    """One registered attention method.

    ``fn`` takes framework-native q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D) plus keyword
    ``causal`` and ``key_padding_mask`` (B, Tk, True = keep) and returns (B, Hq, Tq, D); it also
    receives ``window``, ``alibi_slopes`` and ``document_ids`` when its capabilities declare
    them and a call uses them (conventions: harness.contract.masking).
    ``requires`` names importable packages; a missing one makes the implementation unavailable.
    ``probe`` (optional) is an extra check (device, dtype) -> Availability that must not raise;
    after it a tiny input is really run on the target device and dtype (harness.contract.probe).
    """

    name: str
    framework: str
    family: str
    capabilities: Capabilities
    fn: AttentionFn
    description: str = ""
    requires: tuple[str, ...] = ()
    probe: ProbeFn | None = None
    constraints: ConstraintFn | None = None
    module: str = ""
    # optional: prepare(q, k, v, *, causal, **mask) -> callable(q, k, v) doing the work, for a
    # method with per-shape set-up (a block mask) that a model builds once, outside the step;
    # the runner times it apart (mask_build_s)
    prepare: Callable[..., Callable[..., object]] | None = None
    compiles: bool = False       # its first call compiles (torch.compile): compile_time_s
    gate_tolerance: dict[str, float] | None = None   # dtype -> max error; default per dtype
    # bytes-moved model (harness.metrics.traffic): Point -> Traffic; None = compulsory traffic only
    traffic: Callable[..., object] | None = None
    # family traits the report states as claims (memory scaling, baseline preference)
    traits: Traits = field(default_factory=Traits)
    _probe_cache: dict[tuple[str, str], ProbeResult] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- capability checks ------------------------------------------------------------------
    def supports(self, *, device: str = "cpu", dtype: str = "float32", causal: bool = False,
                 key_padding_mask: bool = False, backward: bool = False,
                 run_probe: bool = True, gqa: bool = False, q_len: bool = False,
                 window: bool = False, alibi: bool = False,
                 documents: bool = False) -> Availability:
        """Static capabilities first, then the machine (packages, device, a real tiny run).

        ``run_probe=False`` stops before anything is executed (packages and device presence
        only): the runner's parent process uses it, and leaves the tiny run to a worker.
        """
        query = Query(device_kind(device), dtype, causal, key_padding_mask, backward, gqa=gqa,
                      q_len=q_len, window=window, alibi=alibi, documents=documents)
        reasons = self.not_supported_reasons(query)
        if reasons:
            return Availability(False, f"{self.name}: {'; '.join(reasons)}", tuple(reasons))
        if not run_probe:
            return self.presence(device)
        return self.availability(device, dtype)

    def not_supported_reasons(self, query: Query) -> list[str]:
        """Every reason, from capabilities and constraints, that ``query`` cannot run (nothing
        is executed and no package is imported); empty when it may."""
        caps = self.capabilities
        reasons = []
        if query.device not in caps.devices:
            reasons.append(f"does not run on {query.device} (supports {', '.join(caps.devices)})")
        if query.dtype not in caps.dtypes:
            reasons.append(f"dtype {query.dtype} not supported "
                           f"(supports {', '.join(caps.dtypes)})")
        if query.causal and not caps.causal:
            reasons.append("no causal mode")
        if query.key_padding_mask and not caps.key_padding_mask:
            reasons.append(dict(caps.reasons).get("key_padding_mask",
                                                  "no key-padding mask support"))
        if query.backward and not caps.backward:
            reasons.append("no backward pass")
        reasons.extend(caps.missing_reasons(gqa=query.gqa, q_len=query.q_len,
                                            window=query.window, alibi=query.alibi,
                                            documents=query.documents))
        if self.constraints is not None:
            reasons.extend(self._constraint_reasons(query))
        return reasons

    def _constraint_reasons(self, query: Query) -> list[str]:
        assert self.constraints is not None
        prefix = f"{self.name}: "
        return [r[len(prefix):] if r.startswith(prefix) else r for r in self.constraints(query)]

    def presence(self, device: str) -> ProbeResult:
        """Packages installed and device present, without running anything."""
        return probing.presence(self, device)

    def availability(self, device: str = "cpu", dtype: str | None = None) -> ProbeResult:
        """Can it run here at all: packages installed, device present, tiny input runs
        (harness.contract.probe; cached per device and dtype in this process)."""
        if dtype is None:
            dtype = self.capabilities.dtypes[0] if "float32" not in self.capabilities.dtypes \
                else "float32"
        if device_kind(device) not in self.capabilities.devices:
            return ProbeResult(False, f"{self.name}: does not run on {device_kind(device)} "
                                      f"(supports {', '.join(self.capabilities.devices)})")
        key = (device, dtype)
        with self._lock:
            cached = self._probe_cache.get(key)
        if cached is not None:
            return cached
        result = probing.probe(self, device, dtype)
        with self._lock:
            self._probe_cache[key] = result
        return result

    def check_call(self, *, device: str, dtype: str, causal: bool, masked: bool,
                   backward: bool = False, **features: bool) -> None:
        """Raise UnsupportedError with the reason when this combination cannot run.
        ``features``: gqa, q_len, window, alibi, documents (see Capabilities)."""
        verdict = self.supports(device=device, dtype=dtype, causal=causal,
                                key_padding_mask=masked, backward=backward, **features)
        if not verdict:
            raise UnsupportedError(verdict.reason)


class Registry:
    """Name -> Implementation, in registration order."""

    def __init__(self) -> None:
        self._impls: dict[str, Implementation] = {}
        self._builtins_loaded = False
        self._entry_points_loaded = False

    def add(self, impl: Implementation, *, replace: bool = False) -> Implementation:
        if impl.framework not in FRAMEWORKS:
            raise ValueError(f"{impl.name}: framework must be one of {FRAMEWORKS}, "
                             f"got {impl.framework!r}")
        if impl.family not in FAMILIES:
            raise ValueError(f"{impl.name}: family must be one of {FAMILIES}, got {impl.family!r}")
        if not isinstance(impl.traits, Traits):
            raise ValueError(f"{impl.name}: traits must be a harness.Traits, "
                             f"got {type(impl.traits).__name__}")
        unknown = set(impl.capabilities.dtypes) - set(DTYPES)
        if unknown:
            raise ValueError(f"{impl.name}: unknown dtypes {sorted(unknown)}; use {DTYPES}")
        existing = self._impls.get(impl.name)
        if existing is not None and not replace and existing.module != impl.module:
            raise ValueError(f"implementation {impl.name!r}"
                             + (f" (in {impl.module})" if impl.module else "")
                             + f" is already registered by {existing.module or 'another module'}; "
                             f"choose another name")
        self._impls[impl.name] = impl
        return impl

    def load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module("implementations")

    def load_entry_points(self) -> list[str]:
        """Import modules advertised under the 'attnbench.implementations' entry-point group."""
        loaded: list[str] = []
        if self._entry_points_loaded:
            return loaded
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            ep.load()
            loaded.append(ep.value)
        return loaded

    def names(self) -> list[str]:
        self.load_builtins()
        return list(self._impls)

    def all(self) -> list[Implementation]:
        self.load_builtins()
        return list(self._impls.values())

    def get(self, name: str) -> Implementation:
        self.load_builtins()
        try:
            return self._impls[name]
        except KeyError:
            raise UnknownNameError("implementation", name, self.names()) from None

    def resolve(self, names: Iterable[str]) -> list[Implementation]:
        return [self.get(n) for n in names]


REGISTRY = Registry()


def register(name: str, *, framework: str, family: str, capabilities: Capabilities | None = None,
             description: str = "", requires: Iterable[str] = (), probe: ProbeFn | None = None,
             constraints: ConstraintFn | None = None, replace: bool = False,
             gate_tolerance: dict[str, float] | None = None,
             traffic: Callable[..., object] | None = None,
             prepare: Callable[..., Callable[..., object]] | None = None,
             compiles: bool = False,
             traits: Traits | None = None) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator that declares an attention function under ``name``. ``gate_tolerance``
    (dtype -> max error) replaces the default correctness-gate tolerance of those dtypes;
    ``traffic`` is its bytes-moved model (see harness.metrics.traffic): without one, only the
    compulsory traffic (q, k, v in, o out) is counted and the record says so; ``prepare`` and
    ``compiles``: see Implementation."""

    def decorate(fn: AttentionFn) -> AttentionFn:
        REGISTRY.add(Implementation(
            name=name, framework=framework, family=family,
            capabilities=capabilities or Capabilities(), fn=fn,
            description=description or first_line(fn.__doc__ or ""),
            requires=tuple(requires), probe=probe, constraints=constraints,
            module=getattr(fn, "__module__", None) or "", gate_tolerance=gate_tolerance,
            traffic=traffic, prepare=prepare, compiles=compiles,
            traits=traits or Traits()), replace=replace)
        return fn

    return decorate


def load_impl_modules(modules: Iterable[str]) -> None:
    """Import user modules that register implementations (``--impl-module``)."""
    modules = list(modules)
    if modules:
        REGISTRY.load_builtins()   # first: a clash then names the user's module, not ours
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"cannot import implementation module {module!r}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - a user's module failing is bad input
            raise UsageError(f"implementation module {module!r} raised while being imported: "
                             f"{type(exc).__name__}: {first_line(str(exc))}") from exc


def get(name: str) -> Implementation:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def all_implementations() -> list[Implementation]:
    return REGISTRY.all()


def static_check(impl: "Implementation", point: Any) -> str | None:
    """Reason a point cannot run, from capabilities, packages and devices; None if it may."""
    verdict = impl.supports(device=point.device, dtype=point.dtype, causal=point.causal,
                            backward=point.pass_ != "forward", run_probe=False,
                            **point.features())
    return None if verdict else verdict.reason
