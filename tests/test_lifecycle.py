"""A writing run's lifecycle (WriteRun): its lock, its row in `runs`, its sinks and clients,
and the pack that ends a first run."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlite_utils
from conftest import SAMPLE, clones, records_leaves, run, write_day

import trialdiff
from trialdiff import compact
from trialdiff.errors import BusyError
from trialdiff.ingest import RunTotals
from trialdiff.lifecycle import Run, WriteRun, finish_run, run_status, start_run
from trialdiff.lock import WriteLock
from trialdiff.model import Outcome, Resumed
from trialdiff.schema import open_db

STARTED = "2026-05-11T00:00:00.000Z"


class Seen:
    """A sink, or a client, that keeps what it is shown and counts its closings."""

    def __init__(self, fail_to_close: bool = False) -> None:
        self.shown: list[Outcome] = []
        self.finished: list[Run] = []
        self.closed = 0
        self.fail_to_close = fail_to_close

    def show(self, outcome: Outcome) -> None:
        """Keep an outcome."""
        self.shown.append(outcome)

    def finish(self, run: Run) -> None:
        """Keep the finished run."""
        self.finished.append(run)

    def close(self) -> None:
        """Count the closing, then fail if told to."""
        self.closed += 1
        if self.fail_to_close:
            raise OSError("the pipe is gone")


def opener(db_path: str) -> Callable[[], sqlite_utils.Database]:
    """Return what opens (creates) the database, as a WriteRun is given it."""
    return lambda: open_db(db_path)


def runs(db_path: str) -> list[tuple[str, str]]:
    """Return every run's command and status, oldest first."""
    return sqlite3.connect(db_path).execute("select command, status from runs order by id"
                                            ).fetchall()


def test_a_runs_status_is_its_totals() -> None:
    def totals(checked: int, failed: int) -> RunTotals:
        made = RunTotals(checked=checked)
        for number in range(failed):
            made.fail(f"input{number}", "unreadable")
        return made

    assert run_status(totals(3, 0), interrupted=False) == "ok"
    assert run_status(totals(0, 0), interrupted=False) == "ok"  # an empty input is no failure
    assert run_status(totals(3, 1), interrupted=False) == "partial"
    assert run_status(totals(0, 2), interrupted=False) == "failed"
    assert {run_status(totals(c, f), interrupted=True) for c, f in ((3, 0), (0, 2))} == {
        "interrupted"}


def test_a_row_left_running_is_marked_interrupted_and_the_sinks_are_told(db_path: str) -> None:
    db = open_db(db_path)
    start_run(db, "sync", STARTED)  # what a killed process leaves behind
    db.close()
    seen = Seen()
    with WriteRun(db_path, "import", opener(db_path), sinks=[seen]) as run:
        assert runs(db_path) == [("sync", "interrupted"), ("import", "running")]
    assert seen.shown == [Resumed(1)]
    assert runs(db_path) == [("sync", "interrupted"), ("import", "ok")]
    assert [r.id for r in seen.finished] == [run.id] == [2] and seen.closed == 1


def test_the_lock_is_held_for_the_run_and_released_however_it_ends(db_path: str) -> None:
    seen = Seen()
    with pytest.raises(KeyboardInterrupt), WriteRun(db_path, "import", opener(db_path),
                                                    sinks=[seen]):
        with pytest.raises(BusyError), WriteLock(db_path, command="sync"):
            pass  # another writer is refused while the run holds the lock
        raise KeyboardInterrupt  # Ctrl-C
    assert runs(db_path) == [("import", "interrupted")]
    assert seen.finished == [] and seen.closed == 1  # finish is for a committed run only
    with WriteRun(db_path, "sync", opener(db_path)):  # the lock was let go
        pass
    assert runs(db_path) == [("import", "interrupted"), ("sync", "ok")]


def test_an_error_recorded_under_its_input_is_counted_once(db_path: str) -> None:
    lifecycle = WriteRun(db_path, "sync", opener(db_path))
    error = OSError("connection reset")
    with pytest.raises(OSError), lifecycle as run:
        run.record("page 3", error)
        raise error
    assert lifecycle.result is not None
    assert (lifecycle.result.status, lifecycle.result.errors) == (
        "failed", ({"input": "page 3", "error": "connection reset"},))
    assert sqlite3.connect(db_path).execute("select failed, errors from runs").fetchone() == (
        1, '[{"input": "page 3", "error": "connection reset"}]')


def test_a_sink_or_client_failing_to_close_does_not_keep_the_others_open(db_path: str) -> None:
    things = [Seen(fail_to_close=True), Seen(), Seen(fail_to_close=True), Seen()]
    with WriteRun(db_path, "import", opener(db_path), sinks=things[:2], clients=things[2:]):
        pass
    assert [thing.closed for thing in things] == [1, 1, 1, 1]
    assert runs(db_path) == [("import", "ok")]


def test_a_database_that_cannot_be_opened_frees_the_lock_and_closes_the_clients(
    db_path: str,
) -> None:
    def broken() -> sqlite_utils.Database:
        raise sqlite3.OperationalError("disk I/O error")

    client, sink = Seen(), Seen()
    with pytest.raises(sqlite3.OperationalError), WriteRun(db_path, "import", broken,
                                                           sinks=[sink], clients=[client]):
        pass
    assert (client.closed, sink.closed, sink.finished) == (1, 1, [])
    with WriteLock(db_path, command="import"):  # free again, without waiting
        pass


def test_finish_run_keeps_the_data_release_and_the_first_thousand_errors(db_path: str) -> None:
    db = open_db(db_path)
    run_id = start_run(db, "sync", STARTED)
    totals = RunTotals(checked=5)
    for number in range(1005):
        totals.fail(f"batch {number}", "HTTP 500")
    finish_run(db, run_id, totals, "2026-05-11T00:01:00.000Z", "2026-05-10T09:00:00")
    status, failed, errors, release = db.execute(
        "select status, failed, errors, data_timestamp from runs").fetchone()
    assert (status, failed, release) == ("partial", 1005, "2026-05-10T09:00:00")
    assert [e["input"] for e in json.loads(errors)] == [f"batch {n}" for n in range(1000)]


def test_a_first_import_packs_its_records_and_a_later_one_leaves_them(
    db_path: str, tmp_path: Path,
) -> None:
    # In arrival order a ~3 KB record fills a 4 KB page alone and leaves the rest empty.
    assert run(db_path, "import", "--at", "2026-05-11",
               str(write_day(tmp_path / "d1", clones(300))))[0] == 0
    _, leaves, unused = records_leaves(db_path)
    assert unused < (compact.EDIT_ROOM / 4096 + 0.03) * leaves  # packed, keeping the room
    order = sqlite3.connect(db_path).execute("select nct_id from records order by rowid").fetchall()
    assert order != sorted(order)  # renumbered to fit pages, not in arrival order
    # A later run adds to a database that has records: it leaves their places alone.
    assert run(db_path, "import", "--at", "2026-05-12",
               str(write_day(tmp_path / "d2", clones(300, edit=True))))[0] == 0
    assert sqlite3.connect(db_path).execute(
        "select nct_id from records order by rowid").fetchall() == order


def test_a_pack_that_fails_leaves_the_run_ok_and_its_rows_as_stored(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_room(db: sqlite_utils.Database) -> None:
        raise sqlite3.OperationalError("database or disk is full")  # as VACUUM says it

    monkeypatch.setattr(compact, "pack", no_room)
    day = write_day(tmp_path / "d1", clones(100))
    with trialdiff.open(db_path) as tracker:
        run_row = tracker.import_paths([str(day)], at="2026-05-11")
    assert (run_row.status, run_row.checked, run_row.failed) == ("ok", 100, 0)
    assert sqlite3.connect(db_path).execute("select count(*) from records").fetchone() == (100,)
    assert run(db_path, "check")[0] == 0


def test_the_librarys_methods_raise_sqlites_errors_as_its_own(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trialdiff import schema
    from trialdiff.errors import DatabaseError

    assert run(db_path, "import", str(SAMPLE))[0] == 0
    monkeypatch.setattr(schema, "BUSY_SECONDS", 0.2)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("begin immediate")  # SQLite's own lock: a user's sqlite3 shell mid-write
    try:
        with pytest.raises(BusyError, match="busy with another writer") as caught:
            trialdiff.Tracker(db_path).track("NCT05827016")
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("rollback")
        other.close()
    # A damaged page under what a study page reads: DatabaseError, not sqlite3's.
    conn = sqlite3.connect(db_path)
    (root,) = conn.execute("select rootpage from sqlite_master where name = 'records'"
                           ).fetchone()
    (size,) = conn.execute("pragma page_size").fetchone()
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    with open(db_path, "r+b") as damaged:
        damaged.seek((root - 1) * size)
        damaged.write(b"\xff" * size)
    tracker = trialdiff.Tracker(db_path)
    with pytest.raises(DatabaseError, match=r"database error: .*malformed") as caught:
        tracker.page("NCT06060392")  # sqlite3.DatabaseError escaped the library here
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    with pytest.raises(DatabaseError, match="malformed"):
        tracker.check()  # SQLite's integrity check itself stops at a root page this damaged


def test_raising_ours_keeps_a_generators_values_and_the_cause() -> None:
    from trialdiff.errors import DatabaseError
    from trialdiff.lifecycle import raising_ours

    @raising_ours
    class Reader:
        def rows(self) -> Iterator[int]:
            yield 1
            raise sqlite3.DatabaseError("database disk image is malformed")

        def one(self) -> int:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # as SQLite's C code sets it
            raise busy

        def _private(self) -> None:
            raise sqlite3.DatabaseError("left as it is")

    rows = Reader().rows()
    assert next(rows) == 1
    with pytest.raises(DatabaseError, match="database error: database disk image is malformed"):
        next(rows)
    with pytest.raises(BusyError):
        Reader().one()
    with pytest.raises(sqlite3.DatabaseError):
        Reader()._private()


def test_a_write_to_a_read_only_database_says_what_must_be_writable(db_path: str) -> None:
    # A reader of a 0444 file leaves its -shm 0444 too: made writable again, the file still
    # failed with SQLite's bare "attempt to write a readonly database".
    from trialdiff.errors import READ_ONLY
    from trialdiff.lifecycle import sqlite_error

    open_db(db_path).conn.close()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as refused:
        conn.execute("insert into meta (key, value) values ('x', 'y')")
    conn.close()
    error = sqlite_error(refused.value)
    assert str(error) == f"database error: attempt to write a readonly database: {READ_ONLY}"
    assert "-shm" in READ_ONLY and "folder" in READ_ONLY


def test_a_conflicts_undoing_takes_the_first_copys_changes_out_of_the_run(db_path: str) -> None:
    from trialdiff.model import Failed, FieldChange, Observation

    def change(nct_id: str, at: str) -> FieldChange:
        return FieldChange(nct_id, "status.overallStatus", "changed", at, "A", "B", {})

    with WriteRun(db_path, "import", lambda: open_db(db_path)) as run:
        # A first copy committed in an earlier batch was shown; its repeat conflicts later.
        run.emit(Observation("NCT06060392", True, (change("NCT06060392", "T2"),)))
        run.emit(Observation("NCT06060392", True, (change("NCT06060392", "T1"),)))
        run.emit(Observation("NCT05827016", True, (change("NCT05827016", "T2"),)))
        run.emit(Failed("input[2]", "a conflict", undone=("NCT06060392", "T2")))
    assert run.result is not None
    assert [(c.nct_id, c.detected_at) for c in run.result.stored_changes] == [
        ("NCT06060392", "T1"), ("NCT05827016", "T2")]
