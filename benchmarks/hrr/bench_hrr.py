#!/usr/bin/env python3
"""Rerunnable HRR benchmark (issue 8): T vs time for the original-formulation port, each HRR
formulation in torch and JAX, the elementwise floor q + k + v, sdpa_flash and softmax_torch,
with ratios, the JAX compile time, forward+backward, and peak memory.

    python benchmarks/hrr/bench_hrr.py                        B=1 H=8 D=64 float32, T=1K..64K
    python benchmarks/hrr/bench_hrr.py --seq-len 1024,4096 --repeats 3 --no-memory
    python benchmarks/hrr/bench_hrr.py --dims 32,64,128,256,512   formulation choice per D

Timing: every method runs in this one process on the same inputs; for each T the methods are
run round-robin (one call of each per round, ``--repeats`` rounds after one warm-up call), and
the median per method is reported, so that load from other processes hits all of them alike.
The floor is one elementwise pass ``q + k + v`` (torch), measured in the same rounds. JAX
methods are timed in a subprocess of their own with their own floor ``jax q+k+v``, so that the
two frameworks' worker thread pools never compete inside one process. On a shared machine
single rounds can stall (on the 2-core machine this was written on, torch calls of a few ms
sometimes took ~300 ms while other jobs ran), so the table gives the spread, and the ratios
are given for the medians and for the minima (the least disturbed round).
JAX: the compile time is reported separately (``jit(...).lower(...).compile()``); the timed
calls run the already compiled function.

Peak memory (CPU): one fresh subprocess per (method, T). It allocates the inputs, runs the
method once (warm-up; JAX methods are compiled ahead instead, not run, because XLA:CPU keeps
the buffers of a first run for the next), drops the result, writes "5" to
/proc/self/clear_refs (resets VmHWM to the current RSS), runs the method once more and reports
VmHWM after minus VmHWM right after the reset: the peak increase over the baseline with the
inputs already allocated. Allocations the warm-up left cached inside the process (smaller heap
blocks) are not counted again; large buffers (over glibc's mmap threshold) always are.

Quadratic methods are skipped where they would take too long or need too much memory
(``--quadratic-max-t``, ``--max-matrix-gib``); the table says so.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.errors import UsageError  # noqa: E402
from harness.measure.memory import limit_malloc_caching, peak_rss_bytes, reset_peak_rss, rss_bytes
from harness.contract.parsers import parse_int_list

MiB = 1 << 20
PHASE_PAUSE_S = 1.0


# ---- methods --------------------------------------------------------------------------------

def method_names(with_jax: bool) -> list[str]:
    names = ["q+k+v", "original_port", "hrr_torch[gemm]", "hrr_torch[fft]", "hrr_torch"]
    if with_jax:
        names += ["jax q+k+v", "hrr_jax[gemm]", "hrr_jax[fft]", "hrr_jax", "hrr_jax fwd+bwd"]
    names += ["hrr_torch fwd+bwd", "sdpa_flash", "softmax_torch"]
    return names


def quadratic(name: str) -> bool:
    return name in ("sdpa_flash", "softmax_torch")


def skip_reason(name: str, shape, args) -> str:
    batch, heads, tokens, dim = shape
    if name == "softmax_torch":
        need = 2 * batch * heads * tokens * tokens * 4 / (1 << 30)
        if need > args.max_matrix_gib:
            return f"skip: needs {need:.0f} GiB"
    if quadratic(name) and tokens > args.quadratic_max_t:
        return f"skip: T>{args.quadratic_max_t} O(T^2)"
    if name == "original_port" and tokens > args.original_max_t:
        return f"skip: T > {args.original_max_t}"
    return ""


def build(name: str, shape, seed: int = 0):
    """(run, compile_seconds) for a method on fresh inputs of this shape; run() -> result."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape, dtype=np.float32) for _ in range(3)]
    if name == "jax q+k+v":
        import jax

        # device_put copies in the background and keeps the numpy arrays alive until it is done:
        # wait, so that they are freed before any memory baseline is taken
        q, k, v = jax.block_until_ready([jax.device_put(a) for a in arrays])
        add = jax.jit(lambda a, b, c: a + b + c)
        start = time.perf_counter()
        compiled = add.lower(q, k, v).compile()
        compile_s = time.perf_counter() - start
        return (lambda: jax.block_until_ready(compiled(q, k, v))), compile_s
    if name.startswith("hrr_jax"):
        import jax

        from implementations import hrr_jax as hj

        # device_put copies in the background and keeps the numpy arrays alive until it is done:
        # wait, so that they are freed before any memory baseline is taken
        q, k, v = jax.block_until_ready([jax.device_put(a) for a in arrays])
        del arrays
        form = name[len("hrr_jax["):-1] if "[" in name else \
            hj.choose_formulation("cpu", shape[-1])
        jitted = hj._compiled(False, form)          # what hrr_jax(..., formulation=form) runs
        if name.endswith("fwd+bwd"):
            grad = jax.block_until_ready(jax.device_put(np.random.default_rng(seed + 1)
                                                        .standard_normal(shape, dtype=np.float32)))

            @jax.jit
            def forward_backward(q_, k_, v_, grad_):
                out, vjp = jax.vjp(lambda a, b, c: jitted(a, b, c, None), q_, k_, v_)
                return out, vjp(grad_)
            args = (q, k, v, grad)
        else:
            forward_backward, args = None, (q, k, v, None)
        start = time.perf_counter()
        compiled = (forward_backward or jitted).lower(*args).compile()
        compile_s = time.perf_counter() - start

        def run():
            return jax.block_until_ready(compiled(*args))
        return run, compile_s

    q, k, v = (torch.from_numpy(a) for a in arrays)
    if name == "q+k+v":
        return (lambda: q + k + v), 0.0
    if name == "original_port":
        from benchmarks.hrr.original_port import original_hrr_attention
        return (lambda: original_hrr_attention(q, k, v)), 0.0
    if name.startswith("hrr_torch"):
        from implementations.hrr_torch import hrr_torch
        form = name[len("hrr_torch["):-1] if "[" in name else None
        if name.endswith("fwd+bwd"):
            qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
            grad = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(
                shape, dtype=np.float32))

            def run():
                hrr_torch(qg, kg, vg).backward(grad)
                grads = (qg.grad, kg.grad, vg.grad)
                qg.grad = kg.grad = vg.grad = None
                return grads
            return run, 0.0
        return (lambda: hrr_torch(q, k, v, formulation=form)), 0.0
    import harness  # noqa: F401  (registers the implementations)
    import implementations  # noqa: F401
    fn = harness.get(name).fn
    return (lambda: fn(q, k, v, causal=False, key_padding_mask=None)), 0.0


# ---- memory worker --------------------------------------------------------------------------

def memory_worker(name: str, shape) -> dict:
    """Peak RSS increase of one call over the RSS with the inputs allocated (harness.measure.timing)."""
    limit_malloc_caching()
    run, _ = build(name, shape)
    if "jax" not in name:  # JAX: compiled ahead (in build); XLA keeps buffers of a first run
        out = run()
        del out
    if not reset_peak_rss():
        raise RuntimeError("cannot reset VmHWM (/proc/self/clear_refs)")
    before = rss_bytes()
    out = run()
    after = peak_rss_bytes()
    del out
    return {"peak_increase": after - before, "baseline_rss": before}


def measure_memory(name: str, shape, timeout: float) -> str | dict:
    cmd = [sys.executable, __file__, "--_memory-worker", name,
           "--_shape", ",".join(str(n) for n in shape)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return "timeout"
    if proc.returncode != 0:
        return f"failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:60]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- timing ---------------------------------------------------------------------------------

def time_round_robin(names, shape, repeats: int, args):
    runners, compile_s, times, notes = {}, {}, {}, {}
    for name in names:
        reason = skip_reason(name, shape, args)
        if reason:
            notes[name] = reason
            continue
        try:
            runners[name], compile_s[name] = build(name, shape)
            runners[name]()  # warm-up
        except Exception as exc:  # report, do not abort the table
            notes[name] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
            runners.pop(name, None)
        times[name] = []
    # (time_split already keeps torch and JAX apart; the phases matter only if both are given)
    phases = [[n for n in runners if not n.startswith("hrr_jax") and n != "jax q+k+v"],
              [n for n in runners if n.startswith("hrr_jax") or n == "jax q+k+v"]]
    for phase in phases:
        time.sleep(PHASE_PAUSE_S)
        for _ in range(repeats):
            for name in phase:
                start = time.perf_counter()
                out = runners[name]()
                times[name].append(time.perf_counter() - start)
                del out
    med = {n: statistics.median(t) for n, t in times.items() if t}
    spread = {n: (min(t), max(t)) for n, t in times.items() if t}
    return med, spread, compile_s, notes


def is_jax(name: str) -> bool:
    return "jax" in name


def time_split(names, shape, repeats: int, args):
    """torch methods here, JAX methods in a subprocess, so that the two frameworks' worker
    thread pools never compete for the cores inside one process."""
    torch_names = [n for n in names if not is_jax(n)]
    jax_names = [n for n in names if is_jax(n)]
    med, spread, compile_s, notes = time_round_robin(torch_names, shape, repeats, args)
    if jax_names:
        cmd = [sys.executable, __file__, "--_jax-worker", ",".join(jax_names),
               "--_shape", ",".join(str(n) for n in shape), "--repeats", str(repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            for n in jax_names:
                notes[n] = "error: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:50]
        else:
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            med.update(got["med"])
            spread.update({n: tuple(x) for n, x in got["spread"].items()})
            compile_s.update(got["compile"])
            notes.update(got["notes"])
    return med, spread, compile_s, notes


def environment() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    parts = [f"cpu: {cpu}, {os.cpu_count()} logical cores",
             f"torch {torch.__version__}, torch.get_num_threads()={torch.get_num_threads()}"]
    try:  # no JAX backend in this process (see time_split)
        parts.append(f"jax {importlib.metadata.version('jax')} (timed in a subprocess)")
    except importlib.metadata.PackageNotFoundError:
        parts.append("jax: not installed")
    parts.append("load average " + ", ".join(f"{x:.2f}" for x in load))
    return "; ".join(parts)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f}"


def print_ratios(tokens: int, med: dict) -> None:
    def r(a, b):
        return f"{med[a] / med[b]:.2f}" if a in med and b in med else "n/a"
    print(f"T={tokens}: original_port / hrr_torch = {r('original_port', 'hrr_torch')}; "
          f"hrr_torch / (q+k+v) = {r('hrr_torch', 'q+k+v')}; "
          f"hrr_jax / hrr_torch = {r('hrr_jax', 'hrr_torch')} "
          f"(hrr_jax / jax q+k+v = {r('hrr_jax', 'jax q+k+v')}); "
          f"hrr_torch (fwd+bwd) / fwd = {r('hrr_torch fwd+bwd', 'hrr_torch')}; "
          f"hrr_jax (fwd+bwd) / fwd = {r('hrr_jax fwd+bwd', 'hrr_jax')}")


def main_table(args) -> None:
    with_jax = not args.no_jax and importlib.util.find_spec("jax") is not None
    names = method_names(with_jax)
    if args.methods:
        names = [n for n in names if n in args.methods.split(",") or n == "q+k+v"]
    print(f"# HRR benchmark: B={args.batch} H={args.heads} D={args.dim} float32 forward "
          f"(the fwd+bwd rows: forward + backward), {args.repeats} rounds, median ms")
    print(f"# {environment()}")
    print(f"# command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    results = {}
    for tokens in args.seq_len:
        shape = (args.batch, args.heads, tokens, args.dim)
        med, spread, compile_s, notes = time_split(names, shape, args.repeats, args)
        results[tokens] = (med, spread, compile_s, notes)

    floor_name = "q+k+v"
    print("\n## time, ms (ratio to the elementwise floor q+k+v in the same rounds)")
    header = f"{'method':>20s} " + " ".join(f"{'T=' + str(t):>20s}" for t in args.seq_len)
    print(header)
    for name in names:
        cells = []
        for tokens in args.seq_len:
            med, spread, compile_s, notes = results[tokens]
            if name in med:
                ratio = med[name] / med[floor_name] if floor_name in med else float("nan")
                cells.append(f"{fmt_ms(med[name])} ({ratio:6.2f}x)")
            else:
                cells.append(f"{notes.get(name, '-')[:20]:>20s}")
        print(f"{name:>20s} " + " ".join(f"{c:>20s}" for c in cells))
    if with_jax:
        print("\n## JAX compile time, ms (lower + compile, not in the times above)")
        for name in names:
            if "jax" in name:
                print(f"{name:>20s} " + " ".join(
                    f"{fmt_ms(results[t][2][name]) if name in results[t][2] else '-':>20s}"
                    for t in args.seq_len))
    print("\n## spread (min..max ms over the rounds)")
    def spread_cell(tokens: int, name: str) -> str:
        spread = results[tokens][1].get(name)
        return "-" if spread is None else f"{spread[0] * 1e3:.0f}..{spread[1] * 1e3:.0f}"
    for name in names:
        print(f"{name:>20s} " + " ".join(f"{spread_cell(t, name):>20s}" for t in args.seq_len))

    for label, pick in (("median", lambda res: res[0]),
                        ("min, the least disturbed round", lambda res: {
                            n: lo for n, (lo, _) in res[1].items()})):
        print(f"\n## ratios of the {label} times (same process, same rounds)")
        for tokens in args.seq_len:
            print_ratios(tokens, pick(results[tokens]))

    if args.no_memory:
        return
    print("\n## peak memory increase over the inputs, MiB (ratio to the bytes of q+k+v); "
          "one subprocess per cell")
    print(header)
    for name in names:
        cells = []
        for tokens in args.seq_len:
            shape = (args.batch, args.heads, tokens, args.dim)
            reason = skip_reason(name, shape, args)
            if reason or (args.memory_max_t and tokens > args.memory_max_t):
                cells.append("-")
                continue
            got = measure_memory(name, shape, args.memory_timeout)
            if isinstance(got, str):
                cells.append(got[:20])
                continue
            qkv = 3 * args.batch * args.heads * tokens * args.dim * 4
            cells.append(f"{got['peak_increase'] / MiB:9.1f} ({got['peak_increase'] / qkv:5.2f}x)")
        print(f"{name:>20s} " + " ".join(f"{c:>20s}" for c in cells), flush=True)


def dims_table(args) -> None:
    """Formulation choice: gemm vs fft per head dim, T = 2^22 / D (T=65536 at D=64)."""
    with_jax = not args.no_jax and importlib.util.find_spec("jax") is not None
    names = ["q+k+v", "hrr_torch[gemm]", "hrr_torch[fft]"]
    if with_jax:
        names += ["jax q+k+v", "hrr_jax[gemm]", "hrr_jax[fft]"]
    print(f"# formulation per head dim: B={args.batch} H={args.heads} T=2^22/D float32 forward, "
          f"{args.repeats} rounds, median ms")
    print(f"# {environment()}")
    print(f"# command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"{'D':>5s} {'T':>7s} " + " ".join(f"{n:>16s}" for n in names))
    for dim in args.dims:
        tokens = max(1, (1 << 22) // dim)
        shape = (args.batch, args.heads, tokens, dim)
        med, _, _, notes = time_split(names, shape, args.repeats, args)
        print(f"{dim:5d} {tokens:7d} " + " ".join(
            f"{fmt_ms(med[n]) if n in med else notes.get(n, '-')[:16]:>16s}" for n in names),
            flush=True)


def sizes(axis: str):
    """argparse type: the harness's size lists ('1K,4K', '1K..64K', '2^12')."""
    def parse(text: str) -> list[int]:
        try:
            return list(parse_int_list(text, axis=axis))
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=sizes("seq_len"), default="1K,4K,16K,64K")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="", help="comma list (default: all)")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-max-t", type=int, default=0, help="0: no limit")
    parser.add_argument("--memory-timeout", type=float, default=300)
    parser.add_argument("--quadratic-max-t", type=int, default=8192)
    parser.add_argument("--original-max-t", type=int, default=1 << 20)
    parser.add_argument("--max-matrix-gib", type=float, default=4.0)
    parser.add_argument("--dims", type=sizes("dims"), default=None,
                        help="instead of the T table: gemm vs fft per head dim")
    parser.add_argument("--_memory-worker", dest="memory_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_jax-worker", dest="jax_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_shape", dest="shape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jax_worker:
        shape = tuple(int(n) for n in args.shape.split(","))
        med, spread, compile_s, notes = time_round_robin(args.jax_worker.split(","), shape,
                                                         args.repeats, args)
        print(json.dumps({"med": med, "spread": spread, "compile": compile_s, "notes": notes}))
        return 0
    if args.memory_worker:
        shape = tuple(int(n) for n in args.shape.split(","))
        print(json.dumps(memory_worker(args.memory_worker, shape)))
        return 0
    if args.dims:
        dims_table(args)
    else:
        main_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
