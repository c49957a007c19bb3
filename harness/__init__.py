"""attnbench's machinery: the stages of the pipeline, one package each, and the numpy entry point.

Where things are (each stage imports only the ones before it; tests/test_import_graph.py):
- harness.contract   what a measurement is: the axis table (axes), points and records (records),
                     the registry of implementations (``register``), masks, float64
                     references, precision, the torch / JAX adapters (frameworks)
- harness.metrics    FLOPs, bytes moved, the machine's peaks, statistics of samples
- implementations/   one module per attention method, registered into the contract
- harness.grid       what to sweep: spec, presets, plan (flags -> points), settings, sharding, cost
- harness.store      run directories (run.json + results.jsonl, ``load_results``), hardware
                     fingerprint, merge, resume
- harness.measure    how it is measured: runner, worker processes, correctness gate, timing and
                     timers, memory, GPU watch, profiling, lockstep round server
- harness.report, harness.verdicts (compare, ab), harness.accuracy (LRA)   what is made of records
- harness.scale      executors: in-process, per-GPU, Slurm
- harness.commands   one module per run_bench.py command (table in harness.cli)
- harness.api        ``attention(name, q, k, v, ...)`` on numpy arrays
"""

from harness.api import attention
from harness.errors import AttnbenchError, UnknownNameError, UnsupportedError, UsageError
from harness.contract.registry import (
    Availability,
    Capabilities,
    Implementation,
    all_implementations,
    get,
    load_impl_modules,
    names,
    Query,
    register,
)
from harness.contract.traits import Traits

__all__ = [
    "attention", "register", "get", "names", "all_implementations", "load_impl_modules",
    "Availability", "Capabilities", "Implementation", "Query", "Traits",
    "AttnbenchError", "UnknownNameError", "UnsupportedError", "UsageError",
]
