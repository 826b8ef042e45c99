"""Save one input's stream of records: in batches, each study once, unchanged ones unparsed.

An input (the files of one import, an API page, a dump) observes each study once at one time.
Its records are saved in order, a batch to a transaction (store.py writes each study). A
record whose bytes show it unchanged only moves the study's last sighting, unparsed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from .ahead import EditsAhead, Prepared
from .dedupe import InputLedger
from .errors import InputError
from .model import Failed, FieldChange, Observation, Outcome, content_hash
from .normalize import extract_fields
from .records import gate_hash, materialize, with_dictionary
from .sources import LazyRecord, SourceItem, parsed
from .store import save_study, touch
from .tracking import rules_of


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

    def copy(self) -> RunTotals:
        """Return the totals as they are now (what a rollback comes back to)."""
        return RunTotals(self.checked, self.changed, self.changes, self.failed,
                         dict(self.by_kind), list(self.errors))

    def restore(self, earlier: RunTotals) -> None:
        """Go back to earlier totals: what a rolled-back batch counted never happened."""
        self.__dict__.update(vars(earlier.copy()))


def save_studies(
    db: sqlite_utils.Database,
    items: Iterable[SourceItem],
    observed_at: str,
    totals: RunTotals,
    source: str = "import",
    run_id: int | None = None,
    batch_size: int = 500,
    emit: Callable[[Outcome], None] | None = None,
    workers: int = 0,
) -> None:
    """Save one input's stream of records, committing every `batch_size`; emit what each did.

    A batch is one transaction, so a killed run loses at most the batch under way, and
    running it again redoes exactly that batch (a saved observation is not stored twice).
    What a batch did is emitted, and counted in `totals`, once it has committed: a batch
    rolled back (Ctrl-C) was never shown, nor counted.
    The input observes each study once (see dedupe): a repeat is dropped, a conflict refused.
    The alerts the changes raise (watch.py) are written in the same transaction. With
    `workers` (1), a day of many edits has them prepared ahead in a worker process
    (ahead.py); the rows written are the same.
    """
    from .watch import AlertWriter

    shown: list[Outcome] = []  # the batch's outcomes, emitted once it commits
    committed = totals.copy()  # what the totals come back to if the batch rolls back

    def report(outcome: Outcome) -> None:
        if isinstance(outcome, Failed) and outcome.undone is not None:
            # The study's first copy in this input was taken back: not shown, if not yet.
            shown[:] = [o for o in shown if not (isinstance(o, Observation)
                                                 and o.nct_id == outcome.undone[0])]
        shown.append(outcome)

    def commit() -> None:
        nonlocal committed
        db.execute("commit")
        committed = totals.copy()
        if emit is not None:
            for outcome in shown:
                emit(outcome)
        shown.clear()

    pending = 0
    items = with_dictionary(db, items, observed_at)  # trains in its own commit, if it must
    ahead = EditsAhead(db, observed_at, source, workers)
    ledger = InputLedger(db)
    db.execute("begin immediate")
    try:
        alerts = AlertWriter(db, run_id)
        for item, quick in ahead.read(items):
            observation = (_seen_unchanged(db, ledger, item, quick, observed_at)
                           if item.unparsed and quick else None)
            if observation is None:
                outcome = _save_item(db, ledger, item, quick, observed_at, source, run_id,
                                     totals, ahead.take(item))
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
                commit()
                db.execute("begin immediate")
                pending = 0
        commit()
    except BaseException:
        if db.conn.in_transaction:
            db.execute("rollback")
        # Also when SQLite rolled back itself (a full disk): the batch is gone either way.
        totals.restore(committed)
        raise
    finally:
        ahead.close()


def _save_item(
    db: sqlite_utils.Database, ledger: InputLedger, item: SourceItem, gate: str | None,
    observed_at: str, source: str, run_id: int | None, totals: RunTotals,
    prepared: Prepared | None = None,
) -> Observation | Failed | None:
    """Save one item: its observation, why it failed, or None for a dropped repeat.

    `gate` is its byte gate if its bytes had one (else the gate of the record written anew);
    `prepared` its edit if the worker prepared it (ahead.py): the worker parsed its bytes as
    this study, so they are parsed here only if something reads the record after all.
    """
    study: Mapping[str, Any] | None
    if prepared is not None and prepared.edit is not None and item.unparsed:
        assert item.raw is not None
        study = LazyRecord(item.raw)
    else:
        item = parsed(item)
        study = item.study
    if study is None or item.nct_id is None:
        totals.fail(item.label, item.error or "unreadable")
        return Failed(item.label, item.error or "unreadable")
    try:
        gate = gate or gate_hash(study, volatile=rules_of(db).volatile)  # bytes were tried
    except RecursionError:
        return _too_deep(item, totals)
    earlier = ledger.known(item.nct_id)
    if earlier is not None:
        return _repeat(db, ledger, parsed(item), gate, earlier, totals, observed_at, run_id)
    ledger.first(item.nct_id, item.label, gate)
    try:
        return save_study(db, item.nct_id, study, observed_at, source=source,
                          run_id=run_id, gate=gate, prepared=prepared)
    except InputError as exc:  # raised before save_study writes anything it keeps
        ledger.failed(item.nct_id)
        totals.fail(item.label, str(exc))
        return Failed(item.label, str(exc))
    except RecursionError:
        ledger.undo(item.nct_id)  # whatever of it was written before the overflow
        return _too_deep(item, totals)


def _too_deep(item: SourceItem, totals: RunTotals) -> Failed:
    """Fail a record that parsed but is nested too deep for Python to write back or walk."""
    # orjson reads 1,024 levels; json, which writes what orjson will not (past 255), and the
    # walks over a record overflow Python's stack near 1,000.
    error = "nested too deep to store (about 1,000 levels)"
    totals.fail(item.label, error)
    return Failed(item.label, error)


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
    touch(db, item.nct_id, observed_at, row[1])
    return Observation(item.nct_id, False, ())


def _repeat(
    db: sqlite_utils.Database, ledger: InputLedger, item: SourceItem, gate: str,
    earlier: tuple[str, str, str], totals: RunTotals, observed_at: str,
    run_id: int | None = None,
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
        fields = extract_fields(item.study, rules_of(db))
        if stored is not None and stored[0] == content_hash(fields):
            return None  # the same content in other bytes
    undone: dict[str, int] = {}
    if state in ("saved", "seen"):  # the first copy was stored (or seen): take it back
        undone = ledger.undo(item.nct_id)
        totals.uncount(undone)
        if run_id is not None:  # the alerts its changes raised go too, before any is sent
            from .watch import withdraw_alerts

            withdraw_alerts(db, run_id, item.nct_id)
    error = (f"{item.nct_id} is given again in this input with different content (first in "
             f"{label}): a conflict, so no version of it was stored"
             + (" (the changes stored for it are undone)" if undone else ""))
    totals.fail(item.label, error)
    return Failed(item.label, error, undone=(item.nct_id, observed_at) if state in (
        "saved", "seen") else None)
