"""Hostile and unlucky input never writes wrong history: times and archives (issue 12).

A study given twice in one input is test_dedupe's.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import (
    SAMPLE,
    SAMPLE_DAYS,
    changes_of,
    real_records,
    run,
    stored_rows,
    version_pair,
)

from trialdiff.model import utc_timestamp

R0 = real_records()[0]


@pytest.mark.parametrize(("at", "reason"), [
    ("2205-01-01", "is in the future (more than 1 day ahead of now"),
    ("1999-12-31", "is before ClinicalTrials.gov existed (2000-02-29)"),
    ("0999-01-01", "is before ClinicalTrials.gov existed"),
    ("2025-13-45", "is not an ISO 8601 date or time"),
])
def test_an_observation_time_no_observation_can_have_is_a_usage_error(
    tmp_path: Path, db_path: str, at: str, reason: str
) -> None:
    study = tmp_path / "one.json"
    study.write_text(json.dumps(R0))
    for command in (["import", "--at", at, str(study)],
                    ["sync", "--source", str(study), "--at", at]):
        code, out, err = run(db_path, *command)
        assert (code, out) == (2, "")
        assert f"Invalid value for '--at': '{at}' {reason}" in err
        assert "Traceback" not in err
    assert not Path(db_path).exists()  # refused before anything was opened


def test_observation_times_at_the_edges_are_taken_with_four_digit_years(
    tmp_path: Path, db_path: str
) -> None:
    study = tmp_path / "one.json"
    study.write_text(json.dumps(R0))
    soon = (datetime.now(UTC) + timedelta(hours=12)).isoformat()  # within the clock skew
    assert run(db_path, "import", "--at", "2000-02-29", str(study))[0] == 0
    assert run(db_path, "import", "--at", soon, str(study))[0] == 0
    assert stored_rows(db_path, "select observed_at from snapshots") == [
        ("2000-02-29T00:00:00.000Z",)]
    assert stored_rows(db_path, "select last_seen_at from sightings") == [(utc_timestamp(soon),)]
    # Years before 1000 keep their zero padding, so every timestamp sorts as text.
    assert utc_timestamp("0999-03-01T12:00:00+00:00") == "0999-03-01T12:00:00.000Z"
    assert utc_timestamp("0001-01-01") < utc_timestamp("0999-12-31") < "2000"


def test_an_archive_with_a_stray_readme_keeps_its_dates(tmp_path: Path, db_path: str) -> None:
    archive = tmp_path / "snapshots"
    shutil.copytree(SAMPLE, archive)
    (archive / "README.md").write_text("Pulled daily from ClinicalTrials.gov.\n")
    code, out, err = run(db_path, "import", str(archive))
    assert code == 0
    assert err == f"import: {archive}: left out, not study records: README.md\n"
    assert out.splitlines()[-1] == (
        "import: 6 studies checked, 2 changed, 528 changes (235 added, 62 changed, 231 removed), "
        "0 failed"
    )
    assert stored_rows(db_path, "select distinct observed_at from snapshots order by 1") == [
        ("2024-06-14T00:00:00.000Z",), ("2025-07-07T00:00:00.000Z",)]
    # One time for every day would re-date the history: refused.
    code, out, err = run(str(tmp_path / "other.db"), "import", "--at", "2025-07-08", str(archive))
    assert (code, out) == (2, "")
    assert err == (f"trialdiff: error: {archive} is an archive of dated folders, observed on "
                   "their dates: leave out --at\n")
    # A folder named by no real date is a clear usage error, and nothing is imported.
    (archive / "2025-13-45").mkdir()
    code, out, err = run(str(tmp_path / "other.db"), "import", str(archive))
    assert (code, out) == (2, "")
    assert err == (f"trialdiff: error: {archive}: archive folder '2025-13-45' is not an ISO "
                   "8601 date or time\n")
    assert not (tmp_path / "other.db").exists()


def test_an_archive_imported_again_as_it_grows_stores_only_the_new_day(
    tmp_path: Path, db_path: str
) -> None:
    # Cron re-importing an archive folder that gains a day: the days already stored replay
    # what the history says of their time, so they are no error; only the new day is news.
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copytree(SAMPLE / SAMPLE_DAYS[0], archive / SAMPLE_DAYS[0])
    assert run(db_path, "import", str(archive))[0] == 0
    shutil.copytree(SAMPLE / SAMPLE_DAYS[1], archive / SAMPLE_DAYS[1])
    code, out, err = run(db_path, "import", "--summary", str(archive))
    assert (code, err) == (0, "")
    assert out.startswith("import: 6 studies checked, 2 changed, 528 changes")
    code, out, err = run(db_path, "import", "--summary", str(archive))
    assert (code, out, err) == (0, "import: 6 studies checked, 0 changed, 0 changes, 0 failed\n",
                                "")
    assert run(db_path, "check")[0] == 0


def version_files(folder: Path) -> tuple[str, str]:
    """Write NCT06060392's two real versions as files; return their paths, older first."""
    paths = []
    for name, record in zip(("older", "newer"), version_pair("NCT06060392"), strict=True):
        (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(folder / f"{name}.json"))
    return paths[0], paths[1]


def test_an_older_observation_that_contradicts_the_history_is_still_refused(
    tmp_path: Path, db_path: str
) -> None:
    version_files(tmp_path)
    assert run(db_path, "import", "--at", "2025-01-01", str(tmp_path / "older.json"))[0] == 0
    assert run(db_path, "import", "--at", "2025-03-01", str(tmp_path / "newer.json"))[0] == 0
    # The newer content dated between the two: not what the history says of that day.
    code, _, err = run(db_path, "import", "--at", "2025-02-01", str(tmp_path / "newer.json"))
    assert code == 1
    assert "is older than its latest snapshot" in err


def test_other_content_at_the_latest_snapshots_very_time_is_refused(
    tmp_path: Path, db_path: str
) -> None:
    # An import run again at the same --at on another day's files: no change of no duration.
    version_files(tmp_path)
    assert run(db_path, "import", "--at", "2025-01-01", str(tmp_path / "older.json"))[0] == 0
    code, _, err = run(db_path, "import", "--at", "2025-01-01", str(tmp_path / "newer.json"))
    assert code == 1
    assert ("NCT06060392: observation at 2025-01-01T00:00:00.000Z is at the same time as its "
            "latest snapshot (2025-01-01T00:00:00.000Z); history is appended in time order") in err
    assert run(db_path, "import", "--at", "2025-01-01", str(tmp_path / "older.json"))[:2] == (
        0, "import: 1 study checked, 0 changed, 0 changes, 0 failed\n")  # the same: seen again
    assert changes_of(db_path) == []
    assert run(db_path, "check")[0] == 0


def test_other_content_at_the_last_sightings_very_time_is_refused(
    tmp_path: Path, db_path: str
) -> None:
    # Seen unchanged at a time, then imported again at that very time with other content: a
    # probe's study took a change of no duration, contradicting what that sighting saw.
    version_files(tmp_path)
    assert run(db_path, "import", "--at", "2025-01-01", str(tmp_path / "older.json"))[0] == 0
    assert run(db_path, "import", "--at", "2025-02-01", str(tmp_path / "older.json"))[0] == 0
    code, _, err = run(db_path, "import", "--at", "2025-02-01T05:30:00+05:30",
                       str(tmp_path / "newer.json"))  # the same instant
    assert code == 1
    assert ("NCT06060392: observation at 2025-02-01T00:00:00.000Z is at the same time as its "
            "last sighting (2025-02-01T00:00:00.000Z)") in err
    assert changes_of(db_path) == []
    assert run(db_path, "import", "--at", "2025-02-02", str(tmp_path / "newer.json"))[0] == 0
    assert changes_of(db_path) != [] and run(db_path, "check")[0] == 0
