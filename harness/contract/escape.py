"""Escaping text for each output format the harness writes (markdown, CSV, LaTeX).

Record fields such as a failure's message or a reason are written by implementations and by
users (hand-edited records, plug-in messages): any of them may hold a carriage return, a blank
line, an HTML tag, a pipe or a LaTeX special character. Every writer passes such text through
the function for its format, so that a table row stays one row and no markup from the data is
interpreted. HTML needs only ``html.escape`` (the report's HTML writer uses it for every text).

Pure functions on strings; the lowest stage, so that the report and the verdict writers share
them.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Iterable

# any line break: CRLF, a bare CR, LF and the other breaks str.splitlines knows
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(text: object) -> str:
    """The text with every line break (a blank line included) made one space."""
    return _LINE_BREAKS.sub(" ", str(text))


# markdown's inline syntax in data: a backslash, a code span's backtick, emphasis (* and an
# underscore at a word's edge: CommonMark leaves snake_case alone), a link's brackets,
# strikethrough's tilde
_MD_INLINE = re.compile(r"[\\`*\[\]~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(text: object) -> str:
    """Text for a markdown paragraph or list item: one line, ``&`` and ``<`` as entities, so
    that no HTML tag or entity from the data reaches the page (markdown passes raw HTML
    through; without ``<`` no tag opens, so ``>`` stays readable, as in "ok -> oom"), and
    markdown's inline syntax backslash-escaped (a reason reading ``*not* built`` or
    ``x_`` stays as written; snake_case names are untouched). Markdown emphasis written by
    the harness itself around such text is left alone."""
    entities = one_line(text).replace("&", "&amp;").replace("<", "&lt;")
    return _MD_INLINE.sub(lambda match: "\\" + match.group(0), entities)


def md_cell(text: object) -> str:
    """Text for a markdown table cell: md_text, with the pipe as an entity (a backslash before
    a pipe is itself ambiguous when the data holds a backslash there)."""
    return md_text(text).replace("|", "&#124;")


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
                 "|": r"\textbar{}"}


def latex_text(text: object) -> str:
    """Text for a LaTeX tabular cell or a comment line: one line (a blank line would end the
    paragraph inside the tabular) and every special character escaped."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in one_line(text))


def csv_line(values: Iterable[object]) -> str:
    """One CSV record ending in "\\n", every field that holds a comma, a quote, a CR or an LF
    quoted (the csv module quotes only the characters of its line terminator, so a bare CR
    under "\\n" line ends would be written unquoted and read back as the end of the row)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(list(values))
    return out.getvalue()[:-2] + "\n"
