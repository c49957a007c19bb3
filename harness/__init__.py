"""attnbench's machinery: registry, numpy entry point, runner, results, reports.

Where things are:
- harness.registry     what implementations exist and what each can do (``register``)
- harness.api          ``attention(name, q, k, v, ...)`` on numpy arrays
- harness.reference    float64 references every implementation is checked against
- harness.correctness  the gate an implementation passes before it is timed
- harness.frameworks   the torch / JAX adapters (inputs, timers, memory readers)
- harness.records      the record: the contract between measuring and everything downstream
- harness.sweep_spec, harness.presets   what to sweep
- harness.runner, harness.executor, harness.worker, harness.measure   how it is measured
- harness.store        run directories (run.json + results.jsonl), ``load_results``
- harness.report, harness.regression, harness.accuracy   reports, regression checks, LRA
- harness.commands     one module per run_bench.py command (table in harness.cli)
"""

from harness.api import attention
from harness.errors import AttnbenchError, UnknownNameError, UnsupportedError, UsageError
from harness.registry import (
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

__all__ = [
    "attention", "register", "get", "names", "all_implementations", "load_impl_modules",
    "Availability", "Capabilities", "Implementation", "Query",
    "AttnbenchError", "UnknownNameError", "UnsupportedError", "UsageError",
]
