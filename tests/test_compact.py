"""`trialdiff compact`: every blob compressed again, harder; the same bytes read back."""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from conftest import (
    SAMPLE,
    clones,
    copy_db,
    kill_after,
    records_leaves,
    run,
    trialdiff_process,
    write_day,
)
from test_lock import lock_holder
from test_records import REAL_RECORDS

import trialdiff
from trialdiff import codec, compact
from trialdiff.compact import PROGRESS
from trialdiff.query import ChangeFilter, query_changes, transaction
from trialdiff.schema import open_db

BLOBS = ("select nct_id, record, base from records order by nct_id",
         "select id, old, new from changes order by id",
         "select id, delta from snapshots order by id")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a database of 224 real records over two days: edits, long values, deltas."""
    folder = tmp_path_factory.mktemp("history")
    edited = clones(224, edit=True)
    for number, record in enumerate(edited):
        if number % 4 == 1:  # a long value: the eligibility criteria, rewritten
            module = record["protocolSection"]["eligibilityModule"]
            module["criteria"] = module.get("criteria", "") + "\n\n" + "Revised. " * 150
    db = str(folder / "history.db")
    assert run(db, "import", "--at", "2026-05-11", str(write_day(folder / "d1",
                                                                  clones(224))))[0] == 0
    assert run(db, "import", "--at", "2026-05-12", str(write_day(folder / "d2", edited)))[0] == 0
    return Path(db)


@pytest.fixture()
def db(history: Path, tmp_path: Path) -> str:
    """Return a fresh copy of the two-day database."""
    copy = tmp_path / "copy.db"
    copy_db(history, copy)
    return str(copy)


def contents(db: str) -> str:
    """Return a digest of everything a database reads back: records, changes, snapshot deltas."""
    conn = sqlite3.connect(db)
    digest = hashlib.sha256()
    for nct_id, record, base in conn.execute(BLOBS[0]):
        first = codec.decompress(conn, base) if base is not None else b""
        digest.update(nct_id.encode() + first + codec.decompress(conn, record, first or None))
    for row_id, old, new in conn.execute(BLOBS[1]):
        digest.update(json.dumps([row_id, codec.unpack_value(conn, old),
                                  codec.unpack_value(conn, new)]).encode())
    for row_id, delta in conn.execute(BLOBS[2]):
        digest.update(str(row_id).encode() + (codec.decompress(conn, delta)
                                              if isinstance(delta, bytes) else b"-"))
    for change in query_changes(conn, ChangeFilter()):
        digest.update(orjson.dumps(change.as_dict(), option=orjson.OPT_SORT_KEYS))
    conn.close()
    return digest.hexdigest()


def blobs(db: str) -> list[tuple[object, ...]]:
    """Return every stored record, change value and snapshot delta as stored."""
    conn = sqlite3.connect(db)
    try:
        return [row for query in BLOBS for row in conn.execute(query)]
    finally:
        conn.close()


def stored_bytes(db: str) -> int:
    """Return the bytes of every stored blob."""
    return sum(len(cell) for row in blobs(db) for cell in row if isinstance(cell, bytes))


def test_compacting_keeps_what_reads_back_and_shrinks_the_file(db: str) -> None:
    before = contents(db)
    stored_before = stored_bytes(db)
    conn = sqlite3.connect(db)
    (values,) = conn.execute("select count(*) from changes where typeof(new) = 'blob' "
                             "or typeof(old) = 'blob'").fetchone()
    (deltas,) = conn.execute("select count(*) from snapshots "
                             "where typeof(delta) = 'blob'").fetchone()
    conn.close()
    assert values >= 56 and deltas >= 56  # the history holds every kind of blob
    with trialdiff.open(db) as tracker:
        done = tracker.compact()
        assert tracker.check() == []
    assert contents(db) == before
    # Level 19 beats the runs' levels on nearly every blob of real records; a blob it does
    # not shrink stays as it was.
    assert (done.change_values, done.snapshot_deltas) == (values, deltas)
    assert 200 <= done.records <= 224
    # The blobs shrink by a fifth here (224 clones of 28 records hold little); so little data
    # mostly fills pages' fixed overhead, so the file shrinks less.
    assert stored_bytes(db) < 0.85 * stored_before
    assert done.bytes_after == Path(db).stat().st_size < done.bytes_before
    assert not Path(db + "-wal").exists() or Path(db + "-wal").stat().st_size == 0


def _next_fit_pages(sizes: list[int], room: int) -> int:
    """Return the pages rows of these sizes fill when each page is filled in order."""
    pages, used = 0, room
    for size in sizes:
        if used + size > room:
            pages, used = pages + 1, 0
        used += size
    return pages


def test_packing_fills_the_records_pages_as_sqlite_lays_them_out(tmp_path: Path) -> None:
    # Records of a real registry's sizes (zstd keeps 1-6 KB of a record; a few spill past a
    # page): in arrival order a 4 KB page holds one and leaves the rest empty. The database is
    # filled by hand, not by a run, which would pack it as it ends.
    path = str(tmp_path / "sizes.db")
    trialdiff.open(path).close()
    rng = random.Random(3)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executemany(
        "insert into records (nct_id, observed_at, record, base) values (?, ?, ?, ?)",
        [(f"NCT{number:08d}", "2026-05-11T00:00:00.000Z",
          rng.randbytes(rng.choice([rng.randint(200, 1500), rng.randint(1500, 6000)])),
          rng.randbytes(rng.randint(1000, 3000)) if number % 5 == 0 else None)
         for number in range(600)])
    conn.execute("vacuum")
    stored = conn.execute("select nct_id, record, base from records order by nct_id").fetchall()
    conn.close()
    _, leaf_bytes, unused = records_leaves(path)
    assert unused > 0.2 * leaf_bytes
    db = open_db(path)
    with transaction(db):
        compact._pack_records(db)
    db.execute("vacuum")
    db.close()
    pages, leaf_bytes, unused = records_leaves(path)
    # Each page keeps room for its records' first edits, and little more. A record too big to
    # leave that room has a page of its own, and VACUUM fills a page while rows fit, so a run
    # that starts with a small row may top up the page before it (1 page in 220 here).
    assert unused < (compact.EDIT_ROOM / 4096 + 0.02) * leaf_bytes
    conn = sqlite3.connect(path)
    kept, shared = conn.execute(f"select sum(unused >= {compact.EDIT_ROOM}), count(*) "
                                "from dbstat where name = 'records' and pagetype = 'leaf' "
                                "and ncell > 1").fetchone()
    conn.close()
    assert kept >= 0.95 * shared
    conn = sqlite3.connect(path)
    assert conn.execute("select nct_id, record, base from records order by nct_id").fetchall() \
        == stored
    # The size model is SQLite's file format, rounded up by at most the rowid's bytes: the
    # cells and their pointers on the leaves are what it says, to a few bytes a row.
    columns = [row[1] for row in conn.execute("pragma table_info(records)")]
    measured = ", ".join(f"typeof({c}), length(cast({c} as blob))" for c in columns)
    rows = [list(zip(row[::2], row[1::2], strict=True))
            for row in conn.execute(f"select {measured} from records")]
    (page_size,) = conn.execute("pragma page_size").fetchone()
    conn.close()
    modelled = sum(compact._cell_bytes(row, page_size) for row in rows)
    used = leaf_bytes - 8 * pages - unused
    assert used <= modelled <= used + 4 * len(rows)


def test_the_packed_order_fills_pages_as_best_fit_decreasing_does() -> None:
    rng = random.Random(5)
    room = 4088
    for _ in range(20):
        sizes = [rng.choice([rng.randint(40, 900), rng.randint(900, 4000)]) for _ in range(500)]
        order = compact._packed_order([(size, rowid) for rowid, size in enumerate(sizes)], room)
        assert sorted(order) == list(range(len(sizes)))
        packed = _next_fit_pages([sizes[rowid] for rowid in order], room)
        bound = -(-sum(sizes) // room)
        assert packed <= 11 / 9 * bound + 1 < _next_fit_pages(sizes, room)


def test_a_second_compaction_rewrites_nothing(db: str) -> None:
    with trialdiff.open(db) as tracker:
        tracker.compact()
        stored = blobs(db)
        again = tracker.compact()
    assert (again.records, again.change_values, again.snapshot_deltas) == (0, 0, 0)
    assert blobs(db) == stored


def test_a_compaction_resumes_at_the_place_it_kept(db: str, tmp_path: Path) -> None:
    records = blobs(db)[:224]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("insert into meta (key, value) values (?, ?)",
                     [PROGRESS, json.dumps(["changes", 0])])
    conn.close()
    with trialdiff.open(db) as tracker:
        done = tracker.compact()
    assert done.records == 0 and done.change_values > 0
    assert blobs(db)[:224] == records
    assert sqlite3.connect(db).execute("select value from meta where key = ?",
                                       [PROGRESS]).fetchone() is None


def test_the_compactor_is_exact_from_many_threads() -> None:
    raw = [orjson.dumps(record) for record in REAL_RECORDS]
    conn = sqlite3.connect(":memory:")
    conn.execute("create table dictionaries (id integer primary key, trained_at text, "
                 "samples integer, dictionary blob)")
    assert codec.train(conn, raw * 3, "2026-05-11T00:00:00Z") == 1
    compactor = codec.Compactor(conn)
    alone = [compactor.compress(data) for data in raw]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(compactor.compress, raw)) == alone
    against = compactor.compress(raw[1], base=raw[0])
    assert codec.decompress(conn, against, raw[0]) == raw[1]
    assert [codec.decompress(conn, blob) for blob in alone] == raw
    assert sum(map(len, alone)) < 0.95 * sum(len(codec.compress(conn, data)) for data in raw)


def test_readers_read_on_while_it_compacts(db: str) -> None:
    before = contents(db)
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    reader.execute("begin")
    seen = reader.execute("select count(*), sum(length(record)) from records").fetchone()
    assert run(db, "compact")[0] == 0
    # Its read transaction still sees the blobs it began with; a new one sees the compacted.
    assert reader.execute("select count(*), sum(length(record)) from records").fetchone() == seen
    reader.execute("commit")
    now = reader.execute("select count(*), sum(length(record)) from records").fetchone()
    reader.close()
    assert now[0] == seen[0] and now[1] < seen[1]
    assert contents(db) == before


def test_the_command_says_what_it_did(db: str) -> None:
    code, out, err = run(db, "compact")
    assert code == 0 and err == ""
    assert re.fullmatch(r"compact: 2\d\d records, 56 change values and 113 snapshot deltas "
                        r"recompressed; 0\.\d\d MB -> 0\.\d\d MB\n", out)


def test_compacting_no_database_is_an_error_and_creates_none(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    code, out, err = run(str(missing), "compact")
    assert (code, out) == (1, "")
    assert err == f"trialdiff: error: no database at {missing}: run `trialdiff import` or " \
                  "`trialdiff sync`\n"
    assert list(tmp_path.iterdir()) == []


def test_compact_exits_75_while_another_process_writes(db: str) -> None:
    stored = blobs(db)
    with lock_holder(db) as holder:
        code, out, err = run(db, "compact")
    assert code == 75 and out == "" and f"pid {holder.pid} (import)" in err
    assert blobs(db) == stored


def test_a_killed_compaction_leaves_a_sound_database_and_a_rerun_finishes(
    db: str, tmp_path: Path,
) -> None:
    before = contents(db)
    reference = str(tmp_path / "reference.db")
    copy_db(db, reference)
    assert run(reference, "compact")[0] == 0
    compacted = blobs(reference)
    midway = 0
    for trial, delay in enumerate((0.0, 0.004, 0.012)):
        crashed = str(tmp_path / f"crashed{trial}.db")
        copy_db(db, crashed)
        process = trialdiff_process(crashed, "compact")
        # Killed once it has committed a batch, or a moment after: mid-compaction.
        while process.poll() is None and not progress(crashed):
            time.sleep(0.002)
        kill_after(process, delay)
        conn = sqlite3.connect(crashed)
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        conn.close()
        midway += progress(crashed)
        assert contents(crashed) == before
        assert run(crashed, "compact")[0] == 0
        assert blobs(crashed) == compacted
        assert run(crashed, "check")[0] == 0
    assert midway >= 2  # most kills landed between the first batch and the end


def progress(db: str) -> bool:
    """Tell whether a compaction left its place in the database (it is under way)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("select 1 from meta where key = ?", [PROGRESS]).fetchone() is not None
    except sqlite3.OperationalError:  # the file is being created or migrated
        return False
    finally:
        conn.close()


def test_without_room_a_first_run_skips_its_pack_and_compact_refuses_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A VACUUM that fills the disk half way leaves a WAL no checkpoint can empty (it needs room
    # to copy its frames back): the run said ok, and every later write failed.
    path = str(tmp_path / "tight.db")
    real = compact.shutil.disk_usage
    monkeypatch.setattr(compact.shutil, "disk_usage",
                        lambda folder: real(folder)._replace(free=5 << 20))
    code, out, err = run(path, "import", "--summary", str(SAMPLE))
    assert (code, err) == (0, "") and out.startswith("import: 6 studies checked")
    conn = sqlite3.connect(path)
    assert conn.execute("select status from runs").fetchall() == [("ok",)]
    before = Path(path).read_bytes()
    code, out, err = run(path, "compact")
    assert (code, out) == (1, "")
    assert re.fullmatch(r"trialdiff: error: compact needs about \d+ MB free beside the "
                        r"database, as it rewrites the file, and 5 MB are free: make room, "
                        r"then run it again\n", err), err
    assert conn.execute("select count(*) from meta where key = ?", [PROGRESS]).fetchone() == (0,)
    assert Path(path).read_bytes() == before  # nothing rewritten
    monkeypatch.undo()
    needed, free = compact.room_to_pack(open_db(path))
    assert needed == 2 * compact.file_bytes(open_db(path)) + (8 << 20) and free > 5 << 20
    assert run(path, "compact")[0] == 0


def test_room_allowed_at_the_start_is_not_refused_at_the_end_for_the_rewrites_wal(
    db: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A probe's tight disk: compact rewrote every blob, then refused to pack (its WAL counted
    # as used), exit 1 and the run `failed`, though all was written.
    needed = compact.room_to_pack(open_db(db))[0]
    real = compact.shutil.disk_usage
    wal = Path(db + "-wal")
    # A disk with room for the pack and 64 KB more, less what the WAL takes, as a real one.
    monkeypatch.setattr(compact.shutil, "disk_usage", lambda folder: real(folder)._replace(
        free=needed + (64 << 10) - (wal.stat().st_size if wal.exists() else 0)))
    assert run(db, "compact")[0] == 0


@pytest.mark.parametrize("progress", ["garbage", '["nosuch", 5]', '["records"]', "null",
                                      '["changes", "abc"]'])
def test_a_progress_row_that_names_no_place_starts_over(db: str, progress: str) -> None:
    # Each stopped every later compaction with "unexpected JSONDecodeError" (or ValueError,
    # TypeError) until the row was deleted by hand; a text key skipped every change silently.
    before = contents(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("insert into meta (key, value) values (?, ?)", [PROGRESS, progress])
    conn.close()
    code, out, err = run(db, "compact")
    assert (code, err) == (0, "") and re.match(r"compact: 2\d\d records, 56 change values", out)
    assert contents(db) == before


def test_a_damaged_row_stops_compact_with_its_table_and_key(db: str) -> None:
    conn = sqlite3.connect(db)
    nct_id = conn.execute("select min(nct_id) from records").fetchone()[0]
    snapshot_id = conn.execute("select min(id) from snapshots where typeof(delta) = 'blob' "
                               "and nct_id != ?", [nct_id]).fetchone()[0]
    with conn:
        conn.execute("update snapshots set delta = x'28b52ffd00' where id = ?", [snapshot_id])
        conn.execute("update records set record = NULL where nct_id = ?", [nct_id])
    conn.close()
    code, out, err = run(db, "compact")
    assert (code, out) == (1, "")
    assert err == (f"trialdiff: error: records row nct_id = {nct_id!r}: a stored blob is NULL: "
                   "the file is damaged (`trialdiff check` lists every damaged row)\n")
    code, out, _ = run(db, "check")  # and check names both, the rest of the file checked
    assert code == 1 and f"problem: {nct_id}: its stored record cannot be read: " in out
    assert "'s delta cannot be read: a stored blob does not decompress" in out


@pytest.mark.parametrize(("damage", "says"), [
    ("delete from dictionaries", "a stored blob needs compression dictionary 1, which the "
                                 "dictionaries table does not hold: the file is damaged"),
    ("update dictionaries set dictionary = NULL", "compression dictionary 1 cannot be read"),
])
def test_a_lost_dictionary_is_named(db: str, damage: str, says: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(damage)
    conn.close()
    code, out, err = run(db, "check")
    assert (code, err) == (1, "")
    assert says in out and "unexpected" not in out
    code, out, err = run(db, "compact")
    assert (code, out) == (1, "") and says in err and "unexpected" not in err


def test_compacted_change_values_keep_their_checksum(db: str) -> None:
    with trialdiff.open(db) as tracker:
        assert tracker.compact().change_values > 0
    conn = sqlite3.connect(db)
    frames = [codec.zstandard.get_frame_parameters(cell) for row in conn.execute(
        "select old, new from changes") for cell in row if isinstance(cell, bytes)]
    deltas = [codec.zstandard.get_frame_parameters(cell) for (cell,) in conn.execute(
        "select delta from snapshots where typeof(delta) = 'blob'")]
    assert frames and all(frame.has_checksum for frame in frames)
    assert deltas and not any(frame.has_checksum for frame in deltas)  # check's hashes guard
