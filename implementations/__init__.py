"""Built-in attention implementations, one module per method.

Importing this package registers them all. To add a method, write a module like these that
calls ``harness.register`` and either add it to the list below or load it from your own
package with ``run_bench.py --impl-module yourpkg.yourmodule``.
"""

from implementations import (  # noqa: F401  (imported for their registrations)
    softmax_torch,
    sdpa,
    flex_attention,
    flash_attn,
    flash_attn_4,
    flashinfer,
    xformers,
    performer_torch,
    hrr_torch,
    hrr_triton,
    softmax_jax,
    hrr_jax,
)
