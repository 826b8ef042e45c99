"""The cron job: fetch the tracked studies and saved queries, and save what changed.

`sync_api` wires `fetch` generators to `store.save_studies`, one whole page per transaction,
so a failed or cut-short page stores nothing and a killed run resumes by simply running again:
the hash gate makes every saved page idempotent. It yields what happened; the CLI prints it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import sqlite_utils

from .errors import FetchError, ForbiddenError, UsageError
from .fetch import Client, fetch_batch, fetch_pages, fetch_study, id_batches, incremental
from .model import Event, PageDone
from .normalize import study_id
from .sources import SourceItem
from .store import Observation, RunTotals, save_studies, transaction
from .watch import remember_members

_QUERY_PREFIXES = ("query.", "filter.", "postFilter.", "aggFilters")


Outcome = Observation | SourceItem | Event | PageDone


def parse_query(expr: str) -> str:
    """Return a saved query in canonical form, or raise UsageError naming what is wrong."""
    pairs = parse_qsl(expr.strip().lstrip("?"), keep_blank_values=False, strict_parsing=False)
    if not pairs:
        raise UsageError(f"{expr!r} is not a query: give API parameters, e.g. query.cond=asthma")
    for key, _ in pairs:
        if not key.startswith(_QUERY_PREFIXES) or key in ("pageToken", "pageSize"):
            raise UsageError(f"{key!r} is not a query.*, filter.* or postFilter.* parameter")
    return urlencode(sorted(pairs))


def track(db: sqlite_utils.Database, nct_ids: Iterable[str], queries: Iterable[str],
          at: str) -> tuple[int, int]:
    """Add studies and saved queries to the watchlist; return how many were new."""
    new_ids = new_queries = 0
    with transaction(db):
        for nct_id in nct_ids:
            cursor = db.execute(
                "insert or ignore into watchlist (nct_id, added_at, state) values (?, ?, ?)",
                [nct_id, at, "tracked"],
            )
            new_ids += cursor.rowcount
        for expr in queries:
            cursor = db.execute(
                "insert or ignore into queries (expr, added_at) values (?, ?)", [expr, at]
            )
            new_queries += cursor.rowcount
    return new_ids, new_queries


def untrack(db: sqlite_utils.Database, nct_ids: Iterable[str], queries: Iterable[str]) -> int:
    """Remove studies and saved queries from the watchlist; return how many went."""
    removed = 0
    with transaction(db):
        for nct_id in nct_ids:
            removed += db.execute("delete from watchlist where nct_id = ?", [nct_id]).rowcount
        for expr in queries:
            removed += db.execute("delete from queries where expr = ?", [expr]).rowcount
    return removed


def tracked_ids(conn: Any) -> list[str]:
    """Return the ids `sync` fetches: tracked studies, not those now answering as another."""
    rows = conn.execute("select nct_id from watchlist where state != 'moved' order by nct_id")
    return [row[0] for row in rows]


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
        nct_id = study_id(study)
        if nct_id is None:
            items.append(SourceItem(f"{where}[{index}]", error="not a study: no nctId"))
        else:
            items.append(SourceItem(f"{where}[{index}]", study, nct_id))
    return items


def _aliases(study: dict[str, Any]) -> list[str]:
    """Return the old ids a study also answers to."""
    ident = study.get("protocolSection", {}).get("identificationModule", {})
    aliases = ident.get("nctIdAliases") if isinstance(ident, dict) else None
    return [a for a in aliases or [] if isinstance(a, str)]


def sync_api(
    db: sqlite_utils.Database,
    client: Client,
    extra_ids: Iterable[str],
    observed_at: str,
    run_id: int,
    totals: RunTotals,
) -> Iterator[Outcome]:
    """Fetch tracked studies, given ids and saved queries; save each page; yield outcomes."""
    states = dict(db.execute("select nct_id, state from watchlist").fetchall())
    wanted = sorted(set(tracked_ids(db.conn)) | set(extra_ids))
    seen: set[str] = set()
    failed: set[str] = set()
    for batch in id_batches(wanted, client.pacing.page_size):
        try:
            for page in fetch_batch(client, batch):
                for study in page:
                    seen.update([study_id(study) or "", *_aliases(study)])
                yield from save_studies(db, _items(page, "filter.ids"), observed_at, totals,
                                        source="sync", run_id=run_id)
                yield PageDone(len(page), "tracked studies")
        except ForbiddenError:
            raise
        except FetchError as exc:  # report the batch and move on to the next
            failed.update(batch)
            where = f"tracked studies {batch[0]}..{batch[-1]}"
            totals.fail(where, str(exc))
            yield SourceItem(where, error=str(exc))
    try:
        yield from _missing(db, client, sorted(set(wanted) - seen - failed), states,
                            observed_at, run_id, totals)
    except ForbiddenError:
        raise
    except FetchError as exc:
        totals.fail("studies not returned", str(exc))
        yield SourceItem("studies not returned", error=str(exc))
    for nct_id in sorted(seen & {i for i, s in states.items() if s == "missing"}):
        event = Event(nct_id, "returned", {})
        _record_event(db, event, observed_at, run_id)
        yield event
    for query_id, expr, last_synced in db.execute(
        "select id, expr, last_synced_at from queries order by id"
    ).fetchall():
        yield from _sync_query(db, client, query_id, expr, last_synced, observed_at, run_id,
                               totals)


def _missing(
    db: sqlite_utils.Database, client: Client, missing: list[str], states: dict[str, str],
    observed_at: str, run_id: int, totals: RunTotals,
) -> Iterator[Outcome]:
    """Ask for each study the batch did not return: moved to a new id, or out of scope."""
    for nct_id in missing:
        found_id, study = fetch_study(client, nct_id)
        if study is not None and found_id != nct_id:
            event = Event(nct_id, "moved", {"moved_to": found_id})
            _record_event(db, event, observed_at, run_id)
            with transaction(db):
                db.execute("insert or ignore into watchlist (nct_id, added_at, state) "
                           "values (?, ?, 'tracked')", [found_id, observed_at])
            yield event
            yield from save_studies(db, _items([study], f"/studies/{nct_id}"), observed_at,
                                    totals, source="sync", run_id=run_id)
        elif study is None and states.get(nct_id) != "missing":
            event = Event(nct_id, "left_scope", {"answer": "404"})
            if nct_id in states:
                _record_event(db, event, observed_at, run_id)
            totals.fail(nct_id, "not returned by the API (404)")
            yield event
        elif study is not None:
            yield from save_studies(db, _items([study], f"/studies/{nct_id}"), observed_at,
                                    totals, source="sync", run_id=run_id)


def _sync_query(
    db: sqlite_utils.Database, client: Client, query_id: int, expr: str,
    last_synced: str | None, observed_at: str, run_id: int, totals: RunTotals,
) -> Iterator[Outcome]:
    """Fetch one saved query, incrementally after its first whole run."""
    params = dict(parse_qsl(expr))
    params["pageSize"] = str(client.pacing.page_size)
    if last_synced:
        # A day of overlap: the registry stamps LastUpdatePostDate by day, in US time.
        since = date.fromisoformat(last_synced[:10]) - timedelta(days=1)
        params = incremental(params, since.isoformat())
    try:
        for page in fetch_pages(client, params):
            with transaction(db):  # before the save, so a query watch sees its studies in scope
                remember_members(db, query_id, [i for s in page if (i := study_id(s))],
                                 observed_at)
            yield from save_studies(db, _items(page, expr), observed_at, totals, source="sync",
                                    run_id=run_id)
            yield PageDone(len(page), expr)
    except ForbiddenError:
        raise
    except FetchError as exc:
        totals.fail(expr, str(exc))
        yield SourceItem(expr, error=str(exc))
        return
    with transaction(db):
        db.execute("update queries set last_synced_at = ? where id = ?", [observed_at, query_id])


def mark_interrupted_runs(db: sqlite_utils.Database) -> int:
    """Mark runs left `running` by a killed process; the caller holds the write lock."""
    with transaction(db):
        return db.execute(
            "update runs set status = 'interrupted' where status = 'running'"
        ).rowcount


def sync_source(
    db: sqlite_utils.Database,
    source: str,
    extra_ids: Iterable[str],
    observed_at: str,
    run_id: int,
    totals: RunTotals,
) -> Iterator[Outcome]:
    """Sync from a bulk dump through the same writer: tracked studies only, if any are."""
    from .sources import read_studies

    wanted = set(tracked_ids(db.conn)) | set(extra_ids)
    items = (
        item for item in read_studies([source])
        if not wanted or item.nct_id is None or item.nct_id in wanted
    )
    yield from save_studies(db, items, observed_at, totals, source="sync", run_id=run_id)
