"""Read snapshots and changes back (sqlite3 only, so read commands start fast).

Readers never take the write lock: in WAL mode they see the last committed state while a
writer works. A reader connection holds one read transaction for its whole life, so a command
that reads many rows sees one consistent state, never half of a writer's batches. The write
transaction every writer opens stands here too, beside the read one.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import codec
from .errors import DatabaseError, TrialdiffError, UsageError, damage_hint
from .lock import frozen
from .meaning import check_path_prefixes
from .model import FieldChange, Snapshot, content_hash, dump_json, parse_json
from .normalize import extract_fields
from .schema_version import read_version, version_problem
from .tracking import rules_of

Connection = sqlite3.Connection | Any  # a sqlite3 connection, or sqlite-utils' Database


class ReaderConnection(sqlite3.Connection):
    """A sqlite3 connection that can hold a weak reference (codec caches dictionaries by it)."""


def require_database(path: str) -> None:
    """Refuse a path that holds no database file (a command that only works on one)."""
    if Path(path).is_dir():
        raise UsageError(f"{path} is a folder, not a database file")
    if path != ":memory:" and not Path(path).is_file():
        raise DatabaseError(f"no database at {path}: run `trialdiff import` or `trialdiff sync`")
    if path != ":memory:" and Path(path).stat().st_size == 0:  # a writer takes it as new
        raise DatabaseError(f"the database {path} is empty: run `trialdiff import` or "
                            "`trialdiff sync`")


def readonly_uri(path: str) -> str:
    """Return the URI that opens a database file read-only, its name escaped (`%`, `#`, `?`)."""
    # On a read-only filesystem SQLite cannot create the -shm file WAL mode reads through.
    return Path(path).absolute().as_uri() + "?mode=ro" + ("&immutable=1" if frozen(path) else "")


def connect_readonly(path: str) -> sqlite3.Connection:
    """Open an existing database for reading, in one read transaction; check its schema."""
    require_database(path)
    conn = None
    try:
        # check_same_thread: a Tracker may move between threads (one at a time), and close
        # from any; SQLite is built serialized (sqlite3.threadsafety 3), so that is safe.
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=30, isolation_level=None,
                               factory=ReaderConnection, check_same_thread=False)
        # Under WAL, a read transaction keeps the snapshot its first read saw until it ends
        # (the connection closes), whatever a writer commits meanwhile.
        conn.execute("begin")
        problem = version_problem(path, *read_version(conn, path))
        if problem is not None:
            raise DatabaseError(problem)
        return conn
    except BaseException as exc:
        if conn is not None:  # its read lock would keep a writer from upgrading the file
            conn.close()
        if isinstance(exc, sqlite3.Error):
            raise _read_error(path, exc) from exc
        raise


def _read_error(path: str, exc: sqlite3.Error) -> TrialdiffError:
    """Return what SQLite's error opening a database for reading means for trialdiff."""
    if "readonly database" in str(exc) or (  # reading, in WAL mode, writes the -shm file
            "unable to open" in str(exc) and Path(f"{path}-wal").exists()):
        return DatabaseError(f"cannot read database {path}: SQLite needs to create "
                             f"{Path(path).name}-shm beside it (WAL mode), and this user "
                             "cannot write to its folder: let it, or read a copy")
    if "no such table: meta" in str(exc):
        return UsageError(f"{path} is not a trialdiff database (it has no meta table)")
    if "file is not a database" in str(exc):
        return UsageError(f"{path} is not a trialdiff database (not an SQLite file)")
    hint = damage_hint(exc) if not isinstance(exc, sqlite3.OperationalError) else ""
    return DatabaseError(f"cannot read database {path}: {exc}{hint}")


@contextmanager
def read_transaction(conn: Connection) -> Iterator[None]:
    """Run a block of reads as one transaction, unless the connection already is in one."""
    raw = getattr(conn, "conn", conn)  # sqlite-utils' Database wraps a sqlite3 connection
    if raw.in_transaction:
        yield
        return
    raw.execute("begin")
    try:
        yield
    finally:
        if raw.in_transaction:
            raw.execute("commit")


@contextmanager
def transaction(db: Connection) -> Iterator[None]:
    """Run a block as one write transaction: all of it commits, or none of it."""
    db.execute("begin immediate")
    try:
        yield
    except BaseException:
        # SQLite may have rolled back itself (a full disk): a second rollback's error would
        # hide the one that matters. A stop may have closed the connection (a traceback).
        with suppress(sqlite3.ProgrammingError):
            if getattr(db, "conn", db).in_transaction:
                db.execute("rollback")
        raise
    db.execute("commit")


# A snapshot delta's key for the paths whose long values it shares with its snapshot's changes:
# such a value is stored once, as the change's new value (records.make_delta). No path has NUL.
SHARED = "\u0000changes"


def apply_delta(conn: Any, fields: dict[str, str], delta: bytes | str, nct_id: str,
                snapshot_id: int) -> None:
    """Apply one stored delta (zstd or zlib of JSON; plain JSON text before 0.1) to a mapping.

    `snapshot_id` is the delta's snapshot (of study `nct_id`), whose changes hold the values
    it shares (SHARED).
    """
    text = codec.decompress(conn, delta) if isinstance(delta, bytes) else delta
    values = json.loads(text)
    if not isinstance(values, dict):
        raise DatabaseError(f"it holds a JSON {type(values).__name__}, not an object: the file "
                            "is damaged")
    shared = values.pop(SHARED, None)
    for path, value in values.items():
        if value is None:
            fields.pop(path, None)
        else:
            fields[path] = dump_json(value)
    if shared:
        fields.update(shared_values(conn, nct_id, snapshot_id, shared))


def shared_values(conn: Any, nct_id: str, snapshot_id: int, paths: list[str]) -> dict[str, str]:
    """Return the new values a snapshot's changes hold for some paths, as canonical JSON."""
    # By study (`+path`: SQLite took the path index for one path, and read all its changes).
    found = {path: text for path, cell in conn.execute(
        f"select path, new from changes where nct_id = ? and snapshot_id = ? and +path in "
        f"({', '.join('?' * len(paths))})", [nct_id, snapshot_id, *paths]).fetchall()
        if (text := codec.unpack_value(conn, cell)) is not None}
    if missing := sorted(set(paths) - found.keys()):
        raise DatabaseError(f"it shares the values of changes that are not stored: "
                            f"{', '.join(missing)}; the file is damaged")
    return found


@dataclass(frozen=True)
class StoredSnapshot:
    """One stored snapshot: its row's bookkeeping, and the snapshot with its fields rebuilt."""

    id: int
    seq: int
    stored_hash: str | None  # the row's content_hash; None for a lazy baseline
    run_id: int | None
    lazy: bool  # delta NULL: a first snapshot never canonicalised, read from its first record
    snapshot: Snapshot


def iter_snapshots(
    conn: Connection, nct_id: str, upto_seq: int | None = None
) -> Iterator[StoredSnapshot]:
    """Yield a study's snapshots oldest first (up to a number), folding deltas: the one fold.

    A lazy baseline (never canonicalised) is read from the study's first raw record.
    Each snapshot's fields are its own dict, safe to keep.
    """
    sql = ("select id, seq, observed_at, content_hash, source, source_version, markup, run_id, "
           "delta from snapshots where nct_id = ?")
    params: list[Any] = [nct_id]
    if upto_seq is not None:
        sql += " and seq <= ?"
        params.append(upto_seq)
    fields: dict[str, str] = {}
    for (snapshot_id, seq, observed_at, stored_hash, source, version, markup, run_id,
         delta) in conn.execute(sql + " order by seq", params).fetchall():
        markup = markup or "markdown"
        if delta is None:
            record = baseline_record(conn, nct_id)
            fields = extract_fields(record, rules_of(conn), markup=markup) if record else {}
        else:
            try:
                apply_delta(conn, fields, delta, nct_id, snapshot_id)
            except (DatabaseError, ValueError, TypeError, AttributeError) as exc:
                # Any damage, a non-object delta included: the number a user sees (not the id).
                raise DatabaseError(f"snapshot {seq}'s delta cannot be read: {exc}") from exc
        yield StoredSnapshot(snapshot_id, seq, stored_hash, run_id, delta is None,
                             Snapshot(nct_id, observed_at, dict(fields), source, version, markup))


def study_fields(conn: Connection, nct_id: str, upto_seq: int | None = None) -> dict[str, str]:
    """Return a study's fields as of a snapshot (default: the latest); {} when it has none."""
    fields: dict[str, str] = {}
    for stored in iter_snapshots(conn, nct_id, upto_seq):
        fields = dict(stored.snapshot.fields)
    return fields


def stored_value(conn: Any, cell: str | bytes | None) -> Any:
    """Return a change's stored old or new value, parsed (a long one unpacked with `conn`)."""
    text = codec.unpack_value(conn, cell)
    return parse_json(text) if text is not None else None


def row_to_change(conn: Any, row: Mapping[str, Any]) -> FieldChange:
    """Return the FieldChange a stored row holds; DatabaseError if its values do not parse."""
    try:
        old, new = stored_value(conn, row["old"]), stored_value(conn, row["new"])
        detail = json.loads(row["detail"]) if row["detail"] else {}
    except ValueError as exc:  # JSON cut short or bytes not UTF-8: written whole, so damaged
        raise DatabaseError(f"{row['nct_id']} {row['path']}: a stored change value is not "
                            f"valid JSON ({exc}): the file is damaged") from None
    return FieldChange(nct_id=row["nct_id"], path=row["path"], kind=row["kind"],
                       detected_at=row["detected_at"], old=old, new=new, detail=detail)


@dataclass(frozen=True)
class ChangeFilter:
    """Which stored changes a query returns; every field given narrows the result."""

    nct_ids: tuple[str, ...] = ()
    since: str | None = None  # inclusive, ISO 8601 UTC
    until: str | None = None  # exclusive
    path_prefixes: tuple[str, ...] = ()  # any of them
    kinds: tuple[str, ...] = ()
    limit: int | None = None
    order: str = "oldest"  # a key of CHANGE_ORDERS

    def __post_init__(self) -> None:
        if self.since and self.until and self.since >= self.until:  # a slip, not a quiet window
            raise UsageError(f"until {self.until} is not after since {self.since}: an empty window")
        check_path_prefixes(self.path_prefixes)


# How query_changes may order its rows; each keeps a study's observation together (exports).
CHANGE_ORDERS = {
    "oldest": "detected_at, nct_id, id",
    "day-newest": "substr(detected_at, 1, 10) desc, nct_id, detected_at, id",
    "newest": "detected_at desc, nct_id, id",
}


def query_changes(conn: Connection, where: ChangeFilter) -> Iterator[FieldChange]:
    """Yield stored changes, oldest first; ties by study, then in stored order."""
    clauses: list[str] = []
    params: list[Any] = []
    if where.nct_ids:
        clauses.append(f"nct_id in ({','.join('?' * len(where.nct_ids))})")
        params.extend(where.nct_ids)
    if where.since:
        clauses.append("detected_at >= ?")
        params.append(where.since)
    if where.until:
        clauses.append("detected_at < ?")
        params.append(where.until)
    if where.path_prefixes:
        # A prefix matches the path itself or anything below it: `status` finds status.*,
        # which sort from "status." to "status/" ("/" follows "."). Case counts, as paths are
        # compared everywhere else (a watch's --path); LIKE ignored it, and used no index.
        clauses.append("(" + " or ".join(["path = ? or (path > ? and path < ?)"]
                                         * len(where.path_prefixes)) + ")")
        for prefix in where.path_prefixes:
            params.extend([prefix, prefix.rstrip(".") + ".", prefix.rstrip(".") + "/"])
    if where.kinds:
        clauses.append(f"kind in ({','.join('?' * len(where.kinds))})")
        params.extend(where.kinds)
    sql = ("select nct_id, path, kind, detected_at, old, new, detail from changes"
           + (" where " + " and ".join(clauses) if clauses else "")
           + " order by " + CHANGE_ORDERS[where.order])
    if where.limit is not None:
        sql += f" limit {int(where.limit)}"
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    for values in cursor:
        yield row_to_change(conn, dict(zip(names, values, strict=True)))


def snapshots_of(conn: Connection, nct_id: str) -> list[dict[str, Any]]:
    """Return a study's stored snapshots, oldest first, without their deltas."""
    cursor = conn.execute(
        "select seq, observed_at, content_hash, source, source_version, "
        "(select count(*) from changes c where c.nct_id = s.nct_id and c.snapshot_id = s.id) "
        "as changes "
        "from snapshots s where nct_id = ? order by seq",
        [nct_id],
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        if row["content_hash"] is None:  # a lazy chain: its hash is its fields'
            row["content_hash"] = content_hash(study_fields(conn, nct_id, row["seq"]))
    return rows


def listed_versions(conn: Connection, nct_id: str) -> dict[int, dict[str, Any]]:
    """Return what the registry's listing said of each backfilled version, by number."""
    return {
        number: {"status": status, "qc_date": qc_date,
                 "module_labels": json.loads(labels) if labels else []}
        for number, status, qc_date, labels in conn.execute(
            "select version, status, qc_date, module_labels from history_versions "
            "where nct_id = ? order by version", [nct_id])
    }


def snapshot_at(conn: Connection, nct_id: str, seq: int) -> Snapshot | None:
    """Return a study's snapshot by number, with its fields rebuilt."""
    last = deque(iter_snapshots(conn, nct_id, seq), maxlen=1)  # each fold, the last kept
    return last[0].snapshot if last and last[0].seq == seq else None


def study_row(conn: Connection, nct_id: str) -> dict[str, Any] | None:
    """Return a study's row from the studies table, or None when it is unknown."""
    cursor = conn.execute(
        "select * from studies left join sightings using (nct_id) where nct_id = ?", [nct_id])
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description], row,
                                             strict=True))


def unknown_studies(conn: Connection, nct_ids: Iterable[str]) -> list[str]:
    """Return which of some study ids the database holds no study for, sorted."""
    return [row[0] for row in conn.execute(
        "select distinct value from json_each(?) where value not in (select nct_id from "
        "studies) order by value", [json.dumps(list(nct_ids))])]


def latest_record(conn: Connection, nct_id: str) -> dict[str, Any] | None:
    """Return the latest raw record stored for a study, or None."""
    row = _record_row(conn, nct_id, "record, base")
    return None if row is None else orjson.loads(codec.record_bytes(conn, row[0], row[1])[0])


def _record_row(conn: Connection, nct_id: str, columns: str) -> Any:
    """Return a study's records row; a file migrating from before schema 7 has no `base` yet."""
    try:
        return conn.execute(f"select {columns} from records where nct_id = ?",
                            [nct_id]).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such column: base" not in str(exc):
            raise
        row = conn.execute("select record from records where nct_id = ?", [nct_id]).fetchone()
        return None if row is None else (row[0], None)


def baseline_record(conn: Connection, nct_id: str) -> dict[str, Any] | None:
    """Return the record a study's lazy first snapshot stands for: its first stored record."""
    row = _record_row(conn, nct_id, "coalesce(base, record)")
    return None if row is None else orjson.loads(codec.decompress(conn, row[0]))


def last_observed(conn: Connection) -> str | None:
    """Return when the database last observed any study, or None when it never did."""
    row = conn.execute("select max(last_seen_at) from sightings").fetchone()
    return row[0] if row else None


class StudyTitles(Mapping[str, str]):
    """The studies' brief titles, read one at a time as asked, so an export holds none."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __getitem__(self, nct_id: str) -> str:
        row = self.conn.execute("select brief_title from studies where nct_id = ?",
                                [nct_id]).fetchone()
        if row is None or not row[0]:
            raise KeyError(nct_id)
        return str(row[0])

    def __iter__(self) -> Iterator[str]:
        return (row[0] for row in self.conn.execute(
            "select nct_id from studies where brief_title is not null order by nct_id"))

    def __len__(self) -> int:  # only len() asks: truth is __bool__'s
        return sum(1 for _ in self)

    def __bool__(self) -> bool:  # `titles or {}` took len(): a count per study-day exported
        return True
