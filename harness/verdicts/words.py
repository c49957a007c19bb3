"""The words of a verdict, shared by ``compare`` (two run directories) and ``ab`` (two revisions).

The two sides are called **baseline** and **current** in every output of both commands (table
columns, CSV fields, headers): those words say what role a side plays, the reference and the
one under test, whatever the side is. ``base``/``head`` are git's words for revisions and do not
fit compare's run directories; ``baseline``/``current`` fit both. The command lines keep their
own argument names (``compare BASELINE CURRENT``, ``ab BASE HEAD``), and ``ab`` still names its
sides' run directories ``base/`` and ``head/``.

Every verdict, what it means, and how a table shows it:

================  ===================================================================
``regressed``     slower (or larger) beyond the threshold, noise included: fails
``improved``      faster (or smaller) beyond the threshold, noise included
``unchanged``     within the threshold
``within noise``  compare: the ratio is beyond the threshold, its interval is not
``undecided``     ab: the interval straddles a limit; more rounds could decide it
``status A -> B`` the point's status changed; a regression when A is ok
``fixed``         not ok in the baseline, ok now
``new``           only in the current side
``missing``       only in the baseline side (a regression when asked to be)
``not measured``  ab: not ok on either side
``no reference``  compare --relative-to: the reference is not measured (ok) at the point
``reference``     compare --relative-to: the reference's own row, not judged
``not comparable`` compare: the two times are on different timing bases (the record's
                  ``timing_basis``: CUDA events against wall clock with a synchronisation);
                  not judged, listed with both bases
================  ===================================================================

A row is a regression when its ``regression`` flag is set; the exit status of both commands is
1 when any row is one, 0 otherwise (2, bad input, is raised before any verdict).
"""

from __future__ import annotations

from typing import Iterable

SIDES = ("baseline", "current")

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"
NOISY, UNDECIDED = "within noise", "undecided"
FIXED, NEW, MISSING, NOT_MEASURED = "fixed", "new", "missing", "not measured"
NO_REFERENCE, REFERENCE = "no reference", "reference"
NOT_COMPARABLE = "not comparable"
STATUS_CHANGE = "status change"     # how a summary counts every "status A -> B"

# rich style of each verdict in a table; a row that is a regression is always REGRESSION_STYLE
STYLE = {REGRESSED: "bold red", IMPROVED: "green", UNCHANGED: "", NOISY: "yellow",
         UNDECIDED: "yellow", FIXED: "green", NEW: "cyan", MISSING: "magenta",
         NOT_MEASURED: "", NO_REFERENCE: "yellow", REFERENCE: "dim",
         NOT_COMPARABLE: "yellow"}
REGRESSION_STYLE = "bold red"
# verdicts a table lists last: nothing to look at
QUIET = (UNCHANGED, REFERENCE)


def status_change(before: str, after: str) -> str:
    """The verdict of a point whose status changed: 'status ok -> oom'."""
    return f"status {before} -> {after}"


def is_status_change(verdict: str) -> bool:
    return verdict.startswith("status ")


def style(verdict: str, regression: bool) -> str:
    return REGRESSION_STYLE if regression else STYLE.get(verdict, "")


def exit_status(regressions: Iterable[bool]) -> int:
    """1 when any row is a regression, else 0."""
    return 1 if any(regressions) else 0
