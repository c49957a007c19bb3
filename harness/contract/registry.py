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
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.contract import axes as axes_table
from harness.contract import probe as probing
from harness.contract.frameworks import device_kind
from harness.contract.parsers import DTYPES
from harness.contract.probe import Availability, ProbeResult
from harness.contract.paging import PAGED_BACKWARD_REASON
from harness.contract.quant import FP8_BACKWARD_REASON
from harness.contract.traits import Traits
from harness.errors import UnknownNameError, UnsupportedError, UsageError, first_line

FRAMEWORKS = ("torch", "jax")
FAMILIES = ("exact", "kernel", "hrr")
FAMILY_LABELS = {
    "exact": "exact softmax",
    "kernel": "kernel approximation",
    "hrr": "HRR",
}
ENTRY_POINT_GROUP = "attnbench.implementations"

AttentionFn = Callable[..., object]
ProbeFn = Callable[[str, str], "Availability"]


def _feature_set(features: Iterable[str], flags: dict[str, bool],
                 start: Iterable[str] = ()) -> frozenset[str]:
    """``features`` (names) plus the keyword flags that are True, less those that are False,
    starting from ``start`` where no ``features`` are given."""
    names = set(features) or set(start)
    for name, wanted in flags.items():
        if wanted:
            names.add(name)
        else:
            names.discard(name)
    return frozenset(names)


class _Features:
    """``x.gqa`` for ``"gqa" in x.features``: any known feature name reads as a boolean."""

    features: frozenset[str]

    def __getattr__(self, name: str) -> bool:
        if name.startswith("_") or name not in axes_table.feature_names():
            raise AttributeError(name)
        return name in self.features

    def has(self, name: str) -> bool:
        return name in self.features


@dataclass(frozen=True, init=False)
class Query(_Features):
    """What a caller asks an implementation to do (the argument of ``constraints``): a device
    kind, a dtype and the features it needs (causal, key_padding_mask, backward and the
    workload axes' features, e.g. gqa, q_len, window, alibi, documents).
    ``Query(device="cuda", causal=True)`` is ``Query(device="cuda", features={"causal"})``."""

    device: str
    dtype: str
    features: frozenset[str]

    def __init__(self, device: str = "cpu", dtype: str = "float32",
                 features: Iterable[str] = (), **flags: bool) -> None:
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "features", _feature_set(features, flags))

    @property
    def explicit_mask(self) -> bool:
        """An explicit mask or bias is needed: padding, windows, documents, ALiBi, and causal
        with Tq != Tk (bottom-right)."""
        has = self.features.__contains__
        return (has("key_padding_mask") or has("window") or has("alibi") or has("documents") or
                (has("causal") and has("q_len")))


# Query -> every reason it cannot run (empty: it can): rules finer than Capabilities
ConstraintFn = Callable[[Query], Iterable[str]]


DEFAULT_FEATURES = frozenset({"backward"})


@dataclass(frozen=True, init=False)
class Capabilities(_Features):
    """What an implementation can do in principle (before asking the machine): its devices,
    dtypes and the set of features it takes (harness.contract.axes: causal, key_padding_mask,
    backward, and each workload axis' feature, e.g. gqa, q_len, window, alibi, documents, or
    a plug-in's). A method never receives a workload it does not declare. Keyword flags add
    (True) or remove (False) features from the default set {"backward"}:
    ``Capabilities(causal=True, gqa=True)``.

    ``reasons``: feature -> why it is missing (shown instead of the generic reason);
    ``paths``: feature -> how it is done (the library's native path), for the records and
    list-impls."""

    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    features: frozenset[str]
    reasons: tuple[tuple[str, str], ...]
    paths: tuple[tuple[str, str], ...]

    def __init__(self, devices: tuple[str, ...] = ("cpu", "cuda"),
                 dtypes: tuple[str, ...] = ("float32", "float64"),
                 features: Iterable[str] = (), reasons: tuple[tuple[str, str], ...] = (),
                 paths: tuple[tuple[str, str], ...] = (), **flags: bool) -> None:
        object.__setattr__(self, "devices", tuple(devices))
        object.__setattr__(self, "dtypes", tuple(dtypes))
        object.__setattr__(self, "features", _feature_set(
            features, flags, () if features else DEFAULT_FEATURES))
        object.__setattr__(self, "reasons", tuple(reasons))
        object.__setattr__(self, "paths", tuple(paths))

    def device_reason(self, device: str) -> str:
        """Why it does not run on this device kind: ``reasons`` keyed by the device kind
        (e.g. ("cpu", "needs CUDA ...")) where given, else the devices it runs on."""
        own = dict(self.reasons).get(device)
        supports = f"supports {', '.join(self.devices)}"
        return f"{own} ({supports})" if own else f"does not run on {device} ({supports})"

    def missing_reasons(self, features: Iterable[str] = (), **flags: bool) -> list[str]:
        """The reason for each feature asked for and not supported (empty: none), in the
        table's order."""
        asked = _feature_set(features, flags)
        own = dict(self.reasons)
        order = axes_table.feature_names()
        ranked = sorted(asked, key=lambda n: (order.index(n) if n in order else len(order), n))
        return [own.get(name, axes_table.generic_reason(name)) for name in ranked
                if name not in self.features]


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
    # how it compiles, for the record (extra["compile_mode"]): e.g. one compilation per shape
    compile_mode: str = ""
    gate_tolerance: dict[str, float] | None = None   # dtype -> max error; default per dtype
    # bytes-moved model (harness.metrics.traffic): Point -> Traffic; None = compulsory traffic only
    traffic: Callable[..., object] | None = None
    # family traits the report states as claims (memory scaling, baseline preference)
    traits: Traits = field(default_factory=Traits)
    _probe_cache: dict[tuple[str, str], ProbeResult] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- capability checks ------------------------------------------------------------------
    def supports(self, *, device: str = "cpu", dtype: str = "float32",
                 run_probe: bool = True, features: Iterable[str] = (),
                 **flags: bool) -> Availability:
        """Static capabilities first, then the machine (packages, device, a real tiny run).
        ``features`` names what is asked (causal, backward, gqa, ...); keyword flags
        (``causal=True``) add to it.

        ``run_probe=False`` stops before anything is executed (packages and device presence
        only): the runner's parent process uses it, and leaves the tiny run to a worker.
        """
        query = Query(device_kind(device), dtype, features, **flags)
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
            reasons.append(caps.device_reason(query.device))
        if query.dtype not in caps.dtypes:
            reasons.append(f"dtype {query.dtype} not supported "
                           f"(supports {', '.join(caps.dtypes)})")
        reasons.extend(caps.missing_reasons(query.features))
        if query.has("fp8_kv") and query.has("backward") and caps.has("fp8_kv"):
            reasons.append(FP8_BACKWARD_REASON)
        if query.has("paged") and query.has("backward") and caps.has("paged"):
            reasons.append(PAGED_BACKWARD_REASON)
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
            return ProbeResult(False, f"{self.name}: "
                                      + self.capabilities.device_reason(device_kind(device)))
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
                   backward: bool = False, features: Iterable[str] = (),
                   **flags: bool) -> None:
        """Raise UnsupportedError with the reason when this combination cannot run.
        ``features``/``flags``: the workload's features (see Capabilities)."""
        verdict = self.supports(device=device, dtype=dtype, causal=causal,
                                key_padding_mask=masked, backward=backward,
                                features=features, **flags)
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
            raise UnknownNameError("implementation", name, self.names(),
                                   hint="a method of your own: load its module with "
                                        "--impl-module MODULE") from None

    def resolve(self, names: Iterable[str]) -> list[Implementation]:
        return [self.get(n) for n in names]


REGISTRY = Registry()


def signature_problem(fn: Any) -> str:
    """Why ``fn`` cannot be an attention function ('' when it can, or its signature cannot be
    read): the harness calls ``fn(q, k, v, causal=..., key_padding_mask=..., **features)``."""
    import inspect

    if not callable(fn):
        return f"expected a function, got {type(fn).__name__}"
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):   # a builtin or extension without a signature
        return ""
    kinds = inspect.Parameter
    name = getattr(fn, "__name__", "the function")
    if not any(p.kind == kinds.VAR_KEYWORD for p in params):
        names = {p.name for p in params if p.kind in (kinds.KEYWORD_ONLY,
                                                       kinds.POSITIONAL_OR_KEYWORD)}
        missing = [k for k in ("causal", "key_padding_mask") if k not in names]
        if missing:
            return (f"{name} takes no {' or '.join(missing)} keyword; declare it as "
                    f"fn(q, k, v, *, causal=False, key_padding_mask=None)")
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY,
                                                  kinds.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3 and not any(p.kind == kinds.VAR_POSITIONAL for p in params):
        return f"{name} takes fewer than three positional arguments (q, k, v)"
    return ""


def register(name: str, *, framework: str, family: str, capabilities: Capabilities | None = None,
             description: str = "", requires: Iterable[str] = (), probe: ProbeFn | None = None,
             constraints: ConstraintFn | None = None, replace: bool = False,
             gate_tolerance: dict[str, float] | None = None,
             traffic: Callable[..., object] | None = None,
             prepare: Callable[..., Callable[..., object]] | None = None,
             compiles: bool = False, compile_mode: str = "",
             traits: Traits | None = None) -> Callable[[AttentionFn], AttentionFn]:
    """Decorator that declares an attention function under ``name``. ``gate_tolerance``
    (dtype -> max error) replaces the default correctness-gate tolerance of those dtypes;
    ``traffic`` is its bytes-moved model (see harness.metrics.traffic): without one, only the
    compulsory traffic (q, k, v in, o out) is counted and the record says so; ``prepare``,
    ``compiles`` and ``compile_mode``: see Implementation."""

    def decorate(fn: AttentionFn) -> AttentionFn:
        problem = signature_problem(fn)
        if problem:
            raise TypeError(f"register({name!r}): {problem}")
        REGISTRY.add(Implementation(
            name=name, framework=framework, family=family,
            capabilities=capabilities or Capabilities(), fn=fn,
            description=description or first_line(fn.__doc__ or ""),
            requires=tuple(requires), probe=probe, constraints=constraints,
            module=getattr(fn, "__module__", None) or "", gate_tolerance=gate_tolerance,
            traffic=traffic, prepare=prepare, compiles=compiles, compile_mode=compile_mode,
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
            if is_module_path(module):
                import_module_file(module)
            else:
                importlib.import_module(module)
        except ImportError as exc:
            hint = "" if is_module_path(module) else (
                " (give a module name importable from PYTHONPATH, e.g. my_attention, or the "
                "path of a .py file)")
            raise UsageError(f"cannot import implementation module {module!r}: {exc}{hint}") \
                from exc
        except Exception as exc:  # noqa: BLE001 - a user's module failing is bad input
            raise UsageError(f"implementation module {module!r} raised while being imported: "
                             f"{type(exc).__name__}: {first_line(str(exc))}") from exc


def is_module_path(module: str) -> bool:
    """``--impl-module`` names a file (``plug/my_attention.py``) rather than a module."""
    return module.endswith(".py") or "/" in module or os.sep in module


def import_module_file(path: str) -> None:
    """Import a .py file given by its path, once per process (its registrations with it); an
    ImportError naming the path when there is no such file."""
    import hashlib
    import sys

    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ImportError(f"no such file {str(file)!r}")
    name = "attnbench_plugin_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"{str(file)!r} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def get(name: str) -> Implementation:
    return REGISTRY.get(name)


def names() -> list[str]:
    return REGISTRY.names()


def all_implementations() -> list[Implementation]:
    return REGISTRY.all()


def static_check(impl: "Implementation", point: Any) -> str | None:
    """Reason a point cannot run, from capabilities, packages and devices; None if it may."""
    verdict = impl.supports(device=point.device, dtype=point.dtype, run_probe=False,
                            features=point.all_features())
    return None if verdict else verdict.reason
