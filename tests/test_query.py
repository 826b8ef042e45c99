"""Reading the history: no read of one study or snapshot scans every change."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SAMPLE, SAMPLE_DAYS, copy_db, run, trialdiff_env
from test_records import post_results

from trialdiff.check import CheckTotals, check_database
from trialdiff.errors import DatabaseError
from trialdiff.query import (
    ChangeFilter,
    connect_readonly,
    query_changes,
    shared_values,
    study_fields,
    transaction,
    unknown_studies,
)
from trialdiff.schema import open_db


def test_no_read_of_one_study_or_snapshot_scans_every_change(
    tmp_path: Path, db_path: str
) -> None:
    post_results(tmp_path, db_path, 12)
    conn = sqlite3.connect(db_path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert list(check_database(conn, CheckTotals())) == []
    for (nct_id,) in conn.execute("select nct_id from studies").fetchall():
        study_fields(conn, nct_id)
    conn.set_trace_callback(None)
    # One pass over the table per check is fine (orphans, annotations); per study it is not.
    whole_table = ("snapshot_id not in (select id from snapshots)", "snapshot_id is null")
    scans = {sql for sql in statements if " changes " in sql + " "
             and not any(part in sql for part in whole_table)
             and any("SCAN changes" in row[-1] for row in conn.execute(
                 "explain query plan " + sql).fetchall())}
    assert scans == set()


def test_a_database_whose_name_holds_uri_characters_is_the_one_read(tmp_path: Path) -> None:
    # `c%41.db` as an unescaped URI is `cA.db`; `#` and `?` would end the file name.
    for name in ("c%41.db", "a#1.db", "b?x=1.db"):
        db = str(tmp_path / name)
        assert run(db, "import", "--at", SAMPLE_DAYS[0], str(SAMPLE / SAMPLE_DAYS[0]))[0] == 0
    assert run(str(tmp_path / "cA.db"), "import", str(SAMPLE))[0] == 0  # two snapshots each
    for name in ("c%41.db", "a#1.db", "b?x=1.db"):
        code, out, err = run(str(tmp_path / name), "history", "NCT05827016")
        assert (code, err, out.count("\n")) == (0, "", 2)  # a header and its one snapshot
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [
        "a#1.db", "b?x=1.db", "c%41.db", "cA.db"]


def test_a_path_prefix_matches_the_path_and_below_it_with_case_as_written(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    conn = sqlite3.connect(db_path)

    def paths(prefix: str) -> list[str]:
        return [c.path for c in query_changes(conn, ChangeFilter(path_prefixes=(prefix,)))]

    under_status = [row[0] for row in conn.execute(
        "select path from changes where substr(path, 1, 7) = 'status.'")]
    assert sorted(paths("status")) == sorted(paths("status.")) == sorted(under_status)
    assert len(under_status) == 8
    assert paths("status.overallStatus") == ["status.overallStatus"]
    # As a watch's --path compares: LIKE matched `STATUS` (and `status.OVERALLSTATUS` not at all).
    assert paths("STATUS") == paths("status.OVERALLSTATUS") == paths("statu") == []
    assert paths("status_") == paths("status%") == []  # no wildcards


def test_unknown_studies_names_each_id_not_stored_once_in_order(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    conn = sqlite3.connect(db_path)
    stored = conn.execute("select nct_id from studies order by nct_id").fetchone()[0]
    assert unknown_studies(conn, []) == [] == unknown_studies(conn, [stored])
    assert unknown_studies(conn, ["NCT99999999", stored, "NCT00000001", "NCT99999999"]) == [
        "NCT00000001", "NCT99999999"]
    assert unknown_studies(conn, [stored.lower()]) == [stored.lower()]  # ids as stored


def test_a_stop_after_the_connection_closed_is_raised_not_sqlites_error(db_path: str) -> None:
    # A SIGTERM during a first run's pack: "Exception ignored in: <generator transaction>",
    # a traceback from rolling back on a closed connection.
    db = open_db(db_path)
    with pytest.raises(KeyboardInterrupt), transaction(db):
        db.conn.close()
        raise KeyboardInterrupt


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root, to read as another user (setpriv)")
def test_a_reader_who_cannot_write_the_folder_is_told_why_sqlite_needs_to() -> None:
    # The cron user writes, a web or other user reads: in WAL mode reading writes X-shm.
    folder = Path(tempfile.mkdtemp(prefix="trialdiff-ro-"))
    try:
        folder.chmod(0o755)
        db = str(folder / "trialdiff.db")
        assert run(db, "import", str(SAMPLE))[0] == 0
        for path in folder.iterdir():
            path.chmod(0o644)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if subprocess.run([*as_nobody, sys.executable, "-c", "import trialdiff.cli"],
                          env=trialdiff_env(), capture_output=True).returncode != 0:
            pytest.skip("this Python's packages are not readable by another user (a CI venv)")
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-m", "trialdiff", "--db", db, "recent", "NCT06060392"],
            env={**trialdiff_env(), "HOME": str(folder)}, capture_output=True, text=True)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            f"trialdiff: error: cannot read database {db}: SQLite needs to create "
            "trialdiff.db-shm beside it (WAL mode), and this user cannot write to its folder: "
            "let it, or read a copy\n")  # it said "attempt to write a readonly database"
    finally:
        shutil.rmtree(folder)


def test_a_database_on_read_only_media_is_read_as_it_is(
    tmp_path: Path, read_only_media: tuple[Path, Callable[[], None]]
) -> None:
    # Published on a read-only filesystem, a WAL-mode file could not be read (SQLite cannot
    # create its -shm file there); no one can write there either, so it is read immutable.
    media, freeze = read_only_media
    db = str(tmp_path / "trialdiff.db")
    assert run(db, "import", str(SAMPLE))[0] == 0
    changes = run(db, "changes", "--format", "json")
    published = str(media / "trialdiff.db")
    copy_db(db, published)
    freeze()
    assert sorted(path.name for path in media.iterdir()) == ["trialdiff.db"]
    assert run(published, "changes", "--format", "json") == changes
    assert run(published, "check")[:2] == (
        0, "check: 3 studies, 5 snapshots, 528 changes verified; 0 problems\n")


def test_commits_left_in_a_wal_on_read_only_media_are_not_read_past(
    tmp_path: Path, read_only_media: tuple[Path, Callable[[], None]]
) -> None:
    # Read immutable, the file alone would be an older state: the reader is told instead.
    media, freeze = read_only_media
    db = str(tmp_path / "trialdiff.db")
    assert run(db, "import", str(SAMPLE))[0] == 0
    writer = sqlite3.connect(db)
    writer.execute("pragma wal_autocheckpoint = 0")
    with writer:
        writer.execute("delete from changes where path = 'status.overallStatus'")
    for suffix in ("", "-wal"):
        shutil.copyfile(db + suffix, media / f"trialdiff.db{suffix}")
    writer.close()
    freeze()
    code, out, err = run(str(media / "trialdiff.db"), "recent", "NCT05827016")
    assert (code, out) == (1, "")
    assert err == (
        f"trialdiff: error: cannot read database {media / 'trialdiff.db'}: SQLite needs to "
        "create trialdiff.db-shm beside it (WAL mode), and this user cannot write to its "
        "folder: let it, or read a copy\n")


def test_sqlites_readonly_error_on_a_read_is_worded_for_the_reader(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trialdiff.query
    from trialdiff.errors import DatabaseError

    assert run(db_path, "import", str(SAMPLE))[0] == 0

    class Refusing(sqlite3.Connection):  # as a folder the reader cannot write makes SQLite
        def execute(self, *args: object) -> sqlite3.Cursor:
            raise sqlite3.OperationalError("attempt to write a readonly database")

    connect = sqlite3.connect
    monkeypatch.setattr(trialdiff.query.sqlite3, "connect",
                        lambda *args, **kwargs: connect(*args, **{**kwargs, "factory": Refusing}))
    with pytest.raises(DatabaseError, match=r"SQLite needs to create trialdiff\.db-shm beside "
                                            r"it \(WAL mode\)"):
        trialdiff.query.connect_readonly(db_path)


def test_a_transaction_sqlite_rolled_back_itself_raises_its_own_error(db_path: str) -> None:
    # On a full disk SQLite rolls back itself: a second rollback raised "cannot rollback - no
    # transaction is active", which hid "database or disk is full" from the user.
    db = open_db(db_path)
    with pytest.raises(sqlite3.OperationalError, match="disk is full"), transaction(db):
        db.execute("insert into meta (key, value) values ('x', 'y')")
        db.execute("rollback")
        raise sqlite3.OperationalError("database or disk is full")
    assert db.execute("select count(*) from meta where key = 'x'").fetchone() == (0,)
    with transaction(db):  # and the connection is usable after it
        db.execute("insert into meta (key, value) values ('x', 'y')")


def test_a_refused_reader_closes_its_connection_so_a_writer_can_upgrade_the_file(
    tmp_path: Path
) -> None:
    # An older schema in rollback-journal mode, as schema 1 wrote it: a reader's read lock
    # left open (kept alive here by the traceback, as any caller's frame may) said "database
    # is locked" to `trialdiff.open()`, which upgrades it.
    path = tmp_path / "v1.db"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "old-schemas" / "v1.db", path)
    with pytest.raises(DatabaseError, match="older") as refused:
        connect_readonly(str(path))
    writer = sqlite3.connect(path, timeout=0)
    assert writer.execute("pragma journal_mode = wal").fetchone() == ("wal",)
    writer.close()
    assert refused.traceback  # still held: the reader's frame, and what it held, live on
    import trialdiff

    assert [c.nct_id for c in trialdiff.open(str(path)).changes()][:1] == ["NCT06060392"]


def test_reads_of_a_busy_database_take_the_indexes_that_bound_them(db_path: str) -> None:
    # A probe's 30,000-study file: the change_log view sorted the whole join for every count,
    # facet and page (1.3 s in the web view), and a snapshot's shared value was looked up
    # through the path index, reading every change at that path (8 ms a lookup).
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    conn = sqlite3.connect(db_path)

    def plan(sql: str, *args: object) -> str:
        return " ".join(row[3] for row in conn.execute(f"explain query plan {sql}", args))

    assert "TEMP B-TREE" not in plan("select * from change_log limit 101")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    nct_id, snapshot_id, path = conn.execute(
        "select nct_id, snapshot_id, path from changes limit 1").fetchone()
    assert shared_values(conn, nct_id, snapshot_id, [path])
    conn.set_trace_callback(None)
    (lookup,) = [s for s in statements if "+path in" in s]
    shown = plan(lookup)
    assert "idx_changes_nct_id_detected_at" in shown and "idx_changes_path" not in shown
