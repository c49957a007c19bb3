"""``python -m harness ...`` is ``run_bench.py ...`` (used to start shard processes)."""

import sys

from harness.cli import main

sys.exit(main())
