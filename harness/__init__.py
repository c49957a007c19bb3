"""attnbench's machinery: registry, numpy entry point, runner, results, reports.

Where things are:
- harness.registry     what implementations exist and what each can do (``register``)
- harness.api          ``attention(name, q, k, v, ...)`` on numpy arrays
- harness.reference    float64 references every implementation is checked against
- harness.frameworks   the torch / JAX adapters
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
    register,
)

__all__ = [
    "attention", "register", "get", "names", "all_implementations", "load_impl_modules",
    "Availability", "Capabilities", "Implementation",
    "AttnbenchError", "UnknownNameError", "UnsupportedError", "UsageError",
]
