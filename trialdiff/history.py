"""Backfill a study's registry history, version by version, each in its place in time.

Everything that knows the record-history endpoints is the adapter in `history_api`; if they
change shape it raises ShapeError and nothing more is stored. Their text is HTML where API
v2's is Markdown; snapshots remember their markup, and the diff never counts markup as a
change.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlite_utils

from . import codec
from .diff import changed_paths, diff_snapshots
from .errors import FetchError, ShapeError
from .history_api import DAY, HistoryAPI, Version
from .ingest import RunTotals
from .model import Backfilled, Failed, ShapeWarning, Snapshot, content_hash, utc_timestamp
from .normalize import extract_fields, rekey_locations
from .query import apply_delta, iter_snapshots, latest_record, row_to_change, transaction
from .records import materialize, save_record
from .registry import DEFAULT
from .store import (
    insert_row,
    store_snapshot,
    update_study,
)
from .tracking import rules_of
from .watch import AlertWriter, withdraw_alerts

State = tuple[Snapshot, int | None]  # a snapshot and the run that stored it


def stored_snapshots(db: sqlite_utils.Database, nct_id: str) -> list[State]:
    """Return a study's snapshots with their fields rebuilt, and the run of each, oldest first."""
    materialize(db, nct_id)
    return [(stored.snapshot, stored.run_id) for stored in iter_snapshots(db, nct_id)]


def place_in_time(states: list[State], public: Mapping[int, str]) -> list[State]:
    """Order backfilled versions among the other snapshots by when each went public.

    A version sorts by its public day (`public`, by version number). A synced or imported
    snapshot sorts by the last update post date of the record it saw (never later than it
    saw it), so a version posted after a sync comes after it even if QC'd before it, and one
    posted the day of a sync that still saw the old record does too. Such a version is then
    dated no earlier than that sync: nothing appears older than what the sync saw. Of two
    versions public on one day, a sync that saw the first comes between them.
    """
    versions = {number: snapshot for snapshot, _ in states
                if (number := snapshot.source_version) is not None
                and _is_listed(snapshot, public)}
    keyed: list[tuple[tuple[str, int, int, int, int], State]] = []
    last = ("", 0, 0, 0, 0)
    for index, state in enumerate(states):
        snapshot, number = state[0], state[0].source_version
        if number is not None and _is_listed(snapshot, public):
            key = (public[number], 0, number, 0, 0)
        else:
            day = snapshot.observed_at[:10]
            posted = _posted_day(snapshot.fields)
            seen = min(posted, day) if posted else day
            # The version it saw, if that went public on the day it sorts by: right after it.
            saw = [n for n, version in versions.items() if public[n] == seen
                   and not changed_paths(version.fields, snapshot.fields,
                                         (version.markup, snapshot.markup))]
            key = (seen, 0, max(saw), 1, index) if saw else (seen, 1, index, 0, 0)
            key = last = max(key, last)  # the running max keeps synced snapshots in order
        keyed.append((key, state))
    keyed.sort(key=lambda item: item[0])
    placed: list[State] = []
    for _, state in keyed:
        if placed and state[0].observed_at < placed[-1][0].observed_at:
            state = (replace(state[0], observed_at=placed[-1][0].observed_at), state[1])
        placed.append(state)  # the same object when unmoved: rewrite_history keeps those
    return placed


def _is_listed(snapshot: Snapshot, public: Mapping[int, str]) -> bool:
    """Tell whether a snapshot is a backfilled version whose public day is known."""
    return snapshot.source == "backfill" and snapshot.source_version in public


def _posted_day(fields: Mapping[str, str]) -> str:
    """Return the last update post date of a snapshot's record, YYYY-MM-DD, or "" if it has none."""
    # The field holds the whole struct, {"date": ..., "type": ...}, as canonical JSON.
    text = fields.get("status.lastUpdatePostDate")
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return ""
    day = value.get("date") if isinstance(value, dict) else value
    return day if isinstance(day, str) and DAY.fullmatch(day) else ""


def rewrite_history(
    db: sqlite_utils.Database, nct_id: str, states: list[State], stored: list[State]
) -> None:
    """Store a study's snapshots anew as the given time-ordered states, from the first that moved.

    `stored` is what is stored now, one state per snapshot: the states they share from the
    start stay as they are, and everything after is recomputed across the new order. A state
    with the same content as the one before it is not stored. The caller holds the transaction.
    """
    keep = 0
    while keep < min(len(states), len(stored)) and states[keep] is stored[keep]:
        keep += 1
    db.execute("delete from changes where nct_id = ?1 and snapshot_id in (select id from "
               "snapshots where nct_id = ?1 and seq > ?2)", [nct_id, keep])
    db.execute("delete from snapshots where nct_id = ? and seq > ?", [nct_id, keep])
    previous = states[keep - 1][0] if keep else None
    seq = keep
    for snapshot, run_id in states[keep:]:
        if previous is not None and previous.fields == snapshot.fields:
            continue  # same content: a snapshot is stored only when content changes
        seq += 1
        store_snapshot(db, snapshot, previous, seq, run_id, diff_snapshots(previous, snapshot),
                       snapshot.content_hash)
        previous = snapshot
    if previous is not None:
        update_study(db, nct_id, {
            "first_seen_at": states[0][0].observed_at,
            "last_changed_at": previous.observed_at,
            "snapshot_count": seq,
            "content_hash": previous.content_hash,
        })


_CHANGE_KEY = "path, kind, detected_at, old, new"


def _change_keys(db: sqlite_utils.Database, nct_id: str) -> Counter[tuple[Any, ...]]:
    """Return a study's stored changes as a multiset of their stored values."""
    return Counter(_change_key(db, row) for row in db.execute(
        f"select {_CHANGE_KEY} from changes where nct_id = ?", [nct_id]))


def _change_key(db: sqlite_utils.Database, row: Sequence[Any]) -> tuple[Any, ...]:
    """Return a stored change's (path, kind, detected_at, old, new), its values unpacked."""
    # Unpacked: the same value compressed under another dictionary is other bytes.
    return (*row[:3], codec.unpack_value(db, row[3]), codec.unpack_value(db, row[4]))


def _net_changes(
    db: sqlite_utils.Database, nct_id: str, before: Counter[tuple[Any, ...]]
) -> tuple[list[Any], int]:
    """Return the changes stored now that were not before, and how many before are gone."""
    left = Counter(before)
    cursor = db.execute(f"select nct_id, {_CHANGE_KEY}, detail from changes where nct_id = ? "
                        "order by detected_at, id", [nct_id])
    names = [d[0] for d in cursor.description]
    new = []
    for values in cursor.fetchall():
        key = _change_key(db, values[1:6])
        if left[key]:
            left[key] -= 1
        else:
            new.append(row_to_change(db, dict(zip(names, values, strict=True))))
    return new, sum(left.values())


def _check_order(nct_id: str, number: int, day: str, public: Mapping[int, str]) -> None:
    """Refuse a version that went public before an earlier version or after a later one."""
    earlier = [n for n in public if n < number]
    later = [n for n in public if n > number]
    if earlier and day < public[max(earlier)]:
        other = max(earlier)
    elif later and day > public[min(later)]:
        other = min(later)
    else:
        return
    raise ShapeError(f"{nct_id}: version {number} went public on {day} but version {other} on "
                     f"{public[other]}: the version dates go backwards; nothing more was stored")


def backfill_study(
    db: sqlite_utils.Database, api: HistoryAPI, nct_id: str, since: str | None,
    totals: RunTotals, run_id: int | None = None, alerts: AlertWriter | None = None,
    count: bool = True,
) -> Iterator[Backfilled | ShapeWarning]:
    """Take in the versions of a study not stored yet, one transaction per version.

    Each version is dated by the day it went public, and placed among the study's other
    snapshots by that day. What it yields last (also when a version fails, before the error
    is raised) is the changes now stored that were not before: exactly what the run added.
    Given `alerts` (`backfill --alert`), those changes raise alerts in the same transaction.
    Without `count`, the study is not counted as checked (a sync checked it already).
    """
    versions = api.listing(nct_id)
    yield from api.warnings()
    public = {number: day for number, day in db.execute(
        "select version, version_date from history_versions where nct_id = ?", [nct_id])}
    totals.checked += count
    before = _change_keys(db, nct_id)
    taken: list[int] = []
    failure: FetchError | None = None
    fetched: dict[int, tuple[dict[str, Any], str | None]] = {}
    try:
        start = 0
        if since:  # versions go public in their order, each on or after its QC day
            start = len(versions)
            for version in reversed(versions):
                if version.qc_day < since[:10]:  # it may have gone public before: ask
                    if version.number not in public:
                        fetched[version.number] = api.version(nct_id, version.number)
                        yield from api.warnings()
                    posted = public.get(version.number) or fetched[version.number][1]
                    if (posted or version.qc_day) < since[:10]:
                        break
                start -= 1
        for version in versions[start:]:
            if version.number in public:
                continue
            study, posted = fetched.get(version.number) or api.version(nct_id, version.number)
            yield from api.warnings()
            day = posted or version.qc_day
            _check_order(nct_id, version.number, day, public)
            public[version.number] = day
            _slot_in(db, nct_id, version, day, study, public, run_id, alerts, before)
            taken.append(version.number)
    except FetchError as exc:
        failure = exc
    except BaseException:  # Ctrl-C, SIGTERM: the versions committed so far stay, and count
        totals.add_changes(_net_changes(db, nct_id, before)[0])
        raise
    new, replaced = _net_changes(db, nct_id, before)
    totals.add_changes(new)
    yield Backfilled(nct_id, tuple(taken), tuple(new), replaced)
    if failure is not None:
        raise failure


def _slot_in(
    db: sqlite_utils.Database, nct_id: str, version: Version, day: str, study: dict[str, Any],
    public: Mapping[int, str], run_id: int | None, alerts: AlertWriter | None = None,
    before: Counter[tuple[Any, ...]] | None = None,
) -> None:
    """Store one version in its place in the study's history, with what its listing says.

    Given `alerts`, the run's alerts for the study become the changes stored now that were
    not `before` it began: a version slotted in before others recomputes their changes, and
    what a later version replaces again was never news.
    """
    snapshot = Snapshot(nct_id, f"{day}T00:00:00.000Z",
                        extract_fields(study, rules_of(db), markup="html"), "backfill",
                        version.number, "html")
    with transaction(db):
        exists = db.execute("select 1 from studies where nct_id = ?", [nct_id]).fetchone()
        if not exists:
            insert_row(db, "studies", {"nct_id": nct_id, "first_seen_at": snapshot.observed_at,
                                       "raw_hash": "", **DEFAULT.summary_columns(study)})
            insert_row(db, "sightings", {"nct_id": nct_id, "last_seen_at": snapshot.observed_at})
        stored = stored_snapshots(db, nct_id)
        states = place_in_time([*stored, (snapshot, run_id)], public)
        rewrite_history(db, nct_id, states, stored)
        if alerts is not None and run_id is not None:
            withdraw_alerts(db, run_id, nct_id)
            alerts.add(nct_id, _net_changes(db, nct_id, before or Counter())[0])
        latest = states[-1][0]
        if latest.source == "backfill" and latest.source_version == version.number:
            # No synced record is newer: this version is the study's latest record.
            save_record(db, nct_id, study, latest.observed_at)
            update_study(db, nct_id, {"raw_hash": "", **DEFAULT.summary_columns(study)})
        db.execute("update sightings set last_seen_at = max(last_seen_at, ?) where nct_id = ?",
                   [latest.observed_at, nct_id])
        insert_row(db, "history_versions", {
            "nct_id": nct_id, "version": version.number, "version_date": day,
            "content_hash": snapshot.content_hash, "fetched_at": utc_timestamp(),
            "qc_date": version.qc_day, "status": version.status,
            "module_labels": json.dumps(list(version.module_labels), ensure_ascii=False),
        })


def backfill_new(
    db: sqlite_utils.Database, api: HistoryAPI, run_id: int | None, totals: RunTotals,
    record: Callable[[str, BaseException], None], observed_at: str,
) -> Iterator[Backfilled | ShapeWarning | Failed]:
    """Backfill every tracked study whose history was never taken in (`sync --backfill-new`).

    Only a study the database holds: one the registry has not answered (a typo, a 404) has
    no history to take, and its sync's failure already says so. A ShapeError ends the run: it
    is counted once, under its study, by `record` (the run's). A study the sync observed at
    `observed_at` was counted as checked by it; one it skipped (up to date under the release,
    its backfill failed before) is counted here, so no summary says "0 checked, 1 changed".
    """
    pending = db.execute(
        "select nct_id, last_seen_at is not ? from watchlist join studies using (nct_id) "
        "left join sightings using (nct_id) where backfilled_at is null and state = 'tracked' "
        "order by nct_id", [observed_at]).fetchall()
    for nct_id, unseen in pending:
        try:
            yield from backfill_study(db, api, nct_id, None, totals, run_id, count=bool(unseen))
        except ShapeError as exc:
            error = ShapeError(f"backfill: {exc}", setting=exc.setting)
            record(nct_id, error)
            raise error from exc
        except FetchError as exc:
            totals.fail(nct_id, f"backfill: {exc}")
            yield Failed(nct_id, f"backfill: {exc}", exc.setting)
            continue
        with transaction(db):
            db.execute("update watchlist set backfilled_at = ? where nct_id = ?",
                       [utc_timestamp(), nct_id])


def rekey_study(db: sqlite_utils.Database, nct_id: str) -> bool:
    """Store a study's history anew if any stored path differs from the current rules'.

    Sites are re-keyed from their stored values (rule 5). The latest snapshot is rebuilt from
    the study's stored raw record, which also recovers a tracked field an unmapped key had
    overwritten (rule 6); older records were never kept, so older snapshots cannot be.
    Return whether anything was rewritten. The caller holds the transaction.
    """
    rows = db.execute(
        "select observed_at, source, source_version, markup, run_id, delta, id from snapshots "
        "where nct_id = ? order by seq", [nct_id]).fetchall()
    if not rows or any(row[5] is None for row in rows):
        return False  # a lazy baseline is the raw record, read under the current rules
    fields: dict[str, str] = {}
    old_states, new_states = [], []
    for observed_at, source, version, markup, run_id, delta, snapshot_id in rows:
        apply_delta(db, fields, delta, nct_id, snapshot_id)
        old_states.append(dict(fields))
        new_states.append((Snapshot(nct_id, observed_at, rekey_locations(fields, markup),
                                    source, version, markup or "markdown"), run_id))
    stored = db.execute("select observed_at from records where nct_id = ?", [nct_id]).fetchone()
    latest, run_id = new_states[-1]
    record = latest_record(db, nct_id)
    if stored is not None and record is not None and stored[0] >= latest.observed_at:
        rebuilt = extract_fields(record, rules_of(db), markup=latest.markup)
        new_states[-1] = (Snapshot(nct_id, latest.observed_at, rebuilt, latest.source,
                                   latest.source_version, latest.markup), run_id)
    if [s.fields for s, _ in new_states] == old_states:
        return False
    rewrite_history(db, nct_id, new_states, [])
    # A fetched version's hash is that of the snapshot it matched, so it moves the same way.
    moved = {content_hash(old): new.content_hash
             for old, (new, _) in zip(old_states, new_states, strict=True)}
    for row_id, digest in db.execute(
            "select id, content_hash from history_versions where nct_id = ?", [nct_id]).fetchall():
        if digest in moved:
            db.execute("update history_versions set content_hash = ? where id = ?",
                       [moved[digest], row_id])
    return True


def rediff_seams(db: sqlite_utils.Database, nct_id: str) -> bool:
    """Recompute a study's changes from its first markup seam whose stored ones are not today's.

    Where a snapshot's markup is not the one before it (HTML history, then a Markdown record),
    a field is changed only if its words are (`normalize.neutral_json`); schema 13 mended that
    rule, which read a Markdown `<` as the start of a tag. Return whether anything was
    rewritten. The caller holds the transaction.
    """
    stored = stored_snapshots(db, nct_id)
    for index in range(1, len(stored)):
        before, after = stored[index - 1][0], stored[index][0]
        if before.markup == after.markup:
            continue
        kept = db.execute("select path, kind from changes where snapshot_id = (select id from "
                          "snapshots where nct_id = ? and seq = ?)", [nct_id, index + 1])
        if sorted(kept) != sorted(changed_paths(before.fields, after.fields,
                                                (before.markup, after.markup))):
            # New tuples from here on: rewrite_history recomputes from the first it does not
            # find stored (it compares by identity), and keeps the snapshots before the seam.
            rewrite_history(db, nct_id, stored[:index] + [(s, r) for s, r in stored[index:]],
                            stored)
            return True
    return False
