"""Prepare a heavy day's edits in worker processes while the writer writes (store.py's pool).

On a day that edits many studies, most of an import's time is pure work on each edited record:
parsing it and the stored one, canonicalising the moved modules, diffing, compressing
(`records.prepare_edit`). The writer hands that work to worker processes and goes on reading
the input, gating and writing; it takes the prepared edits back in input order, so the
database gets the same rows in the same order as with no workers (`prepare_edit` reads only
the compression dictionaries, which each worker holds a copy of).

Workers start only once an input has had `START_AFTER` edits (a typical day never starts
them: starting costs about 0.2 s), and are spawned, not forked, so they inherit none of the
writer's open files (its database, its lock). A worker whose writer dies exits on its own.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import sqlite_utils

from .records import Edit, prepare_edit
from .sources import SourceItem, parsed

# Measured on the heavy-day benchmark (benchmarks/heavy.py) on 2 cores: the writer is busy
# about half the time, so two workers keep up with it; more only contend for the cores.
WORKERS = 1
START_AFTER = 32
IN_FLIGHT = 64  # edits handed out and not yet written: bounds the memory they hold


def default_workers() -> int:
    """Return how many workers a writer starts: one per core beyond its own, at most 4."""
    # On 2 cores, one worker beat two (benchmarks/heavy.py): three processes contend for two.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(4, (cores or 1) - 1))


class EditPool:
    """Worker processes that prepare edits, started when an input has had enough of them."""

    def __init__(self, db: sqlite_utils.Database, workers: int | None = None,
                 start_after: int = START_AFTER) -> None:
        self.db = db
        self.workers = default_workers() if workers is None else workers
        self.start_after = start_after
        self.seen = 0
        self._pool: ProcessPoolExecutor | None = None

    def wanted(self) -> bool:
        """Count one edit; tell whether it goes to a worker (starting them when it is time)."""
        self.seen += 1
        if self._pool is None and self.workers > 0 and self.seen > self.start_after:
            dictionaries = self.db.execute("select * from dictionaries").fetchall()
            try:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start, initargs=(dictionaries, os.getpid()))
            except (OSError, ImportError, NotImplementedError):  # no semaphores (some sandboxes)
                self.workers = 0
        return self._pool is not None and self.workers > 0

    def submit(self, item: SourceItem, stored: tuple[bytes, bytes | None], previous_at: str,
               observed_at: str, source: str) -> Future[Edit | None]:
        """Hand one unparsed record's edit to a worker."""
        assert self._pool is not None and item.raw is not None and item.nct_id is not None
        return self._pool.submit(_prepare, item.label, item.raw, item.nct_id, stored,
                                 previous_at, observed_at, source)

    def result(self, handed: Future[Edit | None], item: SourceItem,
               stored: tuple[bytes, bytes | None], previous_at: str, observed_at: str,
               source: str) -> Edit | None:
        """Return a handed edit; if its worker died, prepare it here and start no more."""
        try:
            return handed.result()
        except BrokenProcessPool:  # killed (out of memory, say): what it held is redone here
            self.workers = 0
            assert item.raw is not None and item.nct_id is not None
            return prepare(self.db, item.label, item.raw, item.nct_id, stored, previous_at,
                           observed_at, source)

    def close(self) -> None:
        """Stop the workers (an edit still under way is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


# In a worker process: a copy of the writer's dictionaries, all prepare_edit reads.
_DICTIONARIES: sqlite_utils.Database | None = None


def _start(dictionaries: list[tuple[Any, ...]], writer: int) -> None:
    """Set a worker up: its dictionaries, and a watch that ends it if its writer dies."""
    global _DICTIONARIES
    db = sqlite_utils.Database(memory=True)
    db.execute("create table dictionaries (id integer primary key, trained_at text, "
               "samples integer, dictionary blob)")
    db.conn.executemany("insert into dictionaries values (?, ?, ?, ?)", dictionaries)
    _DICTIONARIES = db

    def watch() -> None:
        while os.getppid() == writer:
            time.sleep(0.5)
        os._exit(0)  # orphaned: nobody will take what it prepares

    threading.Thread(target=watch, daemon=True).start()


def _prepare(label: str, raw: bytes, nct_id: str, stored: tuple[bytes, bytes | None],
             previous_at: str, observed_at: str, source: str) -> Edit | None:
    """Prepare an edit in a worker process (see `prepare`)."""
    return prepare(_DICTIONARIES, label, raw, nct_id, stored, previous_at, observed_at, source)


def prepare(conn: Any, label: str, raw: bytes, nct_id: str, stored: tuple[bytes, bytes | None],
            previous_at: str, observed_at: str, source: str) -> Edit | None:
    """Parse a record and prepare its edit; None when it does not parse as that study."""
    item = parsed(SourceItem(label, raw=raw, nct_id=nct_id))
    if item.study is None or item.nct_id != nct_id:
        return None  # the writer takes it the usual way, which says what is wrong with it
    return prepare_edit(conn, nct_id, item.study, stored, previous_at, observed_at, source)
