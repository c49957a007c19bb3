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
# underscore at a word's edge: CommonMark leaves snake_case alone), a link's "](" (a bracket
# alone links nothing), strikethrough's tilde, GitHub's math dollar
_MD_INLINE = re.compile(r"[\\`*~$]|\](?=\()|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")

# The harness's own inline markup, kept apart from the data's: text between two STRONG marks is
# strong, between two CODE marks code, in every writer (markdown ** and backticks, HTML
# <strong> and <code>); written with strong() and code(). Control characters no record holds.
STRONG, CODE = "\x02", "\x03"


def strong(text: str) -> str:
    return f"{STRONG}{text}{STRONG}"


def code(text: str) -> str:
    return f"{CODE}{text}{CODE}"


def _md_escape(text: str) -> str:
    entities = text.replace("&", "&amp;").replace("<", "&lt;")
    return _MD_INLINE.sub(lambda match: "\\" + match.group(0), entities)


def md_text(text: object) -> str:
    """Text for a markdown paragraph or list item: one line, ``&`` and ``<`` as entities, so
    that no HTML tag or entity from the data reaches the page (markdown passes raw HTML
    through; without ``<`` no tag opens, so ``>`` stays readable, as in "ok -> oom"), and
    markdown's inline syntax backslash-escaped (a reason reading ``*not* built`` or ``$x$``
    stays as written; snake_case names are untouched). The harness's own strong() and code()
    become ``**`` and backticks (a code span's text as written)."""
    parts = one_line(text).split(CODE)
    out = []
    for index, part in enumerate(parts):
        if index % 2:     # inside code(): literal in a code span (no escapes apply there)
            out.append("`" + part.replace("`", "'").replace(STRONG, "") + "`")
        else:
            out.append(_md_escape(part).replace(STRONG, "**"))
    return "".join(out)


def html_text(text: object) -> str:
    """Text for an HTML element: escaped (html.escape), the harness's strong() and code() as
    <strong> and <code>."""
    import html

    out, tags = [], {STRONG: ("<strong>", "</strong>"), CODE: ("<code>", "</code>")}
    opened = {STRONG: False, CODE: False}
    for piece in re.split(f"([{STRONG}{CODE}])", str(text)):
        if piece in tags:
            out.append(tags[piece][opened[piece]])
            opened[piece] = not opened[piece]
        else:
            out.append(html.escape(piece))
    out += [tags[mark][1] for mark, is_open in opened.items() if is_open]
    return "".join(out)


def plain_text(text: object) -> str:
    """Text with the harness's strong() and code() marks removed (CSV, LaTeX, the console)."""
    return str(text).replace(STRONG, "").replace(CODE, "")


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
