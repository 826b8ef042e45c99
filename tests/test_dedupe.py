"""The input ledger (dedupe): one input takes each study once; differing copies are refused."""

from __future__ import annotations

import copy
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    T1,
    T2,
    T3,
    day_lines,
    import_ndjson,
    real_records,
    run,
    save_records,
    stored_rows,
    version_pair,
)

import trialdiff.ingest
from trialdiff.check import CheckTotals, check_database
from trialdiff.dedupe import InputLedger
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.normalize import study_id
from trialdiff.schema import open_db
from trialdiff.sources import SourceItem
from trialdiff.sync import _items

OLDER, NEWER = version_pair("NCT06060392")  # a real registry edit of one study
R0, R1 = real_records()[:2]
ID0, ID1 = (r["protocolSection"]["identificationModule"]["nctId"] for r in (R0, R1))
CONFLICT = ("NCT06060392 is given again in this input with different content (first in "
            "input[0]): a conflict, so no version of it was stored")


def _labelled(*records: dict[str, Any]) -> list[SourceItem]:
    """Return records as one input's items, labelled input[0], input[1], ..."""
    return [SourceItem(f"input[{n}]", r, study_id(r)) for n, r in enumerate(records)]


def _reordered(record: dict[str, Any]) -> dict[str, Any]:
    """Return a record with the same content in other bytes and another data release."""
    copied = copy.deepcopy(record)
    copied["protocolSection"] = dict(reversed(copied["protocolSection"].items()))
    copied["derivedSection"] = {"miscInfoModule": {"versionHolder": "2025-07-07"}}
    return copied


# One input holding: R0, the newer NCT06060392, R1, R0 in other bytes, the older NCT06060392,
# R1 again byte for byte. Each shape names the input of each entry.
ENTRIES = [R0, NEWER, R1, _reordered(R0), OLDER, R1]


def _write_shape(root: Path, shape: str) -> tuple[list[str], str, str]:
    """Write the entries in one input shape; return its paths and the labels of both copies."""
    lines = [json.dumps(entry) for entry in ENTRIES]
    if shape == "folder":
        for number, line in enumerate(lines):
            (root / f"{number}.json").write_text(line)
        return [str(root)], str(root / "1.json"), str(root / "4.json")
    if shape in ("page", "list"):
        path = root / "input.json"
        path.write_text(json.dumps({"studies": ENTRIES} if shape == "page" else ENTRIES))
        return [str(path)], f"{path}[1]", f"{path}[4]"
    if shape == "ndjson":
        path = root / "input.ndjson"
        path.write_text("\n".join(lines) + "\n")
        return [str(path)], f"{path}:2", f"{path}:5"
    if shape == "zip":
        path = root / "ctg-studies.json.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for number, line in enumerate(lines):
                archive.writestr(f"{number}.json", line)
        return [str(path)], f"{path}!1.json", f"{path}!4.json"
    first, second = root / "a.json", root / "b.json"  # two paths given to one import
    first.write_text(json.dumps(ENTRIES[:3]))
    second.write_text(json.dumps(ENTRIES[3:]))
    return [str(first), str(second)], f"{first}[1]", f"{second}[1]"


@pytest.mark.parametrize("shape", ["folder", "page", "list", "ndjson", "zip", "paths"])
def test_a_study_given_twice_with_different_content_is_a_conflict_in_every_shape(
    tmp_path: Path, db_path: str, shape: str
) -> None:
    before = tmp_path / "before.json"
    before.write_text(json.dumps(OLDER))
    assert run(db_path, "import", "--at", "2025-01-01", str(before))[0] == 0
    folder = tmp_path / "input"
    folder.mkdir()
    paths, newer_label, older_label = _write_shape(folder, shape)
    code, out, err = run(db_path, "import", "--at", "2025-07-07", *paths)
    assert code == 1
    # One pass: the first copy was saved, then taken back within its batch, before its
    # batch committed, so none of its changes was ever printed.
    assert err == (
        f"trialdiff: {older_label}: NCT06060392 is given again in this input with different "
        f"content (first in {newer_label}): a conflict, so no version of it was stored (the "
        "changes stored for it are undone)\n"
    )
    # Repeats with the same content are one observation each; everything else is stored.
    assert out == "import: 2 studies checked, 0 changed, 0 changes, 1 failed\n"
    assert stored_rows(db_path, "select nct_id, snapshot_count from studies order by nct_id") == [
        (ID0, 1), (ID1, 1), ("NCT06060392", 1)]
    assert stored_rows(db_path, "select nct_id, last_seen_at from sightings "
                           "where nct_id = 'NCT06060392'") == [
        ("NCT06060392", "2025-01-01T00:00:00.000Z")]
    assert stored_rows(db_path, "select count(*) from changes") == [(0,)]
    assert run(db_path, "check")[0] == 0


def test_sync_from_a_dump_and_an_api_page_take_each_study_once(tmp_path: Path,
                                                               db_path: str) -> None:
    folder = tmp_path / "dump"
    folder.mkdir()
    paths, newer_label, older_label = _write_shape(folder, "ndjson")
    code, out, err = run(db_path, "sync", "--source", paths[0], "--at", "2025-07-07")
    assert code == 1
    assert err == (
        f"trialdiff: {older_label}: NCT06060392 is given again in this input with different "
        f"content (first in {newer_label}): a conflict, so no version of it was stored\n"
    )
    assert out.endswith("sync: 2 studies checked, 0 changed, 0 changes, 1 failed\n")
    # A fetched page is saved through the same writer, as one input.
    db = open_db(str(tmp_path / "page.db"))
    totals = RunTotals()
    outcomes: list[Any] = []
    save_studies(db, _items(ENTRIES, "filter.ids"), "2025-07-07T00:00:00.000Z", totals,
                 source="sync", emit=outcomes.append)
    # The first copy's observation, taken back in its own batch, is never emitted.
    assert [(getattr(o, "nct_id", None), getattr(o, "where", None)) for o in outcomes] == [
        (ID0, None), (ID1, None), (None, "filter.ids[4]")]
    assert (totals.checked, totals.changed, totals.changes, totals.failed) == (2, 0, 0, 1)
    assert db.execute("select nct_id from studies order by 1").fetchall() == [(ID0,), (ID1,)]



def _state(conn: sqlite3.Connection) -> list[list[tuple]]:
    """Return what a study's history is: every row but hashes a lazy baseline fills in later."""
    return [conn.execute(sql).fetchall() for sql in (
        "select nct_id, first_seen_at, last_changed_at, snapshot_count, raw_hash, brief_title, "
        "overall_status, last_update_post_date from studies",
        "select * from sightings", "select * from records",
        "select id, nct_id, seq, observed_at, source, run_id from snapshots",
        "select * from changes",
    )]


@pytest.mark.parametrize("first", ["changed", "seen again", "new"])
def test_a_study_given_again_with_other_content_leaves_its_history_as_it_was(
    db_path: str, first: str
) -> None:
    older, newer = version_pair("NCT06060392")
    other = real_records()[0]
    if first != "new":
        save_records(db_path, [older], T1)
    open_db(db_path).close()
    conn = sqlite3.connect(db_path)
    before = _state(conn)
    copies = [newer, other, older] if first == "changed" else [older, other, newer]
    totals = save_records(db_path, copies, T2)
    assert (totals.checked, totals.changed, totals.changes, totals.by_kind) == (1, 0, 0, {})
    assert totals.errors == [{"input": "test", "error": (
        "NCT06060392 is given again in this input with different content (first in test): a "
        "conflict, so no version of it was stored"
        + (" (the changes stored for it are undone)" if first == "changed" else ""))}]
    other_id = study_id(other)
    after = [[row for row in rows if other_id not in row] for rows in _state(conn)]
    assert after == before
    assert not list(check_database(conn, CheckTotals()))
    # The next input observes the study as usual.
    assert save_records(db_path, [newer], T3).changed == (first != "new")


def test_a_seen_first_copy_then_a_differing_repeat_is_a_conflict_undone(
    tmp_path: Path, db_path: str
) -> None:
    record = real_records()[0]
    day1, day2 = tmp_path / "day1.ndjson", tmp_path / "day2.ndjson"
    day1.write_bytes(day_lines([record], "2024-06-13")[0] + b"\n")
    edited = copy.deepcopy(record)
    edited["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    day2.write_bytes(b"\n".join(day_lines([record, edited], "2025-07-06")) + b"\n")
    import_ndjson(db_path, day1, T1, parse=False)
    totals = import_ndjson(db_path, day2, T2, parse=False)
    assert (totals.checked, totals.failed) == (0, 1)
    assert "given again in this input with different content" in totals.errors[0]["error"]
    conn = sqlite3.connect(db_path)
    # The first copy only moved the sighting: that is taken back, and nothing else was written.
    assert conn.execute("select last_seen_at from sightings").fetchall() == [(T1,)]
    assert conn.execute("select count(*) from snapshots").fetchone() == (1,)


def test_each_input_starts_with_an_empty_ledger_on_the_same_connection(db_path: str) -> None:
    # The ledger is a temporary table, so it outlives an input on its connection: a second
    # input giving the study with other content is a change, not a conflict.
    db = open_db(db_path)
    save_studies(db, _labelled(OLDER), T1, RunTotals())
    totals = RunTotals()
    save_studies(db, _labelled(NEWER), T2, totals)
    assert (totals.checked, totals.changed, totals.changes, totals.failed) == (1, 1, 6, 0)
    assert InputLedger(db).known("NCT06060392") is None


def test_the_ledger_knows_each_first_copy_and_what_became_of_it(db_path: str) -> None:
    db = open_db(db_path)
    ledger = InputLedger(db)
    assert ledger.known(ID0) is None
    ledger.first(ID0, "input[0]", "gate-0")
    ledger.seen(ID1, "input[1]", "gate-1", T1)
    ledger.first("NCT06060392", "input[2]", "gate-2")
    ledger.failed("NCT06060392")
    assert [ledger.known(i) for i in (ID0, ID1, "NCT06060392")] == [
        ("input[0]", "gate-0", "saved"), ("input[1]", "gate-1", "seen"),
        ("input[2]", "gate-2", "failed")]


def test_after_a_conflict_every_further_copy_is_refused_even_one_equal_to_the_first(
    db_path: str,
) -> None:
    totals = RunTotals()
    save_studies(open_db(db_path), _labelled(NEWER, OLDER, NEWER), T1, totals)
    assert (totals.checked, totals.changed, totals.failed) == (0, 0, 2)
    assert totals.errors == [{"input": "input[1]", "error": CONFLICT},
                             {"input": "input[2]", "error": CONFLICT}]
    assert stored_rows(db_path, "select count(*) from studies") == [(0,)]


def test_a_refused_first_copy_leaves_nothing_to_undo_and_a_same_repeat_is_dropped(
    db_path: str,
) -> None:
    save_records(db_path, [NEWER], T2)
    conn = sqlite3.connect(db_path)
    before = _state(conn)
    totals = RunTotals()
    # Observed before the stored snapshot: the first copy is refused, its repeat dropped.
    save_studies(open_db(db_path), _labelled(OLDER, OLDER, NEWER), T1, totals)
    assert (totals.checked, totals.failed) == (0, 2)
    assert [e["input"] for e in totals.errors] == ["input[0]", "input[2]"]
    assert "is older than its latest snapshot" in totals.errors[0]["error"]
    assert totals.errors[1]["error"] == CONFLICT
    assert _state(conn) == before


def test_a_run_stopped_between_two_copies_keeps_the_first_and_a_rerun_refuses_the_study(
    db_path: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    save_records(db_path, [OLDER], T1)
    db = open_db(db_path)
    save_study = trialdiff.ingest.save_study

    def stop_at_r0(db: Any, nct_id: str, *args: Any, **kwargs: Any) -> Any:
        if nct_id == ID0:  # Ctrl-C after the first copy's batch committed, in R0's
            raise KeyboardInterrupt
        return save_study(db, nct_id, *args, **kwargs)

    monkeypatch.setattr(trialdiff.ingest, "save_study", stop_at_r0)
    stopped, shown = RunTotals(), []
    with pytest.raises(KeyboardInterrupt):
        save_studies(db, _labelled(NEWER, R0, OLDER), T2, stopped, batch_size=1,
                     emit=shown.append)
    monkeypatch.undo()
    # What committed is counted and was shown; R0's batch, rolled back, neither.
    assert (stopped.checked, stopped.changes) == (1, 6)
    assert [o.nct_id for o in shown] == ["NCT06060392"]
    conn = sqlite3.connect(db_path)
    kept = _state(conn)
    assert conn.execute("select nct_id, snapshot_count from studies").fetchall() == [
        ("NCT06060392", 2)]  # the first copy's batch committed; R0's was rolled back
    rerun = RunTotals()
    save_studies(db, _labelled(NEWER, R0, OLDER), T2, rerun, batch_size=1)
    assert (rerun.checked, rerun.changes, rerun.failed) == (1, 0, 1)
    assert rerun.errors == [{"input": "input[2]", "error": CONFLICT}]
    # The first copy, stored by the stopped run, stays as it was; R0 is stored now.
    assert [[row for row in rows if ID0 not in row] for rows in _state(conn)] == kept
    assert not list(check_database(conn, CheckTotals()))
