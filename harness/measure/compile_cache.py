"""One on-disk compile cache for a run: Inductor, Triton and JAX's persistent compilation cache.

``configure(directory)`` runs in every worker (harness.measure.worker.prepare) before anything
compiles, so that a shape compiled by one worker is loaded from disk by the next (a reused worker
after a failure, the second process of ``--isolate point``, the next run sharing the cache):

- ``TORCHINDUCTOR_CACHE_DIR`` = <dir>/inductor: torch reads it on every lookup
  (torch._inductor.runtime.cache_dir_utils.cache_dir), so setting it after torch was imported
  (the forkserver preloads torch) takes effect;
- ``TRITON_CACHE_DIR`` = <dir>/triton: read when a Triton kernel is first compiled (GPU);
- JAX: ``jax_compilation_cache_dir`` = <dir>/jax, with the minimum compile time and entry size
  lowered so that the small CPU programs of a benchmark are cached too. JAX builds its cache
  object on the first compilation that consults it (jax._src.compilation_cache._initialize_cache,
  once per process), so the directory must be set before a worker's first ``jit`` call. JAX is
  configured only where it is imported already (or the task is a JAX one): a torch worker never
  pays for importing it.

``watch(framework)`` tells where a call's compiled code came from (``CacheWatch.verdict``):
"miss" (something was compiled), "hit" (everything the call needed came from the on-disk cache),
"warm" (nothing was compiled: already compiled in this process). Torch: Inductor's FX-graph cache
counters (torch._dynamo.utils.counters["inductor"]: fxgraph_cache_hit, fxgraph_cache_miss,
fxgraph_cache_bypass, the last a graph the cache cannot hold, compiled every time). JAX:
jax.monitoring events: every XLA compilation request records
"/jax/core/compile/backend_compile_duration" (hit or not), a persistent-cache hit records
"/jax/compilation_cache/cache_hits" as well.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# a run directory's cache folder (harness.store reads run.json and results.jsonl by name only:
# the folder is never taken for results by report, merge or resume)
DEFAULT_DIRNAME = "compile-cache"
# a cache shared by every run that does not name one with --compile-cache (the test suite's
# session cache, a user's own)
COMPILE_CACHE_ENV = "ATTNBENCH_COMPILE_CACHE"
RUN_CACHE = "run"          # --compile-cache run: the run directory's own DEFAULT_DIRNAME


def user_compile_cache() -> Path:
    """The default cache shared by a user's runs: $XDG_CACHE_HOME/attnbench/compile (else
    ~/.cache/attnbench/compile). A GPU compiles FlexAttention's and Triton's kernels for tens of
    seconds a shape; a later run on the same machine and software loads them."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "attnbench", "compile").resolve()
VERDICTS = ("miss", "hit", "warm", "")

JAX_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
JAX_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def cache_paths(directory: str | os.PathLike) -> dict[str, Path]:
    """The cache folders under ``directory``, by what uses them."""
    root = Path(directory).resolve()
    return {"inductor": root / "inductor", "triton": root / "triton", "jax": root / "jax"}


def unusable(directory: str | os.PathLike) -> str | None:
    """Why ``directory`` cannot hold the compile caches (None: it can). Its folders are made
    here, in the parent, so that a path that is a file, under a file or not writable is one
    clear message before the run, not an error record for every point (each worker's
    ``configure`` would raise)."""
    paths = cache_paths(directory)
    try:
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}: {exc.filename or directory}"
    for path in paths.values():
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
    return None


def configure(directory: str | os.PathLike | None, framework: str | None = None) -> None:
    """Point this process's Inductor, Triton and (where JAX is imported or ``framework`` is
    "jax") JAX compile caches at ``directory``; None leaves every default alone."""
    if not directory:
        return
    paths = cache_paths(directory)
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(paths["inductor"])
    os.environ["TRITON_CACHE_DIR"] = str(paths["triton"])
    if "jax" in sys.modules or framework == "jax":
        configure_jax(paths["jax"])


def configure_jax(path: Path) -> None:
    import jax

    if jax.config.jax_compilation_cache_dir == str(path):
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # 0 means JAX's own default minimum (set when the cache starts); -1: no minimum
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@dataclass
class CacheWatch:
    """Counts of compilations during a watched call (filled when the ``watch`` block ends)."""
    compiled: int = 0        # compiled afresh (cache misses, and graphs the cache cannot hold)
    hits: int = 0            # loaded from the on-disk cache

    @property
    def verdict(self) -> str:
        if self.compiled:
            return "miss"
        return "hit" if self.hits else "warm"


# (counter group, name): torch._dynamo.utils.counters
TORCH_COMPILED = (("inductor", "fxgraph_cache_miss"), ("inductor", "fxgraph_cache_bypass"))
TORCH_HITS = (("inductor", "fxgraph_cache_hit"), ("aot_autograd", "autograd_cache_hit"))


@contextmanager
def watch(framework: str) -> Iterator[CacheWatch]:
    """Count the compilations of the block (torch: Inductor's FX-graph cache; jax: XLA)."""
    result = CacheWatch()
    if framework == "jax":
        with _watch_jax(result):
            yield result
    else:
        with _watch_torch(result):
            yield result


@contextmanager
def _watch_torch(result: CacheWatch) -> Iterator[None]:
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001 - no torch: nothing compiles through Inductor
        yield
        return
    before = {key: counters[key[0]][key[1]] for key in TORCH_COMPILED + TORCH_HITS}
    try:
        yield
    finally:
        delta = {key: counters[key[0]][key[1]] - before[key] for key in before}
        result.compiled = sum(delta[name] for name in TORCH_COMPILED)
        result.hits = sum(delta[name] for name in TORCH_HITS)


@contextmanager
def _watch_jax(result: CacheWatch) -> Iterator[None]:
    from jax import monitoring

    counts = {"requests": 0, "hits": 0}

    def on_event(event: str, **_: object) -> None:
        if event == JAX_HIT_EVENT:
            counts["hits"] += 1

    def on_duration(event: str, duration: float, **_: object) -> None:
        if event == JAX_COMPILE_EVENT:
            counts["requests"] += 1

    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield
    finally:
        monitoring.unregister_event_listener(on_event)
        monitoring.unregister_event_duration_listener(on_duration)
        result.hits = counts["hits"]
        result.compiled = max(0, counts["requests"] - counts["hits"])


# -- the time a process spends compiling (harness.measure.overhead's "compilation") -----------
# torch: dynamo's own timing of each frame's whole compilation (Inductor included); JAX: the
# durations it reports for tracing, lowering and the backend compile of each jitted program
TORCH_COMPILE_METRIC = "_compile.compile_inner"
JAX_COMPILE_DURATIONS = ("/jax/core/compile/jaxpr_trace_duration",
                         "/jax/core/compile/jaxpr_to_mlir_module_duration",
                         "/jax/core/compile/backend_compile_duration")
_jax_seconds = [0.0]
_jax_listening = [False]


def _on_jax_duration(event: str, duration: float, **_: object) -> None:
    if event in JAX_COMPILE_DURATIONS:
        _jax_seconds[0] += float(duration)


def listen_to_jax() -> None:
    """Start adding up JAX's compile durations in this process (once; only where JAX is
    imported: a torch worker does not import it for this)."""
    if _jax_listening[0] or "jax" not in sys.modules:
        return
    try:
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(_on_jax_duration)
        _jax_listening[0] = True
    except Exception:  # noqa: BLE001 - a JAX without monitoring: its compile time is not split
        pass


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (torch.compile and JAX), as the
    frameworks time it; differences around a task are that task's compilation."""
    listen_to_jax()
    total = _jax_seconds[0]
    dynamo = sys.modules.get("torch._dynamo.utils")
    metrics = getattr(dynamo, "compilation_time_metrics", None)
    if isinstance(metrics, dict):
        total += float(sum(metrics.get(TORCH_COMPILE_METRIC, ()) or ()))
    return total
