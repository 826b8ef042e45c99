"""The terminal report: golden renderings, colour or markers, column widths, hostile values."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace
from io import StringIO
from typing import Any

import pytest
from conftest import (
    REPORT_DAYS,
    SAMPLE,
    check_golden,
    few_sites,
    load,
    run,
    sample_report,
    trialdiff_env,
    version_pair,
)
from rich.console import Console

from trialdiff.meaning import annotate
from trialdiff.model import FieldChange, Snapshot
from trialdiff.normalize import extract_fields
from trialdiff.present import ARROW, present, short, visible
from trialdiff.report import DiffReport, build_report, heading, summary
from trialdiff.terminal import (
    LABEL_WIDTH,
    MIN_CHANGE_WIDTH,
    VALUE_WIDTH,
    change_cell,
    render_report,
    report_text,
)

DAY1, DAY2 = REPORT_DAYS


def header_widths(text: str) -> list[int]:
    """Return the content width of each column, read from a rendered table's header row."""
    header = next(line for line in text.splitlines() if line.startswith("\u2503"))
    return [len(cell) - 2 for cell in header.split("\u2503")[1:-1]]  # less the padding


def row_of(report: DiffReport, path: str) -> Any:
    """Return a report's row of a path."""
    return next(row for row in report.rows if row.path == path)


def test_golden_dates_and_reference_items() -> None:
    check_golden("report-NCT06060392.txt", report_text(sample_report("NCT06060392")))


def test_golden_status_text_lists_and_sites() -> None:
    check_golden("report-NCT05827016.txt", report_text(sample_report("NCT05827016", few_sites)))


def test_golden_results_enrollment_and_phase() -> None:
    old, new = version_pair("NCT04280705")
    wanted = ("status.", "design.", "results.", "outcomes.primary", "conditions.")

    def fields(record: dict[str, Any]) -> dict[str, str]:
        return {p: v for p, v in extract_fields(record).items() if p.startswith(wanted)}

    report = build_report(Snapshot("NCT04280705", "2020-02-21T00:00:00.000Z", fields(old)),
                          Snapshot("NCT04280705", "2022-03-14T00:00:00.000Z", fields(new)), 1, 2)
    check_golden("report-NCT04280705.txt", report_text(report))


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("nct_id", ["NCT05827016", "NCT06060392"])
def test_a_field_path_is_never_folded_inside_a_word(nct_id: str, width: int) -> None:
    # At 80 columns `status.completionDate` used to wrap as `status.completionDa` / `te`, and
    # at 100 `status.primaryCompletionDat` / `e`. Site keys have spaces: they wrap there.
    report = sample_report(nct_id, few_sites)
    console = Console(file=StringIO(), width=width, no_color=True, force_terminal=False)
    render_report(report, console)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    # The heading and summary stay one line each, however narrow (grep finds them whole).
    assert lines[:2] == [visible(heading(report)), summary(report)]
    assert max(map(len, lines[2:])) == width
    # Each row's field cell, its lines joined by spaces: wrapping only at a path's spaces
    # gives the path back; a fold inside a word would leave a space in the word.
    cells, current = [], []
    for line in lines[5:]:
        if line.startswith(("\u251c", "\u2514")):
            cells.append(" ".join(current))
            current = []
        elif line.startswith("\u2502") and (part := line.split("\u2502")[1].strip()):
            current.append(part)
    assert cells == [visible(row.path) for row in report.rows]
    assert "status.completionDate" in cells or nct_id == "NCT05827016"


def test_colour_on_a_terminal_highlights_instead_of_marking() -> None:
    report = sample_report("NCT05827016", lambda p: p == "eligibility.criteria")
    console = Console(file=StringIO(), width=100, force_terminal=True, color_system="standard")
    render_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" in text and "[-" not in text and "{+" not in text


def test_no_color_uses_markers_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    report = sample_report("NCT05827016", lambda p: p == "eligibility.criteria")
    console = Console(file=StringIO(), width=100, force_terminal=True)
    render_report(report, console)
    assert "[-(MM)-] {+(MM).+}" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_terminal_with_no_colours_gets_markers(monkeypatch: pytest.MonkeyPatch) -> None:
    # TERM=dumb (an Emacs shell, some CI consoles) is a terminal with no colour system: styles
    # would be dropped, and the deleted and inserted words read as one sentence.
    monkeypatch.delenv("NO_COLOR", raising=False)
    report = sample_report("NCT05827016", lambda p: p == "eligibility.criteria")
    console = Console(file=StringIO(), width=100, force_terminal=True, color_system=None)
    render_report(report, console)
    assert "[-(MM)-] {+(MM).+}" in console.file.getvalue()  # type: ignore[attr-defined]


def test_hostile_values_cannot_reach_the_terminal() -> None:
    changes = [
        FieldChange("NCT00000001", "identification.briefTitle", "changed", DAY2,
                    "[bold]x[/bold] \x1b[2J", "ok\x07\u202e"),
        FieldChange("NCT00000001", "description.briefSummary", "changed", DAY2,
                    "calm words \x1b]0;pwned\x07", "calm words [red]"),
    ]
    rows = tuple(present(item) for item in annotate(changes))
    report = DiffReport("NCT00000001", 1, DAY1, 2, DAY2, rows)
    console = Console(file=StringIO(), width=100, force_terminal=True, color_system="standard")
    render_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
    assert "[bold]x[/bold]" in text  # shown as text, never read as rich markup
    assert "\\x1b" in text and "\\u202e" in text


def test_change_cell_colours_lines_by_what_happened_to_them() -> None:
    report = sample_report("NCT05827016")
    keywords = change_cell(row_of(report, "conditions.keywords"), plain=False)
    lines = keywords.plain.split("\n")
    assert lines == ["- ASCTm", "+ ASCT", "+ CELMoD", "+ Cereblon Modulators"]
    start = 0
    for line in lines:  # every character of a removed line red, of an added line green
        styles = {span.style for span in keywords.spans
                  if start <= span.start and span.end <= start + len(line)}
        assert styles == {"red" if line.startswith("-") else "green"}
        start += len(line) + 1


def test_change_cell_highlights_a_word_diff_in_colour_and_marks_it_in_plain() -> None:
    row = row_of(sample_report("NCT05827016"), "outcomes.secondary")
    coloured, marked = change_cell(row, plain=False), change_cell(row, plain=True)
    assert marked.plain == coloured.plain.replace("6 months or", "[-6 months or-]")
    deleted = [coloured.plain[s.start:s.end] for s in coloured.spans if s.style == "red strike"]
    assert deleted == ["6 months or"]
    assert "red strike" not in {s.style for s in marked.spans}


def test_change_cell_puts_the_facts_in_italics_under_the_edits() -> None:
    report = sample_report("NCT05827016", few_sites)
    row = next(r for r in report.rows if r.path.startswith("locations.university of texas"))
    cell = change_cell(row, plain=True)
    lines = cell.plain.split("\n")
    assert lines[-1] == f"(site status \u2205 {ARROW} RECRUITING)"
    assert f"+ status: \u2205 {ARROW} RECRUITING" in lines  # one inner edit per line
    italic = [cell.plain[s.start:s.end] for s in cell.spans if s.style == "italic"]
    assert italic == ["\n" + lines[-1]]


def test_change_cell_cuts_values_and_item_labels_at_their_widths() -> None:
    references = row_of(sample_report("NCT06060392"), "references.references")
    lines = change_cell(references, plain=True).plain.split("\n")
    labels = [line.item for line in references.body.lines]
    assert all(len(label) > LABEL_WIDTH for label in labels)  # real citations, all long
    assert lines == [f"~ {label[:LABEL_WIDTH - 1]}\u2026: type: RESULT {ARROW} BACKGROUND"
                     for label in labels]
    value = extract_fields(version_pair("NCT04280705")[1])["results.participantFlow"]
    report = build_report(Snapshot("NCT04280705", DAY1, {}),
                          Snapshot("NCT04280705", DAY2, {"results.participantFlow": value}))
    cell = change_cell(report.rows[0], plain=True).plain.split("\n")[0]
    assert cell == f"\u2205 {ARROW} {short(value, VALUE_WIDTH)}"
    assert len(short(value, VALUE_WIDTH)) == VALUE_WIDTH  # the real flow is far longer


@pytest.mark.parametrize("width", [80, 100])
def test_a_narrow_console_folds_long_paths_but_keeps_room_for_old_and_new(width: int) -> None:
    text = report_text(sample_report("NCT05827016", few_sites), width)
    field, kind, severity, change = header_widths(text)
    assert change >= MIN_CHANGE_WIDTH
    assert field + kind + severity + change + 8 + 5 == width  # padding and borders fill the rest
    assert max(len(line) for line in text.splitlines()[2:]) == width


@pytest.mark.parametrize("width", [60, 68])
def test_a_console_too_narrow_for_a_tracked_path_whole_prints_blocks(width: int) -> None:
    # At 60 columns the table folded `status.lastUpdat` / `ePostDate`: a path needs its width
    # plus 44 (the other columns and the borders), and below that blocks hold it whole.
    report = sample_report("NCT05827016", few_sites)
    text = report_text(report, width)
    assert "\u2503" not in text
    assert [block.splitlines()[0] for block in text.split("\n\n")[1:]] == [
        visible(r.path) for r in report.rows]
    only_status = replace(report, rows=tuple(
        r for r in report.rows if r.path == "status.overallStatus"))
    assert "\u2503" in report_text(only_status, 64)  # 20 characters: a table from 64 on
    assert "\u2503" not in report_text(only_status, 63)


@pytest.mark.parametrize("width", [20, 40, 59])
def test_a_console_too_narrow_for_a_table_prints_each_change_as_a_block(width: int) -> None:
    # At 30 columns the table gave each column one character: `s`, `t`, `a`, ... down the page.
    report = sample_report("NCT05827016", few_sites)
    text = report_text(report, width)
    assert "\u2503" not in text and "\u2502" not in text  # no table
    blocks = text.split("\n\n")[1:]
    assert [block.splitlines()[0] for block in blocks] == [visible(r.path) for r in report.rows]
    assert [block.splitlines()[1] for block in blocks] == [
        f"  {r.kind} \u00b7 {r.severity}" for r in report.rows]
    status = blocks[[r.path for r in report.rows].index("status.overallStatus")]
    assert " ".join(status.split()[4:]) == "NOT_YET_RECRUITING \u2192 RECRUITING"
    assert all(line.startswith("  ") for block in blocks for line in block.splitlines()[1:])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_a_site_key_in_wide_characters_that_fits_is_not_folded_inside_a_word() -> None:
    # 26 characters but 34 columns: measured in characters, `北京` was split across lines.
    key = "locations.\u5317\u4eac\u534f\u548c\u533b\u9662|\u5317\u4eac||china"
    change = FieldChange("NCT09000001", key, "added", DAY2, None, {"facility": "x"})
    report = DiffReport("NCT09000001", 1, DAY1, 2, DAY2, tuple(map(present, annotate([change]))))
    text = report_text(report, 80)
    assert "\u2503" in text and any(key in line for line in text.splitlines())


def test_the_registrys_longest_path_fits_whole_at_80_columns() -> None:
    # design.interventionModelDescription (35 characters) on a real record that has one.
    new = load("v2/NCT03347838.json")
    old = copy.deepcopy(new)
    del old["protocolSection"]["designModule"]["designInfo"]["interventionModelDescription"]
    report = build_report(Snapshot("NCT03347838", DAY1, extract_fields(old)),
                          Snapshot("NCT03347838", DAY2, extract_fields(new)), 1, 2)
    assert [row.path for row in report.rows] == ["design.interventionModelDescription"]
    text = report_text(report, 80)
    assert "\u2502 design.interventionModelDescription \u2502" in text
    assert header_widths(text)[3] >= MIN_CHANGE_WIDTH


def test_report_text_stays_plain_whatever_the_environment_asks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    text = report_text(sample_report("NCT05827016", lambda p: p == "eligibility.criteria"))
    assert "\x1b" not in text and "[-(MM)-] {+(MM).+}" in text


def test_diff_in_a_pipe_prints_the_plain_report(db_path: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    code, out, err = run(db_path, "diff", "NCT06060392")
    assert (code, err) == (0, "")
    # CliRunner's stdout is no terminal: the markers and layout of report_text at 80 columns.
    assert out == report_text(sample_report("NCT06060392"), 80)


def test_diff_with_columns_0_prints_the_report_at_80(db_path: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "0")  # rich took it as it is, and printed nothing at all
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    assert run(db_path, "diff", "NCT06060392") == (
        0, report_text(sample_report("NCT06060392"), 80), "")


def test_diff_on_an_ascii_stdout_prints_utf8_as_recent_does(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    # A locale that says ASCII (LANG=C on an old system): trialdiff writes UTF-8 there too.
    done = subprocess.run([sys.executable, "-m", "trialdiff", "--db", db_path, "diff",
                           "NCT06060392"], capture_output=True, timeout=60,
                          env={**trialdiff_env(), "PYTHONIOENCODING": "ascii", "COLUMNS": "80"})
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode("utf-8") == report_text(sample_report("NCT06060392"), 80)
