"""The registry boundary, the one snapshot fold and the one schema version, on real records."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import replace

import pytest
from click.testing import CliRunner
from conftest import ROOT, SAMPLE, SAMPLE_DAYS, real_records
from standin_api import StandinAPI

import trialdiff
from trialdiff.cli import cli
from trialdiff.fetch import Pacing, fetch_ids
from trialdiff.query import connect_readonly, iter_snapshots, snapshot_at, study_fields
from trialdiff.records import gate_hash, raw_json
from trialdiff.registry import CTGOV, DEFAULT, Registry
from trialdiff.schema import SCHEMA_VERSION, open_db, schema_version

RECORDS = real_records()


def run(db_path: str, *args: str) -> tuple[int, str, str]:
    """Run trialdiff with a database and return (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, ["--db", db_path, *args])
    return result.exit_code, result.stdout, result.stderr


def test_ctgov_reads_ids_summaries_and_urls_from_real_records() -> None:
    registry: Registry = CTGOV  # mypy checks that CTGOV implements the protocol
    assert DEFAULT is CTGOV
    for record in RECORDS:
        nct_id = record["protocolSection"]["identificationModule"]["nctId"]
        assert registry.study_id(record) == nct_id
        assert registry.normalize_id(f"  {nct_id.lower()} ") == nct_id
        assert registry.study_url(nct_id) == "https://clinicaltrials.gov/study/" + nct_id
        summary = registry.summary_columns(record)
        assert summary["brief_title"] == record["protocolSection"]["identificationModule"][
            "briefTitle"]
        assert summary["overall_status"] == record["protocolSection"]["statusModule"][
            "overallStatus"]
    assert [registry.is_id(t) for t in ("NCT0582701", "NCT058270166", "nct05827016")] == [
        False, False, False]
    assert registry.normalize_id("NCT 05827016") is None
    assert registry.study_id({"protocolSection": {"identificationModule": {"nctId": "X1"}}}) is None


def test_only_the_registry_module_knows_the_id_pattern_and_study_url() -> None:
    found = sorted(
        path.name for path in (ROOT / "trialdiff").rglob("*.py")
        if re.search(r"NCT\\d\{8\}|clinicaltrials\.gov/study", path.read_text(encoding="utf-8"))
    )
    assert found == ["registry.py"]


def test_the_gate_ignores_exactly_the_registrys_volatile_parts() -> None:
    record = RECORDS[0]
    restamped = {**record, "derivedSection": {"miscInfoModule": {"versionHolder": "2099-01-01"}}}
    # CT.gov re-stamps derivedSection: the gate, cut from the bytes or written anew, ignores it.
    assert gate_hash(record, raw_json(record)) == gate_hash(restamped, raw_json(restamped))
    assert gate_hash(record) == gate_hash(restamped)
    # A registry with a second volatile part ignores that one too, by both routes.
    other = replace(CTGOV, volatile=("derivedSection", "annotationSection"))
    one = {**restamped, "annotationSection": {"annotationModule": {"x": 1}}}
    two = {**record, "annotationSection": {"annotationModule": {"x": 2}}}
    assert gate_hash(one, raw_json(one)) != gate_hash(two, raw_json(two))
    volatile = other.volatile
    assert gate_hash(one, raw_json(one), volatile) == gate_hash(two, raw_json(two), volatile)
    assert gate_hash(one, volatile=volatile) == gate_hash(two, volatile=volatile) == gate_hash(
        record)
    # A change outside them still moves the gate.
    moved = {**two, "protocolSection": {**record["protocolSection"], "x": 1}}
    assert gate_hash(moved, raw_json(moved), volatile) != gate_hash(two, raw_json(two), volatile)


def test_the_registrys_client_fetches_real_records_from_the_standin() -> None:
    ids = sorted(CTGOV.study_id(r) or "" for r in RECORDS)[:3]
    with StandinAPI(RECORDS) as api:
        client = CTGOV.client(api.base_url, Pacing(delay=0, retries=1))
        try:
            pages = list(fetch_ids(client, ids, batch=3))
        finally:
            client.close()
    assert sorted(CTGOV.study_id(s) for page in pages for s in page) == ids


def test_one_fold_gives_every_reader_the_same_snapshots(db_path: str) -> None:
    for day in SAMPLE_DAYS:
        assert run(db_path, "import", "--at", day, str(SAMPLE / day))[0] == 0
    conn = connect_readonly(db_path)
    for nct_id in ("NCT04642755", "NCT05827016", "NCT06060392"):
        stored = list(iter_snapshots(conn, nct_id))
        assert [s.seq for s in stored] == list(range(1, len(stored) + 1))
        for one in stored:
            assert snapshot_at(conn, nct_id, one.seq) == one.snapshot
            assert study_fields(conn, nct_id, one.seq) == one.snapshot.fields
            # A chain rooted in a lazy baseline stores no hashes (readers compute them).
            assert (one.stored_hash is None) == stored[0].lazy
            assert one.lazy == (one.seq == 1 and stored[0].lazy)
            if one.stored_hash is not None:
                assert one.snapshot.content_hash == one.stored_hash
        assert study_fields(conn, nct_id) == stored[-1].snapshot.fields
    changed = list(iter_snapshots(conn, "NCT05827016"))
    assert len(changed) == 2 and changed[0].snapshot.fields != changed[1].snapshot.fields
    assert snapshot_at(conn, "NCT05827016", 3) is None


def _make_schema_3(db_path: str) -> None:
    """Turn a database into what schema 3 was: no release or ETag columns."""
    conn = sqlite3.connect(db_path)
    for table, column in (("watchlist", "fetched_release"), ("queries", "fetched_release"),
                          ("records", "etag")):
        conn.execute(f"alter table {table} drop column {column}")
    conn.execute("update meta set value = '3' where key = 'schema_version'")
    conn.commit()
    conn.close()


def test_readers_refuse_an_older_schema_until_check_upgrades_it(db_path: str) -> None:
    day = SAMPLE_DAYS[0]
    assert run(db_path, "import", "--at", day, str(SAMPLE / day))[0] == 0
    _, before, _ = run(db_path, "history", "NCT05827016")
    _make_schema_3(db_path)
    code, out, err = run(db_path, "history", "NCT05827016")
    assert (code, out) == (1, "")
    assert err == (f"trialdiff: error: {db_path}: database schema version 3 is older than this "
                   f"trialdiff's ({SCHEMA_VERSION}); run `trialdiff check` (or any writing "
                   "command, or `trialdiff.open()` in Python) once to upgrade it in place\n")
    with pytest.raises(trialdiff.DatabaseError, match=r"or `trialdiff\.open\(\)` in Python"):
        trialdiff.Tracker(db_path).check()  # a script's way: it said only `trialdiff check`
    code, out, err = run(db_path, "check")
    assert err == f"trialdiff: upgraded {db_path} from schema version 3 to {SCHEMA_VERSION}\n"
    assert (code, out) == (0, "check: 3 studies, 3 snapshots, 0 changes verified; 0 problems\n")
    assert run(db_path, "history", "NCT05827016") == (0, before, "")
    db = open_db(db_path)
    assert schema_version(db) == SCHEMA_VERSION
    assert "etag" in db["records"].columns_dict  # type: ignore[union-attr]
    db.close()
    assert run(db_path, "check") == (
        0, "check: 3 studies, 3 snapshots, 0 changes verified; 0 problems\n", "")


def test_a_newer_schema_is_refused_by_readers_and_check_alike(db_path: str) -> None:
    open_db(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("update meta set value = ? where key = 'schema_version'",
                 [str(SCHEMA_VERSION + 1)])
    conn.commit()
    conn.close()
    message = (f"trialdiff: error: {db_path}: database schema version {SCHEMA_VERSION + 1} is "
               f"newer than this trialdiff knows ({SCHEMA_VERSION}); upgrade trialdiff\n")
    assert run(db_path, "check") == (1, "", message)
    assert run(db_path, "changes") == (1, "", message)
