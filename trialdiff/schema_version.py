"""The database schema version this trialdiff writes, and the only one its readers read.

Its own module so that readers (query, sqlite3 only) and the writer's migrations (schema,
sqlite-utils) share one number without the readers loading sqlite-utils.
"""

from __future__ import annotations

from typing import Any, Final

from .errors import DatabaseError, UsageError

SCHEMA_VERSION: Final = 14
# meta's key while an upgrade runs, holding the version it started from. The upgrade writes
# the new version first, beside it: an older trialdiff then refuses the file as newer, rather
# than read rows the upgrade already converted, and a stopped upgrade resumes from it.
UPGRADING_FROM: Final = "upgrading_from"


def stored_version(value: object, path: str = "the database") -> int:
    """Return the schema version `meta` holds; UsageError when it is no version trialdiff wrote."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{path} is not a trialdiff database (its schema version is {value!r})")
    return int(text)


def read_version(conn: Any, path: str) -> tuple[int, int | None]:
    """Return a database's schema version, and the one an unfinished upgrade started from."""
    rows = dict(conn.execute("select key, value from meta where key in ('schema_version', ?)",
                             [UPGRADING_FROM]).fetchall())
    if "schema_version" not in rows:
        if conn.execute("select 1 from sqlite_master where name = 'snapshots'").fetchone():
            # trialdiff's tables without the version, which goes last: a first run killed
            # while it created them (a writer completes the file), not another's file.
            raise DatabaseError(f"{path}: its creation did not finish; run any writing command "
                                "(`trialdiff import`, `sync`) once to complete it")
        raise UsageError(f"{path} is not a trialdiff database (it has no schema version)")
    started = rows.get(UPGRADING_FROM)
    return (stored_version(rows["schema_version"], path),
            None if started is None else stored_version(started, path))


def version_problem(path: str, version: int, upgrading_from: int | None = None) -> str | None:
    """Return why a reader cannot read a database of this version, or None when it can."""
    if upgrading_from is not None:
        return (f"{path}: its upgrade from database schema version {upgrading_from} is under way "
                "or was stopped; wait for it, or run `trialdiff check` (or any writing command) "
                "once to finish it")
    if version > SCHEMA_VERSION:
        return (f"{path}: database schema version {version} is newer than this trialdiff knows "
                f"({SCHEMA_VERSION}); upgrade trialdiff")
    if version < SCHEMA_VERSION:
        return (f"{path}: database schema version {version} is older than this trialdiff's "
                f"({SCHEMA_VERSION}); run `trialdiff check` (or any writing command, or "
                "`trialdiff.open()` in Python) once to upgrade it in place")
    return None
