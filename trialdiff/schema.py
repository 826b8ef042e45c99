"""The database schema, declared once, and the migrations that bring an older file up to it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import sqlite_utils

from .errors import READ_ONLY, BusyError, DatabaseError, UsageError, damage_hint
from .lock import WriteLock
from .migrations import upgrade_from
from .query import readonly_uri
from .registry import DEFAULT
from .schema_version import SCHEMA_VERSION as SCHEMA_VERSION  # the one number
from .schema_version import UPGRADING_FROM, read_version, stored_version, version_problem


class Table(NamedTuple):
    """One table: its columns as (name, type, meaning), primary key and indexes."""

    name: str
    pk: str
    columns: tuple[tuple[str, type, str], ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    without_rowid: bool = False
    # Columns only the engine reads ("*": the whole table): the web view and its SQL never
    # see them (trialdiff/web: hidden, and NULL or refused by an SQLite authorizer).
    private: tuple[str, ...] = ()
    doc: str = ""  # what the table holds, for the web view


# The README's schema section is generated from this table and tested against it.
SCHEMA: tuple[Table, ...] = (
    Table("meta", "key", (("key", str, "setting name: schema_version; tracked_again (`trialdiff "
                                       "ignored`); compact_progress while a compact runs, "
                                       "upgrading_from while an upgrade does"),
                          ("value", str, "its value")),
          doc="trialdiff's own settings, such as the schema version"),
    Table("studies", "nct_id", (
        ("nct_id", str, "the study"),
        ("first_seen_at", str, "first observation, ISO 8601 UTC"),
        ("last_changed_at", str, "observation time of the latest snapshot"),
        ("snapshot_count", int, "number of stored snapshots"),
        ("content_hash", str, "SHA-256 of the latest snapshot's fields in canonical JSON; NULL "
                              "while the study's chain starts at a lazy baseline"),
        ("raw_hash", str, "hash of the latest record's bytes without derivedSection: the gate"),
        ("brief_title", str, "from the latest record, for readable changelogs"),
        ("overall_status", str, "from the latest record"),
        ("last_update_post_date", str, "the registry's last update post date"),
    ),
          doc="one row per study: when it was seen first and changed last, its title and status"),
    # Every observation moves a study's last sighting, so it lives apart from `studies`: a
    # narrow table means a daily sync of the registry rewrites 6 times fewer pages.
    Table("sightings", "nct_id", (
        ("nct_id", str, "the study"),
        ("last_seen_at", str, "latest observation, whether or not anything changed"),
    ), without_rowid=True,
          doc="when each study was last observed, changed or not"),
    Table("snapshots", "id", (
        ("id", int, "row id"),
        ("nct_id", str, "the study"),
        ("seq", int, "1, 2, ... per study, in observation order"),
        ("observed_at", str, "when this version was observed (backfill: the day it went "
                             "public)"),
        ("content_hash", str, "SHA-256 of the fields as rebuilt at this snapshot; NULL in a "
                              "chain rooted in a lazy baseline (readers compute it)"),
        ("source", str, "import, sync or backfill"),
        ("source_version", int, "the registry's version number, for backfilled versions"),
        ("run_id", int, "the run that stored it"),
        ("delta", bytes, "JSON {path: canonical value, or null when removed} since the "
                         "previous snapshot, zstd with the dictionary (zlib before schema 9); "
                         "a value over 1,024 characters that a change of the snapshot holds as "
                         "its new value is named under the key \"\\u0000changes\" instead "
                         "(schema 10); NULL for a lazy baseline, whose content is the "
                         "study's first raw record (`records.base`, else `records.record`)"),
        ("markup", str, "the record's text markup: markdown (API v2) or html (record history)"),
    ), unique=(("nct_id", "seq"),),
          doc="each stored version of a study, as a delta from the one before"),
    Table("changes", "id", (
        ("id", int, "row id"),
        ("nct_id", str, "the study"),
        ("snapshot_id", int, "the snapshot that first showed the change"),
        ("path", str, "the field path"),
        ("kind", str, "added, removed or changed"),
        ("detected_at", str, "observation time of that snapshot"),
        ("old", str, "JSON value before (NULL when added); over 1,024 characters, zstd of it "
                     "with the dictionary (a BLOB: `trialdiff_value(old)` in the web view)"),
        ("new", str, "JSON value after (NULL when removed); long ones as `old`"),
        ("detail", str, "JSON: list items added, removed and edited; edits inside a value"),
        ("severity", str, "major, minor or info, by the severity rules when it was written "
                          "(`trialdiff reannotate` applies new rules)"),
        ("facts", str, "JSON: what the change means (status transition, date shift, "
                       "enrollment delta, results posted, site counts)"),
    ), indexes=(("nct_id", "detected_at"), ("detected_at",), ("path",),
                ("severity", "detected_at")),
          doc="each field that changed between two consecutive snapshots of a study"),
    Table("records", "nct_id", (
        ("nct_id", str, "the study"),
        ("observed_at", str, "when this record was stored"),
        ("record", bytes, "the latest raw record's JSON, derivedSection left out: zstd with the "
                          "trained dictionary its frame names, or, when `base` is set, zstd "
                          "against `base`'s record (zlib before schema 7)"),
        ("etag", str, "the ETag `/studies/{id}` sent with this record; sync sends it back as "
                      "If-None-Match, and a 304 means seen, unchanged"),
        ("base", bytes, "the study's first record, once a later one replaced it (compressed "
                        "as `record` was): a lazy first snapshot's content"),
    ),
          doc="the latest raw record of each study, for its page, and its first"),
    Table("dictionaries", "id", (
        ("id", int, "the zstd dictionary id that record frames name"),
        ("trained_at", str, "when it was trained"),
        ("samples", int, "how many of the database's records it was trained on"),
        ("dictionary", bytes, "the zstd dictionary, stored as a zstd frame of it (no "
                              "dictionary; as it is before schema 12); kept for as long as any "
                              "row names it"),
    ), doc="the zstd dictionaries raw records, long change values and deltas are compressed "
           "with (public: trained on public records; the web view reads them to show values)"),
    Table("runs", "id", (
        ("id", int, "row id"),
        ("command", str, "import, sync, backfill, reannotate, notify or compact"),
        ("started_at", str, "ISO 8601 UTC"),
        ("ended_at", str, "ISO 8601 UTC; NULL while running or if the run was killed"),
        ("status", str, "running, ok, partial, failed or interrupted (killed, or stopped "
                        "by Ctrl-C)"),
        ("data_timestamp", str, "the registry's data release (GET /version) for syncs"),
        ("checked", int, "studies checked"),
        ("changed", int, "studies with changes"),
        ("changes", int, "changes stored"),
        ("failed", int, "inputs that failed"),
        ("errors", str, "JSON list of {input, error}; private: not in the web view"),
    ), private=("errors",),
          doc="each writing run (import, sync, backfill, reannotate, notify, compact) and what "
              "it did"),
    Table("watchlist", "nct_id", (
        ("nct_id", str, "a study `sync` fetches every run"),
        ("added_at", str, "when it was tracked"),
        ("state", str, "tracked; missing (the API stopped returning it); moved (now an alias)"),
        ("moved_to", str, "the id a moved study now answers as"),
        ("backfilled_at", str, "when `sync --backfill-new` took in its registry history"),
        ("fetched_release", str, "the data release (dataTimestamp) sync last fetched it under; "
                                 "not fetched again under the same release"),
    ),
          doc="the studies `sync` fetches every run"),
    Table("history_versions", "id", (
        ("id", int, "row id"),
        ("nct_id", str, "the study"),
        ("version", int, "the registry's version number, from 0"),
        ("version_date", str, "the day it went public (its last update post date, else the "
                              "listing's date), YYYY-MM-DD: its snapshot's and changes' date"),
        ("content_hash", str, "SHA-256 of the version's fields"),
        ("fetched_at", str, "when backfill fetched it; a fetched version is not fetched again"),
        ("qc_date", str, "the listing's `date`: the day the registry QC'd it, YYYY-MM-DD"),
        ("status", str, "the listing's `status`: the overall status in that version"),
        ("module_labels", str, "the listing's `moduleLabels`: JSON list of the sections it "
                               "changed, as the website names them"),
    ), unique=(("nct_id", "version"),),
          doc="registry versions that backfill took in"),
    Table("queries", "id", (
        ("id", int, "row id"),
        ("expr", str, "API v2 query.* / filter.* parameters, as a query string"),
        ("added_at", str, "when it was saved"),
        ("last_synced_at", str, "start of the last run that fetched it whole; the next run asks "
                                "only for studies updated since the day before"),
        ("fetched_release", str, "the data release (dataTimestamp) it was last fetched whole "
                                 "under; not fetched again under the same release"),
    ), unique=(("expr",),),
          doc="saved API queries that `sync` runs"),
    Table("events", "id", (
        ("id", int, "row id"),
        ("nct_id", str, "the study"),
        ("kind", str, "left_scope, returned or moved"),
        ("detected_at", str, "when the run saw it"),
        ("detail", str, "JSON, e.g. {\"moved_to\": \"NCT...\"}"),
        ("run_id", int, "the run that saw it"),
    ), indexes=(("nct_id",),),
          doc="studies leaving scope, returning, or moving to a new id"),
)

# Alerts (trialdiff/watch.py, trialdiff/notify.py): rules, and an outbox written in the same
# transaction as the changes it carries, delivered after the commit.
ALERT_TABLES: tuple[Table, ...] = (
    Table("watches", "name", (
        ("name", str, "the watch rule's name"),
        ("studies", str, "JSON list of the NCT ids it covers; NULL: not limited to a list"),
        ("query", str, "a saved query whose studies it covers (see `queries`), or NULL"),
        ("paths", str, "JSON list of path prefixes; empty: every path"),
        ("kinds", str, "JSON list of change kinds; empty: every kind"),
        ("min_severity", str, "info, minor or major; NULL: any"),
        ("facts", str, "JSON list of facts of which one must hold, e.g. date_slip>=90"),
        ("digest", int, "1: one message per run; 0: one per study per run"),
        ("targets", str, "JSON list of target references: env:NAME or config:ID, never a URL"),
        ("secret", str, "reference to the webhook signing secret, or NULL"),
        ("created_at", str, "when it was added"),
    ), private=("*",), doc="alert rules (private: targets are references, still not shown)"),
    Table("query_studies", "id", (
        ("id", int, "row id"),
        ("query_id", int, "a saved query"),
        ("nct_id", str, "a study the query returned"),
        ("first_seen_at", str, "when the query first returned it"),
    ), unique=(("query_id", "nct_id"),), private=("*",),
          doc="which studies each saved query returned, for query-scoped watches"),
    Table("alerts", "id", (
        ("id", int, "row id"),
        ("watch", str, "the watch that matched"),
        ("run_id", int, "the run that stored the changes"),
        ("scope", str, "the study (one message per study per run), or `digest`"),
        ("created_at", str, "when it was raised (the give-up age counts from here)"),
        ("idempotency_key", str, "stable per alert: sent as the Idempotency-Key header"),
        ("run", str, "JSON: the run's id, command and start"),
    ), unique=(("watch", "run_id", "scope"),), private=("*",), doc="the alert outbox"),
    # A row per change, so a digest that grows all run long costs an insert per change.
    Table("alert_changes", "id", (
        ("id", int, "row id"),
        ("alert_id", int, "the alert that carries it"),
        ("nct_id", str, "the study"),
        ("title", str, "the study's brief title when the alert was raised"),
        ("change", str, "the change as `changes --format json` has it: zstd of its JSON"),
    ), indexes=(("alert_id",),), private=("*",), doc="the changes each alert carries"),
    Table("deliveries", "id", (
        ("id", int, "row id"),
        ("alert_id", int, "the alert"),
        ("target", str, "the target reference (env:NAME or config:ID)"),
        ("state", str, "pending, delivered or failed (given up)"),
        ("attempts", int, "delivery attempts so far"),
        ("next_attempt_at", str, "not retried before this time (backoff)"),
        ("last_attempt_at", str, "time of the latest attempt"),
        ("delivered_at", str, "when the target accepted it"),
        ("last_error", str, "why the latest attempt failed, target redacted"),
    ), indexes=(("state",),), unique=(("alert_id", "target"),), private=("*",),
          doc="each alert's delivery to each target"),
)
SCHEMA += ALERT_TABLES

# Views for reading the file without trialdiff (Datasette, `sqlite-utils query`).
VIEWS: dict[str, str] = {
    "change_log": f"""
        select c.detected_at, c.nct_id, s.brief_title, s.overall_status, c.severity, c.path,
               c.kind, c.old, c.new, c.facts, c.detail,
               '{DEFAULT.study_url("")}' || c.nct_id as study_url, c.id as change_id, c.id as rowid
        from changes c join studies s on s.nct_id = c.nct_id
        order by c.detected_at desc, c.id desc  -- the index's order: counts and pages sort nothing
    """,
}
VIEW_DOCS: dict[str, str] = {
    "change_log": "each change with its study's title and status, its severity and facts, and "
                  "the study's link on ClinicalTrials.gov",
}


_SQL_TYPES = {str: "TEXT", int: "INTEGER", bytes: "BLOB"}


def create_table(db: sqlite_utils.Database, table: Table) -> None:
    """Create a table and its indexes if they are missing."""
    if table.without_rowid:  # sqlite-utils cannot say WITHOUT ROWID
        columns = ", ".join(f"[{name}] {_SQL_TYPES[kind]}" for name, kind, _ in table.columns)
        db.execute(f"create table if not exists [{table.name}] ({columns}, "
                   f"primary key ([{table.pk}])) without rowid")
    else:
        db[table.name].create(  # type: ignore[union-attr]
            {name: kind for name, kind, _ in table.columns}, pk=table.pk, if_not_exists=True
        )
    for index in table.indexes:
        db[table.name].create_index(index, if_not_exists=True)  # type: ignore[union-attr]
    for index in table.unique:
        db[table.name].create_index(  # type: ignore[union-attr]
            index, unique=True, if_not_exists=True
        )


def complete_tables(db: sqlite_utils.Database) -> None:
    """Create the tables a file lacks, and add the columns its tables lack (empty: NULL)."""
    for table in SCHEMA:
        if not db[table.name].exists():
            create_table(db, table)
            continue
        present = db[table.name].columns_dict
        for name, kind, _ in table.columns:
            if name not in present:
                db.execute(f"alter table [{table.name}] add column [{name}] {_SQL_TYPES[kind]}")


# A write's least wait on SQLite's own lock, held by another connection (track runs beside a
# sync); a longer --wait stretches it, as another program's write is a writer too.
BUSY_SECONDS = 30.0


def open_db(path: str, wait: float = 0.0) -> sqlite_utils.Database:
    """Open (creating if new) and migrate the database at a path, for writing."""
    try:
        conn = sqlite3.connect(path, timeout=max(BUSY_SECONDS, wait), isolation_level=None,
                               check_same_thread=False)  # as the reader's (query.py)
        # No sqlite-utils plugins: what another tool installed must not change this database's
        # connection, and finding them reads every installed package's metadata (15 ms).
        db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            refuse_foreign(db, path)  # before WAL mode, which would change another's file
        except UsageError:
            conn.close()
            raise
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL survives a killed process, which is what cron meets.
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(db, path)
    except sqlite3.DatabaseError as exc:
        if "file is not a database" in str(exc):  # pointed at some other file: usage
            raise UsageError(f"{path} is not a trialdiff database (not an SQLite file)") from exc
        hint = f": {READ_ONLY}" if "readonly database" in str(exc) else damage_hint(exc)
        busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY  # a shell's lock
        raise (BusyError if busy else DatabaseError)(
            f"cannot open database {path}: {exc}{hint}") from exc
    return db


def upgrade(path: str, wait: float = 0.0) -> int | None:
    """Migrate an existing older database in place, under the write lock; return its old version.

    Readers read only the current schema; this is how `check` brings an older file up to it.
    A missing file, a current one, or one that is not trialdiff's is left untouched (None):
    the reader that opens it next says what is wrong.
    """
    if path == ":memory:" or not Path(path).is_file():
        return None
    try:
        with closing(sqlite3.connect(readonly_uri(path), uri=True, timeout=30)) as conn:
            version, started = read_version(conn, path)
    except (sqlite3.DatabaseError, UsageError):
        return None
    if started is None and version >= SCHEMA_VERSION:
        return None
    with WriteLock(path, wait, "upgrade"):
        open_db(path, wait).close()
    return version if started is None else started


def refuse_foreign(db: sqlite_utils.Database, path: str) -> None:
    """Refuse a database another application made, rather than add trialdiff's tables to it.

    A versionless file may hold trialdiff's tables, from a first migration killed half way;
    a table or view trialdiff does not declare, another's table of one of its names (with a
    column trialdiff's lacks), or a row in `meta` (the version is its first) makes it foreign.
    """
    if schema_version(db, path):
        return
    columns = {t.name: {name for name, _, _ in t.columns} for t in SCHEMA}
    foreign = sorted(
        name for name, kind in db.execute(
            "select name, type from sqlite_master where type in ('table', 'view') "
            "and name not like 'sqlite\\_%' escape '\\'"
        )
        if (name not in columns and name not in VIEWS) or (kind == "table" and name in columns
            and not set(db[name].columns_dict) <= columns[name])
        or (name == "meta" and db.execute("select 1 from meta limit 1").fetchone())
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UsageError(
            f"{path} is not a trialdiff database (it holds {shown}); refusing to add "
            "trialdiff's tables to it", setting="db"
        )


def schema_version(db: sqlite_utils.Database, path: str = "the database") -> int:
    """Return the schema version a database holds (0 when it is new)."""
    if not db["meta"].exists():
        return 0
    row = db.execute("select value from meta where key = 'schema_version'").fetchone()
    return stored_version(row[0], path) if row else 0


def migrate(db: sqlite_utils.Database, path: str) -> None:
    """Create missing tables, indexes and views, and upgrade an older schema in place."""
    version = schema_version(db, path)
    started = read_version(db, path)[1] if version else None  # a stopped upgrade's
    if version > SCHEMA_VERSION:  # in the readers' words, the path as given
        raise DatabaseError(str(version_problem(path, version)))
    if version == SCHEMA_VERSION and started is None:
        return
    # Each create below commits on its own; checkpoint often, so the WAL does not hold many
    # copies of the schema pages (a new database on a nearly full disk still fits).
    db.execute("PRAGMA wal_autocheckpoint=8")
    if version:  # marked first, unmarked last (UPGRADING_FROM): a stopped one runs again
        db.execute("insert or replace into meta (key, value) values (?, ?), ('schema_version', ?)",
                   [UPGRADING_FROM, str(started or version), str(SCHEMA_VERSION)])
        complete_tables(db)  # the steps read the tables as today's code does
        upgrade_from(db, started or version)
    for table in SCHEMA:
        create_table(db, table)
    for name, sql in VIEWS.items():
        db.execute(f"drop view if exists {name}")
        db.execute(f"create view {name} as {sql.strip()}")
    db.execute("insert or replace into meta (key, value) values ('schema_version', ?)",
               [str(SCHEMA_VERSION)])
    db.execute("delete from meta where key = ?", [UPGRADING_FROM])
    db.execute("PRAGMA wal_autocheckpoint=1000")  # SQLite's default
