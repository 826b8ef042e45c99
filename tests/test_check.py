"""Verifying a database (check): what a sound one counts, and each kind of problem named."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLE, run, sample_record

from trialdiff.check import CheckTotals, check_database, check_site_paths
from trialdiff.codec import compress, unpack_value
from trialdiff.normalize import extract_fields


@pytest.fixture
def sample_db(db_path: str) -> str:
    """Return a database of the sample archive: 3 studies, 5 snapshots, 528 changes."""
    code, _, err = run(db_path, "import", "--summary", str(SAMPLE))
    assert (code, err) == (0, "")
    return db_path


def problems(db: str) -> list[str]:
    """Return what check_database finds in a database file."""
    return list(check_database(sqlite3.connect(db), CheckTotals()))


def test_a_sound_database_has_no_problem_and_every_row_is_counted(sample_db: str) -> None:
    conn = sqlite3.connect(sample_db)
    totals = CheckTotals()
    assert list(check_database(conn, totals)) == []
    assert (totals.studies, totals.snapshots, totals.changes) == tuple(
        conn.execute(f"select count(*) from {table}").fetchone()[0]
        for table in ("studies", "snapshots", "changes")) == (3, 5, 528)


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
        # What the same edits broke besides: times that should be equal no longer are.
        "problem: NCT04642755: the study's last_changed_at is not its latest snapshot's "
        "observed_at",
        "problem: 528 changes belong to a snapshot observed at another time than it says",
        "check: 3 studies, 5 snapshots, 528 changes verified; 5 problems",
    ]


def test_a_lost_or_rewritten_change_is_named_with_its_snapshot(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        conn.execute("delete from changes where nct_id = 'NCT05827016' "
                     "and path = 'status.overallStatus'")
        conn.execute("update changes set path = 'status.madeUp' where nct_id = 'NCT06060392' "
                     "and path = 'oversight.isUsExport'")
    # (The rewritten row also disagrees with the severity rules: a line of its own.)
    assert [p for p in problems(sample_db) if "stored changes differ" in p] == [
        "NCT05827016: snapshot 2 stored changes differ from recomputed ones "
        "(missing [('status.overallStatus', 'changed')], unexpected [])",
        "NCT06060392: snapshot 2 stored changes differ from recomputed ones "
        "(missing [('oversight.isUsExport', 'added')], unexpected [('status.madeUp', 'added')])",
    ]


def test_a_rewritten_detail_is_named_with_its_snapshot(sample_db: str) -> None:
    # `changes --format json` exports the stored detail (the list items and edits), so a
    # damaged one is a damaged change even when its values are sound.
    with sqlite3.connect(sample_db) as conn:
        conn.execute("""update changes set detail = '{"edits": []}' where nct_id = 'NCT05827016'
                        and path = 'status.startDate'""")
    assert [p for p in problems(sample_db) if "stored changes differ" in p] == [
        "NCT05827016: snapshot 2 stored changes differ from recomputed ones "
        "(missing [('status.startDate', 'changed')], "
        "unexpected [('status.startDate', 'changed')])",
    ]
    (change_id,) = sqlite3.connect(sample_db).execute(
        "select id from changes where nct_id = 'NCT05827016' and path = 'status.startDate'"
    ).fetchone()
    assert [p for p in problems(sample_db) if " its stored " in p] == [
        f"NCT05827016: change {change_id} (status.startDate): its stored detail is not what the "
        "snapshots give: the file is damaged, or was edited"]


def test_a_long_value_that_decompresses_into_other_text_is_named_by_its_change(
    sample_db: str
) -> None:
    # zstd frames carry no checksum: flipped bytes can decompress, into other words.
    conn = sqlite3.connect(sample_db)
    # An old value: a new one long enough is the snapshot's own (its delta shares it), so
    # that damage shows as the snapshot's content hash.
    change_id, old = conn.execute(
        "select id, old from changes where typeof(old) = 'blob' order by id limit 1"
    ).fetchone()
    altered = (unpack_value(conn, old) or "").replace("a", "e", 1)
    with conn:
        conn.execute("update changes set old = ? where id = ?",
                     [compress(conn, altered.encode(), history=True), change_id])
    found = [p for p in problems(sample_db) if f"change {change_id} " in p]
    assert found and found[0].endswith(
        "its stored old value is not what the snapshots give: the file is damaged, or was edited")


def test_tampered_hashes_and_snapshot_counts_are_named(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        conn.execute("update studies set snapshot_count = 2 where nct_id = 'NCT04642755'")
        conn.execute("update studies set content_hash = 'forged' where nct_id = 'NCT05827016'")
        conn.execute("update snapshots set content_hash = 'forged' "
                     "where nct_id = 'NCT06060392' and seq = 2")
    # Each hash is checked against the content it hashes, so the study whose latest snapshot
    # has a forged hash is named twice: the study's hash is its content's, not the forgery.
    assert problems(sample_db) == [
        "NCT04642755: snapshots are not numbered 1..2",
        "NCT05827016: the study's content hash is not its latest snapshot's",
        "NCT06060392: snapshot 2 content hash does not match its content",
        "NCT06060392: the study's content hash is not its latest snapshot's",
    ]


def test_changes_of_no_snapshot_are_counted(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        columns = [row[1] for row in conn.execute("pragma table_info(changes)")
                   if row[1] not in ("id", "snapshot_id")]
        # Real rows copied under a snapshot that does not exist, severities and all.
        conn.execute(f"insert into changes ({', '.join(columns)}, snapshot_id) "
                     f"select {', '.join(columns)}, 999 from changes "
                     "where path in ('status.overallStatus', 'status.completionDate')")
    assert problems(sample_db) == ["2 changes belong to no snapshot"]
    with sqlite3.connect(sample_db) as conn:
        conn.execute("delete from changes "
                     "where snapshot_id = 999 and path = 'status.overallStatus'")
    assert problems(sample_db) == ["1 change belongs to no snapshot"]
    with sqlite3.connect(sample_db) as conn:  # no snapshot at all: `not in` is never true of NULL
        conn.execute("update changes set snapshot_id = null where snapshot_id = 999")
    assert problems(sample_db) == ["1 change belongs to no snapshot"]


def test_a_text_cell_that_is_not_utf8_is_named_and_every_reader_says_the_file_is_damaged(
    sample_db: str
) -> None:
    # A flipped bit in a text cell stopped the whole check with SQLite's decode error, naming
    # no row (1 in 8 of a probe's random flips in the changes and snapshots pages).
    with sqlite3.connect(sample_db) as conn:
        (change_id,) = conn.execute("select id from changes where nct_id = 'NCT05827016' and "
                                    "path = 'status.startDate'").fetchone()
        conn.execute("update changes set detail = cast(X'7B2261FF223A317D' as text) "
                     "where id = ?", [change_id])
        conn.execute("update snapshots set observed_at = cast(X'323032352D3037FF' as text) "
                     "where nct_id = 'NCT06060392' and seq = 2")
    found = problems(sample_db)
    assert f"NCT05827016: change {change_id} (status.startDate): its stored detail is not " \
           "what the snapshots give: the file is damaged, or was edited" in found
    assert ("snapshots.observed_at: 1 timestamp is not canonical ISO 8601 UTC "
            "(YYYY-MM-DDTHH:MM:SS.mmmZ), e.g. '2025-07\ufffd'") in found
    code, _, err = run(sample_db, "changes", "--format", "ndjson")
    assert code == 1 and err.startswith("trialdiff: error: database error: Could not decode")
    assert err.endswith("a text cell's bytes are not UTF-8, so the file is damaged: `trialdiff "
                        "check` names where\n")


def test_missing_times_are_named_and_the_check_goes_on(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        conn.execute("update records set observed_at = null where nct_id = 'NCT04642755'")
        conn.execute("update sightings set last_seen_at = null")
        conn.execute("update changes set detected_at = null where path = 'status.overallStatus'")
    assert problems(sample_db) == [
        "sightings.last_seen_at: 3 rows have no time",
        "changes.detected_at: 1 row has no time",
        "records.observed_at: 1 row has no time",
        "1 change belongs to a snapshot observed at another time than it says",
    ]


def test_a_study_whose_row_was_deleted_is_still_verified(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        conn.execute("delete from studies where nct_id = 'NCT05827016'")
        conn.execute("delete from changes where nct_id = 'NCT05827016' "
                     "and path = 'status.overallStatus'")
    totals = CheckTotals()
    assert list(check_database(sqlite3.connect(sample_db), totals)) == [
        "NCT05827016: 2 snapshots but no row in studies",
        "NCT05827016: snapshot 2 stored changes differ from recomputed ones "
        "(missing [('status.overallStatus', 'changed')], unexpected [])",
        "1 record belongs to no study",
        "1 sighting belongs to no study",
    ]
    assert (totals.studies, totals.snapshots) == (3, 5)


def test_a_change_moved_to_another_studys_snapshot_is_named(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        conn.execute("update changes set nct_id = 'NCT05827016' where nct_id = 'NCT06060392' "
                     "and path = 'oversight.isUsExport'")
    assert [p for p in problems(sample_db) if "severity" not in p] == [
        "NCT06060392: snapshot 2 stored changes differ from recomputed ones "
        "(missing [('oversight.isUsExport', 'added')], unexpected [])",
        "1 change belongs to another study's snapshot",
    ]


def test_a_change_stored_twice_is_named_as_unexpected(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:
        columns = [row[1] for row in conn.execute("pragma table_info(changes)") if row[1] != "id"]
        conn.execute(f"insert into changes ({', '.join(columns)}) select {', '.join(columns)} "
                     "from changes where nct_id = 'NCT05827016' and path = 'status.overallStatus'")
    assert problems(sample_db) == [
        "NCT05827016: snapshot 2 stored changes differ from recomputed ones "
        "(missing [], unexpected [('status.overallStatus', 'changed')])"]


def test_an_unknown_schema_version_is_the_only_problem_reported(sample_db: str) -> None:
    conn = sqlite3.connect(sample_db)
    conn.execute("update meta set value = '99' where key = 'schema_version'")
    totals = CheckTotals()
    assert list(check_database(conn, totals)) == ["unknown schema version: 99"]
    assert totals == CheckTotals()  # nothing else was read under a schema it does not know


def test_a_commit_made_during_a_check_never_shows_in_it(sample_db: str) -> None:
    with sqlite3.connect(sample_db) as conn:  # a first problem, so the check can be paused
        conn.execute("update runs set started_at = '2025-07-07 00:00:00'")
    totals = CheckTotals()
    checking = check_database(sqlite3.connect(sample_db), totals)
    assert next(checking).startswith("runs.started_at: 1 timestamp is not canonical")
    with sqlite3.connect(sample_db) as writer:  # WAL: the writer commits beside the reader
        writer.execute("delete from changes where path = 'status.overallStatus'")
    assert list(checking) == []  # the change is still there for the check that began before
    assert totals.changes == 528
    assert problems(sample_db)[1:] == [  # the next check sees it gone
        "NCT05827016: snapshot 2 stored changes differ from recomputed ones "
        "(missing [('status.overallStatus', 'changed')], unexpected [])"]


def test_site_paths_not_keyed_as_today_are_named() -> None:
    fields = extract_fields(sample_record("2024-06-14", "NCT06060392"))
    assert list(check_site_paths("NCT06060392", 1, fields, "markdown")) == []
    (site,) = [path for path in fields if path.startswith("locations.")]
    moved = {("locations.somewhere else" if path == site else path): value
             for path, value in fields.items()}
    assert list(check_site_paths("NCT06060392", 3, moved, None)) == [
        "NCT06060392: snapshot 3 site paths do not follow the current rules (stored "
        f"locations.somewhere else; expected {site})"]


def test_a_damaged_blob_is_named_and_the_check_goes_on(db_path: str, tmp_path: Path) -> None:
    # NCT00000410 seen again with its conditions in another order: the same content in other
    # bytes, so its record is replaced and its lazy first snapshot reads the first (`base`).
    record = json.loads((FIXTURES / "v2" / "NCT00000410.json").read_text(encoding="utf-8"))
    assert run(db_path, "import", "--at", "2026-05-11", str(FIXTURES / "v2"))[0] == 0
    conditions = record["protocolSection"]["conditionsModule"]["conditions"]
    conditions.reverse()
    assert len(conditions) > 1
    (tmp_path / "again.json").write_text(json.dumps(record), encoding="utf-8")
    assert run(db_path, "import", "--at", "2026-05-12", str(tmp_path / "again.json"))[0] == 0
    conn = sqlite3.connect(db_path)
    assert conn.execute("select base is not null from records where nct_id = 'NCT00000410'"
                        ).fetchone() == (1,)
    conn.execute("update records set record = x'28b52ffddeadbeef' where nct_id = 'NCT00000410'")
    conn.execute("update snapshots set delta = x'28b52ffd00' where id = (select min(id) from "
                 "snapshots where nct_id = 'NCT00003454')")
    conn.commit()
    found = problems(db_path)
    assert [line.split(":")[0] for line in found] == ["NCT00000410", "NCT00003454"]
    assert all("a stored blob does not decompress" in line and line.endswith(
        "the file is damaged") for line in found), found
    code, out, err = run(db_path, "page", "NCT00000410")
    assert (code, out) == (1, "") and "a stored blob does not decompress" in err
    assert "unexpected" not in err


def test_a_change_value_cut_short_is_named_and_every_reader_says_the_file_is_damaged(
        sample_db: str) -> None:
    # check stopped at it with "unexpected JSONDecodeError" and printed nothing it had found;
    # changes and reannotate did the same.
    with sqlite3.connect(sample_db) as conn:
        conn.execute("update changes set old = substr(old, 1, length(old) - 1) where id = "
                     "(select min(id) from changes where typeof(old) = 'text' and old like '{%')")
        (nct_id,) = conn.execute("select nct_id from changes where id = (select min(id) from "
                                 "changes where typeof(old) = 'text' and old like '{%')").fetchone()
    code, out, err = run(sample_db, "check")
    assert (code, err) == (1, "")
    assert out.startswith(f"problem: {nct_id}: its stored data cannot be read")
    assert out.splitlines()[-1].startswith("check: 3 studies")
    for command in (["changes"], ["reannotate"]):
        code, out, err = run(sample_db, *command)
        assert code == 1 and "unexpected" not in err, command
        assert "a stored change value is not valid JSON" in err and "the file is damaged" in err


@pytest.mark.parametrize(("damage", "expected"), [
    ("update records set record = NULL where nct_id = 'NCT04642755'",
     "NCT04642755: its stored record cannot be read: a stored blob is NULL: the file is damaged"),
    ("update records set base = 'hello' where nct_id = 'NCT06060392'",
     "NCT06060392: its snapshots cannot be read: a stored blob is str, not compressed bytes: "
     "the file is damaged"),
    ("update snapshots set delta = '[1,2]' where id = 4",  # plain JSON (before 0.1), a list
     "NCT05827016: its snapshots cannot be read: snapshot 2's delta cannot be read: it holds "
     "a JSON list, not an object: the file is damaged"),
    ("update snapshots set seq = 'x' where id = 4",
     "NCT05827016: its stored data cannot be read: TypeError: "),
])
def test_a_cell_of_the_wrong_type_is_its_studys_problem_and_the_check_goes_on(
    sample_db: str, damage: str, expected: str
) -> None:
    # SQLite keeps any type in any column: a NULL or text cell stopped the whole check with
    # "unexpected AttributeError", every study after it unchecked and no summary printed.
    conn = sqlite3.connect(sample_db)
    with conn:
        conn.execute(damage)
    code, out, err = run(sample_db, "check")
    assert (code, err) == (1, "")
    *found, summary = out.splitlines()
    assert [line for line in found if line.startswith(f"problem: {expected}")], out
    assert re.fullmatch(r"check: 3 studies, \d+ snapshots?, \d+ changes? verified; \d+ "
                        r"problems?", summary), summary


def test_a_dropped_index_is_named_and_compact_creates_it_again(sample_db: str) -> None:
    # Nothing noticed one: check said 0 problems while it took half as long again.
    with sqlite3.connect(sample_db) as conn:
        conn.execute("drop index idx_changes_path")
    assert problems(sample_db) == [
        "changes: its index on (path) is missing, which slows reads: `trialdiff compact` "
        "creates it again"]
    assert run(sample_db, "compact")[0] == 0
    assert problems(sample_db) == []


def test_a_file_whose_pages_are_damaged_says_what_to_do(sample_db: str) -> None:
    # SQLite's "database disk image is malformed" was all a cron user got: nothing said that
    # the file itself was damaged, nor how to get back what is still readable.
    conn = sqlite3.connect(sample_db)
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    with open(sample_db, "r+b") as handle:  # page 1's b-tree header: the schema's own page
        handle.seek(100)
        header = handle.read(8)
        handle.seek(100)
        handle.write(bytes(byte ^ 0xFF for byte in header))
    salvage = ("database disk image is malformed: the file itself is damaged: restore it from a "
               "backup, or copy out what SQLite can still read (`sqlite3 FILE .dump | sqlite3 "
               "NEW.db`, then `trialdiff --db NEW.db check`)\n")
    for args, verb in ((("check",), "read"), (("changes",), "read"),
                       (("import", str(SAMPLE)), "open")):
        code, out, err = run(sample_db, *args)
        assert (code, out) == (1, "")
        assert err == f"trialdiff: error: cannot {verb} database {sample_db}: {salvage}", args
