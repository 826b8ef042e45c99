"""Keep snapshots and changes in SQLite (sqlite-utils): the writers.

A study gets a new snapshot only when its tracked content changes, git-history style; the
snapshot stores only the fields that changed since the one before, so any stored version's
fields are rebuilt by folding deltas. A study's first snapshot is lazy: its content is the
study's first raw record, kept (as `records.base`) once later ones replace it. A change is
found by canonicalising only the top-level modules whose bytes moved. Each change row carries
its old and new values, so the changelog is readable straight from the file (values over 1,024
characters compressed, codec.pack_value). A record whose bytes show no change is never parsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from . import codec
from .annotations import annotation_columns
from .dedupe import InputLedger
from .diff import diff_snapshots
from .errors import InputError, OutOfOrderError
from .meaning import annotate
from .model import (
    Failed,
    FieldChange,
    Observation,
    Outcome,
    Snapshot,
    content_hash,
    dump_json,
)
from .normalize import extract_fields
from .query import study_fields
from .records import (
    byte_gate,
    gate_hash,
    gated_fields,
    materialize,
    pack_delta,
    replays_stored_history,
    save_record,
    with_dictionary,
)
from .registry import DEFAULT
from .sources import SourceItem, parsed


def make_delta(db: sqlite_utils.Database, old: Mapping[str, str], new: Mapping[str, str]
               ) -> bytes:
    """Return the stored delta from one field mapping to the next, compressed."""
    delta = {path: text for path, text in new.items() if old.get(path) != text}
    delta.update({path: "null" for path in old if path not in new})
    return pack_delta(db, delta)


def save_study(
    db: sqlite_utils.Database,
    nct_id: str,
    study: Mapping[str, Any],
    observed_at: str,
    source: str = "import",
    run_id: int | None = None,
    raw: bytes | None = None,
    gate: str | None = None,
) -> Observation:
    """Record one observation of a study; store a snapshot and changes if its content moved.

    `raw` is the record's own bytes, if known (it makes the gate cheaper), `gate` the gate if
    already computed. The caller holds the transaction, so a snapshot and its changes commit
    together.
    """
    gate = gate or gate_hash(study, raw)
    row = db.execute(
        "select raw_hash, content_hash, snapshot_count, last_seen_at, last_changed_at "
        "from studies join sightings using (nct_id) where nct_id = ?",
        [nct_id],
    ).fetchone()
    if row is not None and observed_at < row[4]:
        if replays_stored_history(db, nct_id, study, observed_at):
            return Observation(nct_id, False, ())
        raise _out_of_order(nct_id, observed_at, f"its latest snapshot ({row[4]})")
    if row is not None and row[0] == gate:
        _touch(db, nct_id, observed_at, row[3])
        return Observation(nct_id, False, ())
    if row is None:
        _save_baseline(db, nct_id, study, observed_at, source, run_id, gate)
        return Observation(nct_id, True, ())
    # Backfill stores "" as the gate: then the record is not the latest snapshot's.
    gated = gated_fields(db, nct_id, study, row[2]) if row[0] else None
    if gated is not None:
        return _save_gated(db, nct_id, study, observed_at, source, run_id, gate, row, *gated)
    # Before save_record replaces the baseline's record; its fields then need no second read.
    baseline = materialize(db, nct_id)
    stored_hash = baseline[1] if baseline else row[1]
    snapshot = Snapshot(nct_id, observed_at, extract_fields(study), source)
    if snapshot.content_hash == stored_hash:
        return _same_content(db, nct_id, study, observed_at, gate, row[3])
    if observed_at < row[3]:
        # A change dated before a later sighting of the old content would rewrite what that
        # sighting saw: the study would seem to change back on the next observation.
        raise _out_of_order(nct_id, observed_at, f"its last sighting ({row[3]})")
    save_record(db, nct_id, study, observed_at)
    (markup,) = db.execute(
        "select markup from snapshots where nct_id = ? and seq = ?", [nct_id, row[2]]
    ).fetchone()
    old_fields = baseline[0] if baseline else study_fields(db, nct_id)
    previous = Snapshot(nct_id, row[4], old_fields, markup=markup or "markdown")
    changes = diff_snapshots(previous, snapshot)
    store_snapshot(db, snapshot, previous, row[2] + 1, run_id, changes, snapshot.content_hash)
    _touch(db, nct_id, observed_at, row[3])
    update_study(db, nct_id, {
        "last_changed_at": observed_at,
        "snapshot_count": row[2] + 1,
        "content_hash": snapshot.content_hash,
        "raw_hash": gate,
        **DEFAULT.summary_columns(study),
    })
    return Observation(nct_id, True, tuple(changes))


def _same_content(
    db: sqlite_utils.Database, nct_id: str, study: Mapping[str, Any], observed_at: str,
    gate: str, last_seen: str,
) -> Observation:
    """Take in the same content in other bytes (reordered lists, whitespace): keep its gate."""
    if observed_at >= last_seen:  # an older replay of the same content leaves all as it is
        save_record(db, nct_id, study, observed_at)
        db.execute("update studies set raw_hash = ? where nct_id = ?", [gate, nct_id])
        _touch(db, nct_id, observed_at, last_seen)
    return Observation(nct_id, False, ())


def _save_gated(
    db: sqlite_utils.Database, nct_id: str, study: Mapping[str, Any], observed_at: str,
    source: str, run_id: int | None, gate: str, row: tuple[Any, ...],
    old_part: dict[str, str], new_part: dict[str, str],
) -> Observation:
    """Store an observation whose changes come from the moved modules alone.

    The unmoved modules keep their fields, so the delta and the changes come from the moved
    ones; the full fields are folded only when the study's chain already has a content hash
    (a lazy baseline's chain keeps NULL hashes, which readers and `check` compute).
    """
    if old_part == new_part:
        return _same_content(db, nct_id, study, observed_at, gate, row[3])
    if observed_at < row[3]:
        raise _out_of_order(nct_id, observed_at, f"its last sighting ({row[3]})")
    previous = Snapshot(nct_id, row[4], old_part)
    snapshot = Snapshot(nct_id, observed_at, new_part, source)
    changes = diff_snapshots(previous, snapshot)
    digest: str | None = None
    if row[1] is not None:  # the chain is canonical: fold it for the new hash
        fields = study_fields(db, nct_id)
        for path in old_part:
            fields.pop(path, None)
        fields.update(new_part)
        digest = content_hash(fields)
    save_record(db, nct_id, study, observed_at)
    store_snapshot(db, snapshot, previous, row[2] + 1, run_id, changes, digest)
    _touch(db, nct_id, observed_at, row[3])
    update_study(db, nct_id, {
        "last_changed_at": observed_at, "snapshot_count": row[2] + 1, "content_hash": digest,
        "raw_hash": gate, **DEFAULT.summary_columns(study),
    })
    return Observation(nct_id, True, tuple(changes))


def _out_of_order(nct_id: str, observed_at: str, latest: str) -> OutOfOrderError:
    """Return the error for an observation that would rewrite a study's known history."""
    return OutOfOrderError(
        f"{nct_id}: observation at {observed_at} is older than {latest}; history is "
        "appended in time order (backfill adds the past)"
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
    run_id: int | None, changes: Iterable[FieldChange], digest: str | None,
) -> None:
    """Insert a snapshot as a delta from the previous one, and its changes.

    `digest` is its content hash, or None in a chain rooted in a lazy baseline (computed on
    reading).
    """
    snapshot_id = insert_row(db, "snapshots", {
        "nct_id": snapshot.nct_id,
        "seq": seq,
        "observed_at": snapshot.observed_at,
        "content_hash": digest,
        "source": snapshot.source,
        "source_version": snapshot.source_version,
        "run_id": run_id,
        "delta": make_delta(db, previous.fields if previous else {}, snapshot.fields),
        "markup": snapshot.markup,
    })
    for item in annotate(list(changes)):
        insert_row(db, "changes",
                   {**change_row(db, item.change, snapshot_id), **annotation_columns(item)})


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


def _touch(db: sqlite_utils.Database, nct_id: str, observed_at: str, last_seen: str) -> None:
    """Move a study's last-seen time forward."""
    if observed_at > last_seen:
        db.execute("update sightings set last_seen_at = ? where nct_id = ?", [observed_at, nct_id])


def change_row(db: sqlite_utils.Database, change: FieldChange, snapshot_id: int | None
               ) -> dict[str, Any]:
    """Return the row that stores a change (long values compressed: codec.pack_value)."""
    return {
        "nct_id": change.nct_id,
        "snapshot_id": snapshot_id,
        "path": change.path,
        "kind": change.kind,
        "detected_at": change.detected_at,
        "old": codec.pack_value(db, _to_json(change.old)),
        "new": codec.pack_value(db, _to_json(change.new)),
        "detail": _to_json(dict(change.detail)),
    }


def _to_json(value: Any) -> str | None:
    """Return a value as stored JSON text (None stays NULL)."""
    if value is None:
        return None
    return dump_json(value)


@dataclass
class RunTotals:
    """What one run did, for its summary line and the run log."""

    checked: int = 0
    changed: int = 0
    changes: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    def count(self, observation: Observation) -> None:
        """Add one study's observation."""
        self.checked += 1
        self.add_changes(observation.changes)

    def add_changes(self, changes: Iterable[FieldChange]) -> None:
        """Add the changes one study's write made (none leaves `changed` as it is)."""
        found = list(changes)
        self.changed += bool(found)
        self.changes += len(found)
        for change in found:
            self.by_kind[change.kind] = self.by_kind.get(change.kind, 0) + 1

    def uncount(self, undone: Mapping[str, int]) -> None:
        """Take back one study's observation whose write was undone, with its changes by kind."""
        self.checked -= 1
        self.changed -= bool(undone)
        self.changes -= sum(undone.values())
        for kind, count in undone.items():
            self.by_kind[kind] -= count
            if not self.by_kind[kind]:
                del self.by_kind[kind]

    def fail(self, where: str, error: str) -> None:
        """Add one input that failed."""
        self.failed += 1
        self.errors.append({"input": where, "error": error})


def save_studies(
    db: sqlite_utils.Database,
    items: Iterable[SourceItem],
    observed_at: str,
    totals: RunTotals,
    source: str = "import",
    run_id: int | None = None,
    batch_size: int = 500,
    emit: Callable[[Outcome], None] | None = None,
) -> None:
    """Save one input's stream of records, committing every `batch_size`; emit what each did.

    A batch is one transaction, so a killed run loses at most the batch under way, and
    running it again redoes exactly that batch (a saved observation is not stored twice).
    The input observes each study once (see dedupe): a repeat is dropped, a conflict refused.
    The alerts the changes raise (watch.py) are written in the same transaction.
    """
    from .watch import AlertWriter

    def report(outcome: Outcome) -> None:
        if emit is not None:
            emit(outcome)

    pending = 0
    items = with_dictionary(db, items, observed_at)
    ledger = InputLedger(db)
    db.execute("begin immediate")
    try:
        alerts = AlertWriter(db, run_id)
        for item in items:
            quick = byte_gate(item.raw) if item.raw is not None else None
            observation = (_seen_unchanged(db, ledger, item, quick, observed_at)
                           if item.unparsed and quick else None)
            if observation is None:
                outcome = _save_item(db, ledger, parsed(item), quick, observed_at, source,
                                     run_id, totals)
                if not isinstance(outcome, Observation):
                    if outcome is not None:
                        report(outcome)
                    continue
                observation = outcome
                alerts.add(observation.nct_id, observation.changes)
            totals.count(observation)
            report(observation)
            pending += 1
            if pending >= batch_size:
                db.execute("commit")
                db.execute("begin immediate")
                pending = 0
        db.execute("commit")
    except BaseException:
        if db.conn.in_transaction:
            db.execute("rollback")
        raise


def _save_item(
    db: sqlite_utils.Database, ledger: InputLedger, item: SourceItem, gate: str | None,
    observed_at: str, source: str, run_id: int | None, totals: RunTotals,
) -> Observation | Failed | None:
    """Save one parsed item: its observation, why it failed, or None for a dropped repeat.

    `gate` is its byte gate if its bytes had one (else the gate of the record written anew).
    """
    if item.study is None or item.nct_id is None:
        totals.fail(item.label, item.error or "unreadable")
        return Failed(item.label, item.error or "unreadable")
    gate = gate or gate_hash(item.study)  # the bytes were tried already
    earlier = ledger.known(item.nct_id)
    if earlier is not None:
        return _repeat(db, ledger, item, gate, earlier, totals)
    ledger.first(item.nct_id, item.label, gate)
    try:
        return save_study(db, item.nct_id, item.study, observed_at, source=source,
                          run_id=run_id, gate=gate)
    except InputError as exc:  # raised before save_study writes anything it keeps
        ledger.failed(item.nct_id)
        totals.fail(item.label, str(exc))
        return Failed(item.label, str(exc))


def _seen_unchanged(
    db: sqlite_utils.Database, ledger: InputLedger, item: SourceItem, gate: str, observed_at: str
) -> Observation | None:
    """Take in an unparsed record whose bytes show it unchanged; None: parse and save it.

    When its gate (`byte_gate`) equals the stored one, its bytes (but the volatile part) are
    those of a record that parsed as this study: moving the last sighting is all there is to
    do, as save_study would. Anything else (a new study, a repeat, an older observation)
    takes the full path.
    """
    if item.nct_id is None:
        return None
    # One statement: the stored gate, and whether this input gave the study already.
    row = db.execute(
        "select raw_hash, last_seen_at, last_changed_at, l.nct_id from studies "
        "join sightings using (nct_id) left join temp.input_ledger l using (nct_id) "
        "where nct_id = ?", [item.nct_id],
    ).fetchone()
    if row is None or row[0] != gate or observed_at < row[2] or row[3] is not None:
        return None
    ledger.seen(item.nct_id, item.label, gate, row[1])
    _touch(db, item.nct_id, observed_at, row[1])
    return Observation(item.nct_id, False, ())


def _repeat(
    db: sqlite_utils.Database, ledger: InputLedger, item: SourceItem, gate: str,
    earlier: tuple[str, str, str], totals: RunTotals,
) -> Failed | None:
    """Drop a study's repeat in one input; if its content differs, undo the study and refuse it."""
    assert item.nct_id is not None and item.study is not None
    label, first_gate, state = earlier
    if state != "conflict" and gate == first_gate:
        return None
    if state in ("saved", "seen"):
        materialize(db, item.nct_id)  # a lazy baseline gets the hash to compare with
        stored = db.execute("select content_hash from studies where nct_id = ?",
                            [item.nct_id]).fetchone()
        if stored is not None and stored[0] == content_hash(extract_fields(item.study)):
            return None  # the same content in other bytes
    undone: dict[str, int] = {}
    if state in ("saved", "seen"):  # the first copy was stored (or seen): take it back
        undone = ledger.undo(item.nct_id)
        totals.uncount(undone)
    error = (f"{item.nct_id} is given again in this input with different content (first in "
             f"{label}): a conflict, so no version of it was stored"
             + (" (the changes printed for it are undone)" if undone else ""))
    totals.fail(item.label, error)
    return Failed(item.label, error)
