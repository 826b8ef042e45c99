"""Databases stored under the old field-path rules 5 and 6 are migrated to the new ones.

`tests/fixtures/old-paths/v2.db` was stored by trialdiff before the change (commit e3c3656)
from real records with duplicate site keys; its `make.py` builds the same observations with
whichever trialdiff runs, so a fresh import under today's rules is the reference.
"""

from __future__ import annotations

import importlib.util
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from conftest import FIXTURES, run

from trialdiff.history import rekey_study
from trialdiff.migrations import MIGRATIONS
from trialdiff.query import iter_snapshots, transaction
from trialdiff.schema import SCHEMA_VERSION, complete_tables, open_db, schema_version

REKEY_STEP = 7  # the migration from schema 7 to 8 re-keys stored paths

OLD_DB = FIXTURES / "old-paths" / "v2.db"
_spec = importlib.util.spec_from_file_location("make_old_paths", FIXTURES / "old-paths" / "make.py")
assert _spec and _spec.loader
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def dump(path: Path) -> dict[str, Any]:
    """Return what a database holds about its studies' histories as readers see it, ids left out.

    Snapshots are their rebuilt fields and hashes (a study whose chain starts at a lazy
    baseline stores NULL hashes, computed on reading), so a file whose baselines were stored
    whole compares equal to one that kept them lazy.
    """
    conn = sqlite3.connect(path)
    snapshots, latest = [], {}
    for (nct_id,) in conn.execute("select nct_id from studies order by nct_id").fetchall():
        for stored in iter_snapshots(conn, nct_id):
            snap = stored.snapshot
            snapshots.append((nct_id, stored.seq, snap.observed_at, snap.content_hash,
                              snap.source, snap.source_version, snap.markup, snap.fields))
            assert stored.stored_hash in (None, snap.content_hash)
            latest[nct_id] = snap.content_hash
    changes = conn.execute(
        "select c.nct_id, s.seq, c.path, c.kind, c.detected_at, c.old, c.new, c.detail "
        "from changes c join snapshots s on s.id = c.snapshot_id order by c.nct_id, c.id"
    ).fetchall()
    studies = [(*row[:4], row[4] or latest[row[0]], *row[5:]) for row in conn.execute(
        "select nct_id, first_seen_at, last_changed_at, snapshot_count, content_hash, raw_hash, "
        "brief_title, overall_status from studies order by nct_id").fetchall()]
    conn.close()
    return {"snapshots": snapshots, "changes": changes, "studies": studies}


def check(path: Path) -> tuple[int, str]:
    """Run `trialdiff check` on a database; return its exit code and stdout."""
    code, out, _ = run(str(path), "check")
    return code, out


def test_the_old_database_shows_the_old_defects_and_check_reports_them(
    tmp_path: Path, monkeypatch: Any
) -> None:
    old = tmp_path / "old.db"
    shutil.copy(OLD_DB, old)
    paths = {row[0] for row in sqlite3.connect(old).execute("select path from changes")}
    # The defects as stored: one zip edit seen as edits to two numbered sites, and
    # the tracked enrollment overwritten by an unmapped key.
    assert "locations.gsk investigational site|new york|new york|united states #2" in paths
    assert "design.enrollmentCount" in paths
    # Every other step of the upgrade, but not the re-key: a current file with old paths.
    monkeypatch.setitem(MIGRATIONS, REKEY_STEP, lambda db: None)
    open_db(str(old)).conn.close()
    monkeypatch.undo()
    code, out = check(old)
    assert code == 1
    assert "NCT00367679: snapshot 1 site paths do not follow the current rules" in out
    assert ("NCT00367679: the latest snapshot's fields differ from its stored record's under "
            "the current rules (design.enrollmentCount, locations.gsk investigational site|new "
            "york|new york|united states, locations.gsk investigational site|new york|new "
            "york|united states #10065)") in out
    assert out.endswith("check: 5 studies, 10 snapshots, 8 changes verified; 8 problems\n")
    assert "NCT03549754" not in out  # a lone lazy baseline is read under today's rules


def test_migration_equals_a_fresh_import_under_the_new_rules(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    shutil.copy(OLD_DB, old)
    make.build(str(fresh))
    open_db(str(old)).conn.close()  # a writer opening the file migrates it
    assert schema_version(open_db(str(old))) == SCHEMA_VERSION
    assert dump(old) == dump(fresh)
    changes = dump(old)["changes"]
    zip_edit = [c[2:4] for c in changes if c[0] == "NCT00367679" and c[1] == 2]
    assert zip_edit == [
        ("locations.gsk investigational site|new york|new york|united states #10016", "removed"),
        ("locations.gsk investigational site|new york|new york|united states #10099", "added"),
    ]
    collision = [c[2:4] for c in changes if c[0] == "NCT00367679" and c[1] == 3]
    assert collision == [("protocolSection.designModule.enrollmentCount", "added")]
    assert check(old) == (0, "check: 5 studies, 10 snapshots, 6 changes verified; 0 problems\n")


def test_a_migration_cut_short_finishes_when_run_again(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    shutil.copy(OLD_DB, old)
    make.build(str(fresh))
    # What a migration killed in its re-key step after its first study leaves: the
    # earlier steps done, that study committed, the schema version still the old one.
    conn = sqlite3.connect(old, isolation_level=None)
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    complete_tables(db)  # as migrate() does first
    for step in range(2, REKEY_STEP):
        MIGRATIONS[step](db)
    with transaction(db):
        assert rekey_study(db, "NCT00367679")
    conn.close()
    assert schema_version(sqlite_utils.Database(old)) == 2
    open_db(str(old)).conn.close()
    assert dump(old) == dump(fresh)
    # Run once more on a migrated file: nothing left to rewrite.
    db = open_db(str(old))
    with transaction(db):
        assert not any(rekey_study(db, n) for n in ("NCT00367679", "NCT06131424", "NCT05826366"))
    db.conn.close()
    assert dump(old) == dump(fresh)
