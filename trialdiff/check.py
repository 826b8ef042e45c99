"""Verify a database: SQLite's integrity, the schema version, every snapshot's hash, and that
recomputing every change from the stored snapshots gives exactly the stored changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .annotations import has_annotations, stale_annotations
from .diff import changed_paths
from .model import content_hash
from .query import KNOWN_SCHEMA_VERSIONS, apply_delta, study_fields


@dataclass
class CheckTotals:
    """What was verified."""

    studies: int = 0
    snapshots: int = 0
    changes: int = 0


def _stored_changes(conn: Any, snapshot_id: int) -> list[tuple[str, str, Any, Any]]:
    """Return a snapshot's stored changes as (path, kind, old, new), in stored order."""
    rows = conn.execute(
        "select path, kind, old, new from changes where snapshot_id = ? order by id",
        [snapshot_id],
    )
    return [
        (path, kind, json.loads(old) if old is not None else None,
         json.loads(new) if new is not None else None)
        for path, kind, old, new in rows
    ]


def check_database(conn: Any, totals: CheckTotals) -> Iterator[str]:
    """Yield one line per problem found; none means the database is sound."""
    result = conn.execute("pragma integrity_check").fetchall()
    if result != [("ok",)]:
        yield "SQLite integrity check: " + "; ".join(str(r[0]) for r in result[:10])
        return
    version = conn.execute("select value from meta where key = 'schema_version'").fetchone()
    if version is None or int(version[0]) not in KNOWN_SCHEMA_VERSIONS:
        yield f"unknown schema version: {version[0] if version else None}"
        return
    studies = conn.execute(
        "select nct_id, content_hash, snapshot_count from studies order by nct_id"
    ).fetchall()
    for nct_id, study_hash, count in studies:
        totals.studies += 1
        yield from _check_study(conn, nct_id, study_hash, count, totals)
    orphans = conn.execute(
        "select count(*) from changes where snapshot_id not in (select id from snapshots)"
    ).fetchone()[0]
    if orphans:
        yield f"{orphans} changes belong to no snapshot"
    yield from _check_annotations(conn)


def _check_annotations(conn: Any, shown: int = 10) -> Iterator[str]:
    """Report stored severities and facts that the current severity rules would not give."""
    if not has_annotations(conn):
        return  # an older schema: the next write command's migration fills them in
    stale = 0
    for found in stale_annotations(conn):
        stale += 1
        if stale <= shown:
            yield (f"{found.nct_id}: change {found.change_id} ({found.path}) stores severity "
                   f"{found.stored[0]} and facts {found.stored[1]}; the current rules say "
                   f"{found.current[0]} and {found.current[1]}: run `trialdiff reannotate`")
    if stale > shown:
        yield f"{stale - shown} more changes disagree with the current rules"


def _check_study(
    conn: Any, nct_id: str, study_hash: str | None, count: int, totals: CheckTotals
) -> Iterator[str]:
    """Fold one study's snapshots, checking each hash and recomputing each change."""
    fields: dict[str, str] = {}
    rows = conn.execute(
        "select id, seq, content_hash, delta, markup from snapshots where nct_id = ? order by seq",
        [nct_id],
    ).fetchall()
    if [row[1] for row in rows] != list(range(1, len(rows) + 1)) or len(rows) != count:
        yield f"{nct_id}: snapshots are not numbered 1..{count}"
    digest = None
    markup = None
    for snapshot_id, seq, stored_hash, delta, this_markup in rows:
        totals.snapshots += 1
        before = dict(fields)
        if delta is None:  # a lazy baseline: its content is the study's raw record
            if seq != 1 or len(rows) != 1:
                yield f"{nct_id}: snapshot {seq} has no content but is not a lone baseline"
            fields = study_fields(conn, nct_id, seq)
            if not fields:
                yield f"{nct_id}: its baseline's raw record is missing"
            # Nothing to compare a lazy baseline's hash with: the study's is NULL too.
            stored_hash = study_hash = content_hash(fields)
        else:
            apply_delta(fields, delta)
        if seq > 1 and fields == before:
            yield f"{nct_id}: snapshot {seq} repeats the content of snapshot {seq - 1}"
        digest = content_hash(fields)
        if digest != stored_hash:
            yield f"{nct_id}: snapshot {seq} content hash does not match its content"
        stored = _stored_changes(conn, snapshot_id)
        totals.changes += len(stored)
        expected = [] if seq == 1 else [
            (path, kind, json.loads(before[path]) if kind != "added" else None,
             json.loads(fields[path]) if kind != "removed" else None)
            for path, kind in changed_paths(before, fields, markup != this_markup)
        ]
        markup = this_markup
        if stored != expected:
            missing = [c[:2] for c in expected if c not in stored]
            extra = [c[:2] for c in stored if c not in expected]
            yield (f"{nct_id}: snapshot {seq} stored changes differ from recomputed ones "
                   f"(missing {missing[:3]}, unexpected {extra[:3]})")
    if rows and digest != study_hash:
        yield f"{nct_id}: the study's content hash is not its latest snapshot's"
