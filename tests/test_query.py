"""Reading the history: no read of one study or snapshot scans every change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from test_records import post_results

from trialdiff.check import CheckTotals, check_database
from trialdiff.query import study_fields


def test_no_read_of_one_study_or_snapshot_scans_every_change(
    tmp_path: Path, db_path: str
) -> None:
    post_results(tmp_path, db_path, 12)
    conn = sqlite3.connect(db_path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert list(check_database(conn, CheckTotals())) == []
    for (nct_id,) in conn.execute("select nct_id from studies").fetchall():
        study_fields(conn, nct_id)
    conn.set_trace_callback(None)
    # One pass over the table per check is fine (orphans, annotations); per study it is not.
    whole_table = ("snapshot_id not in (select id from snapshots)", "snapshot_id is null")
    scans = {sql for sql in statements if " changes " in sql + " "
             and not any(part in sql for part in whole_table)
             and any("SCAN changes" in row[-1] for row in conn.execute(
                 "explain query plan " + sql).fetchall())}
    assert scans == set()
