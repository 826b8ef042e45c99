"""Prepare an input's edits ahead, in a second process, while the writer writes (ingest's helper).

Preparing an edited record (parsing its moved modules, canonicalising, diffing, compressing:
`records.prepare_edit`) is pure, and it is most of a heavy day. `EditsAhead` reads the input a
window ahead of the writer and hands each record whose gate moved to a worker process, newest
first; the writer, reaching a record in input order, takes its edit if the worker has it, or
prepares it itself if the worker has not started on it. A shared claim per record says who
prepares it, so each edit is prepared once, by whichever side gets there first, and written
in input order: the database gets the same rows with or without the worker. A prepared edit
is used only for the very inputs it was prepared from (the record's line, the stored record,
the times); anything else is prepared again.

The worker is spawned, not forked, so it holds none of the writer's open files (its database,
its lock), once the writer has met START_AFTER records that were not unchanged, and they are
at least one in EDIT_SHARE of what it read (a typical day, 0.5%, never starts it, nor pays for
looking ahead). It reads the compression dictionaries and the tracking rules (`meta`), which
are all `prepare_edit` reads, from the database, read-only, and exits when the writer closes
its pipe or dies.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import sqlite3
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlite_utils

from .query import readonly_uri
from .records import Edit, byte_gate, compares_by_module, prepare_edit
from .sources import SourceItem, parsed
from .tracking import rules_of

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

WINDOW = 256  # records read ahead of the writer: a heavy day has ~25 edits in it
START_AFTER = 8  # records the writer met changed before the worker starts (~0.2 s of a core)
EDIT_SHARE = 50  # and at least one in this many of those it read: a heavy day, not a typical one
PATIENCE = 30.0  # seconds the writer waits on an edit under way before it gives the worker up
_SLOTS = 4096  # claims, a ring over dispatch numbers: more than a window can hold
_FREE, _WORKER, _WRITER = 0, 1, 2
_SEQ = struct.Struct("<q")  # a task's dispatch number, ahead of its pickle


def default_workers() -> int:
    """Return how many worker processes a writer uses: one if it has a second core, else none."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 1 if (cores or 1) > 1 else 0


@dataclass(frozen=True)
class Prepared:
    """An edit the worker prepared, with the inputs it was prepared from."""

    edit: Edit | None  # None: the worker could not prepare it (the writer will say why)
    stored: tuple[bytes, bytes | None]  # the study's records row (record, base)
    previous_at: str
    observed_at: str
    source: str

    def edit_for(self, stored: tuple[bytes, bytes | None], previous_at: str, observed_at: str,
                 source: str) -> Edit | None:
        """Return the edit if it was prepared from exactly these inputs, else None."""
        if (self.stored, self.previous_at, self.observed_at, self.source) != (
                stored, previous_at, observed_at, source):
            return None
        return self.edit


class EditsAhead:
    """Read an input ahead of the writer; have its edits prepared by a worker meanwhile."""

    def __init__(self, db: sqlite_utils.Database, observed_at: str, source: str,
                 workers: int = 0) -> None:
        self.db = db
        self.observed_at = observed_at
        self.source = source
        self._volatile = rules_of(db).volatile
        self.workers = min(workers, 1)  # one worker: on 2 cores a second only contends
        self._offered: set[str] = set()  # studies handed over and not yet written
        self._read = 0  # records handed to the writer
        self._met = 0  # of them, those it took the full path for (take)
        self._next = 0
        # Edits seen ahead, by item label: not yet handed over, and handed over (by number).
        self._waiting: OrderedDict[str, tuple[SourceItem, str, tuple[bytes, bytes | None],
                                              str]] = OrderedDict()
        self._pending: dict[str, tuple[int, tuple[bytes, bytes | None], str]] = {}
        self._results: dict[int, Edit | None] = {}
        self._process: Any = None
        self._ready = False

    def read(self, items: Iterable[SourceItem]) -> Iterator[tuple[SourceItem, str | None]]:
        """Yield each item with its byte gate (None without one), in input order."""
        window: deque[tuple[SourceItem, str | None]] = deque()
        for item in items:
            window.append((item, self._look(item)))
            if len(window) > WINDOW:
                self._read += 1
                yield window.popleft()
        while window:
            self._read += 1
            yield window.popleft()

    def take(self, item: SourceItem) -> Prepared | None:
        """Return the item's edit if the worker prepares it; None: the writer prepares it."""
        self._met += 1
        self._offered.discard(item.nct_id or "")  # written now: a later copy sees its write
        self._waiting.pop(item.label, None)  # not handed over yet: the writer's now
        self._hand_waiting()
        pending = self._pending.pop(item.label, None)
        if pending is None:
            return None
        seq, stored, previous_at = pending
        with self._lock:
            claim = self._claims[seq % _SLOTS]
            if claim == _FREE:
                self._claims[seq % _SLOTS] = _WRITER
            self._progress.value = seq  # the worker drops what the writer has passed
        if claim == _FREE:
            return None
        while seq not in self._results:  # the worker has it under way: wait for it
            if not self._receive(block=True):
                return None  # the worker died or hangs: the writer prepares it
        return Prepared(self._results.pop(seq), stored, previous_at, self.observed_at,
                        self.source)

    def close(self) -> None:
        """Stop the worker (what it has under way is dropped)."""
        if self._process is None:
            return
        self._tasks.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._answers.close()
        self._process = None

    def _look(self, item: SourceItem) -> str | None:
        """Return an item's byte gate; hand its edit to the worker if its gate moved."""
        gate = byte_gate(item.raw, self._volatile) if item.raw is not None else None
        nct_id = item.nct_id
        if (not self.workers or gate is None or not item.unparsed or nct_id is None
                or nct_id in self._offered or not self._busy()):
            return gate  # a copy of a study already handed over is the writer's (dedupe.py)
        # As store.save_study decides: a stored study compared by module, whose gate moved, in
        # order. No row for a new or unchanged study (most of a day), so no record is read.
        row = self.db.execute(
            "select s.last_changed_at, s.raw_hash, p.markup, r.record, r.base from studies s "
            "join records r on r.nct_id = s.nct_id left join snapshots p on p.nct_id = "
            "s.nct_id and p.seq = s.snapshot_count where s.nct_id = ? and s.raw_hash != ?",
            [nct_id, gate]).fetchone()
        if (row is None or not compares_by_module(row[1], row[2], has_record=True)
                or self.observed_at < row[0]):
            return gate
        if self._process is None:
            self._start()
        self._offered.add(nct_id)
        self._waiting[item.label] = (item, nct_id, (row[3], row[4]), row[0])
        self._hand_waiting()
        return gate

    def _busy(self) -> bool:
        """Tell whether the input edits enough records to pay for the worker (see above)."""
        return self._met >= START_AFTER and self._met * EDIT_SHARE >= self._read

    def _hand_waiting(self) -> None:
        """Hand the waiting edits to the worker once it is ready (it starts in ~0.2 s)."""
        if not self._ready and self._process is not None:
            self._receive(block=False)
        while self._ready and self._waiting:
            self._hand(*self._waiting.popitem(last=False)[1])

    def _hand(self, item: SourceItem, nct_id: str, stored: tuple[bytes, bytes | None],
              previous_at: str) -> None:
        """Send one record's edit to the worker."""
        seq, self._next = self._next, self._next + 1
        with self._lock:
            self._claims[seq % _SLOTS] = _FREE
        task = (item.label, nct_id, item.raw, stored, previous_at, self.observed_at, self.source)
        try:
            self._tasks.send_bytes(_SEQ.pack(seq) + pickle.dumps(task, protocol=5))
        except OSError:  # the worker died: the writer prepares everything
            self._ready, self.workers = False, 0
            return
        self._pending[item.label] = (seq, stored, previous_at)
        while self._receive(block=False):  # keep its answers from filling the pipe
            pass

    def _start(self) -> None:
        """Spawn the worker (it reads the dictionaries itself)."""
        import multiprocessing  # only a run with many edits pays for loading it

        context = multiprocessing.get_context("spawn")
        self._lock = context.Lock()
        self._claims = context.RawArray("b", _SLOTS)
        self._progress = context.RawValue("q", -1)
        # The worker reads the dictionaries itself: passing a megabyte to a process that is
        # still starting would hold the writer until it reads them.
        path = next(row[2] for row in self.db.execute("pragma database_list") if row[1] == "main")
        tasks_out, self._tasks = context.Pipe(duplex=False)
        self._answers, answers_in = context.Pipe(duplex=False)
        for end in (self._tasks, answers_in):
            _widen(end)
        self._process = context.Process(
            target=_serve, daemon=True, name="trialdiff-edits",
            args=(tasks_out, answers_in, self._lock, self._claims, self._progress, path))
        try:
            self._process.start()
        except OSError:  # no processes left to start: the writer does it all
            self.workers, self._process = 0, None
            return
        tasks_out.close()
        answers_in.close()

    def _receive(self, block: bool) -> bool:
        """Take one answer from the worker; False when there is none (or it died)."""
        try:
            if not self._answers.poll(PATIENCE if block else 0):
                if block:  # it hangs: stop it, and prepare everything here
                    self.close()
                    self._ready, self.workers = False, 0
                return False
            answer = self._answers.recv_bytes()
        except (EOFError, OSError):  # it died: the writer prepares the rest, with no other
            self._ready, self.workers = False, 0
            return False
        if answer == b"ready":
            self._ready = True
            return True
        seq, edit = pickle.loads(answer)
        self._results[seq] = edit
        return True


def _widen(end: Connection) -> None:
    """Give a pipe 1 MB of buffer (Linux), so that a send seldom waits on the other side."""
    try:
        import fcntl

        fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass  # another system, or a lower limit: the default buffer works, more slowly


# --- in the worker process -------------------------------------------------------------------

def _serve(tasks: Connection, answers: Connection, lock: Any, claims: Any, progress: Any,
           path: str) -> None:
    """Prepare the edits handed over, newest first, until the writer closes its pipe."""
    # Ctrl-C reaches the whole process group: the writer handles it, and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The writer gone, or the database unreadable: the writer does it all.
    with contextlib.suppress(OSError, EOFError, sqlite3.Error):
        _work(tasks, answers, lock, claims, progress, _readable(path))


def _readable(path: str) -> sqlite_utils.Database:
    """Return an in-memory copy of what `prepare_edit` reads: dictionaries, meta (the rules)."""
    source = sqlite3.connect(readonly_uri(path), uri=True)
    dictionaries = source.execute("select * from dictionaries").fetchall()
    meta = source.execute("select key, value from meta").fetchall()
    source.close()
    db = sqlite_utils.Database(memory=True)
    db.execute("create table dictionaries (id integer primary key, trained_at text, "
               "samples integer, dictionary blob)")
    db.conn.executemany("insert into dictionaries values (?, ?, ?, ?)", dictionaries)
    db.execute("create table meta (key text primary key, value text)")
    db.conn.executemany("insert into meta values (?, ?)", meta)
    return db


def _work(tasks: Connection, answers: Connection, lock: Any, claims: Any, progress: Any,
          db: sqlite_utils.Database) -> None:
    """Take tasks as they come (a thread), and prepare them newest first."""
    gc.freeze()  # as the CLI does: the loaded code is not garbage
    gc.set_threshold(20_000, 10, 10)
    queue: deque[tuple[int, bytes]] = deque()
    arrived = threading.Condition()
    closed = threading.Event()

    def listen() -> None:  # a thread, so that the writer's sends never wait on a preparation
        try:
            while True:
                task = tasks.recv_bytes()
                with arrived:
                    queue.append((_SEQ.unpack_from(task)[0], task))
                    arrived.notify()
        except (EOFError, OSError):
            with arrived:
                closed.set()
                arrived.notify()

    threading.Thread(target=listen, daemon=True).start()
    answers.send_bytes(b"ready")
    while True:
        with arrived:
            while not queue and not closed.is_set():
                arrived.wait()
            if closed.is_set():
                return  # the writer is done (or dead): what is left is nobody's
            while queue and queue[0][0] <= progress.value:
                queue.popleft()  # passed by the writer already
            if not queue:
                continue
            seq, task = queue.pop()  # the newest: the writer prepares the nearest itself
        with lock:
            if claims[seq % _SLOTS] != _FREE:
                continue
            claims[seq % _SLOTS] = _WORKER
        answers.send_bytes(pickle.dumps((seq, _prepare(db, task)), protocol=5))


def _prepare(db: sqlite_utils.Database, task: bytes) -> Edit | None:
    """Parse a record and prepare its edit; None when that fails (the writer says why)."""
    label, nct_id, raw, stored, previous_at, observed_at, source = pickle.loads(
        memoryview(task)[_SEQ.size:])
    item = parsed(SourceItem(label, raw=raw, nct_id=nct_id))
    if item.study is None or item.nct_id != nct_id:
        return None
    try:
        return prepare_edit(db, nct_id, item.study, stored, previous_at, observed_at, source)
    except Exception:  # the writer prepares it again, and reports what fails
        return None
