"""The write lock: one writer at a time, a dead holder's lock taken over, --wait waits."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from conftest import FIXTURES, SAMPLE, run, trialdiff_env

from trialdiff import schema
from trialdiff.cli import cli
from trialdiff.lock import frozen


def hold_lock(db: str, seconds: float) -> subprocess.Popen[bytes]:
    """Start another process, an `import`, that holds the write lock for some seconds."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from trialdiff.lock import WriteLock\n"
         f"with WriteLock({db!r}, command='import'):\n"
         f"    print('locked', flush=True); time.sleep({seconds})"],
        env=trialdiff_env(), stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


@contextmanager
def lock_holder(db: str) -> Iterator[subprocess.Popen[bytes]]:
    """Hold the write lock from another process; kill it when the block ends."""
    holder = hold_lock(db, 60)
    try:
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(db_path: str) -> None:
    with lock_holder(db_path) as holder:
        code, _, err = run(db_path, "import", str(FIXTURES / "v2"))
        assert code == 75 and f"pid {holder.pid} (import)" in err
        assert err.endswith("is writing to it (use --wait SECONDS to wait)\n")
        code, _, err = run(db_path, "import", "--wait", "0.3", str(FIXTURES / "v2"))
        assert code == 75  # waited, so the way out is not more of the same advice
        assert err.endswith("is writing to it (still, after waiting 0.3 s)\n")
    code, out, _ = run(db_path, "import", "--summary", str(FIXTURES / "v2"))
    assert code == 0 and "28 studies checked" in out


def test_wait_waits_for_the_other_writer(db_path: str) -> None:
    holder = hold_lock(db_path, 1)
    code, _, _ = run(db_path, "import", "--wait", "20", "--summary", str(FIXTURES / "v2"))
    assert code == 0
    holder.wait()


def test_track_and_untrack_work_while_another_writer_holds_the_lock(db_path: str) -> None:
    # A long sync holds the lock for minutes: editing the watchlist need not wait for it.
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    with lock_holder(db_path):
        assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 75  # a run is refused
        assert run(db_path, "track", "NCT05827016")[0] == 0
        code, out, _ = run(db_path, "tracked")
        assert code == 0 and "NCT05827016" in out
        assert run(db_path, "untrack", "NCT05827016")[0] == 0
        assert "NCT05827016" not in run(db_path, "tracked")[1]


def test_sqlite_s_own_lock_held_past_the_wait_exits_75(
    db_path: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another connection in the middle of a write (a sync's page, a user's sqlite3 shell).
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    monkeypatch.setattr(schema, "BUSY_SECONDS", 0.2)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("begin immediate")
    try:
        assert run(db_path, "track", "NCT05827016") == (
            75, "", "trialdiff: error: the database is busy with another writer (SQLite's lock, "
                    "held past the wait for it); try again\n")
    finally:
        other.execute("rollback")
        other.close()
    assert run(db_path, "track", "NCT05827016")[0] == 0


@pytest.mark.parametrize(("args", "said"), [
    (("import", "--summary", str(FIXTURES / "v2" / "NCT00000410.json")), "1 study checked"),
    (("track", "NCT05827016"), "track: 1 new study, 0 new queries"),
])
def test_wait_also_waits_for_sqlite_s_own_lock(
    db_path: str, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], said: str,
) -> None:
    # Another program's write (a sqlite3 shell) holds SQLite's lock, not trialdiff's lock file:
    # --wait covers it too, not only the 30 s SQLite is given by default.
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    monkeypatch.setattr(schema, "BUSY_SECONDS", 0.2)
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("begin immediate")
    release = threading.Timer(1.0, lambda: other.execute("rollback"))
    release.start()
    try:
        code, out, err = run(db_path, *args, "--wait", "20")
    finally:
        release.join()
        other.close()
    assert (code, err) == (0, "") and said in out


# The commands that never take the write lock, nor write: the only ones without --wait.
READERS = {"alerts", "changes", "diff", "history", "page", "recent", "serve", "tracked",
           "watch list", "watch show", "watch test"}


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Yield every command of a group, by its full name."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_that_writes_takes_wait_as_its_busy_error_advises(
    db_path: str, secrets_file: Path,
) -> None:
    # A busy database says "use --wait SECONDS to wait": every command that can say it has it.
    without = {name for name, command in _commands(cli)
               if "--wait" not in [o for p in command.params for o in p.opts]}
    assert without == READERS
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    add = ("watch", "add", "slips", "--study", "NCT05827016", "--to", "https://hooks.example.org/")
    with lock_holder(db_path):
        for args in (add, ("watch", "remove", "slips")):
            code, out, err = run(db_path, *args)
            assert (code, out) == (75, "")
            assert err.endswith("is writing to it (use --wait SECONDS to wait)\n")
            code, out, err = run(db_path, *args, "--wait", "0.2")
            assert (code, out) == (75, "")
            assert err.endswith("is writing to it (still, after waiting 0.2 s)\n")
        for args in (("recent", "NCT05827016"), ("history", "NCT05827016"), ("tracked",),
                     ("watch", "list"), ("alerts",), ("changes", "--format", "csv"),
                     ("diff", "NCT05827016"), ("page", "NCT05827016")):
            assert run(db_path, *args)[0] == 0, args  # a reader is never kept waiting
    holder = hold_lock(db_path, 1)
    assert run(db_path, *add, "--wait", "20")[0] == 0
    holder.wait()
    assert run(db_path, "watch", "list")[1].startswith("slips  studies NCT05827016")


def test_a_database_in_a_missing_folder_says_to_create_the_folder(tmp_path: Path) -> None:
    db = tmp_path / "absent" / "trialdiff.db"
    code, out, err = run(str(db), "import", str(FIXTURES / "v2"))
    assert (code, out) == (1, "")
    assert err == (f"trialdiff: error: cannot create lock file {db}.lock: no folder "
                   f"{tmp_path / 'absent'} (create it first)\n")


def test_a_symlink_to_the_database_takes_the_same_lock(tmp_path: Path, db_path: str) -> None:
    link = tmp_path / "link.db"
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    link.symlink_to(db_path)
    with lock_holder(db_path) as holder:
        code, _, err = run(str(link), "import", str(FIXTURES / "v2"))
    assert code == 75 and f"database {link} is busy: pid {holder.pid} (import)" in err


@pytest.mark.parametrize("command", [("notify",), ("import", str(SAMPLE)), ("compact",)])
def test_ctrl_c_while_waiting_for_the_lock_exits_130(
    db_path: str, command: tuple[str, ...],
) -> None:
    # It said click's "Aborted!" and exited 1, as did Ctrl-C during a delivery or a backfill.
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    with lock_holder(db_path):
        process = subprocess.Popen(
            [sys.executable, "-m", "trialdiff", "--db", db_path, *command, "--wait", "60"],
            env=trialdiff_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # well into its wait for the lock (a start takes a fraction of that)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert (process.returncode, out) == (130, "")
    assert err == "trialdiff: interrupted (what was saved stays: run again to resume)\n"


def test_a_full_disk_names_the_lock_file_and_lets_the_lock_go(
    db_path: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "No space left on device" alone named no file, so the user could not tell which disk.
    import errno

    import trialdiff.lock

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trialdiff.lock.os, "pwrite", full)
    code, out, err = run(db_path, "import", "--summary", str(SAMPLE))
    assert (code, out) == (1, "")
    assert err == f"trialdiff: error: No space left on device: {Path(db_path).resolve()}.lock\n"
    monkeypatch.undo()
    assert run(db_path, "import", "--summary", str(SAMPLE))[0] == 0  # the lock was let go


def test_an_upgrade_held_up_by_sqlite_s_own_lock_is_busy(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An older file, migrated while a sqlite3 shell writes: it exited 1, "cannot open database
    # ...: database is locked", where every other wait for that lock exits 75 (a probe).
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    with sqlite3.connect(db_path) as conn:
        conn.execute("update meta set value = '13' where key = 'schema_version'")
    monkeypatch.setattr(schema, "BUSY_SECONDS", 0.2)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("begin immediate")
    try:
        code, out, err = run(db_path, "check")
    finally:
        other.execute("rollback")
        other.close()
    assert (code, out) == (75, "") and "database is locked" in err
    assert run(db_path, "check")[0] == 0  # upgraded once the lock is gone


def test_only_a_database_on_a_read_only_filesystem_is_frozen(
    tmp_path: Path, read_only_media: tuple[Path, Callable[[], None]]
) -> None:
    media, freeze = read_only_media
    (media / "trialdiff.db").write_bytes(b"")
    (media / "wal.db").write_bytes(b"")
    (media / "wal.db-wal").write_bytes(b"\0")  # commits no reader can bring in
    (media / "empty.db").write_bytes(b"")
    (media / "empty.db-wal").write_bytes(b"")
    assert not frozen(str(media / "trialdiff.db"))  # writable still
    freeze()
    assert frozen(str(media / "trialdiff.db")) and frozen(str(media / "empty.db"))
    assert not frozen(str(media / "wal.db"))
    assert not frozen(str(tmp_path / "trialdiff.db"))
