"""Hostile and unlucky input never writes wrong history: times, duplicates, archives (issue 12)."""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, SAMPLE_DAYS, real_records, run, version_pair

from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import utc_timestamp
from trialdiff.schema import open_db
from trialdiff.sync import _items

OLDER, NEWER = version_pair("NCT06060392")  # a real registry edit of one study
R0, R1 = real_records()[:2]
ID0, ID1 = (r["protocolSection"]["identificationModule"]["nctId"] for r in (R0, R1))


def stored(db_path: str, sql: str) -> list[tuple[Any, ...]]:
    """Return the rows a query of the database finds."""
    return sqlite3.connect(db_path).execute(sql).fetchall()


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
    assert stored(db_path, "select observed_at from snapshots") == [("2000-02-29T00:00:00.000Z",)]
    assert stored(db_path, "select last_seen_at from sightings") == [(utc_timestamp(soon),)]
    # Years before 1000 keep their zero padding, so every timestamp sorts as text.
    assert utc_timestamp("0999-03-01T12:00:00+00:00") == "0999-03-01T12:00:00.000Z"
    assert utc_timestamp("0001-01-01") < utc_timestamp("0999-12-31") < "2000"


def test_check_names_every_stored_timestamp_that_is_not_canonical(
    tmp_path: Path, db_path: str
) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    assert run(db_path, "check")[0] == 0
    conn = sqlite3.connect(db_path)
    with conn:  # what an older trialdiff or a hand edit could have written
        conn.execute("update snapshots set observed_at = '999-06-14T00:00:00.000Z' where id = 1")
        conn.execute("update sightings set last_seen_at = '2025-07-07 00:00:00'")
        conn.execute("update changes set detected_at = '2025-07-07T00:00:00+00:00'")
    code, out, err = run(db_path, "check")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "problem: sightings.last_seen_at: 3 timestamps are not canonical ISO 8601 UTC "
        "(YYYY-MM-DDTHH:MM:SS.mmmZ), e.g. '2025-07-07 00:00:00'",
        "problem: snapshots.observed_at: 1 timestamp is not canonical ISO 8601 UTC "
        "(YYYY-MM-DDTHH:MM:SS.mmmZ), e.g. '999-06-14T00:00:00.000Z'",
        "problem: changes.detected_at: 528 timestamps are not canonical ISO 8601 UTC "
        "(YYYY-MM-DDTHH:MM:SS.mmmZ), e.g. '2025-07-07T00:00:00+00:00'",
        "check: 3 studies, 5 snapshots, 528 changes verified; 3 problems",
    ]


def _reordered(record: dict[str, Any]) -> dict[str, Any]:
    """Return a record with the same content in other bytes and another data release."""
    copied = copy.deepcopy(record)
    copied["protocolSection"] = dict(reversed(copied["protocolSection"].items()))
    copied["derivedSection"] = {"miscInfoModule": {"versionHolder": "2025-07-07"}}
    return copied


# One input holding: R0, the newer NCT06060392, R1, R0 in other bytes, the older NCT06060392,
# R1 again byte for byte. Each shape names the input of each entry.
ENTRIES = [R0, NEWER, R1, _reordered(R0), OLDER, R1]


def _write_shape(root: Path, shape: str) -> tuple[list[str], str, str]:
    """Write the entries in one input shape; return its paths and the labels of both copies."""
    lines = [json.dumps(entry) for entry in ENTRIES]
    if shape == "folder":
        for number, line in enumerate(lines):
            (root / f"{number}.json").write_text(line)
        return [str(root)], str(root / "1.json"), str(root / "4.json")
    if shape in ("page", "list"):
        path = root / "input.json"
        path.write_text(json.dumps({"studies": ENTRIES} if shape == "page" else ENTRIES))
        return [str(path)], f"{path}[1]", f"{path}[4]"
    if shape == "ndjson":
        path = root / "input.ndjson"
        path.write_text("\n".join(lines) + "\n")
        return [str(path)], f"{path}:2", f"{path}:5"
    if shape == "zip":
        path = root / "ctg-studies.json.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for number, line in enumerate(lines):
                archive.writestr(f"{number}.json", line)
        return [str(path)], f"{path}!1.json", f"{path}!4.json"
    first, second = root / "a.json", root / "b.json"  # two paths given to one import
    first.write_text(json.dumps(ENTRIES[:3]))
    second.write_text(json.dumps(ENTRIES[3:]))
    return [str(first), str(second)], f"{first}[1]", f"{second}[1]"


@pytest.mark.parametrize("shape", ["folder", "page", "list", "ndjson", "zip", "paths"])
def test_a_study_given_twice_with_different_content_is_a_conflict_in_every_shape(
    tmp_path: Path, db_path: str, shape: str
) -> None:
    before = tmp_path / "before.json"
    before.write_text(json.dumps(OLDER))
    assert run(db_path, "import", "--at", "2025-01-01", str(before))[0] == 0
    folder = tmp_path / "input"
    folder.mkdir()
    paths, newer_label, older_label = _write_shape(folder, shape)
    code, out, err = run(db_path, "import", "--at", "2025-07-07", *paths)
    assert code == 1
    # One pass: the first copy's changes were printed as it was saved, then taken back.
    assert err == (
        f"trialdiff: {older_label}: NCT06060392 is given again in this input with different "
        f"content (first in {newer_label}): a conflict, so no version of it was stored (the "
        "changes printed for it are undone)\n"
    )
    # Repeats with the same content are one observation each; everything else is stored.
    lines = out.splitlines()
    assert lines[-1] == "import: 2 studies checked, 0 changed, 0 changes, 1 failed"
    assert lines[:-1] and all(line.startswith("NCT06060392  ") for line in lines[:-1])
    assert stored(db_path, "select nct_id, snapshot_count from studies order by nct_id") == [
        (ID0, 1), (ID1, 1), ("NCT06060392", 1)]
    assert stored(db_path, "select nct_id, last_seen_at from sightings "
                           "where nct_id = 'NCT06060392'") == [
        ("NCT06060392", "2025-01-01T00:00:00.000Z")]
    assert stored(db_path, "select count(*) from changes") == [(0,)]
    assert run(db_path, "check")[0] == 0


def test_sync_from_a_dump_and_an_api_page_take_each_study_once(tmp_path: Path,
                                                               db_path: str) -> None:
    folder = tmp_path / "dump"
    folder.mkdir()
    paths, newer_label, older_label = _write_shape(folder, "ndjson")
    code, out, err = run(db_path, "sync", "--source", paths[0], "--at", "2025-07-07")
    assert code == 1
    assert err == (
        f"trialdiff: {older_label}: NCT06060392 is given again in this input with different "
        f"content (first in {newer_label}): a conflict, so no version of it was stored\n"
    )
    assert out.endswith("sync: 2 studies checked, 0 changed, 0 changes, 1 failed\n")
    # A fetched page is saved through the same writer, as one input.
    db = open_db(str(tmp_path / "page.db"))
    totals = RunTotals()
    outcomes: list[Any] = []
    save_studies(db, _items(ENTRIES, "filter.ids"), "2025-07-07T00:00:00.000Z", totals,
                 source="sync", emit=outcomes.append)
    assert [(getattr(o, "nct_id", None), getattr(o, "where", None)) for o in outcomes] == [
        (ID0, None), ("NCT06060392", None), (ID1, None), (None, "filter.ids[4]")]
    assert (totals.checked, totals.changed, totals.changes, totals.failed) == (2, 0, 0, 1)
    assert db.execute("select nct_id from studies order by 1").fetchall() == [(ID0,), (ID1,)]


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
    assert stored(db_path, "select distinct observed_at from snapshots order by 1") == [
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


def test_an_older_observation_that_contradicts_the_history_is_still_refused(
    tmp_path: Path, db_path: str
) -> None:
    older, newer = version_pair("NCT06060392")
    (tmp_path / "older.json").write_text(json.dumps(older), encoding="utf-8")
    (tmp_path / "newer.json").write_text(json.dumps(newer), encoding="utf-8")
    assert run(db_path, "import", "--at", "2025-01-01", str(tmp_path / "older.json"))[0] == 0
    assert run(db_path, "import", "--at", "2025-03-01", str(tmp_path / "newer.json"))[0] == 0
    # The newer content dated between the two: not what the history says of that day.
    code, _, err = run(db_path, "import", "--at", "2025-02-01", str(tmp_path / "newer.json"))
    assert code == 1
    assert "is older than its latest snapshot" in err
