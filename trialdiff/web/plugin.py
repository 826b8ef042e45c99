"""trialdiff's Datasette plugin: hooks registered by `app.make_datasette`, no entry point needed.

- Private columns (`Table.private` in schema.py) are out of reach of any SQL: an SQLite
  authorizer on every connection to the database reads them as NULL, and refuses whole
  private tables, whose pages are forbidden too. Hiding them in metadata alone would leave
  them one `select` away.
- Canned queries (and any table or query with whole changes) get an `.atom` rendition made by
  export.to_atom, the feed `trialdiff changes --format atom` writes.
- `/study/NCT…` is a study's page (study.py); study ids in the tables link to it.
- Long change values are stored compressed (codec.pack_value): every connection gets the SQL
  function `trialdiff_value(cell)`, which returns a value's JSON text; the canned queries read
  through it, and table pages show the text where a BLOB is stored.

Every hook acts only on the Datasette that `make_datasette` configured, by its plugin config.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar, cast

from datasette import hookimpl as datasette_hookimpl
from datasette.utils.asgi import Response
from markupsafe import Markup, escape

from .. import codec
from ..export import query_subject, to_atom
from ..query import row_to_change
from ..render import acts, visible
from .metadata import private_columns

F = TypeVar("F", bound=Callable[..., Any])


def hookimpl(function: F) -> F:
    """Mark a function as a Datasette hook implementation (typed, for mypy)."""
    return cast(F, datasette_hookimpl(function))


ATOM_COLUMNS: Final = frozenset({"nct_id", "path", "kind", "detected_at", "old", "new",
                                 "detail"})


def _database(datasette: Any) -> str | None:
    """Return the name of the trialdiff database this Datasette serves, if it is ours."""
    config = datasette.plugin_config("trialdiff")
    return config.get("database") if config else None


def authorizer(private: dict[str, tuple[str, ...]]) -> Callable[..., int]:
    """Return an SQLite authorizer that reads private columns as NULL and refuses tables."""
    def check(action: int, table: str | None, column: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_READ and table in private:
            hidden = private[table]
            if "*" in hidden:
                return sqlite3.SQLITE_DENY
            if column in hidden:
                return sqlite3.SQLITE_IGNORE  # the column reads as NULL
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY  # no way round the authorizer through another file
        return sqlite3.SQLITE_OK

    return check


@hookimpl
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    """Give every connection to the trialdiff database `trialdiff_value`, then the authorizer."""
    if database == _database(datasette):
        conn.create_function("trialdiff_value", 1, codec.value_reader(conn), deterministic=True)
        conn.set_authorizer(authorizer(private_columns()))


@hookimpl
def permission_allowed(datasette: Any, actor: Any, action: str, resource: Any) -> bool | None:
    """Forbid the pages of whole private tables."""
    if action == "view-table" and isinstance(resource, tuple) and len(resource) == 2:
        database, table = resource
        if database == _database(datasette) and "*" in private_columns().get(table, ()):
            return False
    return None


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    """Serve a page per study, and send /study (no id) to the table of studies."""
    from .study import study_index, study_page

    return [(r"^/study/(?P<nct_id>[Nn][Cc][Tt][0-9]{8})$", study_page),
            (r"^/study/?$", study_index)]


@hookimpl
def render_cell(value: Any, column: str, database: str, datasette: Any) -> Any:
    """Link a study id to its page; show a compressed change value as its JSON text."""
    if database != _database(datasette):
        return None
    if column == "nct_id" and isinstance(value, str):
        return Markup(f'<a href="/study/{escape(value)}">{escape(value)}</a>')
    if column in ("old", "new") and isinstance(value, bytes):
        return _cut_value(datasette, database, value)
    if isinstance(value, str) and acts(value):
        # ESC, or a bidi override that turns a path around, shows as an escape, as trialdiff
        # shows record text everywhere (line breaks are left to Datasette); Datasette
        # HTML-escapes the returned text.
        return visible(value)
    return None


async def _cut_value(datasette: Any, database: str, value: bytes) -> str:
    """Return a compressed value's text cut as Datasette cuts a long text cell."""
    # A posted results section is 90 KB to 1 MB of JSON: whole, it made a page of 5 MB.
    text = await _value_text(datasette, database, value)
    limit = datasette.setting("truncate_cells_html")
    return text if not limit or len(text) <= limit else text[:limit] + "\u2026"


async def _value_text(datasette: Any, database: str, value: bytes) -> str:
    """Return a stored change value's JSON text, read through `trialdiff_value`."""
    result = await datasette.get_database(database).execute("select trialdiff_value(?)", [value])
    return str(result.first()[0])


def can_render_atom(datasette: Any, columns: list[str]) -> bool:
    """Tell whether a result holds whole changes, which a feed can show."""
    return _database(datasette) is not None and set(columns) >= ATOM_COLUMNS


async def render_atom(datasette: Any, request: Any, database: str, table: str | None,
                      columns: list[str], rows: list[Any], query_name: str | None,
                      data: dict[str, Any] | None = None) -> Response:
    """Return the result as trialdiff's Atom feed: one entry per study per day."""
    if not can_render_atom(datasette, columns):  # a typed URL: Datasette only hides the link
        return Response.text(f"no Atom feed here: a feed needs whole changes (the columns "
                             f"{', '.join(sorted(ATOM_COLUMNS))}), as the changes table, the "
                             "change_log view and the canned queries hold them\n", status=400)
    found = [dict(zip(columns, row, strict=True)) for row in rows]
    # A study-day at a cut goes on past it: its entry would summarise part of the day under
    # the day's own id, which a feed reader keeps. So a page leaves out the study-day at its end
    # if there is a next page (or Datasette's row limit cut a query), and a page after the
    # first its first study-day if it may go on from the page before.
    edges = []
    if data and (data.get("next") or data.get("truncated")) and found:
        edges.append(found[-1])
    if "_next" in request.args and found and await _goes_on_before(
            datasette, database, table, request.args, found[0]):
        edges.append(found[0])
    cut = {(row["nct_id"], str(row["detected_at"])[:10]) for row in edges}
    found = [r for r in found if (r["nct_id"], str(r["detected_at"])[:10]) not in cut]
    for row in found:  # a table page's rows hold compressed values as stored
        for column in ("old", "new"):
            if isinstance(row[column], bytes):
                row[column] = await _value_text(datasette, database, row[column])
    titles = {r["nct_id"]: r["brief_title"] for r in found if r.get("brief_title")}
    name = query_name or table or "query"
    query = (datasette.metadata("queries", database=database) or {}).get(query_name) or {}
    args = request.args  # Datasette's MultiParams: a key may come more than once
    subject, entries = datasette_subject(name, [(k, v) for k in args for v in args.getlist(k)])
    latest = None
    if not found:  # an empty feed is dated by the last observation
        latest = (await datasette.get_database(database).execute(
            "select max(last_seen_at) from sightings")).first()[0]
    feed = to_atom(
        [row_to_change(None, r) for r in found],
        feed_id=f"tag:trialdiff,2024:datasette/{database}/{name}"
        + (f"?{subject}" if subject else ""),
        title=f"trialdiff: {query.get('title') or name}",
        updated=latest,
        self_href=str(request.url),
        titles=titles,
        entry_subject=entries,
    )
    return Response(feed, content_type="application/atom+xml; charset=utf-8")


# Datasette's own arguments that choose rows (the rest, `_next`, `_size`, `_sort`..., do not).
_FILTER_ARGUMENTS: Final = frozenset({"_where", "_search", "_through"})
# What holds every change of a study-day: a feed of it is the whole feed.
_WHOLE: Final = frozenset({"changes", "change_log"})


def datasette_subject(name: str, arguments: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """Return what a Datasette feed keeps, for its id and for its entries' ("": everything).

    A canned query, a filter or SQL holds other changes in a study-day's entry than the whole
    feed does: its entries' ids say so (as `trialdiff changes --format atom` does), so a feed
    reader does not take one for the other. As there, the study ids choose entries but not
    what one holds, so an entry's leaves them out.
    """
    pairs = sorted((key, value) for key, value in arguments
                   if key in _FILTER_ARGUMENTS or key.startswith("_search_")
                   or not key.startswith("_"))
    if name not in _WHOLE:
        pairs.insert(0, ("source", name))
    return query_subject(pairs), query_subject(p for p in pairs if p[0] != "nct_id")


async def _goes_on_before(datasette: Any, database: str, table: str | None, args: Any,
                          first: dict[str, Any]) -> bool:
    """Tell whether a page's first study-day may have rows on the page before it.

    Known only on the changes table by id (its default, newest first, or oldest first):
    elsewhere, assume it may.
    """
    sorts = sorted((key, args.get(key)) for key in args if key.startswith("_sort"))
    before = {(("_sort_desc", "id"),): ">", (): ">", (("_sort", "id"),): "<"}.get(tuple(sorts))
    if table != "changes" or "id" not in first or before is None:
        return True
    result = await datasette.get_database(database).execute(
        "select 1 from changes where nct_id = ? and substr(detected_at, 1, 10) = ? "
        f"and id {before} ? limit 1", [first["nct_id"], str(first["detected_at"])[:10],
                                       first["id"]])
    return result.first() is not None


@hookimpl
def register_output_renderer(datasette: Any) -> dict[str, Any]:
    """Offer `.atom` beside `.json` and `.csv`."""
    return {"extension": "atom", "render": render_atom, "can_render": can_render_atom}
