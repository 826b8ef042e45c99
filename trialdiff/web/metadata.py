"""The web view's Datasette metadata, generated from the declarative schema so it cannot drift.

Titles, descriptions and a description per column come from `schema.SCHEMA`; the canned
queries below read the `change_log` view, and each returns whole changes, so each is also an
Atom feed (plugin.py renders it with export.to_atom).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from ..schema import SCHEMA, VIEW_DOCS, Table

# Plumbing a reader does not need: left out of the table list (still readable by SQL).
PLUMBING: Final = ("meta", "records", "dictionaries")
CHANGE_FACETS: Final = ["severity", "kind", "path", "overall_status"]
CHANGE_COLUMNS: Final = ("detected_at, nct_id, brief_title, overall_status, severity, path, "
                         "kind, old, new, facts, detail, study_url")
# Long values are stored compressed: trialdiff_value (plugin.py) returns their JSON text.
_CHANGE_SELECT: Final = CHANGE_COLUMNS.replace(
    "old, new", "trialdiff_value(old) as old, trialdiff_value(new) as new")
# A site's own status turning to one of these closes it; to RECRUITING opens it.
_SITE_STATUSES: Final = ("'RECRUITING', 'COMPLETED', 'TERMINATED', 'WITHDRAWN', "
                         "'ACTIVE_NOT_RECRUITING', 'SUSPENDED'")


class Query(NamedTuple):
    """A canned query: read only, a list of changes (so also a feed)."""

    name: str
    title: str
    description: str
    sql: str


def _changes(where: str, order: str = "detected_at desc, nct_id, change_id") -> str:
    """Return a select of whole changes from the change log."""
    return f"select {_CHANGE_SELECT} from change_log where {where} order by {order}"


QUERIES: Final[tuple[Query, ...]] = (
    Query("major_last_7_days", "Major changes in the last 7 days",
          "Changes the severity rules call major, observed in the last 7 days.",
          _changes("severity = 'major' and "
                   "detected_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')")),
    Query("stopped", "Studies that stopped",
          "Overall status changes into TERMINATED, SUSPENDED or WITHDRAWN.",
          _changes("path = 'status.overallStatus' and "
                   "json_extract(facts, '$.status.stopped')")),
    Query("completion_slipped", "Completion dates slipped 180 days or more",
          "Primary completion or completion dates moved 180 days or more later.",
          _changes("path in ('status.primaryCompletionDate', 'status.completionDate') and "
                   "json_extract(facts, '$.date.days') >= 180")),
    Query("results_posted", "Results posted",
          "Changes that show results were posted.",
          _changes("json_extract(facts, '$.results_posted')")),
    Query("sites_opened_closed", "Sites opened or closed, by country",
          "Sites added, removed, or whose own status became recruiting (opened) or "
          "completed, terminated, withdrawn, suspended or no longer recruiting (closed). "
          "Leave country empty for every country.",
          "select case when kind = 'added' or json_extract(facts, '$.site_status.to') = "
          "'RECRUITING' then 'opened' else 'closed' end as event, "
          "json_extract(trialdiff_value(coalesce(new, old)), '$.country') as country, "
          f"{_CHANGE_SELECT} from change_log where path like 'locations.%' and "
          "(kind in ('added', 'removed') or json_extract(facts, '$.site_status.to') in "
          f"({_SITE_STATUSES})) and "
          "(:country = '' or "
          "lower(json_extract(trialdiff_value(coalesce(new, old)), '$.country')) = "
          "lower(:country)) "
          "order by country, detected_at desc, nct_id, change_id"),
    Query("study_timeline", "One study's timeline",
          "Every change of one study, oldest first.",
          _changes("nct_id = upper(trim(:nct_id))", "detected_at, change_id")),
)


def _table_title(name: str) -> str:
    """Return a table's title from its name."""
    return name.replace("_", " ").capitalize()


def _columns(table: Table) -> dict[str, str]:
    """Return a table's column descriptions."""
    return {name: doc for name, _, doc in table.columns}


def private_columns() -> dict[str, tuple[str, ...]]:
    """Return {table: private columns} from the schema (("*",) for a whole table)."""
    return {table.name: table.private for table in SCHEMA if table.private}


def build_metadata(database: str) -> dict[str, Any]:
    """Return the Datasette metadata of a trialdiff database named `database`."""
    by_name = {table.name: table for table in SCHEMA}
    tables: dict[str, Any] = {}
    for table in SCHEMA:
        entry: dict[str, Any] = {"title": _table_title(table.name),
                                 "description": table.doc, "columns": _columns(table)}
        if table.name in PLUMBING or "*" in table.private:
            entry["hidden"] = True
        tables[table.name] = entry
    changes = tables["changes"]
    # Newest first by id, a unique key: Datasette pages a sort on a column with ties (the
    # detected_at of one run's changes) without a tiebreaker on its first page, so page 2
    # repeated rows and some were on no page (a probe).
    changes.update({"facets": CHANGE_FACETS[:3], "sort_desc": "id"})
    tables["studies"]["label_column"] = "brief_title"
    docs = {**_columns(by_name["studies"]), **_columns(by_name["changes"]),
            "study_url": "the study on ClinicalTrials.gov",
            "change_id": "the change's id in `changes`",
            # Datasette's CSV links a BLOB cell to its row by rowid: a view has none, and the
            # CSV stopped at the first long value, answering 200 (a probe).
            "rowid": "the change's id again, which Datasette's CSV needs for a long value"}
    tables["change_log"] = {
        "title": "Change log",
        "description": VIEW_DOCS["change_log"],
        "facets": CHANGE_FACETS,
        "columns": {name: docs[name]
                    for name in [*CHANGE_COLUMNS.split(", "), "change_id", "rowid"]},
    }
    queries = {q.name: {"title": q.title, "description": q.description, "sql": q.sql}
               for q in QUERIES}
    return {
        "title": "trialdiff",
        "description": "What changed in ClinicalTrials.gov study records, field by field. "
                       "Each study has a page at /study/NCT…",
        "source": "ClinicalTrials.gov",
        "source_url": "https://clinicaltrials.gov/",
        "license": "Public domain (U.S. National Library of Medicine)",
        "databases": {database: {"tables": tables, "queries": queries}},
        "plugins": {"trialdiff": {"database": database}},
    }
