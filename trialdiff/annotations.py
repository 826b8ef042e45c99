"""Each change's meaning as stored columns: `severity` and `facts`, so SQL can filter on them.

They are written with the change (store.py), filled in by the v2 -> v3 migration, recomputed by
`trialdiff reannotate` when the rules in meaning.py change, and compared with the current
rules by `trialdiff check`. Every one of them comes from `meaning.annotate`, the function the
exports use, so a stored severity is exactly what an export of the same changes says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from .errors import DatabaseError
from .meaning import Annotated, annotate
from .model import dump_json
from .query import Connection, row_to_change, transaction

_COLUMNS = "id, nct_id, path, kind, detected_at, old, new, detail, severity, facts, snapshot_id"
_WINDOW = 5000  # changes per read: bounds memory on a registry-sized database


def facts_json(found: Any) -> str:
    """Return facts as stored: compact JSON, keys sorted (the one canonical dump)."""
    return dump_json(found)


def annotation_columns(item: Annotated) -> dict[str, str]:
    """Return the stored columns of an annotated change."""
    return {"severity": item.severity, "facts": facts_json(item.facts)}


@dataclass(frozen=True)
class Stale:
    """A stored change whose severity or facts differ from what the current rules say."""

    change_id: int
    nct_id: str
    path: str
    stored: tuple[str | None, str | None]  # (severity, facts) as stored
    current: tuple[str, str]  # (severity, facts) by the current rules


def _annotated(conn: Connection, rows: Sequence[Any], skip_damaged: bool = False
               ) -> Iterator[Stale]:
    """Yield the rows (whole snapshots, in snapshot order) whose stored meaning is stale.

    A snapshot whose stored values do not parse raises DatabaseError, or with `skip_damaged`
    (check, whose per-study pass names it) is passed over.
    """
    names = _COLUMNS.split(", ")
    # One snapshot at a time, as store.py annotates them when it writes: two snapshots of a
    # study observed at the same instant each count their own sites.
    for _, group in groupby(rows, key=lambda row: row[10]):
        found = list(group)
        try:
            changes = [row_to_change(conn, dict(zip(names, row, strict=True))) for row in found]
        except DatabaseError:
            if skip_damaged:
                continue
            raise
        for row, item in zip(found, annotate(changes), strict=True):
            current = (item.severity, facts_json(item.facts))
            if (row[8], row[9]) != current:
                yield Stale(row[0], row[1], row[2], (row[8], row[9]), current)


def _batches(conn: Connection) -> Iterator[list[Any]]:
    """Yield the stored changes in batches of whole snapshots, in id order."""
    # Whole snapshots, because the `sites` fact counts one observation's site changes. A
    # snapshot's changes are written together, so their ids run on: read by id (the primary
    # key, one pass over the table), and hold a batch's last snapshot back for the next.
    carried: list[Any] = []
    last = 0
    while True:
        rows = conn.execute(
            f"select {_COLUMNS} from changes where id > ? and snapshot_id is not null "
            "order by id limit ?", [last, _WINDOW],
        ).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        rows = carried + rows
        cut = len(rows)
        while cut > 0 and rows[cut - 1][10] == rows[-1][10]:
            cut -= 1
        if cut == 0:  # one snapshot so far: read on
            carried = rows
            continue
        carried = rows[cut:]
        yield rows[:cut]
    if carried:
        yield carried
    yield conn.execute(
        f"select {_COLUMNS} from changes where snapshot_id is null order by id"
    ).fetchall()


def stale_annotations(conn: Connection, skip_damaged: bool = False) -> Iterator[Stale]:
    """Yield every stored change whose severity or facts the current rules would not give."""
    for rows in _batches(conn):
        yield from _annotated(conn, rows, skip_damaged)


def has_annotations(conn: Connection) -> bool:
    """Tell whether a database stores severity and facts (schema version 3 and later)."""
    columns = {row[1] for row in conn.execute("pragma table_info(changes)").fetchall()}
    return {"severity", "facts"} <= columns


def reannotate(db: Any) -> tuple[int, int]:
    """Recompute every stored change's severity and facts; return (changes checked, updated).

    Each batch commits on its own, so a killed run keeps what it did and the next one goes on.
    """
    checked = updated = 0
    for rows in _batches(db):
        checked += len(rows)
        stale = [(s.current[0], s.current[1], s.change_id) for s in _annotated(db, rows)]
        if not stale:
            continue
        updated += len(stale)
        with transaction(db):
            db.conn.executemany("update changes set severity = ?, facts = ? where id = ?", stale)
    return checked, updated
