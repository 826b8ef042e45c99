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

from .arguments import (
    Ids,
    checked_ids,
    checked_limit,
    checked_wait,
    day_of,
    listed,
    timestamp_of,
)
from .clients import DEFAULT_API, checked_hooks, client_for, history_client
from .errors import UnknownStudy, UsageError
from .lifecycle import Change, Run, Sink, WriteRun, raising_ours
from .model import utc_timestamp

if TYPE_CHECKING:
    from .compact import Compacted


@raising_ours
class Tracker:
    """A trialdiff database: write runs that keep snapshots, and reads of its changelog.

    `wait`: seconds to wait for another writer (lock.py). `hooks` (sleep, transport) go to
    every API client it builds. With `keep_changes` (the default) each run keeps the changes
    it stores, for `Run.stored_changes`; without, none (the CLI's way: a registry-wide rewrite
    stores millions). Use it as a context manager, or call `close()`; from one thread at a time.
    """

    def __init__(self, path: str, *, wait: float = 0.0,
                 hooks: Mapping[str, Any] | None = None, keep_changes: bool = True) -> None:
        if not isinstance(path, str | os.PathLike) or str(path).strip() in ("", ":memory:"):
            # "" and ":memory:" are SQLite's private databases, which no reader could see.
            raise UsageError(f"{path!r} names no database file: give a file's path")
        checked_wait(wait)  # now, not at the first write
        self.path = os.fspath(path)
        self.wait = wait
        self.hooks = checked_hooks(hooks or {})
        self.keep_changes = keep_changes
        self.last_run: Run | None = None
        self._db: sqlite_utils.Database | None = None
        self._conn: sqlite3.Connection | None = None
        self._iterating: set[sqlite3.Connection] = set()  # each `changes()` under way has one
        self._closed = False

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connections; the Tracker is done (open the database again)."""
        self._closed = True
        for connection in (self._conn, self._db, *self._iterating):
            if connection is not None:
                connection.close()
        self._conn, self._db = None, None

    def writer(self) -> sqlite_utils.Database:
        """Return the writing connection, creating or migrating the database first."""
        self._require_open()
        if self._db is None:
            from .schema import open_db

            self._db = open_db(self.path, self.wait)
        return self._db

    def reader(self) -> sqlite3.Connection:
        """Return a read-only connection, which never blocks a writer, at the last commit.

        Each call starts a new snapshot (a `changes()` being iterated keeps its own, on its
        own connection).
        """
        from .query import connect_readonly

        self._require_open()
        if self._conn is None:
            self._conn = connect_readonly(self.path)
        else:
            try:  # end the snapshot, so that the next read takes a new one (WAL)
                self._conn.execute("commit")
                self._conn.execute("begin")
            except sqlite3.Error:  # a damaged file can fail even that: read it anew
                self._conn.close()
                self._conn = connect_readonly(self.path)
        return self._conn

    def _require_open(self) -> None:
        """Refuse to use a closed Tracker, rather than open the database again unasked."""
        if self._closed:
            raise UsageError(f"this Tracker of {self.path} is closed: trialdiff.open() it again")

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
                     at: str | date | None = None, sinks: Sequence[Sink] = (), workers: int = 0
                     ) -> Run:
        """Snapshot study records from files, folders and archives of dated folders.

        `paths` is one path or several; `at` a time (text, date or datetime; naive: UTC). With
        `workers=1`, edits are prepared ahead in a worker process, spawned: a script that asks
        for it must guard its top level with `if __name__ == "__main__":`, as multiprocessing
        requires (the command line does, on a machine with a second core).
        """
        from .folders import import_batches, read_studies
        from .ingest import save_studies

        if workers not in (0, 1):  # one worker prepares edits beside the writer: no more
            raise UsageError(f"workers is 0 or 1, not {workers!r}")
        batches, notes = import_batches(paths, at)
        with self._running("import", sinks) as run:
            for note in notes:
                run.emit(note)
            for observed_at, batch in batches:
                save_studies(run.db, read_studies(batch, parse=False), observed_at, run.totals,
                             run_id=run.id, emit=run.emit, workers=workers)
        return self._last()

    def sync(self, ids: Ids = (), *, api: str = DEFAULT_API, source: str | None = None,
             at: str | date | None = None, force: bool = False, backfill_new: bool = False,
             sinks: Sequence[Sink] = (), **settings: Any) -> Run:
        """Fetch the tracked studies and saved queries, plus `ids`, and save what changed.

        With `source` (a bulk dump), read it instead of the API. `settings` are the API
        client's (page_size, delay, timeout, deadline, retries, retry_budget, max_response_mb).
        """
        from .model import observation_time
        from .sync import NO_RELEASE, check_source, data_release, sync_api, sync_source

        nct_ids = checked_ids(ids)
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
                run.data_timestamp = data_release(client.version())
                if run.data_timestamp is None:
                    run.emit(NO_RELEASE)
                run.drain(sync_api(run.db, client, nct_ids, observed_at, run.id,
                                   run.totals, release=run.data_timestamp, force=force))
            if history is not None:
                from .history import backfill_new as pending

                run.drain(pending(run.db, history, run.id, run.totals, run.record, observed_at))
        return self._last()

    def backfill(self, ids: Ids, *, api: str = DEFAULT_API, since: str | date | None = None,
                 alert: bool = False, sinks: Sequence[Sink] = (), **settings: Any) -> Run:
        """Take in studies' whole registry history, each version dated when it went public."""
        from .errors import FetchError, ShapeError
        from .history import backfill_study
        from .model import Failed
        from .watch import AlertWriter

        nct_ids, since = checked_ids(ids), timestamp_of(since, past=True)  # before a run
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
            return reannotate(run.db)

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

    def track(self, ids: Ids = (), queries: Ids = ()) -> tuple[int, int]:
        """Add studies and saved queries to what `sync` fetches; return how many were new."""
        from .watchlist import parse_query, track

        nct_ids, parsed = checked_ids(ids), [parse_query(q) for q in listed(queries)]  # first
        return track(self.writer(), nct_ids, parsed, utc_timestamp())

    def untrack(self, ids: Ids = (), queries: Ids = ()) -> int:
        """Remove studies and saved queries from what `sync` fetches; return how many went."""
        from .query import require_database
        from .watchlist import parse_query, untrack

        nct_ids, parsed = checked_ids(ids), [parse_query(q, False) for q in listed(queries)]
        require_database(self.path)  # a mistyped path tracks nothing: create none there
        return untrack(self.writer(), nct_ids, parsed)

    def track_again(self, sources: Ids = (), *, ignore: Ids = ()) -> tuple[str, ...]:
        """Track entries of the spec's ignore list again, or `ignore` them again; return those
        tracked again now. Chosen before the database's first snapshot (tracking.py)."""
        from .lock import WriteLock
        from .query import transaction
        from .tracking import checked_entries, track_again

        again, dropped = checked_entries(listed(sources), listed(ignore))  # no file on error
        with WriteLock(self.path, self.wait, "ignored"), transaction(self.writer()):
            return track_again(self.writer(), again, dropped).again

    # Reads.

    def tracked_again(self) -> tuple[str, ...]:
        """Return the entries of the spec's ignore list this database tracks again."""
        from .tracking import rules_of

        return rules_of(self.reader()).again

    def watches(self) -> list[Any]:
        """Return the watch rules (watch.Watch), by name; their targets stay in the secrets file."""
        from .watch import load_watches

        return load_watches(self.reader())

    def changes(self, nct_ids: Ids | None = None, since: str | date | None = None,
                until: str | date | None = None, path: Ids | None = None,
                kinds: Ids | None = None, min_severity: str | None = None
                ) -> Iterator[Change]:
        """Yield stored changes, oldest first, as `changes --format json` lists them.

        `nct_ids` None is every study, an empty list none, one not stored an UnknownStudy;
        `until` is exclusive; `path` is one prefix or several (any of them).
        """
        from .export import annotated_stream, whole_observations
        from .meaning import check_kinds
        from .query import ChangeFilter, connect_readonly, query_changes, unknown_studies

        ids, wanted = checked_ids(nct_ids) if nct_ids is not None else (), tuple(listed(kinds))
        check_kinds(wanted)
        if nct_ids is not None and not ids:
            return
        where, keep = whole_observations(ChangeFilter(ids, timestamp_of(since),
                                                      timestamp_of(until),
                                                      tuple(listed(path)), wanted))
        # Its own connection: its snapshot lasts till the end, and other reads move on.
        self._require_open()
        conn = connect_readonly(self.path)
        self._iterating.add(conn)
        try:
            if unknown := unknown_studies(conn, ids):  # a typo, not a quiet study
                raise UnknownStudy(f"{', '.join(unknown)} is not in the database")
            for group in annotated_stream(query_changes(conn, where), min_severity, keep=keep):
                yield from map(Change.from_annotated, group)
        except sqlite3.ProgrammingError:  # closed meanwhile: say so, not in SQLite's words
            self._require_open()
            raise
        finally:
            self._iterating.discard(conn)
            conn.close()

    def recent_section(self, nct_id: str, days: int = 30, as_of: str | date | None = None,
                       limit: int | None = None) -> str:
        """Return a study's Recent Field Changes section, as `recent` prints it."""
        from .query import ChangeFilter, query_changes, unknown_studies
        from .render import recent_section, recent_window

        (checked,) = checked_ids([nct_id])
        conn = self.reader()
        if unknown_studies(conn, [checked]):  # a mistyped id is not a quiet month
            raise UnknownStudy(f"{checked} is not in the database")
        since, until = recent_window(day_of(as_of), days)
        checked_limit(limit)
        where = ChangeFilter((checked,), since, until)
        return recent_section(list(query_changes(conn, where)), days, limit)

    def page(self, nct_id: str, as_of: str | date | None = None, days: int = 30,
             canonical_base: str = "", footer: str = "", ages: bool = False) -> str:
        """Return a study's trial page (Markdown), as `page` prints it."""
        from .arguments import check_base_url
        from .site import render_study_page

        if canonical_base:  # refused as `page --canonical-base` refuses it: every link holds it
            check_base_url(canonical_base, "canonical_base", "https://example.org/trials/")
        canonical_base = canonical_base.strip()
        (checked,) = checked_ids([nct_id])
        text = render_study_page(self.reader(), checked, day_of(as_of), days, canonical_base,
                                 footer, ages)
        if text is None:
            raise UnknownStudy(f"{checked} is not in the database")
        return text

    def check(self, totals: Any = None) -> list[str]:
        """Verify the database; return its problems (none: sound). `totals` counts what was."""
        from .check import CheckTotals, check_database

        return list(check_database(self.reader(), totals or CheckTotals()))


def open(path: str, *, wait: float = 0.0, hooks: Mapping[str, Any] | None = None,
         keep_changes: bool = True) -> Tracker:
    """Open (creating or migrating) a trialdiff database; use the Tracker as a context manager."""
    from .lock import WriteLock

    tracker = Tracker(path, wait=wait, hooks=hooks, keep_changes=keep_changes)
    if not _current(tracker.path):  # else nothing to create or migrate: readers never wait
        with WriteLock(tracker.path, wait, "open"):
            tracker.writer()
    return tracker


def _current(path: str) -> bool:
    """Tell whether a database exists at the current schema (no lock needed to read it)."""
    from .errors import TrialdiffError
    from .query import connect_readonly

    try:
        connect_readonly(path).close()
    except TrialdiffError:  # missing, older, newer or foreign: the writer creates or says
        return False
    return True


