"""One compile cache per run (harness.measure.compile_cache): where it points, what the record says.

Each check that needs a cold cache runs in fresh processes with its own cache folder (the
session's shared cache, tests/conftest.py, would make the first call a hit)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.contract.records import Point
from harness.grid.plan import SweepRequest, plan
from harness.grid.settings import RunSettings, TimingSettings
from harness.measure.compile_cache import VERDICTS, CacheWatch
from harness.measure.runner import Runner, compile_cache_dir
from harness.store.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
FAST = TimingSettings(warmup=1, min_time_s=0.02, min_repeats=2, max_repeats=3)


def run_python(code: str, *args: str) -> dict:
    """``code`` in a fresh interpreter that imported torch and jax first (as the forkserver
    does); its last stdout line, as JSON."""
    prelude = f"import sys, json\nsys.path.insert(0, {str(ROOT)!r})\nimport torch, jax\n"
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_verdicts():
    assert CacheWatch().verdict == "warm"
    assert CacheWatch(hits=2).verdict == "hit"
    assert CacheWatch(compiled=1, hits=3).verdict == "miss"


def test_configure_points_every_cache_at_the_folder(tmp_path):
    seen = run_python("""
        import os
        from harness.measure.compile_cache import configure
        configure(sys.argv[1])
        print(json.dumps({"inductor": os.environ["TORCHINDUCTOR_CACHE_DIR"],
                          "triton": os.environ["TRITON_CACHE_DIR"],
                          "jax": jax.config.jax_compilation_cache_dir,
                          "torch_reads": __import__("torch._inductor.runtime.cache_dir_utils",
                                                    fromlist=["x"]).cache_dir()}))
    """, str(tmp_path / "cache"))
    root = (tmp_path / "cache").resolve()
    assert seen == {"inductor": str(root / "inductor"), "triton": str(root / "triton"),
                    "jax": str(root / "jax"), "torch_reads": str(root / "inductor")}
    assert all((root / name).is_dir() for name in ("inductor", "triton", "jax"))


WATCHED = """
    from harness.measure.compile_cache import configure, watch
    configure(sys.argv[1])
    import jax.numpy as jnp
    f = torch.compile(lambda x: torch.sin(x) * 3 + 1)
    g = jax.jit(lambda x: jnp.cos(x) * 3 + 1)
    out = {}
    for name, framework, call in (("torch", "torch", lambda: f(torch.ones(8))),
                                  ("jax", "jax", lambda: g(jnp.ones(8)).block_until_ready())):
        with watch(framework) as first:
            call()
        with watch(framework) as second:
            call()
        out[name] = [first.verdict, second.verdict]
    print(json.dumps(out))
"""


def test_watch_sees_a_miss_then_a_hit_in_the_next_process(tmp_path):
    cache = str(tmp_path / "cache")
    first = run_python(WATCHED, cache)
    again = run_python(WATCHED, cache)
    assert first == {"torch": ["miss", "warm"], "jax": ["miss", "warm"]}
    assert again == {"torch": ["hit", "warm"], "jax": ["hit", "warm"]}


def test_where_the_cache_is(tmp_path, monkeypatch):
    run_dir = RunDir.create(tmp_path / "run", {})
    monkeypatch.delenv("ATTNBENCH_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # default: the user's cache, shared by runs
    assert compile_cache_dir(RunSettings(), run_dir) == \
        str((tmp_path / "xdg" / "attnbench" / "compile").resolve())
    assert compile_cache_dir(RunSettings(), None) is None
    # "run": the run directory's own
    assert compile_cache_dir(RunSettings(compile_cache="run"), run_dir) == \
        str((tmp_path / "run" / "compile-cache").resolve())
    assert compile_cache_dir(RunSettings(compile_cache=str(tmp_path / "mine")), run_dir) == \
        str((tmp_path / "mine").resolve())
    monkeypatch.setenv("ATTNBENCH_COMPILE_CACHE", str(tmp_path / "shared"))
    assert compile_cache_dir(RunSettings(), run_dir) == str((tmp_path / "shared").resolve())
    # the flag wins over the environment
    assert compile_cache_dir(RunSettings(compile_cache="run"), run_dir) == \
        str((tmp_path / "run" / "compile-cache").resolve())
    run_dir.release()


def test_the_flag_reaches_the_worker_context(tmp_path):
    sweep = plan(SweepRequest(impl="softmax_torch", seq_len="64",
                              compile_cache=str(tmp_path / "c")), check_devices=False)
    assert sweep.settings.worker_context().compile_cache_dir == str((tmp_path / "c").resolve())
    assert plan(SweepRequest(impl="softmax_torch", seq_len="64"),
                check_devices=False).settings.compile_cache is None


def measure(tmp_path: Path, name: str, cache: Path) -> dict[tuple[str, int], dict]:
    run_dir = RunDir.create(tmp_path / name, {"kind": "speed", "machine": {}})
    settings = RunSettings(timeout_s=120, timing=FAST, compile_cache=str(cache))
    points = [Point(impl=impl, seq_len=t, heads=2, head_dim=16)
              for impl, ts in (("flex_attention", (128, 256)), ("softmax_jax", (64,)),
                               ("softmax_torch", (64,)))
              for t in ts]
    summary = Runner(run_dir, settings, hardware_id="t").run(points)
    run_dir.release()
    records = [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text()
               .splitlines()]
    assert [r["status"] for r in records] == ["ok"] * len(points), \
        [r["message"] for r in summary.records]
    return {(r["impl"], r["seq_len"]): r for r in records}


def first_compiles(record: dict) -> str:
    """Where the point's first compilation in the run came from: the memory pass's first call
    where it has a worker of its own (the CPU), else the timing pass's (the joint worker)."""
    return record["extra"].get("memory_compile_cache") or record["compile_cache"]


@pytest.mark.slow
def test_a_second_run_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = measure(tmp_path, "a", cache)
    assert all(r["compile_cache"] in VERDICTS for r in first.values())
    assert first[("softmax_torch", 64)]["compile_cache"] == ""       # compiles nothing
    assert "memory_compile_cache" not in first[("softmax_torch", 64)]["extra"]
    # one compilation per distinct shape, in the run's first worker to call it
    assert [first_compiles(first[("flex_attention", t)]) for t in (128, 256)] == ["miss", "miss"]
    assert first_compiles(first[("softmax_jax", 64)]) == "miss"
    # on the CPU the timing worker loads what the memory worker compiled moments before
    assert all(first[key]["compile_cache"] == "hit"
               for key in (("flex_attention", 128), ("flex_attention", 256), ("softmax_jax", 64)))
    assert first[("flex_attention", 128)]["extra"]["compile_mode"]
    second = measure(tmp_path, "b", cache)
    # fresh workers: what the first run compiled loads from disk, nothing compiles again
    for key in (("flex_attention", 128), ("flex_attention", 256), ("softmax_jax", 64)):
        assert second[key]["compile_cache"] == "hit"
        assert first_compiles(second[key]) == "hit"


def test_compile_seconds_count_what_the_frameworks_compile():
    """The overhead's compilation: torch.compile's and JAX's own timings, added up per process."""
    seconds = run_python('''
        import json, jax, jax.numpy as jnp, torch
        from harness.measure.compile_cache import compile_seconds
        start = compile_seconds()
        torch.compile(lambda x: (x * 2).sin())(torch.ones(8))
        after_torch = compile_seconds()
        jax.jit(lambda x: jnp.cos(x) * 3)(jnp.ones(8)).block_until_ready()
        after_jax = compile_seconds()
        torch.ones(8).sin()                      # runs, compiles nothing
        print(json.dumps([start, after_torch, after_jax, compile_seconds()]))
    ''')
    start, after_torch, after_jax, end = seconds
    assert start == 0.0
    assert after_torch > start and after_jax > after_torch and end == after_jax


def test_a_cache_that_cannot_be_made_is_one_usage_error_not_an_error_per_point(tmp_path,
                                                                               monkeypatch):
    from harness.errors import UsageError

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    # the flag: refused while planning, before a run directory exists
    for named in (a_file, a_file / "below"):
        with pytest.raises(UsageError, match="not a folder"):
            plan(SweepRequest(impl="softmax_torch", seq_len="64", compile_cache=str(named)),
                 check_devices=False)
    run_dir = RunDir.create(tmp_path / "run", {})
    # a setting that reaches the runner unplanned, and the environment: refused by the runner
    with pytest.raises(UsageError, match="cannot hold a compile cache"):
        compile_cache_dir(RunSettings(compile_cache=str(a_file)), run_dir)
    monkeypatch.setenv("ATTNBENCH_COMPILE_CACHE", str(a_file / "below"))
    with pytest.raises(UsageError, match="ATTNBENCH_COMPILE_CACHE"):
        compile_cache_dir(RunSettings(), run_dir)
    # the default user cache unusable: the run directory's own, made and writable
    monkeypatch.delenv("ATTNBENCH_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(a_file))
    own = compile_cache_dir(RunSettings(), run_dir)
    assert own == str((tmp_path / "run" / "compile-cache").resolve())
    from harness.measure.compile_cache import unusable

    assert unusable(own) is None
    run_dir.release()
