"""A database's tracking rules: the entries of the ignore list it tracks again, read once.

The field-path spec ignores some derived or bookkeeping data by default, and lets users track
it again by configuration. A database keeps that choice in `meta` (`tracked_again`: a JSON
list of `fields.IGNORE_LIST` entries), so every run on it extracts the same fields. It is
chosen before the database holds a snapshot: tracking a field from the middle of a history on
would report it added on every study, and untracking it, removed.
"""

from __future__ import annotations

import contextlib
import json
import weakref
from collections.abc import Iterable
from typing import Any

from .errors import UsageError
from .normalize import DEFAULT_RULES, Rules, tracking_rules

KEY = "tracked_again"
# Per connection, its rules read once (`codec` keeps its dictionaries the same way).
_READ: weakref.WeakKeyDictionary[Any, Rules] = weakref.WeakKeyDictionary()


def _read(conn: Any) -> Rules:
    """Read a database's rules from its `meta` table (the defaults when it names none)."""
    # sqlite-utils' Database and a sqlite3 connection both execute and fetch alike.
    if conn.execute("select 1 from sqlite_master where name = 'meta'").fetchone() is None:
        return DEFAULT_RULES
    row = conn.execute("select value from meta where key = ?", [KEY]).fetchone()
    return tracking_rules(json.loads(row[0])) if row else DEFAULT_RULES


def rules_of(conn: Any) -> Rules:
    """Return the rules a database tracks by, read on a connection's first use."""
    try:
        found = _READ.get(conn)
    except TypeError:  # a bare sqlite3 connection takes no weak reference: read it anew
        return _read(conn)
    if found is None:
        found = _READ[conn] = _read(conn)
    return found


def checked_entries(add: Iterable[str], drop: Iterable[str]) -> tuple[set[str], set[str]]:
    """Return the entries to track again and to ignore again; refuse a typo or one in both."""
    add, drop = set(add), set(drop)
    if add & drop:
        raise UsageError(f"both tracked again and ignored again: {', '.join(sorted(add & drop))}")
    tracking_rules(add | drop)  # a name not on the list (a typo) is refused, not dropped quietly
    return add, drop


def track_again(conn: Any, add: set[str], drop: set[str]) -> Rules:
    """Track some ignore-list entries again, and ignore others again; return the rules now.

    `add` and `drop` are as `checked_entries` returns them. Refused once the database holds
    snapshots, unless nothing changes. The caller holds the write lock (no run stores a
    snapshot meanwhile under the rules it read) and the transaction.
    """
    now = _read(conn)  # not the cache: another process may have changed them since
    rules = tracking_rules((set(now.again) | add) - drop)
    if rules.again != now.again:
        if conn.execute("select 1 from snapshots limit 1").fetchone() is not None:
            raise UsageError("what a database tracks is chosen before its first snapshot, and "
                             "this one holds snapshots: track the fields again in a new "
                             "database, then import or sync into it")
        conn.execute("delete from meta where key = ?", [KEY])
        if rules.again:
            conn.execute("insert into meta (key, value) values (?, ?)",
                         [KEY, json.dumps(list(rules.again))])
    with contextlib.suppress(TypeError):  # a bare sqlite3 connection: nothing kept for it
        _READ[conn] = rules
    return rules
