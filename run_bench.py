#!/usr/bin/env python3
"""attnbench: benchmark attention implementations on the hardware here.

    python run_bench.py                 default benchmark on the best device, then its report
    python run_bench.py list            implementations and their availability
    python run_bench.py --help          every command
"""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
