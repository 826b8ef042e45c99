"""The database schema version this trialdiff writes, and the only one its readers read.

Its own module so that readers (query, sqlite3 only) and the writer's migrations (schema,
sqlite-utils) share one number without the readers loading sqlite-utils.
"""

from __future__ import annotations

from typing import Final

from .errors import UsageError

SCHEMA_VERSION: Final = 14


def stored_version(value: object, path: str = "the database") -> int:
    """Return the schema version `meta` holds; UsageError when it is no version trialdiff wrote."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{path} is not a trialdiff database (its schema version is {value!r})")
    return int(text)


def version_problem(path: str, version: int) -> str | None:
    """Return why a reader cannot read a database of this version, or None when it can."""
    if version > SCHEMA_VERSION:
        return (f"{path}: database schema version {version} is newer than this trialdiff knows "
                f"({SCHEMA_VERSION}); upgrade trialdiff")
    if version < SCHEMA_VERSION:
        return (f"{path}: database schema version {version} is older than this trialdiff's "
                f"({SCHEMA_VERSION}); run `trialdiff check` (or any writing command, or "
                "`trialdiff.open()` in Python) once to upgrade it in place")
    return None
