"""The watchlist: the studies and saved queries `sync` fetches, and what a query returned."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import sqlite_utils

from .errors import UnknownStudy, UsageError
from .query import transaction

# The /studies parameters a saved query may hold (the API's OpenAPI spec, 2.0.5): any other
# name the API answers with a 400, which failed every sync; paging and format are sync's own.
_SEARCHES = ("cond", "term", "locn", "titles", "intr", "outc", "spons", "lead", "id", "patient")
_FILTERS = ("overallStatus", "geo", "ids", "advanced", "synonyms")
_SAVED_BEFORE = ("query.", "filter.", "postFilter.", "aggFilters")  # what versions took before
QUERY_PARAMETERS = frozenset({*(f"query.{name}" for name in _SEARCHES), "aggFilters",
                              *(f"{kind}.{name}" for kind in ("filter", "postFilter")
                                for name in _FILTERS)})


def incremental(params: Mapping[str, str], since_day: str) -> dict[str, str]:
    """Return a saved query's params narrowed to studies updated on or after a day."""
    window = f"AREA[LastUpdatePostDate]RANGE[{since_day},MAX]"
    narrowed = dict(params)
    existing = narrowed.get("filter.advanced")
    narrowed["filter.advanced"] = f"({existing}) AND {window}" if existing else window
    return narrowed


def parse_query(expr: str, known_names: bool = True) -> str:
    """Return a saved query in canonical form, or raise UsageError naming what is wrong.

    `known_names=False` also takes the names an older version saved, any under the API's
    prefixes: such a query is untracked, where it would fail every sync.
    """
    # Blanks kept, to be refused: `filter.overallStatus=` (an unset variable) was dropped,
    # which saved a broader query than the one typed.
    pairs = parse_qsl(expr.strip().lstrip("?"), keep_blank_values=True)
    if not pairs:
        raise UsageError(f"{expr!r} is not a query: give API parameters, e.g. query.cond=asthma")
    for key, value in pairs:
        if key not in QUERY_PARAMETERS and (known_names or not key.startswith(_SAVED_BEFORE)):
            # `query.spons=Johnson & Johnson` reads as a parameter ` Johnson` with no value.
            amp = " (an & inside a value is written %26)" if " " in key or not (
                value or "." in key) else ""
            raise UsageError(
                f"{key!r} is not a parameter a saved query takes{amp}: query.{{"
                f"{','.join(_SEARCHES)}}}, filter.{{{','.join(_FILTERS)}}} or postFilter.* of "
                "the same, or aggFilters")
        if not value.strip():
            raise UsageError(f"{key} has no value in {expr!r}: give one, or leave it out")
        if [k for k, _ in pairs].count(key) > 1:  # the API takes one: sync sent the first
            raise UsageError(f"{key} is given twice in {expr!r}: give it once (the API "
                             "takes one value: join terms with OR, or list filter values "
                             "with commas)")
    return urlencode(sorted(pairs))


def track(db: sqlite_utils.Database, nct_ids: Iterable[str], queries: Iterable[str],
          at: str) -> tuple[int, int]:
    """Add studies and saved queries to the watchlist; return how many were new."""
    new_ids = new_queries = 0
    with transaction(db):
        for nct_id in nct_ids:
            cursor = db.execute(
                "insert or ignore into watchlist (nct_id, added_at, state) values (?, ?, ?)",
                [nct_id, at, "tracked"],
            )
            new_ids += cursor.rowcount
        for expr in queries:
            cursor = db.execute(
                "insert or ignore into queries (expr, added_at) values (?, ?)", [expr, at]
            )
            if cursor.rowcount:  # an id freed by an untracked query: none of its members
                db.execute("delete from query_studies where query_id = ?", [cursor.lastrowid])
            new_queries += cursor.rowcount
    return new_ids, new_queries


def untrack(db: sqlite_utils.Database, nct_ids: Iterable[str], queries: Iterable[str]) -> int:
    """Remove studies and saved queries from the watchlist; return how many went.

    All or none: one that is not tracked (a mistyped id, in a script that would report "0
    removed" and succeed) raises UnknownStudy, and nothing is removed.
    """
    removed, unknown = 0, []
    with transaction(db):
        for nct_id in dict.fromkeys(nct_ids):
            gone = db.execute("delete from watchlist where nct_id = ?", [nct_id]).rowcount
            removed += gone
            unknown += [] if gone else [f"{nct_id} is not tracked"]
        for expr in dict.fromkeys(queries):
            db.execute("delete from query_studies where query_id in (select id from queries "
                       "where expr = ?)", [expr])  # a watch of a new query must not get them
            gone = db.execute("delete from queries where expr = ?", [expr]).rowcount
            removed += gone
            unknown += [] if gone else [f"{expr} is not a saved query"]
        if unknown:  # the transaction rolls back: nothing was removed
            raise UnknownStudy("; ".join(unknown) + " (nothing was removed)")
    return removed


def tracked_ids(conn: Any) -> list[str]:
    """Return the ids `sync` fetches: tracked studies, not those now answering as another."""
    rows = conn.execute("select nct_id from watchlist where state != 'moved' order by nct_id")
    return [row[0] for row in rows]


def tracks_nothing(conn: Any) -> bool:
    """Tell whether a database tracks no study (as sync fetches them) and no saved query."""
    return not tracked_ids(conn) and not conn.execute("select 1 from queries").fetchone()


def query_members(conn: Any) -> set[str]:
    """Return the studies saved queries returned to an API sync (a query watch's scope)."""
    return {row[0] for row in conn.execute("select distinct nct_id from query_studies")}
