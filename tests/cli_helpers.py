"""What several test files need to run attnbench as a user does: the CLI in a subprocess, and
the records it wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python run_bench.py ARGS`` with this interpreter; env adds to (or overrides) ours."""
    return subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def free_port() -> int:
    """A TCP port free on localhost now (for torch.distributed and Slurm daemons)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_records(run_dir: Path) -> list[dict]:
    """The records of a run directory as written (results.jsonl, one JSON object a line)."""
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
