"""Convert an older database's stored rows in place: the data steps of schema migrations.

Each step rewrites rows in batches, each batch one commit, in key order, so a killed migration
resumes where it stopped and a row already converted is not converted twice (schema.py runs
them; `trialdiff check` or any writing command starts one). The file shrinks after VACUUM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlite_utils

from . import codec
from .model import dump_json, parse_json, utc_timestamp
from .query import SHARED, Connection, transaction
from .records import gate_digest, pack_delta


def keyed_batches(conn: Connection, table: str, key: str, columns: Sequence[str], where: str,
                  batch_size: int, after: Any = 0) -> Iterator[list[Any]]:
    """Yield a table's rows that match `where`, key first, in key order, `batch_size` at a time.

    Each batch is read once the one before was handled, after its last key, so a caller may
    rewrite the rows it was given (each batch its own commit) and a killed pass resumes.
    """
    select = (f"select {key}, {', '.join(columns)} from {table} where {key} > ? and ({where}) "
              f"order by {key} limit ?")
    while rows := conn.execute(select, [after, batch_size]).fetchall():
        yield rows
        after = rows[-1][0]


def recompress_records(db: sqlite_utils.Database, batch_size: int = 500) -> None:
    """Add `records.base`, and recompress zlib records with zstd (a schema migration's step).

    Records of studies that never changed are their lazy baselines, so each row is
    recompressed as it is (no `base`). A dictionary is trained first on up to 300 of the
    records, in its own commit; then rows are converted `batch_size` to a commit, so a killed
    migration resumes where it stopped. The file shrinks after `VACUUM`.
    """
    if not db["records"].exists():
        return
    if "base" not in db["records"].columns_dict:
        db.execute("alter table records add column base BLOB")
    if codec.current_dictionary(db) is None:
        (count,) = db.execute("select count(*) from records").fetchone()
        step = max(1, count // codec.MAX_SAMPLES)
        samples = [codec.decompress(db, blob) for (blob,) in db.execute(
            f"select coalesce(base, record) from records where rowid % {step} = 0 "
            f"limit {codec.MAX_SAMPLES}")]
        with transaction(db):
            codec.train(db, samples, utc_timestamp())
    while True:
        rows = db.execute("select nct_id, record from records where "
                          "substr(record, 1, 4) != x'28b52ffd' limit ?", [batch_size]).fetchall()
        if not rows:
            break
        with transaction(db):
            for nct_id, blob in rows:
                db.execute("update records set record = ? where nct_id = ?",
                           [codec.compress(db, codec.decompress(db, blob)), nct_id])


def compress_history(db: sqlite_utils.Database, batch_size: int = 500) -> None:
    """Compress long change values, and zlib snapshot deltas, with the dictionary (a migration).

    Rows are converted `batch_size` to a commit, in id order, so a killed migration resumes
    where it stopped; a converted row is never converted twice. The file shrinks after VACUUM.
    """
    long_text = f"(typeof({{0}}) = 'text' and length({{0}}) > {codec.VALUE_INLINE})"
    steps = (
        ("changes", f"{long_text.format('old')} or {long_text.format('new')}", ("old", "new"),
         lambda cell: codec.pack_value(db, cell)),
        ("snapshots", "delta is not null and substr(delta, 1, 4) != x'28b52ffd'", ("delta",),
         lambda cell: codec.compress(db, codec.decompress(db, cell) if isinstance(cell, bytes)
                                     else cell.encode("utf-8"), history=True)),
    )
    for table, where, columns, convert in steps:
        for rows in keyed_batches(db, table, "id", columns, where, batch_size):
            with transaction(db):
                for row_id, *cells in rows:
                    db.execute(f"update {table} set {', '.join(f'{c} = ?' for c in columns)} "
                               "where id = ?", [*map(convert, cells), row_id])


def share_long_values(db: sqlite_utils.Database, batch_size: int = 500) -> None:
    """Keep each long value a snapshot delta repeats of its changes only once (a migration).

    Snapshots are converted in id order, `batch_size` to a commit, so a killed migration
    resumes where it stopped; a converted delta has nothing left to share. The file shrinks
    after VACUUM.
    """
    for rows in keyed_batches(db, "snapshots", "id", ("nct_id", "delta"), "delta is not null",
                              batch_size):
        with transaction(db):
            for snapshot_id, nct_id, delta in rows:
                # By study first: `changes` is indexed by study, not by snapshot.
                long = db.execute("select path, new from changes where nct_id = ? and "
                                  "snapshot_id = ? and typeof(new) = 'blob'",
                                  [nct_id, snapshot_id]).fetchall()
                if not long:
                    continue
                values = json.loads(codec.decompress(db, delta))
                shared = set(values.pop(SHARED, ()))
                moved = {path for path, cell in long if path in values
                         and dump_json(values[path]) == codec.unpack_value(db, cell)}
                if not moved:  # converted already (a resumed run), or nothing repeated
                    continue
                shared |= moved
                texts = {path: dump_json(value) for path, value in values.items()
                         if path not in moved}
                if shared:
                    texts[SHARED] = dump_json(sorted(shared))
                db.execute("update snapshots set delta = ? where id = ?",
                           [pack_delta(db, texts), snapshot_id])


def rehash_gates(db: sqlite_utils.Database, batch_size: int = 500) -> None:
    """Turn each study's blake2b gate into the XXH3 gate of the same record (schema 11).

    A gate hashes the record's bytes as its input gave them, which are not kept; the stored
    record is those bytes without the volatile part, as orjson writes them (the same bytes, for
    the registry's compact JSON). So the old gate is sought among the blake2b hashes of the
    stored record as `byte_gate` cut it (a comma left where the part was), with the NDJSON line
    end it hashed too, and of the whole record (`gate_hash`); found, the gate becomes what
    `byte_gate` or `gate_hash` gives those bytes now. A gate not found (another writer's
    spacing or escapes) is left: it matches no new record, so that study's next one takes the
    full path once, and is found the same content if it is. Studies go in key order,
    `batch_size` to a commit, so a killed migration resumes where it stopped (a gate already
    converted is not found again).
    """
    for rows in keyed_batches(db, "studies", "nct_id", ("raw_hash",), "raw_hash != ''",
                              batch_size):
        with transaction(db):
            for nct_id, gate in rows:
                found = db.execute("select record, base from records where nct_id = ?",
                                   [nct_id]).fetchone()
                if found is None:
                    continue
                record = codec.record_bytes(db, found[0], found[1])[0]
                last = record.rfind(b',"')
                cut = (record[:last], b",", record[last:])
                for old, new in (((*cut, b"\n"), cut), ((record,), (record,)), (cut, cut),
                                 ((*cut, b"\r\n"), cut)):
                    if _blake2b(old) == gate:
                        db.execute("update studies set raw_hash = ? where nct_id = ?",
                                   [gate_digest(*new), nct_id])
                        break


def _blake2b(parts: tuple[bytes, ...]) -> str:
    """Return the gate schema 10 stored for some bytes, taken in order."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def compress_dictionaries(db: sqlite_utils.Database) -> None:
    """Store each dictionary as a zstd frame of itself (schema 12), in one commit."""
    if not db["dictionaries"].exists():
        return
    rows = db.execute("select id, dictionary from dictionaries "
                      "where substr(dictionary, 1, 4) != x'28b52ffd'").fetchall()
    with transaction(db):
        for dict_id, data in rows:
            db.execute("update dictionaries set dictionary = ? where id = ?",
                       [codec.stored_dictionary(data), dict_id])


def rediff_beyond_deepdiff(db: sqlite_utils.Database, batch_size: int = 500) -> None:
    """Recompute the detail of changes whose values DeepDiff is no longer given (schema 14).

    Past diff.MAX_DEEPDIFF_NODES nodes or MAX_DEEPDIFF_LISTS levels of lists, the edits
    inside a value come from one walk, not DeepDiff; `check` recomputes them so. Only values
    that hold a list or object can be past those bounds: the rest are not read.
    """
    from .diff import beyond_deepdiff, describe

    for batch in keyed_batches(db, "changes", "id", ("path", "old", "new", "detail"),
                               "kind = 'changed' and (typeof(old) = 'blob' or "
                               "substr(old, 1, 1) in ('[', '{'))", batch_size):
        with transaction(db):
            for change_id, path, old, new, detail in batch:
                before, after = (parse_json(codec.unpack_value(db, cell) or "null")
                                 for cell in (old, new))
                if not beyond_deepdiff(before, after):
                    continue
                fresh = dump_json(describe(path, before, after))
                if fresh != detail:
                    db.execute("update changes set detail = ? where id = ?", [fresh, change_id])
