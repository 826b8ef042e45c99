"""The Python API: `trialdiff.open(path)` gives a Tracker; each method is one command's work.

The CLI parses arguments, opens a Tracker, calls one method with its printer as a sink, and
maps errors to exit codes. Runs (import, sync, backfill, reannotate, notify, compact) go inside
one `lifecycle.WriteRun`; `track` and `untrack` write a few watchlist rows in one transaction,
without the write lock, so they work while a long sync runs (SQLite's lock orders them between
its commits). Reading methods use a read-only connection that sees the last commit.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlite_utils

from .errors import UnknownStudy, UsageError
from .lifecycle import Change, Run, Sink, WriteRun
from .model import utc_day, utc_timestamp
from .registry import DEFAULT

if TYPE_CHECKING:
    from .compact import Compacted

DEFAULT_API = "https://clinicaltrials.gov/api/v2"
Ids = str | Iterable[str]  # one NCT id, or several


def client_for(api: str, *, page_size: int = 500, delay: float = 1.0, timeout: float = 60.0,
               deadline: float = 120.0, retries: int = 5, retry_budget: float = 300.0,
               max_response_mb: float = 64.0, **hooks: Any) -> Any:
    """Return an API client from settings (as settings.py names them); hooks: sleep, transport."""
    from .fetch import Pacing
    from .settings import check_client_setting

    for name, value in (("page_size", page_size), ("delay", delay), ("timeout", timeout),
                        ("deadline", deadline), ("retries", retries),
                        ("retry_budget", retry_budget), ("max_response_mb", max_response_mb)):
        check_client_setting(name, value)
    pacing = Pacing(delay=delay, timeout=timeout, deadline=deadline, retries=retries,
                    retry_budget=retry_budget, max_bytes=int(max_response_mb * 1024 * 1024),
                    page_size=page_size)
    return DEFAULT.client(api, pacing, **hooks)


def history_client(api: str, **settings: Any) -> Any:
    """Return the record-history endpoints, through a client based at the registry's root."""
    from .history_api import site_root

    return DEFAULT.history(client_for(site_root(api), **settings))


class Tracker:
    """A trialdiff database: write runs that keep snapshots, and reads of its changelog.

    `wait`: seconds to wait for another writer (lock.py). `hooks` (sleep, transport) go to every API
    client it builds. With `keep_changes` (the default) each run keeps the changes it stores,
    for `Run.stored_changes`; without, it holds none (the CLI's way: a registry-wide rewrite
    stores millions). Use it as a context manager, or call `close()`.
    """

    def __init__(self, path: str, *, wait: float = 0.0,
                 hooks: Mapping[str, Any] | None = None, keep_changes: bool = True) -> None:
        if not str(path).strip():  # "" would be SQLite's private temporary database
            raise UsageError("an empty path names no database")
        self.path = str(path)
        self.wait = wait
        self.hooks = dict(hooks or {})
        self.keep_changes = keep_changes
        self.last_run: Run | None = None
        self._db: sqlite_utils.Database | None = None
        self._conn: sqlite3.Connection | None = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connections."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._db is not None:
            self._db.close()
            self._db = None

    def writer(self) -> sqlite_utils.Database:
        """Return the writing connection, creating or migrating the database first."""
        if self._db is None:
            from .schema import open_db

            self._db = open_db(self.path, self.wait)
        return self._db

    def reader(self) -> sqlite3.Connection:
        """Return a read-only connection (it sees the last commit, never blocks a writer)."""
        if self._conn is None:
            from .query import connect_readonly

            self._conn = connect_readonly(self.path)
        return self._conn

    def run(self, command: str, sinks: Sequence[Sink] = (), clients: Iterable[Any] = ()
            ) -> WriteRun:
        """Return the lifecycle of one writing run: lock, run row, totals, clients, sinks."""
        return WriteRun(self.path, command, self.writer, self.wait, sinks, clients,
                        self.keep_changes)

    @contextmanager
    def _running(self, command: str, sinks: Sequence[Sink] = (), clients: Iterable[Any] = ()
                 ) -> Iterator[WriteRun]:
        """Run one writing run, keeping how it ended in `last_run` (interrupted ones too)."""
        lifecycle = self.run(command, sinks, clients)
        try:
            with lifecycle as run:
                yield run
        finally:
            if lifecycle.result is not None:
                self.last_run = lifecycle.result

    def _last(self) -> Run:
        """Return the run that just finished."""
        assert self.last_run is not None
        return self.last_run

    # Writing runs.

    def import_paths(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                     at: str | None = None, sinks: Sequence[Sink] = (), workers: int = 0) -> Run:
        """Snapshot study records from files, folders and archives of dated folders.

        `paths` is one path or several. With `workers=1`, edits are prepared ahead in a worker
        process, spawned: a script that asks for it must guard its top level with
        `if __name__ == "__main__":`, as multiprocessing requires (the command line does, on a
        machine with a second core).
        """
        from .ingest import save_studies
        from .model import LeftOut, observation_time
        from .sources import dated_folders, read_studies

        # One path is not its characters: "/" would have been imported, the whole disk.
        given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        if any(not os.fspath(path).strip() for path in given):  # "" is the current folder
            raise UsageError("an empty path names no input: give a file, a folder or a zip")
        observed = observation_time(at) if at is not None else None
        batches: list[tuple[str, list[str]]] = []
        plain: list[str] = []
        notes: list[LeftOut] = []
        for path in (os.fspath(p) for p in given):
            archive = dated_folders(path)
            if archive is None:
                plain.append(path)
                continue
            if observed is not None:  # one time for every day would re-date the whole history
                raise UsageError(f"{path} is an archive of dated folders, observed on their "
                                 "dates", setting="at")
            if archive.ignored:
                notes.append(LeftOut(path, tuple(archive.ignored)))
            batches.extend((day, [str(folder)]) for day, folder in archive.days)
        if plain:
            batches.append((observed or utc_timestamp(), plain))
        with self._running("import", sinks) as run:
            for note in notes:
                run.emit(note)
            for observed_at, batch in batches:
                save_studies(run.db, read_studies(batch, parse=False), observed_at, run.totals,
                             run_id=run.id, emit=run.emit, workers=workers)
        return self._last()

    def sync(self, ids: Ids = (), *, api: str = DEFAULT_API, source: str | None = None,
             at: str | None = None, force: bool = False, backfill_new: bool = False,
             sinks: Sequence[Sink] = (), **settings: Any) -> Run:
        """Fetch the tracked studies and saved queries, plus `ids`, and save what changed.

        With `source` (a bulk dump), read it instead of the API. `settings` are the API
        client's (page_size, delay, timeout, deadline, retries, retry_budget, max_response_mb).
        """
        from .model import observation_time
        from .sync import check_source, sync_api, sync_source

        nct_ids = _ids(ids)
        if source is not None:
            check_source(source)  # before a run starts, as a malformed API URL is
        observed_at = observation_time(at) if at is not None else utc_timestamp()
        client = None if source else client_for(api, **settings, **self.hooks)
        try:
            history = history_client(api, **settings, **self.hooks) if backfill_new else None
        except BaseException:
            if client is not None:
                client.close()
            raise
        clients = [c for c in (client, history and history.client) if c is not None]
        with self._running("sync", sinks, clients) as run:
            if client is None:
                sync_source(run.db, str(source), nct_ids, observed_at, run.id, run.totals,
                            run.emit)
            else:
                run.data_timestamp = client.version().get("dataTimestamp")
                run.drain(sync_api(run.db, client, nct_ids, observed_at, run.id,
                                   run.totals, release=run.data_timestamp, force=force))
            if history is not None:
                from .history import backfill_new as backfill_pending

                run.drain(backfill_pending(run.db, history, run.id, run.totals, run.record))
        return self._last()

    def backfill(self, ids: Ids, *, api: str = DEFAULT_API, since: str | None = None,
                 alert: bool = False, sinks: Sequence[Sink] = (), **settings: Any) -> Run:
        """Take in studies' whole registry history, each version dated when it went public."""
        from .errors import FetchError, ShapeError
        from .history import backfill_study
        from .model import Failed
        from .watch import AlertWriter

        nct_ids = _ids(ids)
        history = history_client(api, **settings, **self.hooks)
        with self._running("backfill", sinks, [history.client]) as run:
            alerts = AlertWriter(run.db, run.id) if alert else None
            for nct_id in nct_ids:
                try:
                    run.drain(backfill_study(run.db, history, nct_id, since, run.totals,
                                             run.id, alerts))
                except ShapeError as exc:
                    run.record(nct_id, exc)
                    raise  # the endpoints changed shape: stop rather than store wrongly
                except FetchError as exc:
                    run.totals.fail(nct_id, str(exc))
                    run.emit(Failed(nct_id, str(exc), exc.setting))
        return self._last()

    def reannotate(self, sinks: Sequence[Sink] = ()) -> tuple[int, int]:
        """Recompute every stored change's severity and facts; return (checked, updated)."""
        from .annotations import reannotate
        from .query import require_database

        require_database(self.path)  # else the run would create an empty one to go over
        with self._running("reannotate", sinks) as run:
            counts = reannotate(run.db)
        return counts

    def compact(self, sinks: Sequence[Sink] = ()) -> Compacted:
        """Compress every stored record and long value again, harder, pack, and VACUUM."""
        from .compact import compact
        from .query import require_database

        require_database(self.path)  # else the run would create an empty one to compact
        with self._running("compact", sinks) as run:
            return compact(run.db)

    def notify(self, *, timeout: float = 10.0, backoff: float = 300.0,
               max_age_hours: float = 72.0, sinks: Sequence[Sink] = ()) -> Any:
        """Deliver the pending alerts that are due; return the delivery totals."""
        from .notify import check_settings, deliver_pending
        from .query import require_database

        check_settings(timeout, backoff, max_age_hours)  # before the run: a usage error
        require_database(self.path)  # a mistyped path holds no outbox: create none there
        with self._running("notify", sinks) as run:
            totals = deliver_pending(run.db, timeout=timeout, backoff=backoff,
                                     max_age_hours=max_age_hours)
            for error in totals.errors:
                run.totals.fail("alert", error)
        return totals

    def track(self, ids: Ids = (), queries: Iterable[str] = ()) -> tuple[int, int]:
        """Add studies and saved queries to what `sync` fetches; return how many were new."""
        from .sync import parse_query, track

        nct_ids, parsed = _ids(ids), [parse_query(q) for q in queries]  # before creating it
        return track(self.writer(), nct_ids, parsed, utc_timestamp())

    def untrack(self, ids: Ids = (), queries: Iterable[str] = ()) -> int:
        """Remove studies and saved queries from what `sync` fetches; return how many went."""
        from .query import require_database
        from .sync import parse_query, untrack

        nct_ids, parsed = _ids(ids), [parse_query(q) for q in queries]
        require_database(self.path)  # a mistyped path tracks nothing: create none there
        return untrack(self.writer(), nct_ids, parsed)

    def track_again(self, sources: Iterable[str] = (), *, ignore: Iterable[str] = ()
                    ) -> tuple[str, ...]:
        """Track entries of the spec's ignore list again, or `ignore` them again; return those
        tracked again now. Chosen before the database's first snapshot (tracking.py)."""
        from .lock import WriteLock
        from .query import transaction
        from .tracking import checked_entries, track_again

        again, ignore = checked_entries(sources, ignore)  # a usage error creates no database
        with WriteLock(self.path, self.wait, "ignored"), transaction(self.writer()):
            return track_again(self.writer(), again, ignore).again

    # Reads.

    def tracked_again(self) -> tuple[str, ...]:
        """Return the entries of the spec's ignore list this database tracks again."""
        from .tracking import rules_of

        return rules_of(self.reader()).again

    def watches(self) -> list[Any]:
        """Return the watch rules (watch.Watch), by name; their targets stay in the secrets file."""
        from .watch import load_watches

        return load_watches(self.reader())

    def changes(self, nct_ids: Ids | None = None, since: str | None = None,
                until: str | None = None, path: str | None = None,
                kinds: Iterable[str] | None = None, min_severity: str | None = None
                ) -> Iterator[Change]:
        """Yield stored changes, oldest first, as `changes --format json` lists them."""
        from .export import annotated_stream
        from .query import ChangeFilter, query_changes

        where = ChangeFilter(_ids(nct_ids or ()), _time(since), _time(until), path,
                             tuple(kinds or ()))
        for group in annotated_stream(query_changes(self.reader(), where), min_severity):
            yield from map(Change.from_annotated, group)

    def recent_section(self, nct_id: str, days: int = 30, as_of: str | date | None = None,
                       limit: int | None = None) -> str:
        """Return a study's Recent Field Changes section, as `recent` prints it."""
        from .query import ChangeFilter, query_changes, study_row
        from .render import recent_section, recent_window

        (checked,) = _ids([nct_id])
        conn = self.reader()
        if study_row(conn, checked) is None:  # a mistyped id is not a quiet month
            raise UnknownStudy(f"{checked} is not in the database")
        since, until = recent_window(_day(as_of), days)
        where = ChangeFilter((checked,), since, until)
        return recent_section(list(query_changes(conn, where)), days, limit)

    def page(self, nct_id: str, as_of: str | date | None = None, days: int = 30,
             canonical_base: str = "", footer: str = "", ages: bool = False) -> str:
        """Return a study's trial page (Markdown), as `page` prints it."""
        from .site import render_study_page

        (checked,) = _ids([nct_id])
        text = render_study_page(self.reader(), checked, _day(as_of), days, canonical_base,
                                 footer, ages)
        if text is None:
            raise UnknownStudy(f"{checked} is not in the database")
        return text

    def check(self, totals: Any = None) -> list[str]:
        """Verify the database; return its problems (none: sound). `totals` counts what was."""
        from .check import CheckTotals, check_database

        return list(check_database(self.reader(), totals or CheckTotals()))


def _ids(values: Ids) -> tuple[str, ...]:
    """Return NCT ids (one, or several) upper-cased; raise UsageError for a malformed one."""
    from .normalize import is_nct_id

    checked = []
    for value in [values] if isinstance(values, str) else values:  # not its characters
        nct_id = value.strip().upper()
        if not is_nct_id(nct_id):
            raise UsageError(f"{value!r} is not an NCT id like NCT01234567")
        checked.append(nct_id)
    return tuple(checked)


def _time(value: str | None) -> str | None:
    """Return an ISO 8601 date or time as a UTC timestamp; raise UsageError if it is not one."""
    if value is None:
        return None
    try:
        return utc_timestamp(value)
    except (ValueError, OverflowError):
        raise UsageError(f"{value!r} is not an ISO 8601 date or time") from None


def _day(value: str | date | None) -> date:
    """Return the UTC day of a date, a timestamp, or today."""
    return value if isinstance(value, date) else utc_day(_time(value))


def open(path: str, *, wait: float = 0.0, hooks: Mapping[str, Any] | None = None,
         keep_changes: bool = True) -> Tracker:
    """Open (creating or migrating) a trialdiff database; use the Tracker as a context manager."""
    from .lock import WriteLock

    tracker = Tracker(path, wait=wait, hooks=hooks, keep_changes=keep_changes)
    with WriteLock(tracker.path, wait, "open"):
        tracker.writer()
    return tracker


