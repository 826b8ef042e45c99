"""Make a database smaller: compress every stored blob again, harder, pack, then VACUUM.

A run compresses for speed (codec.py). Compacting compresses each record, each first record,
each long change value and each snapshot delta again at `codec.COMPACT_LEVEL`, on every core,
and keeps the new blob only when it is smaller. Then it packs the records (`pack`, which a run
that filled an empty database also ends with): a record is ~3 KB, so a page filled in arrival
order holds one and leaves a quarter of itself empty; the rows are renumbered so that VACUUM,
which copies a table in rowid order, fills each page with records that fit it together and
leave it `EDIT_ROOM` bytes (nearly always: VACUUM fills a page while rows fit). Everything
reads back the same, byte for byte: only the bytes' places move. Rows are rewritten
`batch_size` to a commit, so a killed compaction leaves a sound database and a rerun finishes
the work (a blob compacted already does not shrink again); the packing is one transaction.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlite_utils

from . import codec
from .errors import DatabaseError
from .query import transaction
from .schema import SCHEMA, create_table
from .upgrades import keyed_batches


class Blob(NamedTuple):
    """One stored blob, read back."""

    column: str
    data: bytes  # what it holds
    against: bytes | None  # the record it is compressed against (else the dictionary)
    stored: bytes  # as stored now
    checksum: bool = False  # its frame carries one (a long change value: codec.pack_value)


BlobReader = Callable[[Any, Sequence[Any]], Iterator[Blob]]
# A compaction's place, kept in `meta` with each batch: a killed one resumes there.
PROGRESS = "compact_progress"
# Bytes a packed page keeps free for its records' first edits. A study's first edit stores
# its new record against its first, in the same row, which grows by that delta: 64 bytes at
# the median, under 150 for three in four (the benchmark's heavy days; a posted results
# section, 5-8 KB, goes to overflow pages anyway). With no room, the first edit of a record
# splits its full page: two heavy days grew a packed 5,000-study file by 7.47 MB against 5.46
# MB in arrival order. With 256 bytes they grew it by 5.58 MB, and packing still took the
# day-0 file from 22.07 to 19.71 MB (none: 19.12; 400 bytes: 20.06 MB and 5.52 MB).
EDIT_ROOM = 256


@dataclass(frozen=True)
class Compacted:
    """What a compaction did: rows it rewrote, and the file's bytes before and after."""

    records: int
    change_values: int
    snapshot_deltas: int
    bytes_before: int
    bytes_after: int


def file_bytes(db: sqlite_utils.Database) -> int:
    """Return the database's size: its pages, the free ones included, times the page size."""
    (pages,) = db.execute("pragma page_count").fetchone()
    (page_size,) = db.execute("pragma page_size").fetchone()
    return int(pages * page_size)


def _record_blobs(conn: Any, row: Sequence[Any]) -> Iterator[Blob]:
    """Yield a records row's blobs: the latest record, stored against its first if it has one."""
    _, record, base = row
    latest, first = codec.record_bytes(conn, record, base)
    yield Blob("record", latest, first, record)
    if first is not None:
        yield Blob("base", first, None, base)


def _plain_blobs(columns: tuple[str, ...], checksum: bool = False) -> BlobReader:
    """Return what yields the compressed cells of a row's `columns` (text cells stay text)."""

    def blobs(conn: Any, row: Sequence[Any]) -> Iterator[Blob]:
        for column, cell in zip(columns, row[1:], strict=True):
            if isinstance(cell, bytes):
                yield Blob(column, codec.decompress(conn, cell), None, cell, checksum)

    return blobs


# table, its key, the columns read, how to read a row's blobs
_STEPS: tuple[tuple[str, str, tuple[str, ...], BlobReader], ...] = (
    ("records", "nct_id", ("record", "base"), _record_blobs),
    ("changes", "id", ("old", "new"), _plain_blobs(("old", "new"), checksum=True)),
    ("snapshots", "id", ("delta",), _plain_blobs(("delta",))),
)


def compact(db: sqlite_utils.Database, batch_size: int = 200,
            threads: int | None = None) -> Compacted:
    """Compress every blob again at COMPACT_LEVEL where that is smaller, then VACUUM."""
    before = file_bytes(db)
    _need_room(db)  # refused before it writes anything
    for declared in SCHEMA:  # an index dropped by hand: every read of its table slows
        create_table(db, declared)
    compactor = codec.Compactor(db)
    resume_table, resume_key = _resume_point(db)
    tables = [step[0] for step in _STEPS]
    rewritten = dict.fromkeys(tables, 0)
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        for table, key, columns, read in _STEPS[tables.index(resume_table):]:
            start = resume_key if table == resume_table else None
            rewritten[table] = _compact_table(db, pool, compactor, table, key, columns, read,
                                              start, batch_size)
    # The rewrite's pages are in the WAL: emptied first, they count as free, as pack sees it
    # (measured with them, the check refused what it had allowed, after every blob was done).
    db.execute("pragma wal_checkpoint(truncate)")
    _need_room(db)
    pack(db)
    with transaction(db):  # last: a compaction killed while packing resumes at its end
        db.execute("delete from meta where key = ?", [PROGRESS])
    return Compacted(rewritten["records"], rewritten["changes"], rewritten["snapshots"],
                     before, file_bytes(db))


def _resume_point(db: sqlite_utils.Database) -> tuple[str, Any]:
    """Return where a compaction killed earlier stopped: a table, and the last key it did.

    A progress row that does not say so (a hand edit) starts over: compacting a row twice
    costs time, never data, and one skipped would stay uncompacted.
    """
    row = db.execute("select value from meta where key = ?", [PROGRESS]).fetchone()
    try:
        table, key = json.loads(row[0]) if row else (None, None)
    except (ValueError, TypeError):
        return _STEPS[0][0], None
    for name, key_column, _, _ in _STEPS:
        if name == table and isinstance(key, str if key_column == "nct_id" else int):
            return table, key
    return _STEPS[0][0], None


def _read_blobs(db: sqlite_utils.Database, table: str, key: str, read: BlobReader,
                row: Sequence[Any]) -> list[Blob]:
    """Return a row's blobs; a damaged one is an error that names its row."""
    try:
        return list(read(db, row))
    except DatabaseError as exc:
        raise DatabaseError(f"{table} row {key} = {row[0]!r}: {exc} (`trialdiff check` lists "
                            "every damaged row)") from exc


def _compact_table(db: sqlite_utils.Database, pool: ThreadPoolExecutor,
                   compactor: codec.Compactor, table: str, key: str, columns: tuple[str, ...],
                   read: BlobReader, start: Any, batch_size: int) -> int:
    """Rewrite a table's blobs in key order after `start`, a batch to a commit; count rows."""
    any_blob = " or ".join(f"typeof({column}) = 'blob'" for column in columns)
    rewritten = 0
    after: Any = start if start is not None else ("" if key == "nct_id" else 0)
    # Rows are read, compressed and written back in separate steps: this run holds the write
    # lock, so no other writer moves them in between.
    for rows in keyed_batches(db, table, key, columns, any_blob, batch_size, after):
        # Decompressed here, in this thread: a connection's decompressors are not shared.
        blobs = [(row[0], blob) for row in rows for blob in _read_blobs(db, table, key, read, row)]
        packed = pool.map(lambda item: compactor.compress(item[1].data, item[1].against,
                                                          item[1].checksum), blobs)
        smaller: dict[Any, dict[str, bytes]] = {}
        for (row_key, blob), new in zip(blobs, packed, strict=True):
            if len(new) < len(blob.stored):
                smaller.setdefault(row_key, {})[blob.column] = new
        with transaction(db):
            for row_key, cells in smaller.items():
                db.execute(f"update {table} set {', '.join(f'{c} = ?' for c in cells)} "
                           f"where {key} = ?", [*cells.values(), row_key])
            db.execute("insert or replace into meta (key, value) values (?, ?)",
                       [PROGRESS, json.dumps([table, rows[-1][0]])])
        rewritten += len(smaller)
    return rewritten


def _varint_bytes(value: int) -> int:
    """Return how many bytes SQLite's varint of a non-negative number takes."""
    return next((n for n in range(1, 9) if value < 1 << (7 * n)), 9)


def _cell_bytes(values: Sequence[Any], page_size: int) -> int:
    """Return the bytes a table row takes on its leaf page, its pointer included (≥ exact).

    `values` are the row's values as (SQLite type, byte length). The format is SQLite's file
    format (sqlite.org/fileformat2.html): a record header of serial types, the data, then the
    cell's payload size and rowid; a payload past `max_local` keeps only part on the page.
    """
    serial, data = [], 0
    for kind, length in values:
        if kind in ("text", "blob"):
            serial.append(length * 2 + (12 if kind == "blob" else 13))
            data += length
        else:  # NULL, or a number: at most 8 bytes
            serial.append(0 if kind == "null" else 7)
            data += 0 if kind == "null" else 8
    header = sum(map(_varint_bytes, serial))
    header += _varint_bytes(header + 1)
    payload = header + data
    max_local, min_local = page_size - 35, (page_size - 12) * 32 // 255 - 23
    local = payload
    if payload > max_local:  # the rest goes to overflow pages, which are full but the last
        local = min_local + (payload - min_local) % (page_size - 4)
        local = (local if local <= max_local else min_local) + 4  # + the first overflow page
    return 2 + _varint_bytes(payload) + 4 + local  # pointer, size, rowid (a 4-byte bound)


def _packed_order(cells: Sequence[tuple[int, int]], room: int) -> list[int]:
    """Return row ids in an order whose every run fits one page: best fit decreasing.

    Pages filled in that order (as VACUUM fills them) take no more pages than the runs: a page
    that starts at or before a run's first row reaches at least to its last.
    """
    runs: list[list[int]] = []
    free: dict[int, list[int]] = {}  # runs by the bytes they have left
    rooms: list[int] = []  # those numbers of bytes, sorted
    for size, rowid in sorted(cells, reverse=True):
        at = bisect.bisect_left(rooms, size)
        if at < len(rooms):  # the fullest run that still takes it
            left = rooms[at]
            run = free[left].pop()
            if not free[left]:
                del free[left], rooms[at]
        else:
            run, left = len(runs), room
            runs.append([])
        runs[run].append(rowid)
        if left - size not in free:
            free[left - size] = []
            bisect.insort(rooms, left - size)
        free[left - size].append(run)
    return [rowid for run in runs for rowid in run]


def _need_room(db: sqlite_utils.Database) -> None:
    """Raise DatabaseError unless the disk has room to pack the database."""
    needed, free = room_to_pack(db)
    if free < needed:
        raise DatabaseError(f"compact needs about {needed / 1e6:.0f} MB free beside the "
                            f"database, as it rewrites the file, and {free / 1e6:.0f} MB are "
                            "free: make room, then run it again")


def room_to_pack(db: sqlite_utils.Database) -> tuple[int, int]:
    """Return the bytes a pack needs free beside the database, and the bytes free there."""
    # The WAL takes a copy of every page VACUUM writes, and VACUUM builds the new file in a
    # temporary one first (in the temporary folder, which may be this disk): twice the file.
    path = next(row[2] for row in db.execute("pragma database_list") if row[1] == "main")
    return 2 * file_bytes(db) + (8 << 20), shutil.disk_usage(os.path.dirname(path)).free


def pack(db: sqlite_utils.Database) -> bool:
    """Lay the records out packed, each page keeping EDIT_ROOM bytes, then VACUUM.

    Return False, doing nothing, when the disk has not room for it (`room_to_pack`): a pack
    that fills the disk half way leaves a WAL no checkpoint can empty, and every later write
    fails.
    """
    needed, free = room_to_pack(db)
    if free < needed:
        return False
    # The WAL emptied first, so what a failed VACUUM leaves in it is dropped by the checkpoint.
    db.execute("pragma wal_checkpoint(truncate)")
    try:
        with transaction(db):
            _pack_records(db)
        db.execute("vacuum")
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute("pragma wal_checkpoint(truncate)")  # else the WAL keeps every page
    return True


def _pack_records(db: sqlite_utils.Database) -> None:
    """Renumber the records so that pages filled in rowid order (VACUUM's) are full."""
    (page_size,) = db.execute("pragma page_size").fetchone()
    columns = list(db["records"].columns_dict)
    measured = ", ".join(f"typeof({c}), length(cast({c} as blob))" for c in columns)
    cells = []
    for row in db.execute(f"select rowid, {measured} from records"):
        values = list(zip(row[1::2], row[2::2], strict=True))
        cells.append((_cell_bytes(values, page_size), row[0]))
    order = _packed_order(cells, page_size - 8 - EDIT_ROOM)  # a leaf's header takes 8 bytes
    db.execute("update records set rowid = -rowid")  # out of the way of 1..n
    db.conn.executemany("update records set rowid = ? where rowid = ?",
                        ((number, -rowid) for number, rowid in enumerate(order, start=1)))
