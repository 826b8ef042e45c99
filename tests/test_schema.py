"""The schema: created and versioned, an old file upgraded in place, a newer one refused."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import T1, T2, save_records, version_pair

from trialdiff.check import CheckTotals, check_database
from trialdiff.errors import DatabaseError
from trialdiff.query import latest_record, study_row, transaction
from trialdiff.schema import SCHEMA, SCHEMA_VERSION, open_db, schema_version
from trialdiff.store import materialize


def test_schema_is_created_and_versioned(db_path: str) -> None:
    db = open_db(db_path)
    assert schema_version(db) == SCHEMA_VERSION
    for table in SCHEMA:
        assert [c.name for c in db[table.name].columns] == [c[0] for c in table.columns]
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert "change_log" in db.view_names()


def test_a_v1_database_is_upgraded_in_place(db_path: str) -> None:
    older, newer = version_pair("NCT06060392")
    save_records(db_path, [older], T1)
    db = open_db(db_path)
    with transaction(db):
        materialize(db, "NCT06060392")  # version 1 stored every first snapshot in full
    db.close()
    conn = sqlite3.connect(db_path)  # make it what version 1 was: no records, no sightings
    conn.execute("alter table studies add column last_seen_at text")
    conn.execute("update studies set last_seen_at = (select last_seen_at from sightings)")
    conn.execute("drop table records")
    conn.execute("drop table sightings")
    conn.execute("update meta set value = '1' where key = 'schema_version'")
    conn.commit()
    conn.close()
    totals = save_records(db_path, [newer], T2)
    assert totals.changes == 6
    db = open_db(db_path)
    assert schema_version(db) == SCHEMA_VERSION
    assert "last_seen_at" not in db["studies"].columns_dict
    assert (study_row(db.conn, "NCT06060392") or {})["last_seen_at"] == T2
    assert latest_record(db.conn, "NCT06060392") is not None
    assert not list(check_database(db.conn, CheckTotals()))


def test_a_newer_schema_is_refused(db_path: str) -> None:
    open_db(db_path).execute("update meta set value = '99' where key = 'schema_version'")
    with pytest.raises(DatabaseError, match="newer"):
        open_db(db_path)
