"""Verify a database: SQLite's integrity, the schema version, canonical timestamps, every
snapshot's hash, and that recomputing every change from the stored snapshots gives exactly the
stored changes. It reads inside one read transaction, so a writer's commits never show halfway.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .annotations import has_annotations, stale_annotations
from .diff import diff_snapshots
from .errors import DatabaseError
from .model import Snapshot, content_hash, parse_json
from .normalize import extract_fields, rekey_locations
from .query import iter_snapshots, latest_record, read_transaction, stored_value
from .render import plural
from .schema import SCHEMA
from .schema_version import SCHEMA_VERSION
from .tracking import rules_of

# Every column holding a time trialdiff wrote; each must be canonical ISO 8601 UTC, as
# model.utc_timestamp writes it, or it sorts wrongly against the others.
TIMESTAMP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("studies", "first_seen_at"), ("studies", "last_changed_at"), ("sightings", "last_seen_at"),
    ("snapshots", "observed_at"), ("changes", "detected_at"), ("records", "observed_at"),
    ("runs", "started_at"), ("runs", "ended_at"), ("watchlist", "added_at"),
    ("watchlist", "backfilled_at"), ("history_versions", "fetched_at"), ("queries", "added_at"),
    ("queries", "last_synced_at"), ("events", "detected_at"),
)
# The ones every row must hold: readers compare them (a NULL one sorts before every time).
REQUIRED_TIMESTAMPS: tuple[tuple[str, str], ...] = (
    ("studies", "first_seen_at"), ("studies", "last_changed_at"), ("sightings", "last_seen_at"),
    ("snapshots", "observed_at"), ("changes", "detected_at"), ("records", "observed_at"),
    ("runs", "started_at"),
)
_D = "[0-9]"
_CANONICAL = f"{_D * 4}-[01]{_D}-[0-3]{_D}T[0-2]{_D}:[0-5]{_D}:[0-6]{_D}.{_D * 3}Z"  # a GLOB


@dataclass
class CheckTotals:
    """What was verified."""

    studies: int = 0
    snapshots: int = 0
    changes: int = 0


def _stored_changes(conn: Any, nct_id: str, snapshot_id: int
                    ) -> list[tuple[int, tuple[str, str, Any, Any, Any]]]:
    """Return a snapshot's stored changes as (id, (path, kind, old, new, detail)), in order."""
    # By study first: `changes` is indexed by study, not by snapshot.
    rows = conn.execute(
        "select id, path, kind, old, new, detail from changes where nct_id = ? and snapshot_id = ? "
        "order by id", [nct_id, snapshot_id],
    )
    stored = []
    for change_id, path, kind, old, new, detail in rows:
        try:
            stored.append((change_id, (path, kind, stored_value(conn, old),
                                       stored_value(conn, new),
                                       parse_json(detail) if detail is not None else None)))
        except (DatabaseError, ValueError) as exc:  # name the row: the study has hundreds
            raise DatabaseError(f"change {change_id} ({path}): its old value, new value or "
                                f"detail cannot be read: {exc}") from exc
    return stored


def check_database(conn: Any, totals: CheckTotals) -> Iterator[str]:
    """Yield one line per problem found; none means the database is sound."""
    raw = getattr(conn, "conn", conn)
    factory = raw.text_factory
    # A text cell whose bytes are not UTF-8 (a flipped bit) reads with U+FFFD, so the row is
    # named as a problem where it is: SQLite's decode error stopped the check, naming none.
    raw.text_factory = _lenient_text
    try:
        with read_transaction(conn):
            yield from _check(conn, totals)
    finally:
        raw.text_factory = factory


def _lenient_text(data: bytes) -> str:
    """Return a text cell's bytes as text, what is not UTF-8 in them as U+FFFD."""
    return data.decode("utf-8", "replace")


def _check(conn: Any, totals: CheckTotals) -> Iterator[str]:
    """Yield the problems of a database, read in the caller's transaction."""
    result = conn.execute("pragma integrity_check").fetchall()
    if result != [("ok",)]:
        yield "SQLite integrity check: " + "; ".join(str(r[0]) for r in result[:10])
        return
    version = conn.execute("select value from meta where key = 'schema_version'").fetchone()
    if version is None or int(version[0]) != SCHEMA_VERSION:
        yield f"unknown schema version: {version[0] if version else None}"
        return
    yield from _check_timestamps(conn)
    yield from _check_indexes(conn)
    # A study's snapshots are verified even when its `studies` row is gone (a hand edit).
    studies = conn.execute(
        "select n.nct_id, s.nct_id is not null, s.content_hash, s.snapshot_count, "
        "s.last_changed_at from (select nct_id from studies union select nct_id from snapshots) "
        "n left join studies s on s.nct_id = n.nct_id order by n.nct_id"
    ).fetchall()
    for nct_id, has_row, study_hash, count, last_changed_at in studies:
        totals.studies += 1
        study = StudyRow(study_hash, count, last_changed_at) if has_row else None
        try:
            yield from _check_study(conn, nct_id, study, totals)
        # A damaged blob, JSON that is not, or a cell of the wrong type (SQLite keeps any
        # type in any column): the study's problem, and the rest of the file is still checked.
        except (DatabaseError, ValueError, TypeError, AttributeError, KeyError) as exc:
            reason = exc if isinstance(exc, DatabaseError) else f"{type(exc).__name__}: {exc}"
            yield f"{nct_id}: its stored data cannot be read: {reason}"
    yield from _check_links(conn)
    yield from _check_annotations(conn)


# Rows that name the row they belong to: (what, the SQL counting those that name none or the
# wrong one, how the problem reads). The fold above reads a study's changes by its id and its
# snapshots' ids, and compares no times, so it cannot see these.
_LINKS: tuple[tuple[str, str, str], ...] = (
    ("change", "select count(*) from changes where snapshot_id is null or snapshot_id not in "
               "(select id from snapshots)", "to no snapshot"),
    ("change", "select count(*) from changes c join snapshots s on s.id = c.snapshot_id "
               "where c.nct_id is not s.nct_id", "to another study's snapshot"),
    ("change", "select count(*) from changes c join snapshots s on s.id = c.snapshot_id "
               "where c.nct_id = s.nct_id and c.detected_at is not s.observed_at",
     "to a snapshot observed at another time than it says"),
    ("record", "select count(*) from records where nct_id not in (select nct_id from studies)",
     "to no study"),
    ("sighting", "select count(*) from sightings "
                 "where nct_id not in (select nct_id from studies)", "to no study"),
)


def _check_links(conn: Any) -> Iterator[str]:
    """Yield one line per kind of row that belongs to no row, or to the wrong one."""
    for noun, sql, where in _LINKS:
        count = conn.execute(sql).fetchone()[0]
        if count:
            yield f"{plural(count, noun)} {'belongs' if count == 1 else 'belong'} {where}"


def _check_annotations(conn: Any, shown: int = 10) -> Iterator[str]:
    """Report stored severities and facts that the current severity rules would not give."""
    if not has_annotations(conn):
        return  # an older schema: the next write command's migration fills them in
    stale = 0
    for found in stale_annotations(conn, skip_damaged=True):  # the study's pass names those
        stale += 1
        if stale <= shown:
            yield (f"{found.nct_id}: change {found.change_id} ({found.path}) stores severity "
                   f"{found.stored[0]} and facts {found.stored[1]}; the current rules say "
                   f"{found.current[0]} and {found.current[1]}: run `trialdiff reannotate`")
    if stale > shown:
        yield f"{stale - shown} more changes disagree with the current rules"


def _check_indexes(conn: Any) -> Iterator[str]:
    """Yield one line per index the schema declares that the file lacks (a hand edit)."""
    for table in SCHEMA:
        present = {tuple(column for _, _, column in conn.execute(f"pragma index_info([{name}])"))
                   for _, name, *_ in conn.execute(f"pragma index_list([{table.name}])")}
        for columns in (*table.indexes, *table.unique):
            if tuple(columns) not in present:
                yield (f"{table.name}: its index on ({', '.join(columns)}) is missing, which "
                       "slows reads: `trialdiff compact` creates it again")


def _check_timestamps(conn: Any) -> Iterator[str]:
    """Yield one line per timestamp column holding a value that is not canonical, or none."""
    for table, column in REQUIRED_TIMESTAMPS:
        count = conn.execute(f"select count(*) from {table} where {column} is null").fetchone()[0]
        if count:
            verb = "has" if count == 1 else "have"
            yield f"{table}.{column}: {plural(count, 'row')} {verb} no time"
    for table, column in TIMESTAMP_COLUMNS:
        count, example = conn.execute(
            f"select count(*), min({column}) from {table} "  # names from the table above
            f"where {column} is not null and ({column} not glob ? or length({column}) != 24)",
            [_CANONICAL],
        ).fetchone()
        if count:
            yield (f"{table}.{column}: {plural(count, 'timestamp')} "
                   f"{'is' if count == 1 else 'are'} not canonical ISO 8601 UTC "
                   f"(YYYY-MM-DDTHH:MM:SS.mmmZ), e.g. {example!r}")


class StudyRow(NamedTuple):
    """What a study's `studies` row says about its snapshots."""

    content_hash: str | None
    snapshot_count: int
    last_changed_at: str | None


def _check_study(
    conn: Any, nct_id: str, study: StudyRow | None, totals: CheckTotals
) -> Iterator[str]:
    """Fold one study's snapshots, checking each hash and recomputing each change."""
    fields: Mapping[str, str] = {}
    try:
        rows = list(iter_snapshots(conn, nct_id))
    except (DatabaseError, ValueError, TypeError, AttributeError) as exc:
        # A delta that does not decompress or parse, or names a shared value whose change is
        # gone: the fold stops there, and so does this study's check.
        yield f"{nct_id}: its snapshots cannot be read: {exc}"
        return
    if study is None:
        yield f"{nct_id}: {plural(len(rows), 'snapshot')} but no row in studies"
    count = len(rows) if study is None else study.snapshot_count
    study_hash = None if study is None else study.content_hash
    if [row.seq for row in rows] != list(range(1, len(rows) + 1)) or len(rows) != count:
        yield f"{nct_id}: snapshots are not numbered 1..{count}"
    if study is not None and rows and rows[-1].snapshot.observed_at != study.last_changed_at:
        yield f"{nct_id}: the study's last_changed_at is not its latest snapshot's observed_at"
    digest = None
    previous: Snapshot | None = None
    lazy = False
    for row in rows:
        snapshot_id, seq, stored_hash = row.id, row.seq, row.stored_hash
        this_markup = row.snapshot.markup
        totals.snapshots += 1
        before, fields = fields, row.snapshot.fields
        if row.lazy:  # a lazy baseline: its content is the study's first raw record
            if seq != 1:
                yield f"{nct_id}: snapshot {seq} has no content but is not the first"
            if not fields:
                yield f"{nct_id}: its baseline's raw record is missing"
            lazy = True
        if lazy and stored_hash is None:
            # A chain rooted in a lazy baseline keeps NULL hashes (the study's too): computed.
            stored_hash = content_hash(fields)
            study_hash = stored_hash if seq == len(rows) and study_hash is None else study_hash
        yield from check_site_paths(nct_id, seq, fields, this_markup)
        if seq > 1 and fields == before:
            yield f"{nct_id}: snapshot {seq} repeats the content of snapshot {seq - 1}"
        digest = content_hash(fields)
        if digest != stored_hash:
            yield f"{nct_id}: snapshot {seq} content hash does not match its content"
        rows_stored = _stored_changes(conn, nct_id, snapshot_id)
        stored = [change for _, change in rows_stored]
        totals.changes += len(stored)
        # The changes a write stores, detail and all (the list items and edits exports show).
        expected = [(c.path, c.kind, c.old, c.new, dict(c.detail))
                    for c in diff_snapshots(previous if seq > 1 else None, row.snapshot)]
        previous = row.snapshot
        if stored != expected:
            yield from _altered_values(nct_id, rows_stored, expected)
            yield (f"{nct_id}: snapshot {seq} stored changes differ from recomputed ones "
                   f"{_difference(stored, expected)}")
    if rows and study is not None and digest != study_hash:
        yield f"{nct_id}: the study's content hash is not its latest snapshot's"
    # A lazy latest snapshot was read from the record itself, unless the record was replaced
    # (by the same content in other bytes): then the record is read here too.
    if rows and (not rows[-1].lazy or conn.execute(
            "select base is not null from records where nct_id = ?", [nct_id]).fetchone() == (1,)):
        yield from check_latest_paths(conn, nct_id, fields)


def _sample(paths: set[str]) -> str:
    """Return a few paths of a set, sorted, for a problem line."""
    return ", ".join(sorted(paths)[:3])


def check_site_paths(
    nct_id: str, seq: int, fields: Mapping[str, str], markup: str | None
) -> Iterator[str]:
    """Yield a problem when a snapshot's sites are not keyed as rule 5 keys them today."""
    expected = rekey_locations(fields, markup or "markdown")
    if expected != fields:
        yield (f"{nct_id}: snapshot {seq} site paths do not follow the current rules "
               f"(stored {_sample(fields.keys() - expected.keys())}; "
               f"expected {_sample(expected.keys() - fields.keys())})")


def check_latest_paths(conn: Any, nct_id: str, fields: Mapping[str, str]) -> Iterator[str]:
    """Yield a problem when the latest snapshot's fields are not its stored record's today.

    The latest raw record is the one source kept whole, so it checks every path, fallback
    paths included (rule 6), and not only the sites.
    """
    latest = conn.execute(
        "select observed_at, markup from snapshots where nct_id = ? order by seq desc limit 1",
        [nct_id],
    ).fetchone()
    stored = conn.execute("select observed_at from records where nct_id = ?", [nct_id]).fetchone()
    if latest is None or stored is None or None in (stored[0], latest[0]) or stored[0] < latest[0]:
        return
    try:
        record = latest_record(conn, nct_id)
    except DatabaseError as exc:
        yield f"{nct_id}: its stored record cannot be read: {exc}"
        return
    if record is None:
        return
    expected = extract_fields(record, rules_of(conn), markup=latest[1] or "markdown")
    if expected != fields:
        differing = {p for p in expected.keys() | fields.keys() if expected.get(p) != fields.get(p)}
        yield (f"{nct_id}: the latest snapshot's fields differ from its stored record's under "
               f"the current rules ({_sample(differing)})")


_PARTS = ("old value", "new value", "detail")


def _altered_values(nct_id: str, stored: list[tuple[int, tuple[Any, ...]]],
                    expected: list[tuple[Any, ...]]) -> Iterator[str]:
    """Name each stored change whose path and kind are right but whose values are not.

    A flipped byte in a compressed value can still decompress, into other text: the change
    row is then the damage, not the rules, and `reannotate` would not repair it.
    """
    recomputed = {change[:2]: change for change in expected}
    for change_id, change in stored:
        right = recomputed.get(change[:2])
        if right is not None and right != change:
            parts = [name for name, a, b in zip(_PARTS, change[2:], right[2:], strict=True)
                     if a != b]
            yield (f"{nct_id}: change {change_id} ({change[0]}): its stored "
                   f"{' and '.join(parts)} {'is' if len(parts) == 1 else 'are'} not what the "
                   "snapshots give: the file is damaged, or was edited")


def _difference(stored: list[Any], expected: list[Any]) -> str:
    """Say how stored changes differ from the recomputed ones: each counted as often as held."""
    missing = list(expected)  # values may be dicts, so the multisets are lists
    extra = []
    for change in stored:
        if change in missing:
            missing.remove(change)
        else:
            extra.append(change[:2])
    if not missing and not extra:
        return "(the same changes, in another order)"
    return f"(missing {[c[:2] for c in missing][:3]}, unexpected {extra[:3]})"
