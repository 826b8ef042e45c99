"""Take each study of one input once: a repeat is dropped, differing copies are a conflict.

One input (the paths of one import at one observation time, a dump, an API page) observes each
study once. The same study given again with the same tracked content is the same observation.
Given with different content, storing both would invent a change between two snapshots of the
same time, and keeping one would be a guess: neither is stored, and the error names both copies.

It takes one pass, so a dump is parsed once: the first copy of each study is saved at once,
with a note of what undoes its write (a temporary table, not memory: a few small values per
study, plus the replaced raw record of a study whose bytes moved). A later differing copy undoes
that write. A run killed between the two copies keeps the first (the batch holding it had
committed); running it again refuses the study and leaves that first copy as it was.
"""

from __future__ import annotations

import json

import sqlite_utils

_LEDGER = """create temp table if not exists input_ledger (
    nct_id text primary key, label text, gate text, state text, study_row text,
    last_seen text, record blob, record_at text, max_snapshot integer, base blob)"""


class InputLedger:
    """The studies one input gave so far, with what undoes each first copy's write."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        db.execute(_LEDGER)
        db.execute("delete from temp.input_ledger")
        # The statement that notes a first copy: the studies row as JSON (its columns are the
        # schema's), and the record of a study whose record will be replaced (its gate differs).
        row = ", ".join(f"'{c}', s.\"{c}\"" for c in db["studies"].columns_dict)
        self._first = (
            "insert into temp.input_ledger select :id, :label, :gate, 'saved', "
            f"case when g.nct_id is null then null else json_object({row}) end, "
            "g.last_seen_at, r.record, r.observed_at, "
            "(select coalesce(max(id), 0) from snapshots where nct_id = :id), r.base "
            "from (select :id as id) k left join studies s on s.nct_id = k.id "
            "left join sightings g on g.nct_id = s.nct_id "
            "left join records r on r.nct_id = k.id and s.raw_hash is not :gate "
            "and g.nct_id is not null")

    def known(self, nct_id: str) -> tuple[str, str, str] | None:
        """Return (label, gate, state) of a study's earlier copy in this input, if any."""
        row = self.db.execute(
            "select label, gate, state from temp.input_ledger where nct_id = ?", [nct_id]
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def first(self, nct_id: str, label: str, gate: str) -> None:
        """Note a study's first copy, before it is saved: enough to undo what saving does."""
        # One statement, so the record's bytes are copied inside SQLite, not through Python.
        self.db.execute(self._first, {"id": nct_id, "label": label, "gate": gate})

    def seen(self, nct_id: str, label: str, gate: str, last_seen: str) -> None:
        """Note a first copy that only moves the study's last sighting (its bytes unchanged)."""
        self.db.execute(
            "insert into temp.input_ledger (nct_id, label, gate, state, last_seen) "
            "values (?, ?, ?, 'seen', ?)", [nct_id, label, gate, last_seen],
        )

    def failed(self, nct_id: str) -> None:
        """Note that the first copy was refused: there is nothing of it to undo."""
        self.db.execute("update temp.input_ledger set state = 'failed' where nct_id = ?",
                        [nct_id])

    def undo(self, nct_id: str) -> dict[str, int]:
        """Undo the first copy's write; return the changes it had stored, by kind."""
        state, study_row, last_seen, record, record_at, max_snapshot, base = self.db.execute(
            "select state, study_row, last_seen, record, record_at, max_snapshot, base "
            "from temp.input_ledger where nct_id = ?", [nct_id],
        ).fetchone()
        self.db.execute("update temp.input_ledger set state = 'conflict' where nct_id = ?",
                        [nct_id])
        if state == "seen":
            self.db.execute("update sightings set last_seen_at = ? where nct_id = ?",
                            [last_seen, nct_id])
            return {}
        added = "select id from snapshots where nct_id = ?1 and id > ?2"
        undone = dict(self.db.execute(
            f"select kind, count(*) from changes where nct_id = ?1 and snapshot_id in ({added}) "
            "group by kind", [nct_id, max_snapshot],
        ).fetchall())
        self.db.execute(f"delete from changes where nct_id = ?1 and snapshot_id in ({added})",
                        [nct_id, max_snapshot])
        self.db.execute("delete from snapshots where nct_id = ? and id > ?", [nct_id, max_snapshot])
        if study_row is None:  # the study was new: nothing of it stays
            for table in ("sightings", "records", "studies"):
                self.db.execute(f"delete from {table} where nct_id = ?", [nct_id])
            return undone
        columns = {k: v for k, v in json.loads(study_row).items() if k != "nct_id"}
        self.db.execute(
            f"update studies set {', '.join(f'{k} = ?' for k in columns)} where nct_id = ?",
            [*columns.values(), nct_id],
        )
        # A baseline canonicalised meanwhile stays so: the study's hash is its latest snapshot's.
        self.db.execute(
            "update studies set content_hash = (select content_hash from snapshots "
            "where nct_id = ?1 order by seq desc limit 1) where nct_id = ?1", [nct_id],
        )
        self.db.execute("update sightings set last_seen_at = ? where nct_id = ?",
                        [last_seen, nct_id])
        if record is not None:
            self.db.execute("update records set record = ?, observed_at = ?, base = ? "
                            "where nct_id = ?", [record, record_at, base, nct_id])
        return undone
