"""Keep each study's raw records, and find which of a record's modules moved: store's helpers.

The gate says from a record's bytes whether anything but its volatile part moved. A study's
first record stays (as `records.base`) once a later one replaces it: it is the content of the
study's lazy first snapshot. Later records are stored as zstd against it, and first records
with a dictionary trained on the database's own records (codec.py). A new record is compared
with the stored one module by module, so only the modules whose bytes moved are canonicalised
and diffed (`prepare_edit` computes all that storing an edit writes, reading no table). A
snapshot's delta does not repeat a long value one of its changes holds (`make_delta`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlite_utils
import xxhash

from . import codec
from .annotations import annotation_columns
from .diff import diff_snapshots
from .meaning import annotate
from .model import FieldChange, Snapshot, content_hash, dump_json, fields_json
from .normalize import SiteMemo, extract_fields
from .query import (
    SHARED,
    apply_delta,
    baseline_record,
    study_fields,
    transaction,
)
from .registry import DEFAULT
from .sources import SourceItem
from .tracking import rules_of
from .units import maps_alone, moved_units, record_units, split_moved, unit_fields


def raw_json(value: Any) -> bytes:
    """Return a parsed value as JSON bytes, in its own key order (orjson, else json)."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        # orjson refuses integers past 64 bits and lone surrogates; json takes both.
        return json.dumps(value, ensure_ascii=True).encode("ascii")


def stable_part(study: Mapping[str, Any], volatile: Sequence[str] = DEFAULT.volatile
                ) -> dict[str, Any]:
    """Return a record without its volatile parts: those its registry re-stamps every release.

    A database that tracks them again (tracking.py) has none: its rules' `volatile` is empty.
    """
    return {k: v for k, v in study.items() if k not in volatile}


def gate_hash(study: Mapping[str, Any], raw: bytes | None = None,
              volatile: Sequence[str] = DEFAULT.volatile) -> str:
    """Return the cheap gate: a hash of the record's bytes, its volatile parts left out.

    A new data release re-stamps every record's derived data (CT.gov's derivedSection: the
    registry's `volatile` keys), so its raw bytes differ every day; without it, equal bytes
    mean nothing a sponsor wrote changed, and canonicalising (the expensive part) is skipped.
    Given the record's own bytes, the part is cut out of them (`byte_gate`); otherwise, or
    if they are not of that shape, the record is written anew without it.
    """
    gate = byte_gate(raw, volatile) if raw is not None else None
    if gate is not None:
        return gate
    return gate_digest(raw_json(stable_part(study, volatile)))


def gate_digest(*parts: bytes | memoryview) -> str:
    """Return the gate's hash of some bytes, taken in order: XXH3, 128 bits, in hex.

    A gate only says whether a study's record moved since the same study's last one, so it
    needs no resistance to a forger, only speed: a daily run hashes the whole registry
    (~16 GB), which XXH3 does in a tenth of blake2b's time (benchmarks/RESULTS.md).
    """
    digest = xxhash.xxh3_128()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


_LINE_END = b" \t\r\n"  # after a record: not part of it, so not hashed


def compares_by_module(raw_hash: str | None, markup: str | None, has_record: bool) -> bool:
    """Tell whether a stored study's next record is compared with its record module by module.

    Not when a backfilled version is latest (backfill stores "" as the gate), nor an HTML
    one, nor when there is no record: then the whole new record is canonicalised.
    """
    return bool(raw_hash) and (markup or "markdown") == "markdown" and has_record


def byte_gate(raw: bytes, volatile: Sequence[str] = DEFAULT.volatile) -> str | None:
    """Return the gate of a record's bytes without parsing the record; None if not sure.

    It holds for compact JSON whose one volatile part sits between two top-level keys, as in
    every CT.gov record (`...},"derivedSection":{...},"hasResults":false}`): the part's value
    is parsed alone (3% of a record) to be sure the cut is exactly that value. The key is
    sought from the end, where the part is (a search from the start read the whole record: a
    fifth of the gate's time). A key of that name nested deeper would start a cut that closes
    more objects than it opens, which does not parse; one nested earlier is hashed as the rest.
    The bytes after the record (an NDJSON line's end, LF or CRLF) are not hashed.
    """
    if len(volatile) != 1:
        return None
    whole = memoryview(raw)  # slices of a view parse and hash without copying the record
    token = orjson.dumps(volatile[0]) + b":"
    start = raw.rfind(token)
    end = raw.rfind(b',"')
    if start < 1 or end <= start or raw[start - 1] != 0x2C:
        return None  # 0x2C: a comma, so the part is not the record's first key
    try:
        orjson.loads(whole[start + len(token):end])
    except orjson.JSONDecodeError:
        return None  # the last comma is inside the part: it is not followed by another key
    stop = len(raw)
    while raw[stop - 1] in _LINE_END:
        stop -= 1
    return gate_digest(whole[:start], whole[end:stop])


def pack_delta(conn: Any, delta: Mapping[str, str]) -> bytes:
    """Return a {path: canonical JSON} delta as stored: its canonical JSON, compressed.

    Compressed with the record dictionary (zlib before schema 9), because results sections
    are large (and backfill stores whole baselines).
    """
    return codec.compress(conn, fields_json(delta).encode("utf-8"), history=True)


def materialize(
    db: sqlite_utils.Database, nct_id: str
) -> tuple[dict[str, str], str] | None:
    """Canonicalise a study's lazy baseline if it has one; return its fields and hash.

    Backfill needs every snapshot's fields stored; so does an import that cannot gate by
    module. The hashes of the chain after it are filled in too.
    """
    found = db.execute(
        "select id, markup from snapshots where nct_id = ? and delta is null", [nct_id],
    ).fetchone()
    record = baseline_record(db, nct_id)
    if found is None or record is None:
        return None
    snapshot_id, markup = found
    fields = extract_fields(record, rules_of(db), markup=markup or "markdown")
    digest = content_hash(fields)
    db.execute("update snapshots set delta = ?, content_hash = ? where id = ?",
               [pack_delta(db, fields), digest, snapshot_id])
    db.execute("update studies set content_hash = ? where nct_id = ?", [digest, nct_id])
    later = db.execute("select id, delta from snapshots where nct_id = ? and seq > 1 "
                       "order by seq", [nct_id]).fetchall()
    folded = dict(fields)
    for later_id, delta in later:
        apply_delta(db, folded, delta, nct_id, later_id)
        digest = content_hash(folded)
        db.execute("update snapshots set content_hash = ? where id = ?", [digest, later_id])
    db.execute("update studies set content_hash = ? where nct_id = ?", [digest, nct_id])
    return folded, digest


def save_record(
    db: sqlite_utils.Database, nct_id: str, study: Mapping[str, Any], observed_at: str
) -> None:
    """Keep the latest raw record of a study, compressed, for rendering its page.

    The first record stays as `base` (a lazy baseline's content) and each later one is stored
    against it, so a study's content is never kept twice in full.
    """
    raw = raw_json(stable_part(study, rules_of(db).volatile))
    found = db.execute("select record, base from records where nct_id = ?", [nct_id]).fetchone()
    if found is None:
        put_record(db, nct_id, observed_at, codec.compress(db, raw), None)
        return
    base = first_record(found)
    put_record(db, nct_id, observed_at, codec.compress(db, raw, base=codec.decompress(db, base)),
               base)


def first_record(stored: tuple[bytes, bytes | None]) -> bytes:
    """Return a records row's first record, as stored: its base, or the record if it is first."""
    return stored[0] if stored[1] is None else stored[1]


def put_record(db: sqlite_utils.Database, nct_id: str, observed_at: str, record: bytes,
               base: bytes | None) -> None:
    """Store a study's latest record as compressed: its first, or one against `base`, its first.

    A later record updates the row in place (`insert or replace` would move it to the table's
    end and leave its old space as slack: a third of a heavy day's growth of `records`).
    """
    if base is None:
        db.execute("insert into records (nct_id, observed_at, record) values (?, ?, ?)",
                   [nct_id, observed_at, record])
        return
    # The ETag was the old record's: sync sets the new one once the record is stored.
    db.execute("update records set observed_at = ?, record = ?, base = ?, etag = null "
               "where nct_id = ?", [observed_at, record, base, nct_id])


def replays_stored_history(
    db: sqlite_utils.Database, nct_id: str, study: Mapping[str, Any], observed_at: str
) -> bool:
    """Return whether an older observation shows what the history already says of its time.

    Importing an archive folder again (cron re-running a growing archive) replays days already
    stored: those observations tell nothing new and are no error. Only one that contradicts
    the stored history would rewrite it, and that one is refused.
    """
    then = db.execute(
        "select seq, content_hash from snapshots where nct_id = ? and observed_at <= ? "
        "order by seq desc limit 1", [nct_id, observed_at]).fetchone()
    if then is None:
        return False
    # A chain rooted in a lazy baseline stores no hashes: the fold gives that snapshot's.
    stored = then[1] or content_hash(study_fields(db, nct_id, then[0]))
    return content_hash(extract_fields(study, rules_of(db))) == stored


@dataclass(frozen=True)
class Edit:
    """What storing a study's moved modules writes, prepared without the database (see below)."""

    content_moved: bool  # else the same content in other bytes (spacing, list order)
    old_paths: tuple[str, ...]  # the moved modules' fields as stored, which new_part replaces
    new_part: dict[str, str]  # the moved modules' fields as the new record has them
    changes: tuple[FieldChange, ...]
    change_rows: tuple[dict[str, Any], ...]  # as stored, but for their snapshot's id
    delta: bytes  # the snapshot's delta (empty when nothing tracked moved)
    record: bytes  # the new record, compressed against the study's first
    summary: dict[str, Any]  # the study row's summary columns


def prepare_edit(
    conn: Any, nct_id: str, study: Mapping[str, Any], stored: tuple[bytes, bytes | None],
    previous_at: str, observed_at: str, source: str,
) -> Edit:
    """Compare a new record with the stored one, module by module; return what to write.

    `stored` is the study's records row (record, base), still compressed. Only the modules
    whose bytes moved are canonicalised and diffed. It reads nothing but the dictionaries
    `conn` holds: the pure part of a write, which store.py then writes.
    """
    old_bytes, base = codec.record_bytes(conn, *stored)
    rules = rules_of(conn)
    stable = stable_part(study, rules.volatile)  # never stored, and re-stamped daily
    split = split_moved(old_bytes, stable)
    if split is None or not maps_alone(split.new):  # compare the parsed records
        old_units, new_units = record_units(orjson.loads(old_bytes)), record_units(stable)
        moved, raw = moved_units(old_units, new_units), raw_json(stable)
        if not (maps_alone(old_units) and maps_alone(new_units)):
            moved = set(old_units) | set(new_units)  # whole: a unit's paths hang on another's
    else:
        old_units, new_units, moved, raw = split.old, split.new, split.moved, split.raw
    memo: SiteMemo = {}
    old_part = unit_fields(old_units, moved, rules, memo=memo)
    new_part = unit_fields(new_units, moved, rules, memo=memo)
    changes: list[FieldChange] = []
    delta = b""
    if old_part != new_part:
        changes = diff_snapshots(Snapshot(nct_id, previous_at, old_part),
                                 Snapshot(nct_id, observed_at, new_part, source))
        delta = make_delta(conn, old_part, new_part, changes)
    # The first record is the base of every later one: the old record itself if it was first.
    record = codec.compress(conn, raw, base=old_bytes if base is None else base)
    rows = change_rows(conn, changes, old_part, new_part)
    return Edit(old_part != new_part, tuple(old_part), new_part, tuple(changes), tuple(rows),
                delta, record, DEFAULT.summary_columns(study))


def make_delta(conn: Any, old: Mapping[str, str], new: Mapping[str, str],
               changes: Sequence[FieldChange] = ()) -> bytes:
    """Return the stored delta from one field mapping to the next, compressed.

    A long value (a posted results section) that one of the snapshot's `changes` stores as
    its new value is not stored again: the delta names its path under query.SHARED.
    """
    delta = {path: text for path, text in new.items() if old.get(path) != text}
    delta.update({path: "null" for path in old if path not in new})
    shared = sorted(change.path for change in changes if change.new is not None
                    and len(delta.get(change.path, "")) > codec.VALUE_INLINE)
    for path in shared:
        del delta[path]
    if shared:
        delta[SHARED] = dump_json(shared)
    return pack_delta(conn, delta)


def change_rows(conn: Any, changes: Sequence[FieldChange], old: Mapping[str, str],
                new: Mapping[str, str]) -> list[dict[str, Any]]:
    """Return the rows that store one snapshot's changes, annotated, but for its id.

    `old` and `new` are the fields the changes were found between (diff_snapshots parses a
    change's values from them), so a value's canonical JSON is stored as it is; over 1,024
    characters, compressed (codec.pack_value).
    """
    return [{
        "nct_id": item.change.nct_id,
        "path": item.change.path,
        "kind": item.change.kind,
        "detected_at": item.change.detected_at,
        "old": codec.pack_value(conn, old.get(item.change.path)),
        "new": codec.pack_value(conn, new.get(item.change.path)),
        "detail": dump_json(dict(item.change.detail)),
        **annotation_columns(item),
    } for item in annotate(changes)]


def with_dictionary(
    db: sqlite_utils.Database, items: Iterable[SourceItem], observed_at: str
) -> Iterator[SourceItem]:
    """Train the database's record dictionary on an input's first records if it has none."""
    stream = iter(items)
    if codec.current_dictionary(db) is not None:
        return stream
    head = list(itertools.islice(stream, codec.MAX_SAMPLES))
    volatile = rules_of(db).volatile
    samples = []
    for item in head:
        if item.study is not None:
            with contextlib.suppress(RecursionError):  # too deep to write: it fails on its own
                samples.append(raw_json(stable_part(item.study, volatile)))
        elif item.unparsed and item.raw:  # as good a sample (3% is derived data), unparsed
            samples.append(item.raw)
    if len(samples) >= codec.MIN_SAMPLES:
        with transaction(db):  # its own commit: rows compressed with it may roll back
            codec.train(db, samples, observed_at)
    return itertools.chain(head, stream)
