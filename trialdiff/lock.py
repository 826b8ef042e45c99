"""One writer at a time: an advisory lock file beside the database, naming its holder.

The kernel drops a flock when its process dies, SIGKILL included, so a stale lock file never
blocks the next run; the pid and time written in it only tell a waiting user who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from types import TracebackType

from .arguments import checked_wait
from .errors import BusyError, DatabaseError, UsageError
from .model import utc_timestamp

_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database


def refuse_non_database(db_path: str) -> None:
    """Refuse a folder, or a file that is not SQLite: no database can be written there."""
    try:
        mode = os.stat(db_path).st_mode
    except OSError:  # absent (a new database), or unreachable: opening it says why
        return
    if stat.S_ISDIR(mode):
        raise UsageError(f"{db_path} is a folder, not a database file")
    if not stat.S_ISREG(mode):  # a FIFO's read would wait for a writer
        return
    try:
        with open(db_path, "rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except OSError:
        return
    if head and head != _SQLITE_HEADER:  # an empty file is a new database
        raise UsageError(f"{db_path} is not a trialdiff database (not an SQLite file)")


def frozen(db_path: str) -> bool:
    """Tell whether no writer can change a database: its filesystem is mounted read-only.

    Not while a -wal file beside it holds commits, which only a writer brings into the file.
    """
    try:
        if not os.statvfs(os.path.dirname(os.path.abspath(db_path))).f_flag & os.ST_RDONLY:
            return False
        return os.stat(db_path + "-wal").st_size == 0
    except FileNotFoundError:  # no -wal file: the database file is all there is
        return True
    except OSError:
        return False


class WriteLock:
    """Hold the write lock of a database for the length of a `with` block."""

    def __init__(self, db_path: str, wait: float = 0.0, command: str = "") -> None:
        checked_wait(wait)
        # Beside the file itself: a symlink to the database takes the same lock.
        self.path = os.path.realpath(db_path) + ".lock"
        self.db_path = db_path
        self.wait = wait
        self.command = command
        self._fd: int | None = None
        self._created = False  # whether this lock made the lock file

    def _holder(self) -> str:
        """Return who holds the lock, as the holder wrote it."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                info = json.loads(handle.read() or "{}")
            return f"pid {info['pid']} ({info.get('command') or 'trialdiff'}) since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "another trialdiff process"

    def __enter__(self) -> WriteLock:
        refuse_non_database(self.db_path)  # before a lock file is left beside it
        try:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                self._created = True
            except FileExistsError:
                fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError as exc:
            raise DatabaseError(f"cannot create lock file {self.path}: no folder "
                                f"{os.path.dirname(self.path) or '.'} (create it first)") from exc
        except OSError as exc:
            raise DatabaseError(f"cannot create lock file {self.path}: {exc.strerror}") from exc
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder()
                    os.close(fd)
                    waited = f" (still, after waiting {self.wait:g} s)" if self.wait else ""
                    raise BusyError(  # not waited: the wait setting is the way out
                        f"database {self.db_path} is busy: {holder} is writing to it{waited}",
                        setting=None if self.wait else "wait",
                    ) from None
                time.sleep(0.1)
        info = {"pid": os.getpid(), "since": utc_timestamp(), "command": self.command}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:  # a full disk: name the file, and let the lock go
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, self.path) from exc
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            if self._created and isinstance(exc, UsageError) and exc.setting == "db":
                # Another application's database, refused untouched: no lock file beside it.
                # (One waiting on this file gets it unlinked, and is refused the same way.)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
