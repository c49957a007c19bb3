#!/usr/bin/env python3
"""attnbench: benchmark attention implementations on the hardware here.

    python run_bench.py                 default benchmark on the best device, then its report
    python run_bench.py list            implementations and their availability
    python run_bench.py --help          every command
"""

import os
import sys

# before anything imports JAX: a JAX GPU backend started in this process by accident would not
# take 75% of the GPU from the workers (the harness starts none here: harness.contract.visible_gpus)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
