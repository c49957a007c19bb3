"""Whether a point's median is a property of the method or of the machine's state at the time:
the ``noisy`` mark and its reason (pure; the figures come from harness.measure.timing and
harness.measure.machine_state).

A point is noisy when any of these holds:
- its samples do not fix their median: the median's ~95% interval (a box plot's notch,
  harness.metrics.stats.median_uncertainty) is wider than ``NOISY_MEDIAN`` (±5%) of it when
  sampling ended. The spread of the samples alone does not decide: some methods' calls vary
  by 10-30% on a quiet machine (JAX's dispatch, small kernels), and 200 such samples still fix
  the median to 1-3%; a median known to ±5% keeps a 15% difference between runs visible;
- other processes took CPUs the worker's threads needed: over the samples' window, the CPUs
  others used beyond those the worker leaves free (available - needed) exceed
  ``CONTENTION_SHARE`` (10%) of the CPUs the worker needs. With two threads on two cores, a
  third busy thread preempts one of them and every parallel region waits for it: the samples
  can be uniformly slow (small spread) and many times the quiet time;
- the hypervisor stole more than ``STEAL_SHARE`` (5%) of the CPUs' time in the window.
The 1-minute load average is kept as context and never decides: it averages over a minute
that is mostly outside the window.
"""

from __future__ import annotations

from dataclasses import dataclass

NOISY_MEDIAN = 0.05
CONTENTION_SHARE = 0.10
STEAL_SHARE = 0.05


@dataclass(frozen=True)
class NoiseVerdict:
    noisy: bool
    reason: str = ""


def cpu_shortfall(other_cpus: float, cpus_available: int, cpus_needed: int) -> float:
    """CPUs the worker's threads went without: what others used beyond the CPUs the worker
    leaves free."""
    spare = max(0, cpus_available - cpus_needed)
    return max(0.0, other_cpus - spare)


def noise_verdict(*, median_uncertainty: float | None, other_cpus: float | None = None,
                  cpus_available: int | None = None,
                  cpus_needed: int | None = None, steal_fraction: float | None = None,
                  judge_others: bool = True) -> NoiseVerdict:
    """The noisy mark of one point from its spread and the machine's state (None: not
    measured, judged on the rest). ``judge_others`` False where other processes' CPU time is
    part of the design (``run_bench.py ab``'s lockstep: the other side's turns)."""
    reasons = []
    if median_uncertainty is not None and median_uncertainty > NOISY_MEDIAN:
        reasons.append(f"the samples fix their median to ±{median_uncertainty:.1%} only "
                       f"(above ±{NOISY_MEDIAN:.0%})")
    if judge_others and other_cpus is not None and cpus_available and cpus_needed:
        short = cpu_shortfall(other_cpus, cpus_available, cpus_needed)
        if short > CONTENTION_SHARE * cpus_needed:
            reasons.append(f"other processes used {other_cpus:.2f} of {cpus_available} CPUs "
                           f"while the worker's {cpus_needed} thread(s) needed "
                           f"{cpus_needed}: {short:.2f} CPU short")
    if steal_fraction is not None and steal_fraction > STEAL_SHARE:
        reasons.append(f"CPU steal {steal_fraction:.1%} of the window above "
                       f"{STEAL_SHARE:.0%}")
    return NoiseVerdict(bool(reasons), "; ".join(reasons))
