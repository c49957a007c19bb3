"""Every writer escapes record text for its format: a real run directory whose records carry a
hostile message (a bare CR, a blank line, an HTML tag, a pipe, LaTeX specials) renders a report
whose CSV tables read back with the same columns and values, whose markdown table rows stay one
line with no raw tag, whose HTML carries no tag from the data and whose LaTeX tabulars hold no
blank line or unescaped special character; compare's and ab's CSV and markdown do the same."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.contract import escape
from harness.contract.records import Point, SpeedRecord
from harness.grid.settings import RunSettings
from harness.measure.runner import Runner
from harness.store.run_dir import RunDir
from harness.verdicts import compare, writers
from tests.report_fixtures import FAST, MACHINE_A

HOSTILE = ("first\r\n\nsecond <script>alert(1)</script> <blink>bold</blink> a|b & 50% x_y "
           "C:\\dir {c} $d #e ~f ^g\rlast \"quoted\", comma")
BARE_CR = "only a bare\rcarriage return"     # nothing else that makes the csv module quote
SHAPE = {"head_dim": 16, "heads": 2, "pass_": "forward"}


def _hostile_line_ok(text: str) -> None:
    assert "<script" not in text and "<blink>" not in text


def test_md_text_escapes_markdown_inline_syntax_but_not_snake_case():
    """A reason reading *not* built, _x_, `code`, [a](b) or $m$ is shown as written, not as
    emphasis, a code span, a link or math; snake_case names and a list's [64] stay as they
    are. The harness's own strong() and code() are markdown's, in markdown and in HTML."""
    data = "*not* built _x_ `code` [a](b) ~s~ $m$ C:\\dir softmax_torch x_ [64]"
    md = escape.md_text(data)
    assert md == ("\\*not\\* built \\_x\\_ \\`code\\` [a\\](b) \\~s\\~ \\$m\\$ "
                  "C:\\\\dir softmax_torch x\\_ [64]")
    assert re.sub(r"\\(.)", r"\1", md) == data     # removing the escapes gives the text back
    own = escape.strong("Noisy") + ": see " + escape.code("run_bench.py report") + " *x*"
    assert escape.md_text(own) == "**Noisy**: see `run_bench.py report` \\*x\\*"
    assert escape.html_text(own + " <b>") == ("<strong>Noisy</strong>: see <code>run_bench.py "
                                              "report</code> *x* &lt;b&gt;")


def test_csv_line_quotes_a_bare_cr_and_reads_back():
    line = escape.csv_line(["a\rb", "c\nd", "e|f", 'g"h', 1.5, ""])
    assert line.endswith("\n") and line.count("\n") == 2           # the LF inside and the end
    assert list(csv.reader(io.StringIO(line, newline=""))) == [
        ["a\rb", "c\nd", "e|f", 'g"h', "1.5", ""]]


def test_md_and_latex_text_are_one_line_without_markup():
    md = escape.md_cell(HOSTILE)
    assert "\r" not in md and "\n" not in md and "|" not in md.replace("&#124;", "")
    assert "<" not in md
    tex = escape.latex_text(HOSTILE)
    assert "\r" not in tex and "\n" not in tex
    # every special character is preceded by a backslash or spelled as a command
    assert not re.search(r"(?<!\\)[&%$#_{}]", re.sub(r"\\[a-z]+\{\}", "", tex))


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """A REAL tiny sweep (two points measured by the Runner), then failure records whose message
    is hostile text, as a plug-in or a hand-edited record could write it."""
    base = tmp_path_factory.mktemp("hostile")
    run = base / "run"
    run_dir = RunDir.create(run, {"kind": "speed", "machine": MACHINE_A,
                                  "command": ["run_bench.py", "sweep", "(test fixture)"]})
    points = [Point(impl="softmax_torch", seq_len=t, **SHAPE) for t in (64, 128)]
    Runner(run_dir, RunSettings(timeout_s=120, timing=FAST), hardware_id="aaaa").run(points)
    for t, status in ((256, "error"), (512, "oom"), (1024, "unsupported")):
        run_dir.append(SpeedRecord.for_point(Point(impl="softmax_torch", seq_len=t, **SHAPE),
                                             framework="torch", family="exact", status=status,
                                             message=f"{status}: {HOSTILE}"))
    run_dir.append(SpeedRecord.for_point(Point(impl="softmax_torch", seq_len=2048, **SHAPE),
                                         framework="torch", family="exact", status="timeout",
                                         message=BARE_CR))
    from harness.report.render import render_report

    return render_report([run], base / "report")


def test_report_csv_tables_read_back_with_their_columns(hostile_report):
    tables = sorted((hostile_report / "tables").glob("*.csv"))
    assert any(p.name == "points.csv" for p in tables)
    for path in tables:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert all(len(row) == len(rows[0]) for row in rows), path.name
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        assert frame.shape == (len(rows) - 1, len(rows[0])), path.name
    with (hostile_report / "tables" / "points.csv").open(newline="") as handle:
        messages = {row["status"]: row["message"] for row in csv.DictReader(handle)}
    for status in ("error", "oom", "unsupported"):
        assert messages[status] == f"{status}: {HOSTILE}"
    assert messages["timeout"] == BARE_CR


def test_report_markdown_rows_are_one_line_without_raw_html(hostile_report):
    text = (hostile_report / "report.md").open(newline="").read()
    assert "\r" not in text
    _hostile_line_ok(text)
    assert "&lt;script>" in text                    # the message is there, escaped
    lines = text.split("\n")
    for k, line in enumerate(lines):
        if line.startswith("|---") or line.startswith("|---|"):
            header = lines[k - 1]
            width = header.count("|")
            body = k + 1
            while body < len(lines) and lines[body].startswith("| "):
                assert lines[body].endswith(" |") and lines[body].count("|") == width
                body += 1


def test_report_html_carries_no_tag_from_the_data(hostile_report):
    text = (hostile_report / "report.html").read_text()
    _hostile_line_ok(text)
    assert "&lt;script&gt;" in text


def test_report_latex_tabulars_have_no_blank_line_or_bare_special(hostile_report):
    for path in sorted((hostile_report / "tables").glob("*.tex")):
        text = path.open(newline="").read()
        assert "\r" not in text, path.name
        body = text[text.index("\\midrule"):text.index("\\bottomrule")].split("\n")[1:-1]
        columns = text[text.index("\\toprule"):text.index("\\midrule")].count(" & ") + 1
        for line in body:
            assert line.strip() and line.endswith(r" \\"), path.name
            cells = re.sub(r"\\[a-z]+\{\}", "", line[:-3])
            assert not re.search(r"(?<!\\)[%$#_{}]", cells), (path.name, line)
            assert len(re.findall(r"(?<!\\)&", cells)) == columns - 1, (path.name, line)


def _verdict_rows():
    def record(point, status, center=0.01, message=""):
        samples = [center * (1 + 0.001 * k) for k in range(9)] if status == "ok" else []
        return SpeedRecord.for_point(point, framework="torch", family="exact", status=status,
                                     message=message, time_s=center if samples else None,
                                     time_samples_s=samples,
                                     peak_mem_bytes=1 << 20 if samples else None)
    broken, same = Point("a", 64, 8), Point("b", 64, 8)
    base = [record(broken, "ok"), record(same, "ok")]
    cur = [record(broken, "error", message=HOSTILE.replace("first\r\n\n", "")),
           record(same, "ok")]
    return compare.compare_records(base, cur).rows


def test_verdict_csv_and_markdown_escape_the_note():
    rows = _verdict_rows()
    assert any("<script>" in row.note for row in rows)      # the hostile note reached the row
    read = list(csv.reader(io.StringIO(writers.csv_text(rows), newline="")))
    assert all(len(row) == len(read[0]) for row in read)
    notes = {row.note for row in rows}
    assert notes <= {r[read[0].index("note")] for r in read[1:]}
    page = writers.markdown(rows, "compare <i>x</i>", ["run a\rb <blink>c</blink>"])
    assert "\r" not in page and "<i>" not in page
    _hostile_line_ok(page)
    table = [line for line in page.split("\n") if line.startswith("| ")]
    assert len({line.count("|") for line in table}) == 1


def test_figures_draw_a_dollar_from_the_data_as_written(tmp_path, monkeypatch):
    """A method named with '$' (an unmatched one would make matplotlib's mathtext fail the whole
    report): the figure saves and shows the name as written; log-axis ticks keep their 10^n."""
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.figures import save

    fig, ax = plt.subplots()
    ax.loglog([1, 10, 100], [1, 100, 10000], label="cost$ method")
    ax.set_title("reason: costs $5 a call")
    ax.legend()
    png, pdf = save(fig, tmp_path, "dollar")
    assert png.stat().st_size > 0 and pdf.stat().st_size > 0
    texts = [t for t in fig.findobj(matplotlib.text.Text) if "$" in t.get_text()]
    assert {t.get_text() for t in texts if not t.get_parse_math()} >= {
        "cost$ method", "reason: costs $5 a call"}
    assert any(t.get_parse_math() and "10^" in t.get_text()
               for t in ax.xaxis.get_ticklabels())
