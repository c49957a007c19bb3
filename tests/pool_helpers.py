"""Worker entry points and tasks for the pool's tests, importable by forkserver workers (tests/
is on their sys.path): they stand in for harness.measure.pool._serve where a test needs a worker
that dies before it is ready."""

from __future__ import annotations

import os
from pathlib import Path

from harness.measure import pool


def dies_at_first_start(marker: str, conn) -> None:
    """The first worker exits with status 5 before it says it is ready; later ones serve."""
    path = Path(marker)
    if not path.exists():
        path.write_text("started once\n")
        os._exit(5)
    pool._serve(conn)


def dies_at_start(conn) -> None:
    os._exit(5)


def never_ready(conn) -> None:
    """A worker that never says it is ready (it waits for a message that never comes)."""
    conn.recv()
