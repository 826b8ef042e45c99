"""The cron job: fetch the tracked studies and saved queries, and save what changed.

`sync_api` wires `fetch` generators to `ingest.save_studies`, one whole page per transaction,
so a failed or cut-short page stores nothing and a killed run resumes by simply running again:
the hash gate makes every saved page idempotent. What was fetched under the current data
release is not fetched again. It yields what happened; the CLI prints it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl

import sqlite_utils

from .errors import (
    FetchError,
    ForbiddenError,
    RejectedRequest,
    TrialdiffError,
    UsageError,
)
from .fetch import (
    Client,
    answered_ids,
    fetch_batch,
    fetch_pages,
    fetch_study,
    id_batches,
)
from .ingest import RunTotals, save_studies
from .model import Event, Failed, Observation, Outcome, PageDone, ShapeWarning, UpToDate
from .query import latest_record, transaction
from .registry import DEFAULT
from .sources import SourceItem
from .watch import remember_members
from .watchlist import incremental, query_members, tracked_ids


def _record_event(db: sqlite_utils.Database, event: Event, at: str, run_id: int) -> None:
    """Store an event and move the study's watchlist state to match."""
    with transaction(db):
        db.execute(
            "insert into events (nct_id, kind, detected_at, detail, run_id) values (?, ?, ?, ?, ?)",
            [event.nct_id, event.kind, at, json.dumps(event.detail, sort_keys=True), run_id],
        )
        state = {"left_scope": "missing", "returned": "tracked", "moved": "moved"}[event.kind]
        db.execute(
            "update watchlist set state = ?, moved_to = ? where nct_id = ?",
            [state, event.detail.get("moved_to"), event.nct_id],
        )


def _items(page: list[dict[str, Any]], where: str) -> list[SourceItem]:
    """Return a fetched page as source items (a record without an id is an error)."""
    items = []
    for index, study in enumerate(page):
        nct_id = DEFAULT.study_id(study)
        if nct_id is None:
            items.append(SourceItem(f"{where}[{index}]", error="not a study: no nctId"))
        else:
            items.append(SourceItem(f"{where}[{index}]", study, nct_id))
    return items


@dataclass
class _Run:
    """One sync against the API: where it writes, and what it has seen so far."""

    db: sqlite_utils.Database
    client: Client
    observed_at: str
    run_id: int
    totals: RunTotals
    release: str | None
    states: dict[str, str]
    seen: set[str] = field(default_factory=set)  # ids (and aliases) the API answered for
    failed: set[str] = field(default_factory=set)
    saved: set[str] = field(default_factory=set)  # ids saved by this run: each counts once
    # Ids whose record was refused (an --at older than its snapshot): not fetched, so asked
    # again, even under this release, and no ETag kept that a 304 would take as stored.
    unsaved: set[str] = field(default_factory=set)

    def save(self, page: list[dict[str, Any]], where: str) -> Iterator[Outcome]:
        """Save a page's studies this run has not saved yet, in one transaction."""
        fresh = [item for item in _items(page, where) if item.nct_id not in self.saved]
        self.saved.update(item.nct_id for item in fresh if item.nct_id)
        saved: list[Outcome] = []  # one page: written (and committed) before it is reported
        save_studies(self.db, fresh, self.observed_at, self.totals, source="sync",
                     run_id=self.run_id, emit=saved.append)
        observed = {o.nct_id for o in saved if isinstance(o, Observation)}
        # A record without an id counts by its label: its query's window stays too.
        self.unsaved.update(i.nct_id or i.label for i in fresh if i.nct_id not in observed)
        yield from saved

    def fail(self, where: str, error: TrialdiffError) -> Failed:
        """Count a failed input and return it for the report."""
        self.totals.fail(where, str(error))
        return Failed(where, str(error), error.setting)

    def fetched(self, nct_ids: Iterable[str]) -> None:
        """Remember that tracked studies were fetched (and saved) under the current release."""
        with transaction(self.db):
            self.db.conn.executemany("update watchlist set fetched_release = ? where nct_id = ?",
                                     [(self.release, nct_id) for nct_id in nct_ids
                                      if nct_id not in self.unsaved])


def sync_api(
    db: sqlite_utils.Database,
    client: Client,
    extra_ids: Iterable[str],
    observed_at: str,
    run_id: int,
    totals: RunTotals,
    release: str | None = None,
    force: bool = False,
) -> Iterator[Outcome]:
    """Fetch tracked studies, given ids and saved queries; save each page; yield outcomes.

    A tracked study or saved query already fetched under `release` (the API's data release)
    is not fetched again, unless `force`: the registry has nothing new for it. Given ids are
    always fetched.
    """
    run = _Run(db, client, observed_at, run_id, totals, release,
               dict(db.execute("select nct_id, state from watchlist").fetchall()))
    extra = set(extra_ids)
    current = set() if force or release is None else {row[0] for row in db.execute(
        "select nct_id from watchlist where fetched_release = ?", [release])}
    tracked = set(tracked_ids(db.conn))
    wanted = sorted((tracked - current) | extra)
    queries = db.execute("select id, expr, last_synced_at, fetched_release from queries "
                         "order by id").fetchall()
    due = [q for q in queries if force or release is None or q[3] != release]
    skipped = len((tracked & current) - extra)
    if release is not None and (skipped or len(due) < len(queries)):
        yield UpToDate(skipped, len(queries) - len(due), release)
    for batch in id_batches(wanted, client.pacing.page_size):
        yield from _sync_batch(run, batch)
    missing = sorted(set(wanted) - run.seen - run.failed)
    for nct_id in missing:
        try:
            yield from _sync_one(run, nct_id)
        except ForbiddenError:
            raise
        except FetchError as exc:
            run.failed.add(nct_id)
            yield run.fail(nct_id, exc)
    for query_id, expr, last_synced, fetched_release in due:
        yield from _sync_query(run, query_id, expr, None if force else last_synced,
                               fetched_release)


def _sync_batch(run: _Run, batch: list[str]) -> Iterator[Outcome]:
    """Fetch one batch of ids; a batch the API refuses (400, 414) is split in half and retried.

    A batch of one is fetched as `/studies/{id}` (conditional on its ETag), so an id the API
    still refuses on its own is reported by name and every other id is still done.
    """
    if len(batch) == 1:
        try:
            yield from _sync_one(run, batch[0])
        except ForbiddenError:
            raise
        except FetchError as exc:
            run.failed.add(batch[0])
            yield run.fail(batch[0], exc)
        return
    asked = set(batch)
    try:
        for page in fetch_batch(run.client, batch):
            # A study that answers to no id asked for is not tracked: not stored. (An id that
            # moved is matched by its alias; one whose record does not list it is asked after
            # alone, as any id a page left out.)
            kept = [study for study in page if answered_ids(study) & asked]
            for study in kept:
                ids, own = answered_ids(study), DEFAULT.study_id(dict(study))
                run.seen.update(ids)
                if own is not None:  # an id asked for that answers as another: it moved
                    for old in sorted((ids & asked) - {own}):
                        yield _record_move(run, old, own)
            yield from run.save(kept, "filter.ids")
            yield PageDone(len(kept), "tracked studies")
    except ForbiddenError:
        raise
    except RejectedRequest:
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            yield from _sync_batch(run, part)
        return
    except FetchError as exc:  # report the batch and move on to the next
        run.failed.update(batch)
        yield run.fail(f"tracked studies {batch[0]}..{batch[-1]}", exc)
        return
    answered = sorted(set(batch) & run.seen)
    yield from _returned(run, answered)
    run.fetched(answered)


def _record_move(run: _Run, old: str, new: str) -> Event:
    """Record that a tracked id now answers as another, and track the new id."""
    event = Event(old, "moved", {"moved_to": new})
    _record_event(run.db, event, run.observed_at, run.run_id)
    run.states[old] = "moved"
    with transaction(run.db):
        run.db.execute("insert or ignore into watchlist (nct_id, added_at, state) "
                       "values (?, ?, 'tracked')", [new, run.observed_at])
    return event


def _returned(run: _Run, nct_ids: Iterable[str]) -> Iterator[Event]:
    """Record missing studies the API answered for again, before they count as fetched.

    Before, not after the run: a run stopped between would leave the study fetched under this
    release, so not asked again, and `missing` until the next release.
    """
    for nct_id in nct_ids:
        if run.states.get(nct_id) == "missing":
            event = Event(nct_id, "returned", {})
            _record_event(run.db, event, run.observed_at, run.run_id)
            run.states[nct_id] = "tracked"
            yield event


def _sync_one(run: _Run, nct_id: str) -> Iterator[Outcome]:
    """Fetch one study by id: unchanged (304), moved to a new id (301), gone (404), or saved.

    It is what a batch of one costs, and how a study a batch did not return is asked after.
    """
    row = run.db.execute("select etag, record from records where nct_id = ?",
                         [nct_id]).fetchone()
    answer = fetch_study(run.client, nct_id, row[0] if row else None)
    where = f"/studies/{nct_id}"
    if answer.unchanged and row is not None:  # seen, unchanged: the stored record stands in
        run.seen.add(nct_id)
        yield from run.save([latest_record(run.db, nct_id) or {}], where)
        yield PageDone(1, "tracked studies")
    elif answer.study is not None:
        run.seen.update(answered_ids(answer.study) | {nct_id})
        if answer.nct_id != nct_id:
            yield _record_move(run, nct_id, answer.nct_id)
        yield from run.save([answer.study], where)
        if answer.etag and answer.nct_id not in run.unsaved:
            with transaction(run.db):
                run.db.execute("update records set etag = ? where nct_id = ?",
                               [answer.etag, answer.nct_id])
        yield PageDone(1, "tracked studies")
    else:  # 404: answered, so not asked after again this run
        run.failed.add(nct_id)
        gone = FetchError("not returned by the API (404)")
        seen = run.db.execute("select 1 from studies where nct_id = ?", [nct_id]).fetchone()
        if nct_id not in run.states or not seen:  # given, or tracked but never seen (a typo):
            yield run.fail(nct_id, gone)  # no scope to leave; named on every run
            return  # and asked again by the next, even under this release: still a failure
        elif run.states[nct_id] != "missing":
            event = Event(nct_id, "left_scope", {"answer": "404"})
            _record_event(run.db, event, run.observed_at, run.run_id)
            yield event
            yield run.fail(nct_id, gone)  # named on stderr as every failed input, once
    if nct_id in run.seen:
        yield from _returned(run, [nct_id])
    run.fetched([nct_id])  # answered, whatever the answer: not asked again this release


NO_RELEASE = ShapeWarning("/version gave no data release (dataTimestamp) that is a date: "
                          "every tracked study and saved query is fetched")


def data_release(version: Mapping[str, Any]) -> str | None:
    """Return a /version answer's data release, or None when it is not a date-time sync can use.

    A release is stored, and its day read back as the start of a saved query's next window: a
    text of another form (`2025/01/05`, an epoch) would fail every later sync.
    """
    stamp = version.get("dataTimestamp")
    return stamp if isinstance(stamp, str) and _day(stamp) else None


def _day(stamp: str | None) -> date | None:
    """Return the day a stored time or release starts with (None for one of another form)."""
    try:  # a release an older trialdiff stored as the API gave it (`2025/01/05 09:00`)
        return date.fromisoformat(stamp[:10]) if stamp else None
    except ValueError:
        return None


def _sync_query(run: _Run, query_id: int, expr: str, last_synced: str | None,
                fetched_release: str | None) -> Iterator[Outcome]:
    """Fetch one saved query: whole (first, or forced), or what was updated since its last run."""
    params = dict(parse_qsl(expr))
    params["pageSize"] = str(run.client.pacing.page_size)
    since = None
    # From the earlier of the last run's day and its data release's: a clock ahead of the
    # registry's would skip the next release's edits. A day of overlap besides: the registry
    # stamps LastUpdatePostDate by day, in US time.
    days = [day for day in map(_day, (last_synced, fetched_release)) if day]
    if last_synced and days:
        since = (min(days) - timedelta(days=1)).isoformat()
        params = incremental(params, since)
    refused = len(run.unsaved)
    try:
        for page in fetch_pages(run.client, params):
            with transaction(run.db):  # before the save, so a query watch sees its studies
                remember_members(run.db, query_id, [i for s in page if (i := DEFAULT.study_id(s))],
                                 run.observed_at)
            yield from run.save(page, expr)
            yield PageDone(len(page), expr)
        yield from _sync_leavers(run, query_id, expr, since)
    except ForbiddenError:
        raise
    except FetchError as exc:
        yield run.fail(expr, exc)
        return
    if len(run.unsaved) > refused:  # its window stays, so the next run asks for them again
        return
    with transaction(run.db):
        run.db.execute("update queries set last_synced_at = ?, fetched_release = ? where id = ?",
                       [run.observed_at, run.release, query_id])


def check_source(source: str) -> None:
    """Refuse a dump that is an archive of dated folders: its days would all be dated now."""
    from .folders import dated_folders

    if dated_folders(source) is not None:
        raise UsageError(f"{source} is an archive of dated folders, one observation a day: "
                         "`trialdiff import` replays it day by day; sync reads one dump")


def sync_source(
    db: sqlite_utils.Database,
    source: str,
    extra_ids: Iterable[str],
    observed_at: str,
    run_id: int,
    totals: RunTotals,
    emit: Callable[[Outcome], None],
) -> None:
    """Sync from a bulk dump through the same writer: tracked studies only, if any are.

    A saved query's studies count as tracked: those an API sync saw it return.

    NDJSON lines come unparsed, each with the id its bytes open with: a line of a study not
    tracked is never parsed, and a tracked one only if its bytes moved (see save_studies).
    """
    from .folders import read_studies
    from .sources import parsed

    wanted = set(tracked_ids(db.conn)) | query_members(db.conn) | set(extra_ids)

    def chosen() -> Iterator[SourceItem]:
        for item in read_studies([source], parse=False):
            if wanted and item.unparsed and item.nct_id is None:
                item = parsed(item)  # its bytes did not say which study it is
            if not wanted or item.nct_id is None or item.nct_id in wanted:
                yield item

    save_studies(db, chosen(), observed_at, totals, source="sync", run_id=run_id, emit=emit)


def _sync_leavers(run: _Run, query_id: int, expr: str, since: str | None) -> Iterator[Outcome]:
    """Fetch the studies a query returned before but not now that were updated in its window.

    Such a study left the query's results (it stopped recruiting, under a RECRUITING
    filter): it changed, so it is fetched by id, its change stored, and a query watch told.
    """
    members = [row[0] for row in run.db.execute(
        "select nct_id from query_studies where query_id = ?", [query_id])]
    for batch in id_batches([m for m in members if m not in run.saved],
                            run.client.pacing.page_size):
        yield from _fetch_leavers(run, batch, f"{expr} (left its results)", since)


def _fetch_leavers(run: _Run, batch: list[str], where: str, since: str | None
                   ) -> Iterator[Outcome]:
    """Fetch one batch of a query's former studies in its window; a batch refused is halved."""
    # A page as large as the run's: one the batch filled would send a token to an empty one.
    params = {"filter.ids": ",".join(batch), "pageSize": str(run.client.pacing.page_size)}
    try:
        for page in fetch_pages(run.client, incremental(params, since) if since else params):
            yield from run.save(page, where)
            yield PageDone(len(page), where)
    except RejectedRequest:  # 414 from a proxy's shorter URL limit: as a tracked batch does
        if len(batch) == 1:
            raise
        for part in (batch[: len(batch) // 2], batch[len(batch) // 2 :]):
            yield from _fetch_leavers(run, part, where, since)
