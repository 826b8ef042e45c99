"""One run's lifecycle: the writer lock, the run row, the totals, the client and the sinks.

Every writing run (import, sync, backfill, reannotate, notify, compact) goes through
`WriteRun`, so each one is recorded the same way: `running` while it works, then `ok`,
`partial` or `failed` by its totals, or `interrupted` when Ctrl-C stopped it (a killed
process's row is marked interrupted by the next writer). Each outcome goes to every sink as
it happens; a sink's `finish` runs after the run's last commit, which is where alert delivery
belongs. A run that began on a database with no records and ends with some (a first import,
sync or backfill) packs them (`compact.pack`), since a page filled in arrival order keeps a
quarter of itself empty; later runs add a few records each, and leave them where they are.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any, Protocol, TypeVar

import sqlite_utils

from .errors import READ_ONLY, BusyError, DatabaseError, UsageError, damage_hint
from .ingest import RunTotals
from .lock import WriteLock
from .meaning import Annotated
from .model import (
    Backfilled,
    Failed,
    FieldChange,
    Observation,
    Outcome,
    Resumed,
    utc_timestamp,
)
from .query import transaction
from .store import insert_row


@dataclass(frozen=True)
class Change:
    """One stored change with what it means: the object `changes --format json` prints."""

    nct_id: str
    path: str
    kind: str
    detected_at: str
    # Values, facts and detail may be dicts and lists: a change hashes by the rest.
    old: Any = field(hash=False)
    new: Any = field(hash=False)
    severity: str
    facts: Mapping[str, Any] = field(default_factory=dict, hash=False)
    detail: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_annotated(cls, item: Annotated) -> Change:
        """Return the change an annotated stored change is."""
        c = item.change
        return cls(c.nct_id, c.path, c.kind, c.detected_at, c.old, c.new, item.severity,
                   dict(item.facts), dict(c.detail))

    def to_dict(self) -> dict[str, Any]:
        """Return the change as the JSON object every export carries, keys in its order.

        Its values are copies: reshaping them (for pandas, say) leaves the change as it is.
        """
        return copy.deepcopy({"nct_id": self.nct_id, "path": self.path, "kind": self.kind,
                              "detected_at": self.detected_at, "old": self.old, "new": self.new,
                              "detail": self.detail, "facts": self.facts,
                              "severity": self.severity})


def annotated(changes: Iterable[FieldChange], minimum: str | None = None) -> tuple[Change, ...]:
    """Return changes annotated and in export order, as Change values."""
    from .export import annotated_stream, ordered

    return tuple(Change.from_annotated(item)
                 for group in annotated_stream(ordered(changes), minimum) for item in group)


@dataclass(frozen=True)
class Run:
    """How one writing run went, as its row in `runs` records it, with the changes it stored."""

    id: int
    command: str
    status: str  # ok, partial, failed or interrupted
    checked: int
    changed: int
    changes: int  # how many changes it stored
    failed: int
    errors: tuple[dict[str, str], ...] = field(hash=False)
    by_kind: Mapping[str, int] = field(default_factory=dict, hash=False)
    stored: tuple[FieldChange, ...] | None = field(default=(), repr=False)  # None: not kept

    @cached_property
    def stored_changes(self) -> tuple[Change, ...]:
        """Return the changes the run stored, annotated, in export order (computed once)."""
        if self.stored is None:
            raise UsageError("this run did not keep its changes (the tracker was opened with "
                             "keep_changes=False): read them with Tracker.changes()")
        return annotated(self.stored)


class Sink(Protocol):
    """What sees a run's outcomes: the CLI's printer, alert delivery, a web view's feed."""

    def show(self, outcome: Outcome) -> None:
        """Take one outcome, once the write that made it has committed."""

    def finish(self, run: Run) -> None:
        """Act once the run is committed and recorded (not called when it was interrupted)."""

    def close(self) -> None:
        """Release what the sink holds; called however the run ended."""


def run_status(totals: RunTotals, interrupted: bool) -> str:
    """Return the status a run's totals give it."""
    if interrupted:
        return "interrupted"
    return "ok" if not totals.failed else ("partial" if totals.checked else "failed")


class WriteRun:
    """Hold the writer lock and one run row for the length of a `with` block.

    `db` is opened (created or migrated) by `open_db` once the lock is held. A client given
    (anything with `close()`) is closed at the end, whatever happens. With `keep_changes`, the
    changes the run stores are kept for its `Run`; sinks see them either way.
    """

    def __init__(self, db_path: str, command: str, open_db: Callable[[], sqlite_utils.Database],
                 wait: float = 0.0, sinks: Sequence[Sink] = (),
                 clients: Iterable[Any] = (), keep_changes: bool = True) -> None:
        self.command = command
        for sink in sinks:  # before the run: a missing `finish` failed after it committed
            missing = [m for m in ("show", "finish", "close")
                       if not callable(getattr(sink, m, None))]
            if missing:
                raise UsageError(f"{sink!r} is no sink: it has no {', '.join(missing)} method "
                                 "(trialdiff.lifecycle.Sink)")
        self.sinks = list(sinks)
        self.clients = list(clients)
        self.totals = RunTotals()
        self.data_timestamp: str | None = None
        self.result: Run | None = None
        self._lock = WriteLock(db_path, wait, command)
        self._open_db = open_db
        self._stored: list[FieldChange] | None = [] if keep_changes else None
        self._recorded: BaseException | None = None
        self.db: sqlite_utils.Database
        self.id = 0
        self._filling = False  # the database had no records when the run began

    def __enter__(self) -> WriteRun:
        try:
            self._lock.__enter__()
            try:
                self.db = self._open_db()
                with transaction(self.db):  # only a dead process leaves a row running
                    resumed = self.db.execute("update runs set status = 'interrupted' "
                                              "where status = 'running'").rowcount
                self.id = start_run(self.db, self.command, utc_timestamp())
                self._filling = self.db.execute(
                    "select not exists (select 1 from records)").fetchone()[0] == 1
            except BaseException as exc:
                self._lock.__exit__(type(exc), exc, exc.__traceback__)
                raise
        except BaseException:
            self._close_quietly()
            raise
        if resumed:
            self.emit(Resumed(resumed))
        return self

    def emit(self, outcome: Outcome) -> None:
        """Hand one outcome to every sink, keeping the changes it stored."""
        match outcome:
            case Observation(changes=changes) | Backfilled(changes=changes):
                if self._stored is not None:
                    self._stored.extend(changes)
            case Failed(undone=(nct_id, observed_at)) if self._stored is not None:
                self._stored = [c for c in self._stored
                                if (c.nct_id, c.detected_at) != (nct_id, observed_at)]
            case _:
                pass
        for sink in self.sinks:
            sink.show(outcome)

    def record(self, where: str, error: BaseException) -> None:
        """Count the error that ends the run under the input it came from, not the command."""
        self.totals.fail(where, str(error))
        self._recorded = error

    def drain(self, outcomes: Iterable[Outcome]) -> None:
        """Emit every outcome of a stream as it comes."""
        for outcome in outcomes:
            self.emit(outcome)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        interrupted = isinstance(exc, KeyboardInterrupt)
        if exc is not None and not interrupted and exc is not self._recorded:
            # The run ends here: record why, so it reads failed or partial, never running.
            self.totals.fail(self.command, str(exc))
        try:
            if exc is None:
                finish_run(self.db, self.id, self.totals, utc_timestamp(), self.data_timestamp)
                if self._filling and self.db.execute("select 1 from records").fetchone():
                    from .compact import pack  # only a first run pays for loading it

                    # The run's rows are committed: a pack without room skips, and one that
                    # fails leaves them as they are (its WAL emptied), for `compact` to pack.
                    with contextlib.suppress(sqlite3.Error):
                        pack(self.db)
            else:
                with contextlib.suppress(Exception):  # best effort: the disk may be what failed
                    finish_run(self.db, self.id, self.totals, utc_timestamp(),
                               self.data_timestamp, interrupted=interrupted)
            totals = self.totals
            self.result = Run(
                self.id, self.command, run_status(totals, interrupted), totals.checked,
                totals.changed, totals.changes, totals.failed, tuple(totals.errors),
                dict(totals.by_kind),
                tuple(self._stored) if self._stored is not None else None)
            # A run stopped by an error counted under an input (the history endpoints changed
            # shape) committed what it did first: its summary is printed, its alerts sent.
            if exc is None or exc is self._recorded:
                for sink in self.sinks:
                    sink.finish(self.result)
        finally:
            self._lock.__exit__(None, None, None)
            self._close_quietly()

    def _close_quietly(self) -> None:
        """Close the clients and sinks; one that fails to close does not stop the others."""
        for thing in [*self.clients, *self.sinks]:
            with contextlib.suppress(Exception):
                thing.close()


def start_run(db: sqlite_utils.Database, command: str, started_at: str) -> int:
    """Record the start of a run and return its id."""
    return insert_row(db, "runs",
                      {"command": command, "started_at": started_at, "status": "running"})


def finish_run(
    db: sqlite_utils.Database,
    run_id: int,
    totals: RunTotals,
    ended_at: str,
    data_timestamp: str | None = None,
    interrupted: bool = False,
) -> None:
    """Record how a run ended (`interrupted` when the user stopped it, e.g. Ctrl-C)."""
    status = run_status(totals, interrupted)
    db.execute(
        "update runs set ended_at = ?, status = ?, data_timestamp = ?, checked = ?, changed = ?, "
        "changes = ?, failed = ?, errors = ? where id = ?",
        [ended_at, status, data_timestamp, totals.checked, totals.changed, totals.changes,
         totals.failed, json.dumps(totals.errors[:1000], ensure_ascii=False), run_id],
    )


def sqlite_error(exc: sqlite3.Error) -> DatabaseError:
    """Return an error SQLite raised as trialdiff's: BusyError for its lock, else DatabaseError."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_BUSY:
        return BusyError("the database is busy with another writer (SQLite's lock, held past "
                         "the wait for it); try again")
    if code == sqlite3.SQLITE_READONLY:
        return DatabaseError(f"database error: {exc}: {READ_ONLY}")
    return DatabaseError(f"database error: {exc}{damage_hint(exc)}")


_Class = TypeVar("_Class", bound=type)


def raising_ours(cls: _Class) -> _Class:
    """Make a class's public methods raise SQLite's errors as trialdiff's (`sqlite_error`).

    A read-only file, a damaged one, or SQLite's own lock held by another program would
    otherwise reach a library user as sqlite3's errors, outside the tree errors.py documents.
    """
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(method):
            setattr(cls, name, _translated(method))
    return cls


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    """Return a method (or generator method) that raises SQLite's errors as trialdiff's."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generate(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(*args, **kwargs)
            except sqlite3.Error as exc:
                raise sqlite_error(exc) from exc

        return generate

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise sqlite_error(exc) from exc

    return call
