"""The diff report: REF resolution, and golden renderings of real version pairs.

Run `TRIALDIFF_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py` to rewrite the golden
files after an intended change to the report's layout.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, edited_words, real_words, run, version_pair
from rich.console import Console

from trialdiff.errors import UsageError
from trialdiff.markdown import report_markdown
from trialdiff.meaning import annotate
from trialdiff.model import FieldChange, Snapshot
from trialdiff.normalize import extract_fields
from trialdiff.present import ItemLines, Values, present, visible
from trialdiff.report import (
    DiffReport,
    build_report,
    heading,
    resolve_pair,
    resolve_ref,
    summary,
)
from trialdiff.terminal import render_report, report_text
from trialdiff.worddiff import marked

GOLDEN = ROOT / "tests" / "golden"
SAMPLE = ROOT / "snapshots" / "sample"
DAY1, DAY2 = "2024-06-14T00:00:00.000Z", "2025-07-07T00:00:00.000Z"


def sample_report(nct_id: str, keep: Callable[[str], bool] = lambda path: True) -> DiffReport:
    """Return the report of a sample-archive study from 2024-06-14 (1) to 2025-07-07 (2)."""
    snapshots = []
    for day, at in (("2024-06-14", DAY1), ("2025-07-07", DAY2)):
        record = json.loads((SAMPLE / day / f"{nct_id}.json").read_text())
        fields = {p: v for p, v in extract_fields(record).items() if keep(p)}
        snapshots.append(Snapshot(nct_id, at, fields))
    return build_report(snapshots[0], snapshots[1], 1, 2)


def plain(report: DiffReport) -> str:
    """Render a report the way the golden files hold it: width 100, no colour, no terminal."""
    return report_text(report, width=100)


def check_golden(name: str, text: str) -> None:
    """Compare text with a golden file (or rewrite it when asked to)."""
    path = GOLDEN / name
    if os.environ.get("TRIALDIFF_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def few_sites(path: str) -> bool:
    """Keep every field but the sites, save the few named `university of t…`."""
    return not path.startswith("locations.") or path.startswith("locations.university of t")


def test_golden_dates_and_reference_items() -> None:
    check_golden("report-NCT06060392.txt", plain(sample_report("NCT06060392")))


def test_golden_status_text_lists_and_sites() -> None:
    check_golden("report-NCT05827016.txt", plain(sample_report("NCT05827016", few_sites)))


def test_golden_results_enrollment_and_phase() -> None:
    old, new = version_pair("NCT04280705")
    wanted = ("status.", "design.", "results.", "outcomes.primary", "conditions.")

    def fields(record: dict[str, Any]) -> dict[str, str]:
        return {p: v for p, v in extract_fields(record).items() if p.startswith(wanted)}

    report = build_report(Snapshot("NCT04280705", "2020-02-21T00:00:00.000Z", fields(old)),
                          Snapshot("NCT04280705", "2022-03-14T00:00:00.000Z", fields(new)), 1, 2)
    check_golden("report-NCT04280705.txt", plain(report))


def test_golden_markdown_report() -> None:
    check_golden("report-NCT06060392.md", report_markdown(sample_report("NCT06060392")))


def test_golden_markdown_report_shows_a_reworded_outcome_as_the_terminal_does() -> None:
    # NCT05827016's real secondary outcome went from "a minimum of 6 months or 1 year apart"
    # to "a minimum of 1 year apart": one presenter, so Markdown shows the terminal's word diff.
    report = sample_report("NCT05827016", few_sites)
    text = report_markdown(report)
    check_golden("report-NCT05827016.md", text)
    words = "… assessments that are a minimum of [-6 months or-] 1 year apart, without any " \
        "examination …"
    assert f"`outcomes.secondary` \u2014 changed _(minor)_: reworded `{words}`" in text
    assert "~ " + words.split(" [-")[0] in plain(report)


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


def test_reworded_list_items_show_a_word_diff() -> None:
    row = next(r for r in sample_report("NCT05827016").rows if r.path == "outcomes.secondary")
    assert isinstance(row.body, ItemLines)
    assert [line.op for line in row.body.lines] == ["reworded"]
    assert "[-6 months or-] 1 year apart" in marked(row.body.lines[0].words)


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
    assert visible("a\tb\nc") == "a\\x09b\\x0ac"


def test_date_rows_show_the_shift_in_days() -> None:
    row = next(r for r in sample_report("NCT06060392").rows if r.path == "status.completionDate")
    assert row.body == Values({"date": "2025-03-01", "type": "ESTIMATED"},
                              {"date": "2025-11-01", "type": "ESTIMATED"}, "date")
    assert row.body.texts(60) == ("2025-03-01 ESTIMATED", "2025-11-01 ESTIMATED")
    assert row.notes == ("moved +245 days",)


SNAPSHOTS = [{"seq": 1, "observed_at": "2024-06-14T06:00:00.000Z"},
             {"seq": 2, "observed_at": "2025-07-07T06:00:00.000Z"},
             {"seq": 3, "observed_at": "2025-07-08T23:30:00.000Z"}]


@pytest.mark.parametrize(("ref", "seq"), [
    ("latest", 3), ("previous", 2), ("LATEST", 3), ("1", 1), ("3", 3),
    ("2025-07-07", 2), ("2025-07-08", 3), ("2025-01-01", 1),
    ("2025-07-08T12:00:00Z", 2), ("2025-07-09T01:00:00+02:00", 2),
    ("2025-07-09T01:00:00+01:00", 3),
])
def test_resolve_ref(ref: str, seq: int) -> None:
    assert resolve_ref(ref, SNAPSHOTS) == seq


@pytest.mark.parametrize(("ref", "message"), [
    ("4", "numbered 1 to 3"), ("0", "numbered 1 to 3"), ("2024-01-01", "on or before"),
    ("yesterday", "not a snapshot number"), ("2025-13-01", "not a snapshot number"),
])
def test_resolve_ref_errors(ref: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_ref(ref, SNAPSHOTS)


def test_resolve_pair_defaults_to_the_last_two() -> None:
    assert resolve_pair(None, None, SNAPSHOTS) == (2, 3)
    assert resolve_pair(None, "2", SNAPSHOTS) == (1, 2)
    assert resolve_pair("1", None, SNAPSHOTS) == (1, 3)
    assert resolve_pair(None, "1", SNAPSHOTS) == (None, 1)
    assert resolve_pair(None, None, SNAPSHOTS[:1]) == (None, 1)
    with pytest.raises(UsageError, match="no previous"):
        resolve_ref("previous", SNAPSHOTS[:1])
    with pytest.raises(UsageError, match="no snapshots"):
        resolve_ref("latest", [])


def test_a_lone_snapshot_is_the_silent_baseline() -> None:
    record = json.loads((SAMPLE / "2025-07-07" / "NCT06060392.json").read_text())
    report = build_report(None, Snapshot("NCT06060392", DAY2, extract_fields(record)), None, 1)
    assert plain(report) == ("NCT06060392: snapshot 1 (2025-07-07T00:00:00.000Z), the silent "
                             "baseline: nothing to compare with\nno field changes\n")


def test_golden_files_are_in_the_repository() -> None:
    assert sorted(p.name for p in GOLDEN.glob("report-*")) == [
        "report-NCT04280705.txt", "report-NCT05827016.md", "report-NCT05827016.txt",
        "report-NCT06060392.md", "report-NCT06060392.txt"]


def test_diff_and_markdown_changes_of_a_blown_up_real_record_render_fast(
        tmp_path: Path) -> None:
    record = json.loads((SAMPLE / "2025-07-07" / "NCT05827016.json").read_text())
    words = (real_words() * 6)[:60_000]
    for day, text in (("2025-07-01", words), ("2025-07-07", edited_words(words, 50))):
        record["protocolSection"]["descriptionModule"]["detailedDescription"] = " ".join(text)
        folder = tmp_path / "archive" / day
        folder.mkdir(parents=True)
        (folder / "NCT05827016.json").write_text(json.dumps(record), encoding="utf-8")
    db = str(tmp_path / "big.db")
    assert run(db, "import", str(tmp_path / "archive"))[0] == 0
    for args in (["diff", "NCT05827016"], ["diff", "NCT05827016", "--format", "md"],
                 ["changes", "--format", "md"]):
        start = time.perf_counter()
        code, out, _ = run(db, *args)
        assert time.perf_counter() - start < 3, args
        assert code == 0 and "NCT05827016" in out
        assert len(out) < 60_000  # long rewritten runs are shortened


def test_counts_of_one_take_the_singular() -> None:
    # NCT05827016's real 2024 -> 2025 status change alone: one changed field, one study-day.
    from trialdiff.export import to_atom, to_markdown
    from trialdiff.render import plural, recent_section

    report = sample_report("NCT05827016", lambda path: path == "status.overallStatus")
    assert summary(report) == "1 changed field: 1 major, 0 minor, 0 info"
    changes = [item.change for item in report.changes]
    assert "1 field change: 1 major" in to_markdown(changes)
    assert "1 field change (1 major)" in to_atom(changes)
    assert recent_section(changes, 1).startswith("## Recent Field Changes (last 1 day)")
    assert "in the last 1 day._" in recent_section([], 1)
    assert recent_section([], 30).startswith("## Recent Field Changes (last 30 days)")
    assert [plural(n, "study") for n in (0, 1, 2)] == ["0 studies", "1 study", "2 studies"]
    assert plural(1, "attempt") + ", " + plural(3, "attempt") == "1 attempt, 3 attempts"
