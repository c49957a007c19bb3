"""The writers of a verdict table: rich (the terminal), one summary line, markdown, CSV.

``compare`` and ``ab`` hand them the same rows (harness.verdicts.row.VerdictRow) and the one
tuple of column declarations below drives every writer: a column with a ``cell`` is shown in the
rich and markdown tables (left out there when it is empty on every row, so that a command's
table carries only what it measured), a column with a ``value`` is a CSV field (always present,
so that a script reads the same fields from either command's CSV).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from harness.contract import escape
from harness.contract.escape import csv_line
from harness.verdicts import words
from harness.verdicts.row import (
    VerdictRow,
    config_text,
    interval_text,
    key_names,
    key_values,
    noise_text,
    side_texts,
    verdict_cell,
)


@dataclass(frozen=True)
class Column:
    name: str
    cell: Callable[[VerdictRow], str] | None = None    # text in the tables; None: CSV only
    value: Callable[[VerdictRow], Any] | None = None   # CSV value; None: tables only
    right: bool = False                                # right-justified in the rich table


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _key_column(name: str) -> Column:
    cell = (lambda row: row.point.impl) if name == "impl" else None
    # .get: a plug-in's axis not loaded here is stored only on the points that set it
    return Column(name, cell, lambda row: key_values(row.point).get(name))


# the columns after the point's key columns (key_columns: one per axis of the table, so that a
# plug-in's axis is a column too)
COLUMNS: tuple[Column, ...] = (
    Column("point_id", value=lambda row: row.point.point_id),
    Column("config", lambda row: config_text(row.point)),
    Column("metric", lambda row: row.metric, lambda row: row.metric),
    Column("baseline_status", value=lambda row: row.baseline_status),
    Column("current_status", value=lambda row: row.current_status),
    Column("baseline", lambda row: side_texts(row)[0], lambda row: row.baseline, right=True),
    Column("current", lambda row: side_texts(row)[1], lambda row: row.current, right=True),
    Column("ratio", lambda row: _number(row.ratio), lambda row: row.ratio, right=True),
    Column("interval", interval_text),
    Column("lo", value=lambda row: row.lo),
    Column("hi", value=lambda row: row.hi),
    Column("noise", noise_text),
    Column("baseline_noise", value=lambda row: row.baseline_noise),
    Column("current_noise", value=lambda row: row.current_noise),
    Column("rounds", lambda row: row.rounds, lambda row: row.rounds, right=True),
    Column("verdict", verdict_cell, lambda row: row.verdict),
    Column("fails", value=lambda row: row.fails),
    Column("round_ratios", value=lambda row: ";".join(f"{r:.6g}" for r in row.round_ratios)),
    Column("note", lambda row: row.note, lambda row: row.note),
)


def key_columns(rows: Iterable[VerdictRow]) -> list[Column]:
    return [_key_column(name) for name in key_names(row.point for row in rows)]


def all_columns(rows: Sequence[VerdictRow]) -> list[Column]:
    return [*key_columns(rows), *COLUMNS]


def csv_fields(rows: Sequence[VerdictRow]) -> tuple[str, ...]:
    return tuple(c.name for c in all_columns(rows) if c.value is not None)


def ordered(rows: Iterable[VerdictRow]) -> list[VerdictRow]:
    """Failing rows first, then every row worth a look, then the same ones (stable)."""
    def rank(row: VerdictRow) -> int:
        if row.fails:
            return 0
        return 2 if row.verdict in words.QUIET else 1
    return sorted(rows, key=rank)


def table_columns(rows: Sequence[VerdictRow]) -> list[Column]:
    """The table columns with text on at least one row (every table column when there are no
    rows)."""
    shown = [c for c in all_columns(rows) if c.cell is not None]
    return [c for c in shown if not rows or any(c.cell(row) for row in rows)]


def cells(row: VerdictRow, columns: Sequence[Column]) -> list[str]:
    return [column.cell(row) for column in columns]


def rich_table(rows: Sequence[VerdictRow], title: str):
    from rich.markup import escape as markup_escape
    from rich.table import Table

    rows = ordered(rows)
    columns = table_columns(rows)
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.name, justify="right" if column.right else "left",
                         overflow="fold")
    for row in rows:
        texts = [markup_escape(text) for text in cells(row, columns)]   # no markup from data
        style = words.style(row.verdict, row.fails)
        table.add_row(*(f"[{style}]{text}[/]" if style and column.name == "verdict" and text
                        else text for column, text in zip(columns, texts)))
    return table


def counts(rows: Iterable[VerdictRow]) -> dict[str, int]:
    """How many rows have each class, in the vocabulary's order."""
    found: dict[str, int] = {}
    for row in rows:
        found[row.verdict] = found.get(row.verdict, 0) + 1
    order = {verdict: k for k, verdict in enumerate(words.VERDICTS)}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)),
                                                         item[0])))


def counts_text(rows: Iterable[VerdictRow]) -> str:
    """'2 slower, 1 ambiguous, 4 same'."""
    return ", ".join(f"{n} {verdict}" for verdict, n in counts(rows).items())


def summary_line(rows: Sequence[VerdictRow]) -> str:
    """'FAIL: 2 row(s) fail (2 slower, 4 same)' or 'pass (4 same)'."""
    failing = sum(row.fails for row in rows)
    verdict = f"FAIL: {failing} row(s) fail" if failing else "pass"
    return f"{verdict} ({counts_text(rows)})"


def markdown(rows: Sequence[VerdictRow], title: str, header: Sequence[str]) -> str:
    """A markdown page: the title, the header lines as a list, the table, the summary line."""
    rows = ordered(rows)
    columns = table_columns(rows)
    lines = ([f"# {escape.md_text(title)}", ""] + [f"- {escape.md_text(line)}" for line in header]
             + [""])
    lines.append("| " + " | ".join(escape.md_cell(c.name) for c in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        texts = [escape.md_cell(text) for text in cells(row, columns)]
        texts = [f"**{text}**" if row.fails and column.name == "verdict" else text
                 for column, text in zip(columns, texts)]
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines + ["", escape.md_text(summary_line(rows))]) + "\n"


def csv_text(rows: Sequence[VerdictRow]) -> str:
    """One record a row, every CSV field of COLUMNS (blank where the row has no value); a field
    holding a CR or LF (a note, a status message) is quoted (harness.contract.escape.csv_line)."""
    columns = [c for c in all_columns(rows) if c.value is not None]
    lines = [csv_line(c.name for c in columns)]
    for row in ordered(rows):
        values = (column.value(row) for column in columns)
        lines.append(csv_line("" if value is None else value for value in values))
    return "".join(lines)
