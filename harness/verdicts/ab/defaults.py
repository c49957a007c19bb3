"""How ``ab`` measures when the user does not say: the settings its power was measured with
(docs/regression.md, "Power of ab"), and a warning for each flag known to cost that power.

On a CPU grid: one thread per worker, the worker's CPU time (``--clock cpu``), both lockstep
workers of a point pinned to one CPU. Two threads on a 2-core machine with one core busy stall
every parallel region, and the wall clock counts every stall: with the defaults of a sweep (two
threads, wall clock) beside one busy core every point stayed ``ambiguous``, intervals as wide as
[0.16, 2.21]. A CUDA grid keeps the wall clock (CUDA events: the host's CPU time is not the
kernel's) and the environment's threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Measuring:
    clock: str                       # "cpu" or "wall"
    threads: int | None              # per worker; None: the environment's
    pin: bool                        # both lockstep workers of a point on one CPU
    told: tuple[str, ...] = ()       # what was chosen for the user, for the report's header
    warnings: tuple[str, ...] = field(default_factory=tuple)


def environment_threads(environ: dict[str, str] | os._Environ) -> int | None:
    """OMP_NUM_THREADS as a positive int, else None."""
    try:
        value = int(str(environ.get("OMP_NUM_THREADS", "")).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def resolve(*, cpu_grid: bool, clock: str | None, threads: int | None, pin: str | None,
            environ: dict[str, str] | os._Environ = os.environ) -> Measuring:
    """The settings of an ``ab`` call: the user's flags where given, else the defaults above.
    ``cpu_grid``: every point of the grid is on the CPU."""
    told: list[str] = []
    warnings: list[str] = []
    if clock is None:
        clock = "cpu" if cpu_grid else "wall"
        told.append(f"--clock {clock} (the default on a {'CPU' if cpu_grid else 'CUDA'} grid)")
    elif clock == "wall" and cpu_grid:
        warnings.append("--clock wall on a CPU grid: every other process's turn on a core "
                        "stretches the wall clock of the side that has it; beside one busy core "
                        "ab decided nothing this way (docs/regression.md, 'Power of ab'); the "
                        "default, --clock cpu, does not see it")
    env_threads = environment_threads(environ)
    if threads is None and cpu_grid:
        if env_threads is not None and env_threads != 1:
            threads = env_threads
            warnings.append(f"OMP_NUM_THREADS={env_threads} in the environment: {env_threads} "
                            f"threads per worker. A busy core stalls every parallel region, and "
                            f"CPU time then counts the threads' spin-waits; ab's default is one "
                            f"thread per worker (--threads 1)")
        else:
            threads = 1
            if env_threads is None:
                told.append("--threads 1 (the default on a CPU grid)")
    elif threads is not None and threads > 1 and cpu_grid:
        warnings.append(f"--threads {threads}: a busy core stalls every parallel region, and CPU "
                        f"time counts the threads' spin-waits; ab's power was measured with one "
                        f"thread per worker (the default)")
    single = (threads if threads is not None else env_threads) == 1
    if pin is None:
        use_pin = cpu_grid and single
        if use_pin:
            told.append("--pin on (the default for single-threaded CPU workers)")
    elif pin == "on":
        if not single:
            warnings.append("--pin on: ignored, the workers have more than one thread (pinning "
                            "pins the main thread only)")
        use_pin = single
    else:
        use_pin = False
    return Measuring(clock=clock, threads=threads, pin=use_pin, told=tuple(told),
                     warnings=tuple(warnings))
