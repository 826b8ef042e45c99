"""Backfill a study's registry history, version by version, slotted in before the present.

The record-history endpoints are undocumented, so everything that knows their shape is the
adapter at the top of this module (`int_base`, `fetch_listing`, `fetch_version`): if they
change shape, it raises ShapeError and nothing is stored. Their text is HTML where API v2's is
Markdown; snapshots remember their markup, and the diff never counts markup as a change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from .diff import diff_snapshots
from .errors import FetchError, ShapeError, UsageError
from .fetch import Client
from .model import FieldChange, Snapshot, VersionSaved, utc_timestamp
from .normalize import extract_fields, study_id
from .query import ChangeFilter, apply_delta, query_changes
from .sources import SourceItem
from .store import (
    RunTotals,
    insert_row,
    materialize,
    save_record,
    store_snapshot,
    summary_columns,
    transaction,
    update_study,
)
from .sync import Outcome
from .watch import AlertWriter

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Version:
    """One entry of a study's record history."""

    number: int
    day: str  # YYYY-MM-DD


def int_base(api_base: str) -> str:
    """Return the record-history base: the API v2 base with `/api/v2` made `/api/int`."""
    base = api_base.rstrip("/")
    if not base.endswith("/api/v2"):
        raise UsageError(f"--api {api_base!r} does not end in /api/v2, so there is no /api/int")
    return base[: -len("/api/v2")] + "/api/int"


def fetch_listing(client: Client, nct_id: str) -> list[Version]:
    """Return a study's versions, checking they run 0, 1, 2, ... with dates."""
    status, body, _ = client.get_json(f"/studies/{nct_id}/history")
    if status == 404:
        return []
    entries = body.get("changes") if isinstance(body, dict) else None
    if status != 200 or not isinstance(entries, list):
        raise ShapeError(f"{nct_id}: the history listing has no list of changes; "
                         "the endpoint changed shape, so nothing was stored")
    versions = []
    for expected, entry in enumerate(entries):
        number = entry.get("version") if isinstance(entry, dict) else None
        day = entry.get("date") if isinstance(entry, dict) else None
        if number != expected or not isinstance(day, str) or not _DAY.fullmatch(day):
            raise ShapeError(f"{nct_id}: history versions are not contiguous from 0 with dates "
                             f"(entry {expected}: {entry!r:.80}); nothing was stored")
        versions.append(Version(expected, day))
    return versions


def fetch_version(client: Client, nct_id: str, number: int) -> dict[str, Any]:
    """Return one version's study object, checking the body is the version asked for."""
    status, body, _ = client.get_json(f"/studies/{nct_id}/history/{number}")
    if status != 200 or not isinstance(body, dict):
        raise ShapeError(f"{nct_id} version {number}: unexpected answer {status}")
    if body.get("studyVersion") != number:
        raise ShapeError(f"{nct_id} version {number}: the body is version "
                         f"{body.get('studyVersion')!r}; nothing was stored")
    study = body.get("study")
    if study_id(study) != nct_id:
        raise ShapeError(f"{nct_id} version {number}: the body is for {study_id(study)!r}; "
                         "nothing was stored")
    assert isinstance(study, dict)
    return study


def stored_snapshots(db: sqlite_utils.Database, nct_id: str) -> list[tuple[Snapshot, int | None]]:
    """Return a study's snapshots with their fields rebuilt, and the run of each, oldest first."""
    materialize(db, nct_id)
    fields: dict[str, str] = {}
    found = []
    for observed_at, source, version, markup, run_id, delta in db.execute(
        "select observed_at, source, source_version, markup, run_id, delta from snapshots "
        "where nct_id = ? order by seq", [nct_id],
    ).fetchall():
        apply_delta(fields, delta)
        found.append((Snapshot(nct_id, observed_at, dict(fields), source, version,
                               markup or "markdown"), run_id))
    return found


def rewrite_history(
    db: sqlite_utils.Database, nct_id: str, states: list[tuple[Snapshot, int | None]]
) -> list[FieldChange]:
    """Store a study's snapshots anew as the given time-ordered states; return new changes.

    Backfill slots older versions in before the first synced snapshot this way, so every
    change is recomputed across the seam. The caller holds the transaction.
    """
    before = {(c.path, c.kind, c.detected_at) for c in _stored_changes(db, nct_id)}
    db.execute("delete from changes where nct_id = ?", [nct_id])
    db.execute("delete from snapshots where nct_id = ?", [nct_id])
    previous: Snapshot | None = None
    found: list[FieldChange] = []
    seq = 0
    for snapshot, run_id in states:
        if previous is not None and previous.fields == snapshot.fields:
            continue  # same content: a snapshot is stored only when content changes
        changes = diff_snapshots(previous, snapshot)
        seq += 1
        store_snapshot(db, snapshot, previous, seq, run_id, changes)
        found.extend(c for c in changes if (c.path, c.kind, c.detected_at) not in before)
        previous = snapshot
    if previous is not None:
        update_study(db, nct_id, {
            "first_seen_at": states[0][0].observed_at,
            "last_changed_at": previous.observed_at,
            "snapshot_count": seq,
            "content_hash": previous.content_hash,
        })
    return found


def _stored_changes(db: sqlite_utils.Database, nct_id: str) -> list[FieldChange]:
    """Return a study's stored changes."""
    return list(query_changes(db, ChangeFilter((nct_id,))))


def backfill_study(
    db: sqlite_utils.Database, client: Client, nct_id: str, since: str | None,
    totals: RunTotals, run_id: int | None = None, alerts: AlertWriter | None = None,
) -> Iterator[Outcome | VersionSaved]:
    """Take in the versions of a study not stored yet, one transaction per version.

    Versions dated on or after the study's first synced snapshot are what sync already saw,
    so they are left out; a killed backfill resumes at the next version not stored. Given
    `alerts` (`backfill --alert`), the changes raise alerts in the same transaction.
    """
    versions = fetch_listing(client, nct_id)
    if not versions:
        totals.fail(nct_id, "the registry has no history for it (404)")
        return
    known = {row[0] for row in db.execute(
        "select version from history_versions where nct_id = ?", [nct_id])}
    states = stored_snapshots(db, nct_id)
    present = [s.observed_at[:10] for s, _ in states if s.source != "backfill"]
    cutoff = min(present) if present else None
    totals.checked += 1
    for version in versions:
        if version.number in known or (since and version.day < since[:10]):
            continue
        if cutoff is not None and version.day >= cutoff:
            break
        study = fetch_version(client, nct_id, version.number)
        yield VersionSaved(nct_id, version.number,
                           _slot_in(db, nct_id, version, study, run_id, totals, alerts))


def _slot_in(
    db: sqlite_utils.Database, nct_id: str, version: Version, study: dict[str, Any],
    run_id: int | None, totals: RunTotals, alerts: AlertWriter | None = None,
) -> tuple[FieldChange, ...]:
    """Store one version in its place in the study's history; return the changes it made."""
    snapshot = Snapshot(nct_id, f"{version.day}T00:00:00.000Z",
                        extract_fields(study, markup="html"), "backfill", version.number, "html")
    with transaction(db):
        exists = db.execute("select 1 from studies where nct_id = ?", [nct_id]).fetchone()
        if not exists:
            insert_row(db, "studies", {"nct_id": nct_id, "first_seen_at": snapshot.observed_at,
                                       "raw_hash": "", **summary_columns(study)})
            insert_row(db, "sightings", {"nct_id": nct_id, "last_seen_at": snapshot.observed_at})
        states = stored_snapshots(db, nct_id)
        states.append((snapshot, run_id))
        # Backfilled versions sort by version number; the synced present comes after them all.
        states.sort(key=lambda s: (s[0].source != "backfill", s[0].source_version or 0,
                                   s[0].observed_at))
        changes = rewrite_history(db, nct_id, states)
        if alerts is not None:
            alerts.add(nct_id, changes)
        if states[-1][0] is snapshot:  # no synced record yet: this version is the latest
            save_record(db, nct_id, study, snapshot.observed_at)
            db.execute("update studies set raw_hash = '' where nct_id = ?", [nct_id])
            db.execute(
                "update sightings set last_seen_at = max(last_seen_at, ?) where nct_id = ?",
                [snapshot.observed_at, nct_id],
            )
        insert_row(db, "history_versions", {
            "nct_id": nct_id, "version": version.number, "version_date": version.day,
            "content_hash": snapshot.content_hash, "fetched_at": utc_timestamp(),
        })
    totals.add_changes(changes)
    return tuple(changes)


def backfill_new(
    db: sqlite_utils.Database, client: Client, run_id: int | None, totals: RunTotals
) -> Iterator[Outcome | VersionSaved]:
    """Backfill every tracked study whose history was never taken in (`sync --backfill-new`)."""
    pending = [row[0] for row in db.execute(
        "select nct_id from watchlist where backfilled_at is null and state = 'tracked' "
        "order by nct_id").fetchall()]
    for nct_id in pending:
        try:
            yield from backfill_study(db, client, nct_id, None, totals, run_id)
        except ShapeError:
            raise
        except FetchError as exc:
            totals.fail(nct_id, f"backfill: {exc}")
            yield SourceItem(nct_id, error=f"backfill: {exc}")
            continue
        with transaction(db):
            db.execute("update watchlist set backfilled_at = ? where nct_id = ?",
                       [utc_timestamp(), nct_id])
