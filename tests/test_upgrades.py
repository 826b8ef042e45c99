"""The migrations that convert stored rows in place, each resuming when killed: schemas 6, 8,
9, 10, 11 and 12 to the current one; and the first versions' files, schemas 1 and 2."""

from __future__ import annotations

import copy
import hashlib
import html
import json
import random
import re
import shutil
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import xxhash
import zstandard
from conftest import (
    FIXTURES,
    SAMPLE,
    changes_of,
    clone_study,
    clones,
    copy_db,
    html_record,
    kill_after,
    real_records,
    run,
    trialdiff_process,
    write_day,
)
from standin_api import StandinAPI
from test_records import all_fields, no_derived, post_results, shared_paths

from trialdiff import codec, diff
from trialdiff.codec import ZSTD_MAGIC, decompress, unpack_value
from trialdiff.model import dump_json
from trialdiff.normalize import study_id
from trialdiff.query import (
    SHARED,
    ChangeFilter,
    latest_record,
    query_changes,
)
from trialdiff.schema_version import SCHEMA_VERSION

OLD_SCHEMAS = FIXTURES / "old-schemas"


def make_v6(db: str) -> None:
    """Turn a fresh database into what schema 6 stored: zlib records, no base, no dictionary."""
    conn = sqlite3.connect(db)
    from trialdiff.query import latest_record as read

    rows = [(nct_id, read(conn, nct_id)) for (nct_id,) in conn.execute(
        "select nct_id from records")]
    for nct_id, record in rows:
        raw = json.dumps(record, separators=(",", ":")).encode()
        conn.execute("update records set record = ? where nct_id = ?",
                     [zlib.compress(raw, 1), nct_id])
    conn.execute("alter table records drop column base")
    conn.execute("drop table dictionaries")
    conn.execute("update meta set value = '6' where key = 'schema_version'")
    conn.commit()
    conn.close()


def test_a_v6_database_is_converted_in_place_and_a_killed_migration_resumes(
    tmp_path: Path,
) -> None:
    day1 = write_day(tmp_path / "d1", clones(224))
    day2 = write_day(tmp_path / "d2", clones(224, edit=True))
    v6 = str(tmp_path / "v6.db")
    assert run(v6, "import", "--at", "2026-05-11", str(day1))[0] == 0
    make_v6(v6)
    reference = str(tmp_path / "reference.db")
    copy_db(v6, reference)
    assert trialdiff_process(reference, "import", "--at", "2026-05-12", str(day2)).wait() == 0
    expected = changes_of(reference)
    assert len(expected) == sum(a != b for a, b in zip(clones(224), clones(224, True),
                                                       strict=True)) > 60
    rng = random.Random(15)
    for trial in range(4):
        crashed = str(tmp_path / f"crashed{trial}.db")
        copy_db(v6, crashed)
        kill_after(trialdiff_process(crashed, "import", "--at", "2026-05-12", str(day2)),
                   rng.uniform(0.4, 1.6))
        conn = sqlite3.connect(crashed)
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        conn.close()
        assert trialdiff_process(crashed, "import", "--at", "2026-05-12", str(day2)).wait() == 0
        assert changes_of(crashed) == expected
        assert run(crashed, "check")[0] == 0
        conn = sqlite3.connect(crashed)
        assert conn.execute("select value from meta where key = 'schema_version'").fetchone()[0] \
            == str(SCHEMA_VERSION)
        blobs = [blob for (blob,) in conn.execute("select record from records")]
        assert all(blob.startswith(ZSTD_MAGIC) for blob in blobs) and len(blobs) == 224
        assert conn.execute("select count(*) from dictionaries").fetchone()[0] == 1


def make_v9(db: str) -> None:
    """Turn a database into what schema 9 stored: a shared value in its delta too."""
    conn = sqlite3.connect(db)
    for row_id, delta in conn.execute(
            "select id, delta from snapshots where delta is not null").fetchall():
        values = json.loads(decompress(conn, delta))
        shared = values.pop(SHARED, [])
        for path in shared:
            (cell,) = conn.execute("select new from changes where snapshot_id = ? and path = ?",
                                   [row_id, path]).fetchone()
            values[path] = json.loads(unpack_value(conn, cell) or "null")
        text = "{" + ",".join(f"{json.dumps(k)}:{dump_json(v)}" for k, v in sorted(values.items()))
        conn.execute("update snapshots set delta = ? where id = ?",
                     [zstandard.ZstdCompressor().compress((text + "}").encode()), row_id])
    conn.execute("update meta set value = '9' where key = 'schema_version'")
    conn.commit()
    conn.close()


def make_v8(db: str) -> None:
    """Turn a database into what schema 8 stored: change values as text, zlib deltas."""
    make_v9(db)
    conn = sqlite3.connect(db)
    for row_id, old, new in conn.execute("select id, old, new from changes").fetchall():
        conn.execute("update changes set old = ?, new = ? where id = ?",
                     [unpack_value(conn, old), unpack_value(conn, new), row_id])
    for row_id, delta in conn.execute(
            "select id, delta from snapshots where delta is not null").fetchall():
        conn.execute("update snapshots set delta = ? where id = ?",
                     [zlib.compress(decompress(conn, delta), 6), row_id])
    conn.execute("update meta set value = '8' where key = 'schema_version'")
    conn.commit()
    conn.close()


def _values_of(db: str) -> list[tuple[Any, ...]]:
    """Return every stored change as read back (long values unpacked), sorted."""
    conn = sqlite3.connect(db)
    return sorted((c.nct_id, c.path, c.kind, c.detected_at, json.dumps(c.old), json.dumps(c.new))
                  for c in query_changes(conn, ChangeFilter()))


def _killed_migrations(db: str, tmp_path: Path, seed: int) -> Iterator[str]:
    """Yield three copies of a database, each migrated by a `check` killed once, then rerun."""
    rng = random.Random(seed)
    for trial in range(3):
        crashed = str(tmp_path / f"crashed{trial}.db")
        copy_db(db, crashed)
        assert sqlite3.connect(crashed).execute(
            "select value from meta where key = 'schema_version'").fetchone()[0] != str(
            SCHEMA_VERSION)
        kill_after(trialdiff_process(crashed, "check"), rng.uniform(0.2, 0.9))  # it migrates
        assert trialdiff_process(crashed, "check").wait() == 0
        yield crashed


def test_a_v8_database_compresses_long_values_in_place_and_a_killed_migration_resumes(
    tmp_path: Path,
) -> None:
    day1 = write_day(tmp_path / "d1", clones(224))
    edited = clones(224)
    for number, record in enumerate(edited):
        if number % 2 == 0:  # a long value: the eligibility criteria, rewritten
            module = record["protocolSection"]["eligibilityModule"]
            module["criteria"] = module.get("criteria", "") + "\n\n" + "Revised. " * 150
    day2 = write_day(tmp_path / "d2", edited)
    v8 = str(tmp_path / "v8.db")
    assert run(v8, "import", "--at", "2026-05-11", str(day1))[0] == 0
    assert run(v8, "import", "--at", "2026-05-12", str(day2))[0] == 0
    expected = _values_of(v8)
    assert len(expected) >= 112
    make_v8(v8)
    conn = sqlite3.connect(v8)
    assert conn.execute("select count(*) from changes where typeof(new) = 'blob'").fetchone() \
        == (0,)
    conn.close()
    for crashed in _killed_migrations(v8, tmp_path, seed=9):
        assert _values_of(crashed) == expected
        conn = sqlite3.connect(crashed)
        assert conn.execute("select value from meta where key = 'schema_version'").fetchone() \
            == (str(SCHEMA_VERSION),)
        kinds = dict(conn.execute("select typeof(new), count(*) from changes "
                                  "where typeof(new) = 'blob' or length(new) > 1024 group by 1"))
        assert kinds == {"blob": 112}  # each rewritten criteria, compressed; no long text left
        deltas = [delta for (delta,) in conn.execute(
            "select delta from snapshots where delta is not null")]
        assert deltas and all(delta.startswith(ZSTD_MAGIC) for delta in deltas)


def test_a_v9_database_stores_shared_values_once_and_a_killed_migration_resumes(
    tmp_path: Path,
) -> None:
    v9 = str(tmp_path / "v9.db")
    _, day2 = post_results(tmp_path, v9, 200)
    expected_values, expected_fields = _values_of(v9), all_fields(v9)
    shared = shared_paths(sqlite3.connect(v9))
    assert len(shared) == len(sorted(day2.iterdir())[::2]) > 50
    make_v9(v9)
    assert shared_paths(sqlite3.connect(v9)) == {}
    assert all_fields(v9) == expected_fields  # the same history, every value in its delta
    for crashed in _killed_migrations(v9, tmp_path, seed=10):
        assert _values_of(crashed) == expected_values
        assert all_fields(crashed) == expected_fields
        assert shared_paths(sqlite3.connect(crashed)) == shared  # as the current code stores them


def _gate_cut(line: bytes) -> tuple[bytes, bytes]:
    """Return a compact record's bytes around its derivedSection value, as the gate cuts them."""
    start, end = line.rfind(b'"derivedSection":'), line.rfind(b',"')
    assert 0 < start < end and line[start - 1 : start] == b","
    return line[:start], line[end:]


def _gates(db: str) -> dict[str, str]:
    """Return each study's stored gate."""
    return dict(sqlite3.connect(db).execute("select nct_id, raw_hash from studies"))


def test_a_v10_database_rehashes_its_gates_in_place_and_a_killed_migration_resumes(
    tmp_path: Path,
) -> None:
    # Three kinds of input: the registry's compact JSON (the byte gate), pretty files (the gate
    # of the record as stored), and compact JSON with non-ASCII escaped, whose bytes the
    # stored record does not keep: the migration cannot find such a gate, and leaves it.
    records = {r["protocolSection"]["identificationModule"]["nctId"]: r
               for r in clones(240, edit=True)}
    ids = sorted(records)
    lines = {n: orjson.dumps(records[n]) for n in ids[:80]}
    lines |= {n: json.dumps(records[n], separators=(",", ":")).encode() for n in ids[160:]}
    pretty = {n: orjson.dumps(no_derived(records[n])) for n in ids[80:160]}  # as stored
    day1 = write_day(tmp_path / "d1", clones(240))
    day2 = write_day(tmp_path / "d2", [records[n] for n in pretty])
    (day2 / "registry.ndjson").write_bytes(b"\n".join(lines.values()) + b"\n")
    v10 = str(tmp_path / "v10.db")
    assert run(v10, "import", "--at", "2026-05-11", str(day1))[0] == 0
    assert run(v10, "import", "--at", "2026-05-12", str(day2))[0] == 0
    current = _gates(v10)
    assert current == {  # the line end is no part of the gate
        **{n: xxhash.xxh3_128_hexdigest(b"".join(_gate_cut(line))) for n, line in lines.items()},
        **{n: xxhash.xxh3_128_hexdigest(stored) for n, stored in pretty.items()},
    }
    # Schema 10's gates: blake2b of the same bytes, an NDJSON line's end included.
    old = {n: hashlib.blake2b(b"".join(_gate_cut(line)) + b"\n", digest_size=16).hexdigest()
           for n, line in lines.items()}
    old |= {n: hashlib.blake2b(stored, digest_size=16).hexdigest()
            for n, stored in pretty.items()}
    conn = sqlite3.connect(v10)
    conn.executemany("update studies set raw_hash = ? where nct_id = ?",
                     [(gate, n) for n, gate in old.items()])
    conn.execute("update meta set value = '10' where key = 'schema_version'")
    conn.commit()
    conn.close()
    unfound = {n for n, line in lines.items() if line != orjson.dumps(records[n])}
    assert 10 < len(unfound) < 80  # real records: many hold non-ASCII text
    for crashed in _killed_migrations(v10, tmp_path, seed=11):
        gates = _gates(crashed)
        assert {n for n in ids if gates[n] != current[n]} == unfound
        assert all(gates[n] == old[n] for n in unfound)
        stored_at = dict(sqlite3.connect(crashed).execute(
            "select nct_id, observed_at from records"))
        # The next day's same records: all unchanged; only a left gate's study takes the full
        # path (its record is stored again), and then holds the gate a fresh import gives.
        code, out, _ = run(crashed, "import", "--at", "2026-05-13", str(day2))
        assert code == 0 and "0 changed, 0 changes" in out
        assert _gates(crashed) == current
        after = dict(sqlite3.connect(crashed).execute("select nct_id, observed_at from records"))
        assert {n for n in ids if after[n] != stored_at[n]} == unfound


def test_a_v11_database_compresses_its_dictionaries_in_place(tmp_path: Path) -> None:
    day1 = write_day(tmp_path / "d1", clones(224))
    day2 = write_day(tmp_path / "d2", clones(224, edit=True))
    v11 = str(tmp_path / "v11.db")
    assert run(v11, "import", "--at", "2026-05-11", str(day1))[0] == 0
    assert run(v11, "import", "--at", "2026-05-12", str(day2))[0] == 0
    expected = changes_of(v11)
    conn = sqlite3.connect(v11)
    ids = [nct_id for (nct_id,) in conn.execute("select nct_id from records order by nct_id")]
    records = [latest_record(conn, nct_id) for nct_id in ids]
    (stored,) = conn.execute("select dictionary from dictionaries").fetchone()
    dictionary = codec.dictionary_bytes(stored)
    conn.execute("update dictionaries set dictionary = ?", [dictionary])  # as schema 11 kept it
    conn.execute("update meta set value = '11' where key = 'schema_version'")
    conn.commit()
    conn.close()
    for crashed in _killed_migrations(v11, tmp_path, seed=12):
        conn = sqlite3.connect(crashed)
        (migrated,) = conn.execute("select dictionary from dictionaries").fetchone()
        assert [latest_record(conn, nct_id) for nct_id in ids] == records
        conn.close()
        assert migrated == stored and codec.dictionary_bytes(migrated) == dictionary
        assert changes_of(crashed) == expected
        assert run(crashed, "check")[0] == 0


def _schema_12_neutral_text(text: str, markup: str) -> str:
    """Reduce a text to its words as schema 12 did: a `<...>` span dropped in either markup."""
    text = re.sub(r"(?<!\S)\d+[.)](?!\S)", " ", html.unescape(re.sub(r"<[^>]*>", " ", text)))
    return " ".join(re.findall(r"\w+", text))


def test_a_v12_database_recomputes_its_markup_seams_and_a_killed_migration_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each real record's history holds it in HTML; a sync saw it in Markdown, every third
    # with one more participant enrolled: that is the one real change at a seam.
    records = real_records()
    current = copy.deepcopy(records)
    for record in current[::3]:
        record["protocolSection"]["designModule"]["enrollmentInfo"]["count"] += 1
    ids = [record["protocolSection"]["identificationModule"]["nctId"] for record in records]
    v12, fresh = str(tmp_path / "v12.db"), str(tmp_path / "fresh.db")
    with StandinAPI(current) as server:
        for record in records:
            server.set_history(study_id(record), [("2020-01-02", html_record(record))])
        for db in (v12, fresh):
            with monkeypatch.context() as patch:
                if db == v12:
                    patch.setattr(diff, "neutral_text", _schema_12_neutral_text)
                for command in (("sync", *ids, "--at", "2026-05-11T06:00:00Z"),
                                ("backfill", *ids)):
                    code, _, err = run(db, *command, "--api", server.base_url, "--delay", "0")
                    assert code == 0, err
    expected = changes_of(fresh)
    assert {(path, kind) for _, path, kind, *_ in expected} == {
        ("design.enrollmentCount", "changed")}
    assert len(changes_of(v12)) > len(expected)  # the criteria schema 12 read as changed
    conn = sqlite3.connect(v12)
    conn.execute("update meta set value = '12' where key = 'schema_version'")
    conn.commit()
    conn.close()
    for crashed in _killed_migrations(v12, tmp_path, seed=13):
        assert changes_of(crashed) == expected
        assert run(crashed, "check")[0] == 0


@pytest.mark.parametrize("name", ["v1.db", "v2-early.db"])
def test_the_first_versions_databases_upgrade_to_what_today_imports(
        tmp_path: Path, name: str) -> None:
    # Schema 2 changed three times under one number, and a step reads the tables as today's
    # code does: such a file stopped at `no such column: markup`, after some steps had
    # committed, and the old trialdiff could no longer read it either.
    old = str(tmp_path / name)
    shutil.copy(OLD_SCHEMAS / name, old)
    fresh = str(tmp_path / "fresh.db")
    for day in ("2024-06-14", "2025-07-07"):
        folder = tmp_path / day
        folder.mkdir()
        for nct_id in ("NCT04642755", "NCT06060392"):
            shutil.copy(SAMPLE / day / f"{nct_id}.json", folder)
        assert run(fresh, "import", "--at", f"{day}T00:00:00Z", str(folder))[0] == 0
    code, out, err = run(old, "check")
    assert (code, out) == (0, "check: 2 studies, 3 snapshots, 6 changes verified; 0 problems\n")
    assert "upgraded" in err
    assert changes_of(old) == changes_of(fresh)
    for args in (("changes", "--format", "json"), ("recent", "NCT06060392", "--days", "400",
                                                    "--as-of", "2025-07-07")):
        assert run(old, *args)[:2] == run(fresh, *args)[:2]
    # And it goes on as any database: the later day again is seen, unchanged.
    assert run(old, "import", "--at", "2025-07-08T00:00:00Z", str(tmp_path / "2025-07-07"))[0] == 0
    assert changes_of(old) == changes_of(fresh)


def _results_days(count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return two days of the real record with the largest adverse-events table, under new ids.

    Its table's rows are three times over (a large trial's size), and the second day edits a
    term and two counts: edits DeepDiff read as rows added, and the walk as what moved.
    """
    record = max((r for r in real_records() if "adverseEventsModule" in r.get(
        "resultsSection", {})), key=lambda r: len(json.dumps(r["resultsSection"])))
    first, second = [], []
    for number in range(count):
        day1 = clone_study(record, number, False)
        module = day1["resultsSection"]["adverseEventsModule"]
        for key in ("otherEvents", "seriousEvents"):
            module[key] = json.loads(json.dumps(module[key] * 3))  # copies, not one row thrice
        day2 = copy.deepcopy(day1)
        events = day2["resultsSection"]["adverseEventsModule"]
        events["otherEvents"][5]["term"] = "Something else entirely"
        events["otherEvents"][5]["stats"][0]["numEvents"] += 3
        events["seriousEvents"][2]["stats"][0]["numAffected"] += 1
        first.append(day1)
        second.append(day2)
    return first, second


def test_a_v13_database_walks_the_values_deepdiff_is_no_longer_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _results_days(40)
    days = [write_day(tmp_path / "d1", first), write_day(tmp_path / "d2", second)]
    v13, fresh = str(tmp_path / "v13.db"), str(tmp_path / "fresh.db")
    for db in (v13, fresh):
        with monkeypatch.context() as patch:
            if db == v13:  # schema 13 gave DeepDiff every value
                patch.setattr(diff, "MAX_DEEPDIFF_NODES", 10**9)
                patch.setattr(diff, "MAX_DEEPDIFF_LISTS", 10**9)
            for at, day in zip(("2026-05-11", "2026-05-12"), days, strict=True):
                assert run(db, "import", "--at", at, str(day))[0] == 0

    def details(db: str) -> list[tuple[Any, ...]]:
        return sorted(sqlite3.connect(db).execute(
            "select nct_id, path, detail from changes where path = 'results.adverseEvents'"))

    expected = details(fresh)
    assert len(expected) == 40 and all('"op":"changed"' in d for _, _, d in expected)
    assert details(v13) != expected  # DeepDiff's rows added, where the walk says what moved
    conn = sqlite3.connect(v13)
    conn.execute("update meta set value = '13' where key = 'schema_version'")
    conn.commit()
    conn.close()
    for crashed in _killed_migrations(v13, tmp_path, seed=14):
        assert details(crashed) == expected
        assert changes_of(crashed) == changes_of(fresh)
        assert run(crashed, "check")[0] == 0


def test_a_stopped_upgrade_marks_the_file_newer_and_readers_wait_for_it_to_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe: steps commit as they go, so a stopped upgrade left the old number over rows
    # already converted, and the older trialdiff that made the file failed on every command
    # ("unexpected ZstdError"). The new number goes first now, beside where to resume.
    from trialdiff import upgrades

    db = str(tmp_path / "v13.db")
    assert run(db, "import", str(SAMPLE))[0] == 0
    expected = changes_of(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("update meta set value = '13' where key = 'schema_version'")

    def stopped(db: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(upgrades, "rediff_beyond_deepdiff", stopped)
        assert run(db, "check")[0] == 130
    meta = dict(conn.execute("select key, value from meta"))
    assert (meta["schema_version"], meta["upgrading_from"]) == (str(SCHEMA_VERSION), "13")
    code, out, err = run(db, "changes")
    assert (code, out) == (1, "")
    assert err == (f"trialdiff: error: {db}: its upgrade from database schema version 13 is under "
                   "way or was stopped; wait for it, or run `trialdiff check` (or any writing "
                   "command) once to finish it\n")
    code, out, err = run(db, "check")
    assert (code, err) == (0, f"trialdiff: upgraded {db} from schema version 13 to "
                              f"{SCHEMA_VERSION}\n")
    assert "upgrading_from" not in dict(conn.execute("select key, value from meta"))
    assert changes_of(db) == expected
