"""Backfill a study's registry history, version by version, each in its place in time.

The record-history endpoints are undocumented, so everything that knows their shape is the
adapter at the top of this module (`HistoryAPI`): if they change shape it raises ShapeError
and stores nothing more. It reads them as the published clients do: cthist
(R/clinicaltrials_gov_dates.R, R/clinicaltrials_gov_version.R) and ctrdata
(R/ctrLoadQueryIntoDbCtgov2.R) list versions with `/api/int/studies/{id}?history=true`
(`history.changes`) and read each with `/api/int/studies/{id}/history/{v}` (`studyVersion`,
`study`). Their text is HTML where API v2's is Markdown; snapshots remember their markup, and
the diff never counts markup as a change.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import sqlite_utils

from .diff import diff_snapshots
from .errors import FetchError, ForbiddenError, ShapeError, UsageError
from .fetch import Client
from .model import Backfilled, ShapeWarning, Snapshot, utc_timestamp
from .normalize import extract_fields, study_id
from .query import apply_delta, row_to_change
from .sources import SourceItem
from .store import (
    RunTotals,
    insert_row,
    materialize,
    save_record,
    store_snapshot,
    summary_columns,
    text_at,
    transaction,
    update_study,
)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# The listing's two routes: the one the website, cthist and ctrdata use, then the older one.
ROUTES = ("?history=true", "/history")
_TOP_KEYS = {"?history=true": frozenset({"study", "history"}), "/history": frozenset({"changes"})}
HISTORY_KEYS = frozenset({"changes", "originalData", "lastUpdateVersions", "outcomesUpdateCount"})
ENTRY_KEYS = frozenset({"version", "date", "status", "studyType", "moduleLabels",
                        "lastUpdateSubmitQcDate"})
VERSION_KEYS = frozenset({"studyVersion", "study"})
# A version goes public 1 to 4 days after its QC date; --since looks this far back for one
# QC'd before the day asked for but posted on or after it.
POSTING_LAG = timedelta(days=14)


@dataclass(frozen=True)
class Version:
    """One entry of a study's version listing."""

    number: int
    qc_day: str  # the listing's `date`: when the registry QC'd it, YYYY-MM-DD
    status: str | None
    module_labels: tuple[str, ...]


class _RouteFailed(Exception):
    """A listing route did not answer with a listing; the other route is tried."""


def site_root(api_base: str) -> str:
    """Return the registry's root: the API v2 base without its trailing `/api/v2`."""
    base = api_base.rstrip("/")
    if not base.endswith("/api/v2"):
        raise UsageError(f"--api {api_base!r} does not end in /api/v2, so there is no /api/int")
    return base[: -len("/api/v2")]


@dataclass
class HistoryAPI:
    """The record-history endpoints, through a client based at the registry's root."""

    client: Client
    routes: list[str] = field(default_factory=lambda: list(ROUTES))
    _warned: set[str] = field(default_factory=set)
    _pending: list[str] = field(default_factory=list)

    def warnings(self) -> Iterator[ShapeWarning]:
        """Yield the shape warnings raised since last asked, each once per run."""
        while self._pending:
            yield ShapeWarning(self._pending.pop(0))

    def _unknown(self, where: str, keys: set[str] | frozenset[str], nct_id: str) -> None:
        """Warn, once per place, about keys an answer has that trialdiff does not know."""
        if keys and where not in self._warned:
            self._warned.add(where)
            self._pending.append(f"{where} has keys trialdiff does not know: "
                                 f"{', '.join(sorted(keys))} (first seen for {nct_id}); "
                                 "they were ignored")

    def listing(self, nct_id: str) -> list[Version]:
        """Return a study's versions, trying each listing route, the last one that worked first.

        Raises ShapeError when neither route gives a listing for a study API v2 knows, and
        FetchError when API v2 does not know the study either.
        """
        problems: list[str] = []
        statuses: list[int] = []
        for route in list(self.routes):
            query = route.startswith("?")
            path = f"/api/int/studies/{nct_id}" + ("" if query else route)
            status, body, _ = self.client.get_json(path, {"history": "true"} if query else {})
            statuses.append(status)
            try:
                if status != 200:
                    raise _RouteFailed(f"answered {status}")
                entries = self._entries(nct_id, route, body)
            except _RouteFailed as exc:
                problems.append(f"{path}{route if query else ''} {exc}")
                continue
            if route != self.routes[0]:  # remember it: the next study asks this one first
                self.routes.remove(route)
                self.routes.insert(0, route)
                if 200 in statuses[:-1]:  # the other route answered, but not with a listing
                    used = path + (route if query else "")
                    self._pending.append(f"{nct_id}: {problems[-1]}; used {used} instead")
            return self._versions(nct_id, entries)
        if all(s == 404 for s in statuses):
            self._require_known(nct_id)
        raise ShapeError(f"{nct_id}: API v2 knows this study but no record-history listing "
                         f"answers ({'; '.join(problems)}); the endpoints changed shape, so "
                         "nothing was stored")

    def _require_known(self, nct_id: str) -> None:
        """Raise FetchError if API v2 does not know a study (so it has no history either)."""
        status, _, headers = self.client.get_json(f"/api/v2/studies/{nct_id}")
        if status == 404:
            raise FetchError("not in the registry (404 from API v2 and from both "
                             "record-history listings)")
        if status in (301, 302, 307, 308):
            moved = headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1].split("?")[0]
            raise FetchError(f"the registry now answers it as {moved}; backfill that")

    def _entries(self, nct_id: str, route: str, body: Any) -> list[Any]:
        """Return a listing's entries, or raise _RouteFailed if the answer is not a listing."""
        if not isinstance(body, dict):
            raise _RouteFailed("answered with something other than a JSON object")
        where = "/api/int/studies/{id}" + route
        if missing := _TOP_KEYS[route] - body.keys():
            raise _RouteFailed(f"answered without the keys {', '.join(sorted(missing))}")
        if route.startswith("?"):
            history = body["history"]
            if not isinstance(history, dict):
                raise _RouteFailed("answered with a `history` that is not an object")
            if missing := HISTORY_KEYS - history.keys():
                raise _RouteFailed("answered without the keys "
                                   + ", ".join("history." + k for k in sorted(missing)))
            self._unknown(where, body.keys() - _TOP_KEYS[route], nct_id)
            self._unknown(where + " `history`", history.keys() - HISTORY_KEYS, nct_id)
        else:
            history = body  # the same object, at the top level
            self._unknown(where, body.keys() - HISTORY_KEYS, nct_id)
        if not isinstance(history["changes"], list):
            raise _RouteFailed("answered with `changes` that is not a list")
        return history["changes"]

    def _versions(self, nct_id: str, entries: list[Any]) -> list[Version]:
        """Check a listing's entries: contiguous from 0, dated, dates never going back."""
        versions: list[Version] = []
        for expected, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ShapeError(f"{nct_id}: history entry {expected} is not an object; "
                                 "nothing was stored")
            if missing := ENTRY_KEYS - entry.keys():
                raise ShapeError(f"{nct_id}: history entry {expected} lacks the keys "
                                 f"{', '.join(sorted(missing))}; nothing was stored")
            self._unknown("a history listing entry", entry.keys() - ENTRY_KEYS, nct_id)
            day, labels, status = entry["date"], entry["moduleLabels"], entry["status"]
            if entry["version"] != expected or not isinstance(day, str) or not _DAY.fullmatch(day):
                raise ShapeError(f"{nct_id}: history versions are not contiguous from 0 with "
                                 f"dates (entry {expected}: {entry!r:.80}); nothing was stored")
            if versions and day < versions[-1].qc_day:
                raise ShapeError(f"{nct_id}: version {expected} is dated {day}, before version "
                                 f"{expected - 1} ({versions[-1].qc_day}): the version dates go "
                                 "backwards; nothing was stored")
            if not isinstance(labels, list | None) or not all(isinstance(x, str)
                                                             for x in labels or ()):
                raise ShapeError(f"{nct_id}: version {expected}'s moduleLabels is not a list "
                                 "of names; nothing was stored")
            versions.append(Version(expected, day, status if isinstance(status, str) else None,
                                    tuple(labels or ())))
        return versions

    def version(self, nct_id: str, number: int) -> tuple[dict[str, Any], str | None]:
        """Return one version's study object and the day it went public, if the body says."""
        path = f"/api/int/studies/{nct_id}/history/{number}"
        try:
            status, body, _ = self.client.get_json(path)
        except ForbiddenError as exc:
            # The listing just answered this client, so this 403 is not its User-Agent: it
            # is how the registry says a version number is past the last one.
            raise FetchError(f"no such version {number} (the registry answers 403 "
                             "past a study's last version); its listing changed, so run "
                             "backfill again") from exc
        if status != 200 or not isinstance(body, dict):
            raise ShapeError(f"{nct_id} version {number}: unexpected answer {status}")
        if missing := VERSION_KEYS - body.keys():
            raise ShapeError(f"{nct_id} version {number}: the body lacks the keys "
                             f"{', '.join(sorted(missing))}; nothing more was stored")
        self._unknown("/api/int/studies/{id}/history/{v}", body.keys() - VERSION_KEYS, nct_id)
        if body["studyVersion"] != number:
            raise ShapeError(f"{nct_id} version {number}: the body is version "
                             f"{body['studyVersion']!r}; nothing more was stored")
        study = body["study"]
        if study_id(study) != nct_id:
            raise ShapeError(f"{nct_id} version {number}: the body is for {study_id(study)!r}; "
                             "nothing more was stored")
        posted = text_at(study, "protocolSection", "statusModule", "lastUpdatePostDateStruct",
                         "date")
        return study, posted if posted and _DAY.fullmatch(posted) else None


State = tuple[Snapshot, int | None]  # a snapshot and the run that stored it


def stored_snapshots(db: sqlite_utils.Database, nct_id: str) -> list[State]:
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


def place_in_time(states: list[State], public: Mapping[int, str]) -> list[State]:
    """Order backfilled versions among the other snapshots by when each went public.

    A version sorts by its public day (`public`, by version number). A synced or imported
    snapshot sorts by the last update post date of the record it saw (never later than it
    saw it), so a version posted after a sync comes after it even if QC'd before it, and one
    posted the day of a sync that still saw the old record does too. Such a version is then
    dated no earlier than that sync: nothing appears older than what the sync saw.
    """
    keyed: list[tuple[tuple[str, int, int], State]] = []
    seen = ""
    for index, state in enumerate(states):
        snapshot, number = state[0], state[0].source_version
        if snapshot.source == "backfill" and number is not None and number in public:
            key = (public[number], 0, number)
        else:
            day = snapshot.observed_at[:10]
            posted = snapshot.fields.get("status.lastUpdatePostDate", "").strip('"')
            seen = max(seen, min(posted, day) if _DAY.fullmatch(posted) else day)
            key = (seen, 1, index)  # the running max keeps synced snapshots in their order
        keyed.append((key, state))
    keyed.sort(key=lambda item: item[0])
    placed: list[State] = []
    for _, state in keyed:
        if placed and state[0].observed_at < placed[-1][0].observed_at:
            state = (replace(state[0], observed_at=placed[-1][0].observed_at), state[1])
        placed.append(state)  # the same object when unmoved: rewrite_history keeps those
    return placed


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
    db.execute("delete from changes where snapshot_id in (select id from snapshots "
               "where nct_id = ? and seq > ?)", [nct_id, keep])
    db.execute("delete from snapshots where nct_id = ? and seq > ?", [nct_id, keep])
    previous = states[keep - 1][0] if keep else None
    seq = keep
    for snapshot, run_id in states[keep:]:
        if previous is not None and previous.fields == snapshot.fields:
            continue  # same content: a snapshot is stored only when content changes
        seq += 1
        store_snapshot(db, snapshot, previous, seq, run_id, diff_snapshots(previous, snapshot))
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
    return Counter(db.execute(f"select {_CHANGE_KEY} from changes where nct_id = ?", [nct_id]))


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
        key = tuple(values[1:6])
        if left[key]:
            left[key] -= 1
        else:
            new.append(row_to_change(dict(zip(names, values, strict=True))))
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
    totals: RunTotals, run_id: int | None = None,
) -> Iterator[Backfilled | ShapeWarning]:
    """Take in the versions of a study not stored yet, one transaction per version.

    Each version is dated by the day it went public, and placed among the study's other
    snapshots by that day. What it yields last (also when a version fails, before the error
    is raised) is the changes now stored that were not before: exactly what the run added.
    """
    versions = api.listing(nct_id)
    yield from api.warnings()
    public = {number: day for number, day in db.execute(
        "select version, version_date from history_versions where nct_id = ?", [nct_id])}
    floor = (date.fromisoformat(since[:10]) - POSTING_LAG).isoformat() if since else ""
    totals.checked += 1
    before = _change_keys(db, nct_id)
    taken: list[int] = []
    failure: FetchError | None = None
    try:
        for version in versions:
            if version.number in public or version.qc_day < floor:
                continue
            study, posted = api.version(nct_id, version.number)
            yield from api.warnings()
            day = posted or version.qc_day
            _check_order(nct_id, version.number, day, public)
            if since and day < since[:10]:
                continue
            public[version.number] = day
            _slot_in(db, nct_id, version, day, study, public, run_id)
            taken.append(version.number)
    except FetchError as exc:
        failure = exc
    new, replaced = _net_changes(db, nct_id, before)
    totals.add_changes(new)
    yield Backfilled(nct_id, tuple(taken), tuple(new), replaced)
    if failure is not None:
        raise failure


def _slot_in(
    db: sqlite_utils.Database, nct_id: str, version: Version, day: str, study: dict[str, Any],
    public: Mapping[int, str], run_id: int | None,
) -> None:
    """Store one version in its place in the study's history, with what its listing says."""
    snapshot = Snapshot(nct_id, f"{day}T00:00:00.000Z", extract_fields(study, markup="html"),
                        "backfill", version.number, "html")
    with transaction(db):
        exists = db.execute("select 1 from studies where nct_id = ?", [nct_id]).fetchone()
        if not exists:
            insert_row(db, "studies", {"nct_id": nct_id, "first_seen_at": snapshot.observed_at,
                                       "raw_hash": "", **summary_columns(study)})
            insert_row(db, "sightings", {"nct_id": nct_id, "last_seen_at": snapshot.observed_at})
        stored = stored_snapshots(db, nct_id)
        states = place_in_time([*stored, (snapshot, run_id)], public)
        rewrite_history(db, nct_id, states, stored)
        latest = states[-1][0]
        if latest.source == "backfill" and latest.source_version == version.number:
            # No synced record is newer: this version is the study's latest record.
            save_record(db, nct_id, study, latest.observed_at)
            update_study(db, nct_id, {"raw_hash": "", **summary_columns(study)})
        db.execute("update sightings set last_seen_at = max(last_seen_at, ?) where nct_id = ?",
                   [latest.observed_at, nct_id])
        insert_row(db, "history_versions", {
            "nct_id": nct_id, "version": version.number, "version_date": day,
            "content_hash": snapshot.content_hash, "fetched_at": utc_timestamp(),
            "qc_date": version.qc_day, "status": version.status,
            "module_labels": json.dumps(list(version.module_labels), ensure_ascii=False),
        })


def backfill_new(
    db: sqlite_utils.Database, api: HistoryAPI, run_id: int | None, totals: RunTotals
) -> Iterator[Backfilled | ShapeWarning | SourceItem]:
    """Backfill every tracked study whose history was never taken in (`sync --backfill-new`)."""
    pending = [row[0] for row in db.execute(
        "select nct_id from watchlist where backfilled_at is null and state = 'tracked' "
        "order by nct_id").fetchall()]
    for nct_id in pending:
        try:
            yield from backfill_study(db, api, nct_id, None, totals, run_id)
        except ShapeError as exc:
            totals.fail(nct_id, f"backfill: {exc}")
            raise
        except FetchError as exc:
            totals.fail(nct_id, f"backfill: {exc}")
            yield SourceItem(nct_id, error=f"backfill: {exc}")
            continue
        with transaction(db):
            db.execute("update watchlist set backfilled_at = ? where nct_id = ?",
                       [utc_timestamp(), nct_id])
