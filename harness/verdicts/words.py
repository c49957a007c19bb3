"""The words of a verdict, one vocabulary for ``compare`` (two run directories) and ``ab`` (two
revisions), and which of them fail (the exit status of both commands).

The two sides are called **baseline** and **current** in every output of both commands (table
columns, CSV fields, headers): those words say what role a side plays, the reference and the
one under test, whatever the side is. ``base``/``head`` are git's words for revisions and do not
fit compare's run directories; ``baseline``/``current`` fit both. The command lines keep their
own argument names (``compare BASELINE CURRENT``, ``ab BASE HEAD``), and ``ab`` still names its
sides' run directories ``base/`` and ``head/``.

Every verdict (``VERDICTS``, in the order a summary lists them), what it means:

==================  =================================================================
``slower``          the whole interval of the ratio current/baseline lies above
                    ``1 + threshold``: costs more, noise included (fails)
``faster``          the whole interval lies below ``1 / (1 + threshold)``
``same``            the whole interval lies within the two limits
``ambiguous``       the interval straddles a limit (its noise is larger than the distance
                    from the ratio to the limit): more samples or rounds could decide it
``newly failing``   ok in the baseline, not ok now (fails); shown with the pair,
                    "newly failing (ok -> oom)"
``newly running``   not ok in the baseline, ok now: "newly running (oom -> ok)"
``only in baseline`` the point is in the baseline side only
``only in current`` the point is in the current side only
``not measured``    no value to judge on a side: not ok on both ("not measured (oom ->
                    timeout)"), no time or memory recorded, or (``compare --relative-to``)
                    the reference not measured at the point
``not comparable``  the two times are on different timing bases (CUDA events against a
                    host clock with a synchronisation): a difference of method, not of speed
``reference``       ``compare --relative-to``: the reference's own row, not judged
==================  =================================================================

``faster`` and ``slower`` name the direction of every metric judged, each a cost where more is
worse: time, peak memory (``slower``: more memory) and instruction counts. One word per
direction keeps a CSV filter, ``--fail-on`` and a summary the same for every metric; the
``metric`` column says which cost a row judged.

Exit status of both commands: 1 when any row's class fails, else 0; 2 (bad input) is raised
before any verdict. ``slower`` and ``newly failing`` always fail; ``--fail-on`` adds classes
(``ambiguous`` for a CI job that wants every point decided, ``only in baseline`` for a grid
that must not shrink).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

from harness.errors import UsageError

SIDES = ("baseline", "current")

SLOWER, FASTER, SAME, AMBIGUOUS = "slower", "faster", "same", "ambiguous"
NEWLY_FAILING, NEWLY_RUNNING = "newly failing", "newly running"
ONLY_BASELINE, ONLY_CURRENT = "only in baseline", "only in current"
NOT_MEASURED, NOT_COMPARABLE, REFERENCE = "not measured", "not comparable", "reference"

VERDICTS = (SLOWER, NEWLY_FAILING, AMBIGUOUS, FASTER, NEWLY_RUNNING, SAME, ONLY_BASELINE,
            ONLY_CURRENT, NOT_MEASURED, NOT_COMPARABLE, REFERENCE)
# judged on a measured interval; the others come from statuses and bookkeeping
MEASURED = (SLOWER, FASTER, SAME, AMBIGUOUS)
# classes whose text shows the two statuses: "newly failing (ok -> oom)"
SHOWS_STATUSES = (NEWLY_FAILING, NEWLY_RUNNING, NOT_MEASURED)
ALWAYS_FAILS = frozenset({SLOWER, NEWLY_FAILING})
# what --fail-on may add: a change for the better, or a reference row, never fails
MAY_FAIL = (AMBIGUOUS, ONLY_BASELINE, ONLY_CURRENT, NOT_MEASURED, NOT_COMPARABLE)

# the --fail-on flag of both commands (argparse escapes its own percent signs only)
FAIL_ON_HELP = ("classes that fail (exit 1) besides slower and newly-failing, comma-separated: "
                + ", ".join(v.replace(" ", "-") for v in MAY_FAIL)
                + " (ambiguous: every point must be decided)")

# rich style of each verdict in a table; a failing row is always FAIL_STYLE
STYLE = {SLOWER: "bold red", NEWLY_FAILING: "bold red", AMBIGUOUS: "yellow", FASTER: "green",
         NEWLY_RUNNING: "green", SAME: "", ONLY_BASELINE: "magenta", ONLY_CURRENT: "cyan",
         NOT_MEASURED: "", NOT_COMPARABLE: "yellow", REFERENCE: "dim"}
FAIL_STYLE = "bold red"
# verdicts a table lists last: nothing to look at
QUIET = (SAME, REFERENCE)


def status_verdict(baseline: str, current: str) -> str | None:
    """The class of a point from its two statuses; None when both are ok (the values decide)."""
    if baseline == "ok" and current == "ok":
        return None
    if baseline == "ok":
        return NEWLY_FAILING
    if current == "ok":
        return NEWLY_RUNNING
    return NOT_MEASURED


def verdict_text(verdict: str, baseline_status: str = "", current_status: str = "") -> str:
    """How a table shows a verdict: a status class with its two statuses,
    'newly failing (ok -> oom)'; any other class as it is."""
    if verdict in SHOWS_STATUSES and baseline_status and current_status:
        return f"{verdict} ({baseline_status} -> {current_status})"
    return verdict


def parse_fail_on(text: str | Iterable[str] | None) -> frozenset[str]:
    """--fail-on 'ambiguous,only-in-baseline' -> the classes that fail, slower and newly
    failing included. Hyphens stand for spaces so that a class needs no quoting."""
    if text is None:
        names: list[str] = []
    elif isinstance(text, str):
        names = [x for x in text.split(",") if x.strip()]
    else:
        names = list(text)
    chosen = set(ALWAYS_FAILS)
    for name in names:
        verdict = " ".join(name.strip().lower().replace("-", " ").split())
        if verdict in ALWAYS_FAILS:
            continue
        if verdict not in MAY_FAIL:
            raise UsageError(f"--fail-on: {name.strip()!r} is not a class that may fail; one of "
                             f"{', '.join(v.replace(' ', '-') for v in MAY_FAIL)} (slower and "
                             f"newly-failing always fail)")
        chosen.add(verdict)
    return frozenset(chosen)


def fails(verdict: str, fail_on: Iterable[str] = ALWAYS_FAILS) -> bool:
    return verdict in set(fail_on)


def with_failures(rows: Sequence[Any], fail_on: Iterable[str] = ALWAYS_FAILS) -> list[Any]:
    """The rows (harness.verdicts.row.VerdictRow, which imports this module) with their
    ``fails`` flag set by ``fail_on``: one rule for both commands."""
    chosen = set(fail_on)
    return [dataclasses.replace(row, fails=row.verdict in chosen) for row in rows]


def fail_on_text(fail_on: Iterable[str]) -> str:
    """'slower, newly failing' (and what --fail-on added), in the vocabulary's order."""
    chosen = set(fail_on)
    return ", ".join(v for v in VERDICTS if v in chosen)


def rule_line(threshold: float, fail_on: Iterable[str]) -> str:
    """The rule of both commands in one header line."""
    limit = 1.0 + threshold
    return (f"verdicts: slower / faster when the whole interval of current/baseline lies above "
            f"{limit:.3g} / below {1 / limit:.3g} (threshold {threshold:.1%}), same when it lies "
            f"between, ambiguous when it straddles a limit; exit 1 on: {fail_on_text(fail_on)}")


def style(verdict: str, failing: bool) -> str:
    return FAIL_STYLE if failing else STYLE.get(verdict, "")


def exit_status(failing: Iterable[bool]) -> int:
    """1 when any row fails, else 0."""
    return 1 if any(failing) else 0
