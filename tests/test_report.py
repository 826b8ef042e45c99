"""The diff report: REF resolution, the silent baseline, and golden Markdown of real pairs.

The terminal's golden renderings are test_terminal's. Run
`TRIALDIFF_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py tests/test_terminal.py` to
rewrite the golden files after an intended change to the report's layout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import (
    GOLDEN,
    REPORT_DAYS,
    SAMPLE,
    check_golden,
    edited_words,
    few_sites,
    real_words,
    run,
    sample_report,
)

from trialdiff.errors import UsageError
from trialdiff.markdown import report_markdown
from trialdiff.model import Snapshot
from trialdiff.normalize import extract_fields
from trialdiff.report import build_report, resolve_pair, resolve_ref, summary
from trialdiff.terminal import report_text


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
    assert "~ " + words.split(" [-")[0] in report_text(report)


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
    new = Snapshot("NCT06060392", REPORT_DAYS[1], extract_fields(record))
    report = build_report(None, new, None, 1)
    assert report_text(report) == ("NCT06060392: snapshot 1 (2025-07-07T00:00:00.000Z), the "
                                   "silent baseline: nothing to compare with\nno field changes\n")


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
