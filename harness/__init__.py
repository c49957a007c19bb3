"""attnbench's machinery: registry, numpy entry point, runner, results, reports.

Where things are:
- harness.contract.registry     what implementations exist and what each can do (``register``)
- harness.api          ``attention(name, q, k, v, ...)`` on numpy arrays
- harness.contract.reference    float64 references every implementation is checked against
- harness.measure.gate  the gate an implementation passes before it is timed
- harness.contract.frameworks   the torch / JAX adapters (inputs, timers, memory readers)
- harness.contract.records      the record: the contract between measuring and everything downstream
- harness.grid.spec, harness.grid.presets   what to sweep
- harness.measure.runner, harness.measure.processes, harness.measure.worker, harness.measure.timing   how it is measured
- harness.store.run_dir        run directories (run.json + results.jsonl), ``load_results``
- harness.report, harness.verdicts.compare, harness.accuracy   reports, regression checks, LRA
- harness.commands     one module per run_bench.py command (table in harness.cli)
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
