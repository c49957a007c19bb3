"""``python -m harness ...`` is ``run_bench.py ...`` (used to start shard processes)."""

import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")   # as run_bench.py

from harness.cli import main  # noqa: E402

sys.exit(main())
