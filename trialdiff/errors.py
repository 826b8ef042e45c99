"""Exceptions trialdiff raises; the CLI turns each into one clear line and an exit code.

    TrialdiffError              anything trialdiff reports to a user
    ├── UsageError              bad arguments: a malformed NCT id, an unreadable timestamp (exit 2)
    ├── UnknownStudy            a study the database does not hold
    ├── InputError              one input could not be read as studies; the others go on (exit 1)
    │   └── OutOfOrderError     an observation older than the study's latest snapshot or sighting
    ├── DatabaseError           the database cannot be opened, read or written
    │   └── BusyError           another process is writing to the database (exit 75)
    └── FetchError              the registry could not be reached or answered wrongly
        ├── ForbiddenError      403: the registry's edge refused the request
        ├── RejectedRequest     400 or 414: the API refused a request (a bad id, a URL too long)
        ├── PagingError         paging went round in circles: a repeated token, nothing new
        ├── InvalidResponse     a 200 whose body is not a valid page of studies
        ├── ResponseTooLarge    a response over the size cap (not retried: it would be again)
        └── ShapeError          an undocumented endpoint changed shape; nothing was stored
"""

from __future__ import annotations

# What a DatabaseError adds when SQLite found the database read-only for a write. A reader of a
# read-only file leaves the -wal and -shm files with the file's mode, and they keep it after
# the file is made writable.
READ_ONLY = ("this user must be able to write to the file, its folder and the -wal and -shm "
             "files beside it (a reader of a read-only file leaves those read-only too)")


def damage_hint(exc: BaseException) -> str:
    """Return what to do, after SQLite's "database disk image is malformed"; else nothing.

    Pages of the file itself are damaged then, and no command of trialdiff's reads past them.
    """
    if "Could not decode to UTF-8" in str(exc):  # a flipped bit in a text cell
        return (": a text cell's bytes are not UTF-8, so the file is damaged: `trialdiff "
                "check` names where")
    # SQLITE_CORRUPT (11), by number: this module is pure, and imports no sqlite3.
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF != 11:
        return ""
    return (": the file itself is damaged: restore it from a backup, or copy out what SQLite "
            "can still read (`sqlite3 FILE .dump | sqlite3 NEW.db`, then `trialdiff --db NEW.db "
            "check`)")


class TrialdiffError(Exception):
    """Base of every error trialdiff reports to a user.

    Messages never name a command-line flag: `setting` names the setting (settings.py, in
    snake case: api, wait, db, max_response_mb) the error is about, and a front end such as
    the CLI names it in its own words.
    """

    exit_code = 1

    def __init__(self, message: str = "", *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class UsageError(TrialdiffError):
    """Arguments a command cannot act on."""

    exit_code = 2


class UnknownStudy(TrialdiffError):
    """A study the database does not hold."""


class InputError(TrialdiffError):
    """One input (a file, a record) that could not be taken in."""


class OutOfOrderError(InputError):
    """An observation older than the study's latest snapshot or (if it changes) last sighting."""


class DatabaseError(TrialdiffError):
    """The database cannot be opened, read or written."""


class BusyError(DatabaseError):
    """Another process holds the write lock."""

    exit_code = 75


class FetchError(TrialdiffError):
    """The registry could not be reached, or did not answer as its API says."""


class ForbiddenError(FetchError):
    """The registry's edge answered 403."""


class RejectedRequest(FetchError):
    """The API answered 400 or 414 to a request: retrying it as it is cannot help."""


class PagingError(FetchError):
    """Paging went round in circles: a nextPageToken came again, or a page held nothing new."""


class InvalidResponse(FetchError):
    """A response whose body is not what the endpoint returns."""


class ResponseTooLarge(FetchError):
    """A response over the configured size cap."""


class ShapeError(FetchError):
    """An undocumented endpoint answered in a shape trialdiff does not know."""
