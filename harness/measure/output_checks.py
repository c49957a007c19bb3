"""What the timed output must satisfy before its time is recorded (all outside the timed region).

A method that passed the gate (harness.measure.gate: a small size, once) can still be wrong where
the gate does not look, or fast because it does not do the work. Each check returns why the
point's output or inputs are not those of the method doing its work ('' when they are, or when
the check does not apply), and the worker records that as the point's ``error``:

- ``output_shape_problem`` and ``output_kind_problem``: the output's shape, dtype and device;
- ``inputs_changed``: q, k, v written in place (the method is timed on drifting inputs);
- ``timed_values_problem``: an exact method's values at the timed size, on the last timed call
  and on one more after q changed in place (a method wrong at long T, wrong on every other
  call, or answering from a cache keyed on its input tensors);
- ``unsettled_output_problem``: an output that changes after the call returned (work left
  running on a thread: its time would be a launch's);
- ``gradient_problem``: gradients that are not the derivative of the method's own forward.

``fidelity`` is not a check but a measure: an approximation's deviation from exact attention on
the same sampled rows.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from harness.contract.records import Point
from harness.contract.reference import relative_error

# Fidelity compares the timed output with the exact output on FIDELITY_ROWS evenly spaced
# query rows (all of them up to that many), where that is cheap
FIDELITY_ROWS = 256
FIDELITY_MAX_SCORES = 2 ** 25   # B * H * rows * T scores in float64
FIDELITY_MAX_MASK = 2 ** 26     # Tq * Tk (the reference builds the mask of every row)


def output_shape_problem(value: Any, inputs: tuple[Any, ...], pass_: str) -> str:
    """Why the timed call's output has the wrong shape ('' when right, or not checkable).

    Forward: q's shape with v's last dimension; with a backward: q's gradient, q's shape.
    Checked once, on the output of the last timed sample (never inside the timed region).
    """
    while isinstance(value, (tuple, list)) and value:   # JAX: (out, grads) or grads
        value = value[0]
    if len(inputs) < 3 or not hasattr(value, "shape"):
        return ""
    q, _, v = inputs[:3]
    forward = (*tuple(q.shape)[:-1], tuple(v.shape)[-1])
    expected = forward if pass_ == "forward" else tuple(q.shape)
    got = tuple(value.shape)
    if got != expected and (pass_ == "forward" or got != forward):
        what = "gradient of q" if pass_ != "forward" else "output"
        return f"wrong {what} shape {got} at the timed size (expected {expected})"
    return ""


# elements of each input compared before and after the calls (a strided sample: a method that
# writes its inputs in place changes far more than one element in a million)
INPUT_SAMPLE = 2 ** 20


def strided_sample(x: Any) -> Any:
    """A copy of about INPUT_SAMPLE evenly strided elements of a torch tensor (None for what is
    not one: a JAX array is immutable, a dtype without these ops, FP8 on some builds)."""
    detach = getattr(x, "detach", None)
    if detach is None:
        return None
    try:
        flat = detach().reshape(-1)
        return flat[::max(1, flat.numel() // INPUT_SAMPLE)].clone()
    except (RuntimeError, TypeError):
        return None


def input_samples(work: Any) -> list[Any] | None:
    """What is compared of q, k, v before and after the calls (None when any cannot be
    sampled), taken outside the timed region: a strided_sample of each, but of an input the
    timing loop permutes (q, Workload.vary) what a permutation keeps: its sum and sum of
    squares (float64) and its extremes."""
    samples = [strided_sample(x) for x in work.inputs]
    if any(sample is None for sample in samples):
        return None
    if work.vary is not None:
        q = work.inputs[0].detach().double()
        samples[0] = q.new_tensor([float(q.sum()), float(q.square().sum()), float(q.min()),
                                   float(q.max())]) if q.numel() else q.reshape(-1)
    return samples


def inputs_changed(work: Any, before: list[Any] | None, calls: int) -> str:
    """Why the inputs differ after the calls ('' when they do not, or were not sampled): a
    method that writes q, k or v in place is timed on inputs drifting from call to call."""
    if before is None:
        return ""
    import torch

    after = input_samples(work)
    if after is None:
        return ""
    try:
        # a permuted q's sums are equal up to the order of the float64 additions
        changed = [name for name, a, b in zip(("q", "k", "v"), before, after)
                   if not (torch.equal(a, b) or (name == "q" and work.vary is not None and
                                                 torch.allclose(a, b, rtol=1e-9, atol=0.0)))]
    except (RuntimeError, TypeError):
        return ""
    if not changed:
        return ""
    return (f"the method changed its inputs in place ({', '.join(changed)} differ after "
            f"{calls} timed calls): its times are of drifting inputs")

# how long, in all, the threads a checked call started may take to end before its output is
# sampled again (a method's idle pool threads never end: they cost this once, not a failure)
SETTLE_TIMEOUT_S = 5.0


def first_array(value: Any) -> Any:
    """The output itself from what a call returned: JAX's (out, grads) or grads give their first."""
    while isinstance(value, (tuple, list)) and value:
        value = value[0]
    return value


def unsettled_output_problem(work: Any) -> str:
    """Why the output is not complete when the call returns ('' when it is, or cannot be
    sampled: a JAX array is immutable). Two more calls, outside the timed region: the first's
    output is sampled (strided_sample) as soon as it returned and was waited for as the timed
    loop waits (the workload's block: a GPU's queue), then the second call runs, every Python
    thread the first call started is waited for (at most SETTLE_TIMEOUT_S in all), and the first
    output is sampled again. A method that returns at once and fills its output on a thread, or
    completes one call's output during the next, changes an output it already returned: its
    time would be a launch's, not the work's."""
    before = set(threading.enumerate())
    work.setup()
    first = work.run()
    work.block(first)
    at_return = strided_sample(first_array(first))
    if at_return is None:
        return ""
    started = [thread for thread in threading.enumerate() if thread not in before]
    work.setup()
    second = work.run()
    work.block(second)
    del second
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    later = strided_sample(first_array(first))
    import torch

    if later is not None and later.shape == at_return.shape and \
            torch.equal(at_return.nan_to_num(), later.nan_to_num()):
        return ""
    threads = f"; {len(started)} thread(s) it started were running when it returned" \
        if started else ""
    return ("the output changed after the call returned (work left running" + threads +
            "): its time would be the launch's, not the work's")


def ignores_input_problem(work: Any, point: Point) -> str:
    """Why the output does not follow the input ('' when it does, or cannot be checked: JAX,
    a backward alone). One call on the inputs as they are and one after q was negated in place
    (exact; restored after): the outputs must differ. Whatever the family, a method answering
    from a cache that negation does not change (its key q's norms, sorted magnitudes or sum of
    squares: what the timing loop's permutation keeps too) gives the same output twice."""
    if work.vary is None or point.pass_ not in ("forward", "forward_backward"):
        return ""
    flip = getattr(getattr(work.inputs[0], "data", None), "neg_", None)
    if flip is None:
        return ""
    work.setup()
    first = work.run()
    work.block(first)
    before = strided_sample(first_array(first))
    del first
    if before is None:
        return ""
    flip()
    try:
        work.setup()
        second = work.run()
        work.block(second)
        after = strided_sample(first_array(second))
        del second
    finally:
        flip()
    import torch

    if after is not None and after.shape == before.shape and torch.equal(before, after):
        return ("the output did not change when q was negated in place: it does not follow its "
                "input (an answer from a cache?)")
    return ""


# |last timed call's dq - a fresh forward and backward's dq| / max |fresh dq| allowed: the same
# method on the same inputs, apart from a GPU backward's atomic accumulation order
TIMED_GRADIENT_TOLERANCE = {"float64": 1e-8, "float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}


def gradient_problem(work: Any, point: Point, note: str = "", value: Any = None) -> str:
    """Why the method's gradients are not those of its own forward ('' when they are, or not
    checked: a paged or FP8 cache, a framework without the check, a method whose traits
    declare a gradient_note: its backward departs by design). The forward is gated against a
    reference; the gradients are checked against the forward by central differences along
    seeded directions (harness.contract.gradient_check, run by the framework's adapter), so
    fake or scaled dq, dk, dv are seen whatever the method's family. ``value``: the last timed
    call's dq, which must be the fresh forward and backward's (the timing loop varied q, or
    the upstream gradient of a backward alone, before every call: a backward answering from a
    cache of an earlier call's gradients differs)."""
    check = work.info.get("gradient_check")
    if note or check is None:   # note: the backward departs from the forward's derivative
        return ""
    for result in check():
        if not (math.isfinite(result.difference) and math.isfinite(result.along)):
            return "non-finite gradients or loss in the gradient check"
        if result.error > result.part.tolerance:
            return (f"gradients do not match the method's own forward: along a seeded "
                    f"direction in {result.part.name} the backward gives {result.along:.6g}, a "
                    f"central difference of the forward {result.difference:.6g} (relative "
                    f"error {result.error:.2g} > {result.part.tolerance:g}, {point.dtype})")
    fresh = work.info.get("fresh_q_grad")
    timed = first_array(value)
    tolerance = TIMED_GRADIENT_TOLERANCE.get(point.dtype)
    if fresh is None or tolerance is None or getattr(timed, "shape", None) != fresh.shape:
        return ""
    scale = max(float(fresh.abs().max()), 1e-30)
    error = float((timed.detach().double() - fresh).abs().max()) / scale
    if not error <= tolerance:
        return (f"the last timed call's gradients are not those of a fresh forward and backward "
                f"on the same inputs (max dq difference {error:.3g} of its largest value > "
                f"{tolerance:g}): its backward answered from something other than its inputs")
    return ""


def output_kind_problem(value: Any, point: Point) -> str:
    """Why the timed call's output is not of the point's dtype or on its device ('' when it is,
    or not checkable): a float32 point answered in float64, or on the host for a CUDA point,
    would be recorded as what it is not."""
    while isinstance(value, (tuple, list)) and value:   # JAX: (out, grads) or grads
        value = value[0]
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        if name != point.dtype:
            return (f"output dtype {name} for a {point.dtype} point (the method must answer in "
                    f"its inputs' dtype)")
    kind = output_device_kind(value)
    if kind is not None and kind != point.device.split(":", 1)[0]:
        return f"output on {kind} for a {point.device} point"
    return ""


def output_device_kind(value: Any) -> str | None:
    """'cpu' or 'cuda' for a torch tensor or a JAX array; None when not known."""
    device = getattr(value, "device", None)
    kind = getattr(device, "type", None)        # torch
    if isinstance(kind, str):
        return kind
    devices = getattr(value, "devices", None)   # JAX
    if callable(devices):
        try:
            platforms = {d.platform for d in devices()}
        except Exception:   # a deleted or abstract array: not checkable
            return None
        if len(platforms) == 1:
            platform = platforms.pop()
            return "cuda" if platform in ("gpu", "cuda", "rocm") else platform
    return None


# the gate's tolerance is for T=64; a long row sums more terms: this much slack at the timed size
# (float32 at T=8K: max error about 1e-6 against a 2e-5 tolerance; a method 1% off: 1e-3 and
# more)
TIMED_TOLERANCE_FACTOR = 4.0


def timed_values_problem(value: Any, work: Any, point: Point, fw: Any,
                         tolerance: float) -> str | None:
    """An exact method's outputs at the timed size, forward pass, against the float64 reference
    on unforeseen_rows' query rows (O(rows x T x D), outside the timed region): the last timed
    call's, and that of one more call after q was negated in place (torch; JAX arrays are
    immutable), so that a method answering from a cache keyed on its input tensors, or wrong on
    every other call, is seen. '' when both are within TIMED_TOLERANCE_FACTOR x the gate's
    tolerance (the gate's max |out - ref| / max(1, max |ref|)), or not cheap, or not this
    check's (FP8 keys and values: their deviation is quant_error's); None when it did not
    check. The gate runs once, at a small size; a method wrong only at long T passes it."""
    if point.pass_ != "forward" or point.value("kv_dtype"):
        return None
    rows = unforeseen_rows(point)
    if rows is None:
        return None
    q, k, v = (fw.to_numpy64(x) for x in work.inputs)
    outputs = {"the last timed call": (fw.to_numpy64(value)[..., rows, :], q)}
    q_tensor = work.inputs[0]
    flip = getattr(getattr(q_tensor, "data", None), "neg_", None)
    if flip is not None:
        flip()                    # the same tensor, new values: the output must follow them
    try:
        work.setup()
        again = work.run()
        work.block(again)
        outputs["the call after it" + (", q negated in place" if flip is not None else "")] = \
            (fw.to_numpy64(again)[..., rows, :], -q if flip is not None else q)
        del again
    finally:
        if flip is not None:
            flip()                # negation is exact: the inputs are as they were
    limit = TIMED_TOLERANCE_FACTOR * tolerance
    for which, (out, q_used) in outputs.items():
        reference = reference_rows(point, work, q_used, k, v, rows)
        scale = max(1.0, float(np.abs(reference).max()))
        error = float(np.abs(out - reference).max() / scale) if np.isfinite(out).all() \
            else math.inf
        if error > limit:
            return (f"wrong values at the timed size ({which}): max error {error:.3g} on "
                    f"{len(rows)} sampled query rows against the float64 reference > "
                    f"{limit:.3g} ({TIMED_TOLERANCE_FACTOR:g} x the gate's {point.dtype} "
                    f"tolerance; the gate at its small size passed)")
    return ""


def fidelity_rows(n_queries: int) -> np.ndarray:
    """The query rows fidelity compares: FIDELITY_ROWS evenly spaced, first and last included."""
    return np.unique(np.linspace(0, n_queries - 1, min(n_queries, FIDELITY_ROWS)).round()
                     .astype(np.int64))


def cheap_rows(point: Point) -> np.ndarray | None:
    """fidelity_rows of the point where the float64 reference on them is cheap (B x H x rows x T
    scores, a Tq x Tk mask), else None: the rows both fidelity and timed_values_problem take."""
    rows = fidelity_rows(point.n_queries)
    if point.batch * point.heads * len(rows) * point.seq_len > FIDELITY_MAX_SCORES or \
            point.n_queries * point.seq_len > FIDELITY_MAX_MASK:
        return None
    return rows


def unforeseen_rows(point: Point) -> np.ndarray | None:
    """As many query rows as cheap_rows gives (None where it gives none), drawn at random
    (the operating system's entropy) unless that is every row: a method computing only the
    rows a check is known to read (fidelity_rows are evenly spaced, and public) cannot know
    these. The check's verdict does not depend on which rows: an honest method passes on any."""
    rows = cheap_rows(point)
    if rows is None or len(rows) >= point.n_queries:
        return rows
    return np.sort(np.random.default_rng().choice(point.n_queries, len(rows), replace=False))


def reference_rows(point: Point, work: Any, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
    """The float64 exact attention of these query rows, with the mask the workload was built
    with (the point's own where the workload kept none)."""
    from harness.contract.point_masks import point_mask
    from harness.contract.reference import exact_attention

    mask = point_mask(point) if work.mask is None else work.mask
    return exact_attention(q, k, v, causal=point.causal, rows=rows, **mask)


def fidelity(value: Any, work: Any, point: Point, fw: Any,
             inputs: Any = None) -> tuple[float | None, int | None]:
    """(relative deviation of the timed output from exact softmax attention on the same inputs,
    over fidelity_rows' query rows; how many rows), or (None, None) where that is not cheap.
    ``inputs``: a callable giving the float64 q, k, v to take instead of the workload's (the
    unquantised inputs of a kv_dtype point: the error FP8 costs)."""
    rows = cheap_rows(point)
    if rows is None:
        return None, None
    q, k, v = inputs() if inputs is not None else (fw.to_numpy64(x) for x in work.inputs)
    out = fw.to_numpy64(value)[..., rows, :]
    return relative_error(out, reference_rows(point, work, q, k, v, rows)), len(rows)
