"""Keep snapshots and changes in SQLite (sqlite-utils): the writes of one study's observation.

A study gets a new snapshot only when its tracked content changes, git-history style; the
snapshot stores only the fields that changed since the one before, so any stored version's
fields are rebuilt by folding deltas. A study's first snapshot is lazy: its content is the
study's first raw record, kept (as `records.base`) once later ones replace it. A change is
found by canonicalising only the top-level modules whose bytes moved (records.prepare_edit).
Each change row carries its old and new values, so the changelog is readable straight from the
file (values over 1,024 characters compressed, codec.pack_value, and not repeated in the
snapshot's delta). ingest.py saves an input's stream of records through these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlite_utils

from .diff import diff_snapshots
from .errors import OutOfOrderError
from .model import (
    FieldChange,
    Observation,
    Snapshot,
    content_hash,
)
from .normalize import extract_fields
from .query import study_fields
from .records import (
    Edit,
    change_rows,
    compares_by_module,
    first_record,
    gate_hash,
    make_delta,
    materialize,
    prepare_edit,
    put_record,
    replays_stored_history,
    save_record,
)
from .registry import DEFAULT
from .tracking import rules_of

if TYPE_CHECKING:
    from .ahead import Prepared


class _Stored(NamedTuple):
    """What a write reads of a study first: its row, its latest markup, whether it has a record."""

    raw_hash: str | None  # the gate of its latest record ("" after a backfill)
    content_hash: str | None  # None in a chain rooted in a lazy baseline
    snapshot_count: int
    last_seen_at: str
    last_changed_at: str
    markup: str | None  # of its latest snapshot
    has_record: bool  # its raw record is stored (read only when the record is compared)

    @property
    def gateable(self) -> bool:
        """Tell whether a new record is compared with the stored one module by module."""
        return compares_by_module(self.raw_hash, self.markup, self.has_record)


def _lookup(db: sqlite_utils.Database, nct_id: str) -> _Stored | None:
    """Return what a write needs to know of a stored study (one statement), or None."""
    # Not the record's bytes: an unchanged study (most of any day) never needs them.
    row = db.execute(
        "select s.raw_hash, s.content_hash, s.snapshot_count, g.last_seen_at, "
        "s.last_changed_at, p.markup, exists (select 1 from records r where r.nct_id = s.nct_id) "
        "from studies s join sightings g on g.nct_id = s.nct_id "
        "left join snapshots p on p.nct_id = s.nct_id and p.seq = s.snapshot_count "
        "where s.nct_id = ?", [nct_id],
    ).fetchone()
    if row is None:
        return None
    raw_hash, digest, count, last_seen, last_changed, markup, has_record = row
    return _Stored(raw_hash, digest, count, last_seen, last_changed, markup, bool(has_record))


def save_study(
    db: sqlite_utils.Database,
    nct_id: str,
    study: Mapping[str, Any],
    observed_at: str,
    source: str = "import",
    run_id: int | None = None,
    raw: bytes | None = None,
    gate: str | None = None,
    prepared: Prepared | None = None,
) -> Observation:
    """Record one observation of a study; store a snapshot and changes if its content moved.

    `raw` is the record's own bytes, if known (it makes the gate cheaper), `gate` the gate if
    already computed, `prepared` its edit if prepared ahead (ahead.py). The caller holds the
    transaction, so a snapshot and its changes commit together.
    """
    rules = rules_of(db)
    gate = gate or gate_hash(study, raw, rules.volatile)
    stored = _lookup(db, nct_id)
    # Other content at its latest snapshot's very time would be a change of no duration (an
    # import run again, at the same --at, on another day's files): refused as an older one is.
    if stored is not None and (observed_at < stored.last_changed_at or (
            observed_at == stored.last_changed_at and stored.raw_hash != gate)):
        if replays_stored_history(db, nct_id, study, observed_at):
            return Observation(nct_id, False, ())
        raise _out_of_order(nct_id, observed_at, f"its latest snapshot ({stored.last_changed_at})")
    if stored is not None and stored.raw_hash == gate:
        touch(db, nct_id, observed_at, stored.last_seen_at)
        return Observation(nct_id, False, ())
    if stored is None:
        _save_baseline(db, nct_id, study, observed_at, source, run_id, gate)
        return Observation(nct_id, True, ())
    if stored.gateable:
        record = tuple(db.execute("select record, base from records where nct_id = ?",
                                  [nct_id]).fetchone())
        edit = (prepared.edit_for(record, stored.last_changed_at, observed_at, source)
                if prepared is not None else None)
        if edit is None:  # not prepared ahead (ahead.py), or not from these very inputs
            edit = prepare_edit(db, nct_id, study, record, stored.last_changed_at,
                                observed_at, source)
        return _save_edit(db, nct_id, observed_at, source, run_id, gate, stored, edit,
                          first_record(record))
    # Before save_record replaces the baseline's record; its fields then need no second read.
    baseline = materialize(db, nct_id)
    stored_hash = baseline[1] if baseline else stored.content_hash
    snapshot = Snapshot(nct_id, observed_at, extract_fields(study, rules), source)
    if snapshot.content_hash == stored_hash:
        return _same_content(db, nct_id, observed_at, gate, stored.last_seen_at,
                             lambda: save_record(db, nct_id, study, observed_at))
    if observed_at <= stored.last_seen_at:
        # A change dated at or before a sighting of the old content would rewrite what that
        # sighting saw: the study would seem to change back on the next observation.
        raise _out_of_order(nct_id, observed_at, f"its last sighting ({stored.last_seen_at})")
    save_record(db, nct_id, study, observed_at)
    old_fields = baseline[0] if baseline else study_fields(db, nct_id)
    previous = Snapshot(nct_id, stored.last_changed_at, old_fields,
                        markup=stored.markup or "markdown")
    changes = diff_snapshots(previous, snapshot)
    seq = stored.snapshot_count + 1
    store_snapshot(db, snapshot, previous, seq, run_id, changes, snapshot.content_hash)
    _moved(db, nct_id, observed_at, stored, snapshot.content_hash, gate,
           DEFAULT.summary_columns(study))
    return Observation(nct_id, True, tuple(changes))


def _same_content(
    db: sqlite_utils.Database, nct_id: str, observed_at: str, gate: str, last_seen: str,
    keep_record: Callable[[], None],
) -> Observation:
    """Take in the same content in other bytes (reordered lists, whitespace): keep its gate."""
    if observed_at >= last_seen:  # an older replay of the same content leaves all as it is
        keep_record()
        db.execute("update studies set raw_hash = ? where nct_id = ?", [gate, nct_id])
        touch(db, nct_id, observed_at, last_seen)
    return Observation(nct_id, False, ())


def _save_edit(
    db: sqlite_utils.Database, nct_id: str, observed_at: str, source: str,
    run_id: int | None, gate: str, stored: _Stored, edit: Edit, base: bytes,
) -> Observation:
    """Store an observation prepared module by module (records.prepare_edit).

    The unmoved modules keep their fields, so the delta and the changes come from the moved
    ones; the full fields are folded only when the study's chain already has a content hash
    (a lazy baseline's chain keeps NULL hashes, which readers and `check` compute).
    """
    if not edit.content_moved:
        return _same_content(db, nct_id, observed_at, gate, stored.last_seen_at, lambda: (
            put_record(db, nct_id, observed_at, edit.record, base)))
    if observed_at <= stored.last_seen_at:
        raise _out_of_order(nct_id, observed_at, f"its last sighting ({stored.last_seen_at})")
    digest: str | None = None
    if stored.content_hash is not None:  # the chain is canonical: fold it for the new hash
        fields = study_fields(db, nct_id)
        for path in edit.old_paths:
            fields.pop(path, None)
        fields.update(edit.new_part)
        digest = content_hash(fields)
    put_record(db, nct_id, observed_at, edit.record, base)
    insert_snapshot(db, Snapshot(nct_id, observed_at, edit.new_part, source),
                    stored.snapshot_count + 1, run_id, digest, edit.delta, edit.change_rows)
    _moved(db, nct_id, observed_at, stored, digest, gate, edit.summary)
    return Observation(nct_id, True, edit.changes)


def _moved(db: sqlite_utils.Database, nct_id: str, observed_at: str, stored: _Stored,
           digest: str | None, gate: str, summary: Mapping[str, Any]) -> None:
    """Update a study's row and sighting after storing its new snapshot."""
    touch(db, nct_id, observed_at, stored.last_seen_at)
    update_study(db, nct_id, {
        "last_changed_at": observed_at, "snapshot_count": stored.snapshot_count + 1,
        "content_hash": digest, "raw_hash": gate, **summary,
    })


def _out_of_order(nct_id: str, observed_at: str, latest: str) -> OutOfOrderError:
    """Return the error for an observation that would rewrite a study's known history."""
    when = "is at the same time as" if latest.endswith(f"({observed_at})") else "is older than"
    return OutOfOrderError(
        f"{nct_id}: observation at {observed_at} {when} {latest}; history is appended in time "
        "order (backfill adds the past)"
    )


def _save_baseline(
    db: sqlite_utils.Database, nct_id: str, study: Mapping[str, Any], observed_at: str,
    source: str, run_id: int | None, gate: str,
) -> None:
    """Store a study's first snapshot lazily: its raw record, canonicalised only if it changes.

    Most studies do not change in a given month, so a bootstrap of the whole registry skips
    the expensive canonicalisation; `materialize` does it when the study first moves.
    """
    save_record(db, nct_id, study, observed_at)
    insert_row(db, "snapshots", {
        "nct_id": nct_id, "seq": 1, "observed_at": observed_at, "content_hash": None,
        "source": source, "source_version": None, "run_id": run_id, "delta": None,
        "markup": "markdown",
    })
    insert_row(db, "sightings", {"nct_id": nct_id, "last_seen_at": observed_at})
    insert_row(db, "studies", {
        "nct_id": nct_id, "first_seen_at": observed_at,
        "last_changed_at": observed_at, "snapshot_count": 1, "content_hash": None,
        "raw_hash": gate, **DEFAULT.summary_columns(study),
    })


def store_snapshot(
    db: sqlite_utils.Database, snapshot: Snapshot, previous: Snapshot | None, seq: int,
    run_id: int | None, changes: Sequence[FieldChange], digest: str | None,
) -> None:
    """Insert a snapshot as a delta from the previous one, and its changes.

    `digest` is its content hash, or None in a chain rooted in a lazy baseline (computed on
    reading).
    """
    old = previous.fields if previous else {}
    delta = make_delta(db, old, snapshot.fields, changes)
    insert_snapshot(db, snapshot, seq, run_id, digest, delta,
                    change_rows(db, changes, old, snapshot.fields))


def insert_snapshot(
    db: sqlite_utils.Database, snapshot: Snapshot, seq: int, run_id: int | None,
    digest: str | None, delta: bytes, rows: Iterable[Mapping[str, Any]],
) -> None:
    """Insert a snapshot row with its stored delta, and its changes' rows (records.change_rows)."""
    snapshot_id = insert_row(db, "snapshots", {
        "nct_id": snapshot.nct_id,
        "seq": seq,
        "observed_at": snapshot.observed_at,
        "content_hash": digest,
        "source": snapshot.source,
        "source_version": snapshot.source_version,
        "run_id": run_id,
        "delta": delta,
        "markup": snapshot.markup,
    })
    for row in rows:
        insert_row(db, "changes", {**row, "snapshot_id": snapshot_id})


def update_study(db: sqlite_utils.Database, nct_id: str, columns: Mapping[str, Any]) -> None:
    """Update some columns of a study's row."""
    assignments = ", ".join(f"{column} = ?" for column in columns)
    db.execute(f"update studies set {assignments} where nct_id = ?", [*columns.values(), nct_id])


def insert_row(db: sqlite_utils.Database, table: str, row: Mapping[str, Any]) -> int:
    """Insert one row with plain SQL, inside the caller's transaction; return its rowid."""
    # sqlite-utils' insert() commits on its own, which would split a study's write in two.
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    cursor = db.execute(f"insert into {table} ({columns}) values ({marks})", list(row.values()))
    return int(cursor.lastrowid or 0)


def touch(db: sqlite_utils.Database, nct_id: str, observed_at: str, last_seen: str) -> None:
    """Move a study's last-seen time forward."""
    if observed_at > last_seen:
        db.execute("update sightings set last_seen_at = ? where nct_id = ?", [observed_at, nct_id])
