"""The workload: one pass of one point, built by a framework adapter, ready to be called."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Workload:
    """One pass of one point, ready to call: ``run()`` does the work once.

    ``setup`` runs before each sample, untimed (e.g. clearing gradients); ``block(value)``
    waits for asynchronous work; ``check(value)`` says whether the output is finite.
    """

    run: Callable[[], Any]
    block: Callable[[Any], None]
    check: Callable[[Any], bool]
    input_bytes: int
    setup: Callable[[], None] = lambda: None
    timer: Any = None          # a harness.measure.timers timer; None: wall clock
    inputs: tuple[Any, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    # the numpy mask keywords it was built with (harness.contract.point_masks.point_mask, with
    # the inputs' seed): the fidelity check's reference takes the same ones
    mask: dict[str, Any] | None = None
    # the tensors the timed call reads that may be overwritten in place between calls (the
    # CUDA-graph check writes fresh values into them, replays, and writes the old ones back);
    # empty: none named, a captured graph cannot be checked and is not used
    call_inputs: tuple[Any, ...] = ()
    # changes the inputs' values in place before each timed or warm-up call (untimed): the
    # method never sees the same values twice in a row, so that no cache of its outputs (on
    # the tensors, their storage or a fingerprint of their contents) answers a timed call;
    # None where the inputs cannot change (JAX arrays, a backward alone: its saved forward)
    vary: Callable[[], None] | None = None

    def next_call(self) -> None:
        """Before a warm-up call or a sample: the inputs varied, then ``setup``."""
        if self.vary is not None:
            self.vary()
        self.setup()
