"""The store keeps a snapshot only when content changes, atomically, and rebuilds any version."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import (
    FIXTURES,
    T1,
    T2,
    T3,
    load,
    real_records,
    save_records,
    version_pair,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialdiff.check import CheckTotals, check_database
from trialdiff.codec import decompress
from trialdiff.folders import read_studies
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import content_hash
from trialdiff.normalize import extract_fields, study_id
from trialdiff.query import (
    SHARED,
    ChangeFilter,
    query_changes,
    snapshot_at,
    snapshots_of,
    study_fields,
    study_row,
)
from trialdiff.schema import open_db
from trialdiff.store import save_study


def test_snapshots_only_when_content_changes_and_last_seen_always_moves(db_path: str) -> None:
    older, newer = version_pair("NCT06060392")
    save_records(db_path, [older], T1)
    save_records(db_path, [older], T2)  # the same record seen again: no snapshot
    db = open_db(db_path)
    assert [r["seq"] for r in snapshots_of(db.conn, "NCT06060392")] == [1]
    row = study_row(db.conn, "NCT06060392")
    assert row is not None
    assert (row["first_seen_at"], row["last_seen_at"], row["last_changed_at"]) == (T1, T2, T1)
    totals = save_records(db_path, [newer], T3)
    assert (totals.checked, totals.changed, totals.changes) == (1, 1, 6)
    assert [r["seq"] for r in snapshots_of(db.conn, "NCT06060392")] == [1, 2]
    assert (study_row(db.conn, "NCT06060392") or {})["last_seen_at"] == T3


def test_reordered_or_respaced_bytes_store_nothing(db_path: str) -> None:
    record = load("v2/NCT04857515.json")
    save_records(db_path, [record], T1)
    shuffled = copy.deepcopy(record)
    shuffled["protocolSection"]["conditionsModule"]["conditions"].reverse()
    shuffled["protocolSection"]["descriptionModule"]["briefSummary"] += "   \n"
    totals = save_records(db_path, [shuffled], T2)
    assert totals.changes == 0
    assert len(snapshots_of(open_db(db_path).conn, "NCT04857515")) == 1


def test_every_stored_version_is_rebuilt_exactly(db_path: str) -> None:
    older, newer = version_pair("NCT05827016")
    save_records(db_path, [older], T1)
    save_records(db_path, [newer], T2)
    conn = open_db(db_path).conn
    for seq, record in ((1, older), (2, newer)):
        snapshot = snapshot_at(conn, "NCT05827016", seq)
        assert snapshot is not None
        assert dict(snapshot.fields) == extract_fields(record)
        stored = snapshots_of(conn, "NCT05827016")[seq - 1]["content_hash"]
        assert content_hash(snapshot.fields) == stored
    assert study_fields(conn, "NCT05827016") == extract_fields(newer)


def test_changes_are_stored_with_their_detail(db_path: str) -> None:
    older, newer = version_pair("NCT06060392")
    save_records(db_path, [older], T1)
    save_records(db_path, [newer], T2)
    conn = open_db(db_path).conn
    changes = list(query_changes(conn, ChangeFilter(path_prefixes=("status.completionDate",))))
    assert len(changes) == 1
    assert changes[0].old == {"date": "2025-03-01", "type": "ESTIMATED"}
    assert changes[0].detail["edits"][0]["new"] == "2025-11-01"
    assert [c.path for c in query_changes(conn, ChangeFilter(kinds=("added",)))] == [
        "oversight.isUsExport"
    ]
    assert list(query_changes(conn, ChangeFilter(since=T3))) == []
    assert len(list(query_changes(conn, ChangeFilter(path_prefixes=("status",))))) == 4
    assert list(query_changes(conn, ChangeFilter(path_prefixes=("stat",)))) == []


def test_a_snapshot_and_its_changes_commit_together(db_path: str, monkeypatch) -> None:
    older, newer = version_pair("NCT06060392")
    save_records(db_path, [older], T1)
    import trialdiff.store as store

    calls = {"n": 0}
    real_insert = store.insert_row

    def failing_insert(db, table, row):  # type: ignore[no-untyped-def]
        if table == "changes":
            calls["n"] += 1
            if calls["n"] == 3:
                raise sqlite3.OperationalError("disk I/O error")
        return real_insert(db, table, row)

    monkeypatch.setattr(store, "insert_row", failing_insert)
    with pytest.raises(sqlite3.OperationalError):
        save_records(db_path, [newer], T2)
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from snapshots").fetchone()[0] == 1
    assert conn.execute("select count(*) from changes").fetchone()[0] == 0


def test_an_observation_older_than_the_latest_snapshot_is_refused(db_path: str) -> None:
    older, newer = version_pair("NCT06060392")
    save_records(db_path, [newer], T2)
    totals = save_records(db_path, [older], T1)
    assert totals.failed == 1
    assert "older than its latest snapshot" in totals.errors[0]["error"]


def test_a_change_older_than_the_last_sighting_is_refused(db_path: str) -> None:
    # A at T1 and again at T3, then B at T2: B would claim a change that T3 saw undone.
    older, newer = version_pair("NCT06060392")
    t2 = "2025-01-01T00:00:00.000Z"
    assert save_records(db_path, [older], T1).failed == 0
    assert save_records(db_path, [older], T3).failed == 0
    totals = save_records(db_path, [newer], t2)
    assert totals.failed == 1
    assert totals.errors[0]["error"] == (
        f"NCT06060392: observation at {t2} is older than its last sighting ({T3}); history is "
        "appended in time order (backfill adds the past)"
    )
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from snapshots").fetchone() == (1,)
    assert conn.execute("select last_seen_at from sightings").fetchone() == (T3,)
    # Replaying what was seen, in the same or other bytes, says nothing new: accepted, a no-op.
    reordered = json.loads(json.dumps(older, indent=1))
    reordered["derivedSection"] = {"miscInfoModule": {"versionHolder": "2025-01-01"}}
    reordered["protocolSection"] = dict(reversed(reordered["protocolSection"].items()))
    assert save_records(db_path, [older, reordered], t2).failed == 0
    assert conn.execute("select count(*), max(observed_at) from snapshots").fetchone() == (1, T1)
    assert conn.execute("select last_seen_at from sightings").fetchone() == (T3,)
    assert conn.execute("select observed_at from records").fetchone() == (T1,)
    # After the last sighting, the change is stored as usual.
    assert save_records(db_path, [newer], "2025-07-09T00:00:00.000Z").changed == 1
    assert not list(check_database(conn, CheckTotals()))


def test_a_study_compared_whole_refuses_a_change_at_its_last_sightings_time(
    db_path: str
) -> None:
    # A study whose latest version was backfilled keeps "" as its gate (compares_by_module),
    # so its next record is compared whole: the sighting rule holds on that path too.
    older, newer = version_pair("NCT06060392")
    assert save_records(db_path, [older], T1).failed == 0
    assert save_records(db_path, [older], T3).failed == 0
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("update studies set raw_hash = ''")
    totals = save_records(db_path, [newer], T3)
    assert totals.errors == [{"input": "test", "error": (
        f"NCT06060392: observation at {T3} is at the same time as its last sighting ({T3}); "
        "history is appended in time order (backfill adds the past)")}]
    assert conn.execute("select count(*), count(distinct nct_id) from snapshots").fetchone() == (
        1, 1)
    assert save_records(db_path, [newer], "2025-07-09T00:00:00.000Z").changed == 1


def test_real_records_all_import_and_reimport_stores_nothing(db_path: str) -> None:
    records = real_records()
    first = save_records(db_path, records, T1)
    assert (first.checked, first.changes, first.failed) == (len(records), 0, 0)
    again = save_records(db_path, records, T2)
    assert (again.checked, again.changed, again.changes) == (len(records), 0, 0)
    conn = open_db(db_path).conn
    assert conn.execute("select count(*) from snapshots").fetchone()[0] == len(records)


RECORDS = real_records()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(RECORDS), min_size=1, max_size=4, unique_by=id))
def test_property_reimporting_the_same_data_stores_nothing(tmp_path: Path, records) -> None:
    path = str(tmp_path / f"p{abs(hash(tuple(id(r) for r in records)))}.db")
    save_records(path, records, T1)
    conn = sqlite3.connect(path)
    before = conn.execute("select count(*), (select count(*) from changes) from snapshots")
    counts = before.fetchone()
    save_records(path, json.loads(json.dumps(records)), T2)
    after = conn.execute("select count(*), (select count(*) from changes) from snapshots")
    assert after.fetchone() == counts


def test_save_study_returns_what_it_did(db_path: str) -> None:
    older, newer = version_pair("NCT06060392")
    db = open_db(db_path)
    first = save_study(db, "NCT06060392", older, T1)
    assert first.stored and first.changes == ()
    second = save_study(db, "NCT06060392", newer, T2)
    assert second.stored and len(second.changes) == 6


def test_a_first_snapshot_stays_a_raw_record_and_a_change_stores_only_moved_modules(
    db_path: str,
) -> None:
    older, newer = version_pair("NCT06060392")
    save_records(db_path, [older], T1)
    conn = sqlite3.connect(db_path)
    delta, digest = conn.execute("select delta, content_hash from snapshots").fetchone()
    assert delta is None and digest is None  # the bootstrap skipped canonicalising
    assert study_fields(conn, "NCT06060392") == extract_fields(older)  # read from the record
    expected_hash = content_hash(extract_fields(older))
    assert snapshots_of(conn, "NCT06060392")[0]["content_hash"] == expected_hash
    save_records(db_path, [newer], T2)
    first = conn.execute("select delta, content_hash from snapshots where seq = 1").fetchone()
    assert first == (None, None)  # still lazy: its content is the first record, kept as base
    assert study_fields(conn, "NCT06060392", 1) == extract_fields(older)
    assert study_fields(conn, "NCT06060392") == extract_fields(newer)
    second = conn.execute("select delta from snapshots where seq = 2").fetchone()[0]
    stored = json.loads(decompress(conn, second))
    shared = stored.pop(SHARED, [])  # long values its changes hold, stored there alone
    assert shared == ["references.references"]
    moved = {path for path, text in extract_fields(newer).items()
             if extract_fields(older).get(path) != text}
    assert {*stored, *shared} >= moved
    assert len(stored) + len(shared) < len(extract_fields(newer)) / 4
    assert [row["content_hash"] for row in snapshots_of(conn, "NCT06060392")] == [
        expected_hash, content_hash(extract_fields(newer))]
    base, record = conn.execute("select base, record from records").fetchone()
    assert base is not None and len(record) < len(base) / 4  # stored against the first record
    assert len(list(query_changes(conn, ChangeFilter()))) == 6


def test_the_fast_path_and_a_straightforward_reference_agree_on_real_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gate, lazy baseline and fast canonical JSON report exactly what the obvious code does."""
    from oracles import reference_canonical_json

    import trialdiff.normalize as normalize
    from trialdiff.diff import changed_paths

    pairs = [version_pair(p.name) for p in sorted((FIXTURES / "versions").iterdir())]
    db_path = str(tmp_path / "fast.db")
    save_records(db_path, [older for older, _ in pairs], T1)
    save_records(db_path, [newer for _, newer in pairs], T2)
    conn = sqlite3.connect(db_path)
    fast = sorted(conn.execute("select nct_id, path, kind from changes"))
    monkeypatch.setattr(normalize, "canonical_json", reference_canonical_json)
    reference = sorted(
        (study_id(newer), path, kind)
        for older, newer in pairs
        for path, kind in changed_paths(normalize.extract_fields(older),
                                        normalize.extract_fields(newer))
    )
    assert fast == reference and len(reference) > 600


def test_ndjson_days_with_only_a_new_data_release_store_nothing(
    db_path: str, tmp_path: Path
) -> None:
    import orjson

    records = real_records()
    day1, day2 = tmp_path / "day1.ndjson", tmp_path / "day2.ndjson"
    day1.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    for record in records:
        record["derivedSection"]["miscInfoModule"]["versionHolder"] = "2099-01-01"
    day2.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    db = open_db(db_path)
    for day, at in ((day1, T1), (day2, T2)):
        totals = RunTotals()
        save_studies(db, read_studies([str(day)]), at, totals)
    assert (totals.checked, totals.changes) == (len(records), 0)
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from snapshots").fetchone()[0] == len(records)
    assert conn.execute("select distinct last_seen_at from sightings").fetchall() == [(T2,)]
    # The gate held for every record: none was written again.
    assert conn.execute("select distinct observed_at from records").fetchall() == [(T1,)]
