"""Saving one input's stream (ingest): its run totals, batches that commit whole, and
unchanged records left unparsed."""

from __future__ import annotations

import copy
import json
import random
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    T1,
    T2,
    changes_of,
    clones,
    day_lines,
    import_ndjson,
    kill_after,
    real_changes,
    real_records,
    run,
    trialdiff_process,
    write_day,
)

import trialdiff.ingest
from trialdiff.diff import changed_paths
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import Failed, FieldChange, Observation, Outcome
from trialdiff.normalize import extract_fields, study_id
from trialdiff.schema import open_db
from trialdiff.sources import SourceItem

RECORDS = real_records()


def test_run_totals_count_each_kind_and_uncount_takes_a_study_back_whole() -> None:
    by_study: dict[str, list[FieldChange]] = {}
    for change in real_changes():
        by_study.setdefault(change.nct_id, []).append(change)
    first, second = (Observation(n, True, tuple(c)) for n, c in sorted(by_study.items()))
    unchanged = Observation("NCT04642755", False, ())  # the sample's third study, not edited
    totals = RunTotals()
    for observation in (first, second, unchanged):
        totals.count(observation)
    assert (totals.checked, totals.changed, totals.changes) == (3, 2, len(real_changes()))
    assert totals.by_kind == Counter(c.kind for c in real_changes())
    # An undone write takes back its study and its changes, by kind: as if never counted.
    totals.uncount(Counter(c.kind for c in second.changes))
    without = RunTotals()
    without.count(first)
    without.count(unchanged)
    assert totals == without
    # A kind taken back to nothing is gone, so by_kind never shows a zero.
    alone = RunTotals()
    alone.count(second)
    alone.uncount(Counter(c.kind for c in second.changes))
    alone.count(unchanged)
    alone.uncount({})  # a write that had stored no change
    assert alone == RunTotals()
    alone.fail("broken.json", "not valid JSON")
    assert (alone.failed, alone.errors) == (1, [{"input": "broken.json",
                                                 "error": "not valid JSON"}])


def test_each_item_is_emitted_in_input_order_with_what_became_of_it(db_path: str) -> None:
    r0, r1 = RECORDS[:2]
    id0, id1 = (r["protocolSection"]["identificationModule"]["nctId"] for r in (r0, r1))
    items = [SourceItem("a.json", r0, id0),
             SourceItem("broken.json", error="not valid JSON"),
             SourceItem("b.json", r0, id0),  # a repeat: dropped, nothing to say
             SourceItem("c.json", r1, id1)]
    outcomes: list[Outcome] = []
    totals = RunTotals()
    save_studies(open_db(db_path), items, T1, totals, emit=outcomes.append)
    assert outcomes == [Observation(id0, True, ()), Failed("broken.json", "not valid JSON"),
                        Observation(id1, True, ())]
    assert (totals.checked, totals.failed) == (2, 1)



def test_a_batch_sqlite_rolled_back_itself_is_not_counted(
    db_path: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A full disk: SQLite rolls the transaction back itself and raises. The run's counts
    # said 830 checked and 313 changes where nothing of the batch was kept.
    items = [SourceItem(f"{study_id(r)}.json", r, study_id(r)) for r in RECORDS]
    db = open_db(db_path)
    save_study, calls = trialdiff.ingest.save_study, []

    def disk_full_at_the_8th(db: Any, nct_id: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(nct_id)
        if len(calls) == 8:
            db.execute("rollback")  # what SQLite does on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")
        return save_study(db, nct_id, *args, **kwargs)

    monkeypatch.setattr(trialdiff.ingest, "save_study", disk_full_at_the_8th)
    totals = RunTotals()
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        save_studies(db, items, T1, totals, batch_size=5)
    assert totals.checked == 5  # the first batch, committed; not the 2 after it
    assert sqlite3.connect(db_path).execute("select count(*) from studies").fetchone() == (5,)


def test_a_stopped_input_keeps_each_whole_batch_before_it_and_a_rerun_saves_the_rest(
    db_path: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = [SourceItem(f"{study_id(r)}.json", r, study_id(r)) for r in RECORDS]
    db = open_db(db_path)
    saved: list[str] = []
    save_study = trialdiff.ingest.save_study

    def stop_at_the_13th(db: Any, nct_id: str, *args: Any, **kwargs: Any) -> Any:
        if len(saved) == 12:  # Ctrl-C inside the third batch of 5
            raise KeyboardInterrupt
        saved.append(nct_id)
        return save_study(db, nct_id, *args, **kwargs)

    monkeypatch.setattr(trialdiff.ingest, "save_study", stop_at_the_13th)
    stopped, shown = RunTotals(), []
    with pytest.raises(KeyboardInterrupt):
        save_studies(db, items, T1, stopped, batch_size=5, emit=shown.append)
    monkeypatch.undo()
    conn = sqlite3.connect(db_path)
    assert [row[0] for row in conn.execute("select nct_id from studies order by 1")] == \
        sorted(saved[:10])  # two batches committed; the third, under way, rolled back whole
    assert conn.execute("select count(*) from snapshots").fetchone() == (10,)
    # The run's counts and what it showed are what committed: the third batch never was.
    assert stopped.checked == 10 and [o.nct_id for o in shown] == saved[:10]
    totals = RunTotals()
    save_studies(db, items, T1, totals, batch_size=5)
    assert (totals.checked, totals.changed, totals.changes, totals.failed) == (len(RECORDS), 0,
                                                                              0, 0)
    # Each study once: the committed ones were not stored twice.
    assert conn.execute("select count(*), count(distinct nct_id) from snapshots").fetchone() == (
        len(RECORDS), len(RECORDS))


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Write two days of 336 real-record clones; a third of day 2's are edited."""
    root = tmp_path_factory.mktemp("days")
    return write_day(root / "day1", clones(336)), write_day(root / "day2", clones(336, True))


def _import_process(db: str, folder: Path, at: str) -> subprocess.Popen[bytes]:
    """Start a real `trialdiff import` process."""
    return trialdiff_process(db, "import", "--summary", "--at", at, str(folder))


def test_import_killed_at_random_points_then_rerun_equals_an_uninterrupted_run(
    tmp_path: Path, two_days: tuple[Path, Path]
) -> None:
    day1, day2 = two_days
    reference = str(tmp_path / "reference.db")
    for folder, at in ((day1, "2026-05-11"), (day2, "2026-05-12")):
        assert _import_process(reference, folder, at).wait() == 0
    expected = changes_of(reference)
    before, after = clones(336), clones(336, edit=True)
    assert len(expected) == sum(
        len(changed_paths(extract_fields(old), extract_fields(new)))
        for old, new in zip(before, after, strict=True)
    ) > 100  # a third of the studies edited, most of them to a status they did not have
    rng = random.Random(2026)
    for trial in range(6):
        crashed = str(tmp_path / f"crashed{trial}.db")
        assert _import_process(crashed, day1, "2026-05-11").wait() == 0
        kill_after(_import_process(crashed, day2, "2026-05-12"), rng.uniform(0.3, 2.5))
        conn = sqlite3.connect(crashed)
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        assert _import_process(crashed, day2, "2026-05-12").wait() == 0
        assert changes_of(crashed) == expected
        assert run(crashed, "check")[0] == 0


def test_unchanged_ndjson_lines_are_never_parsed_and_the_history_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trialdiff.ingest

    records = real_records()
    edited = copy.deepcopy(records[3])
    edited["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    # Its first "nctId" bytes name another study: the guess is checked, never trusted.
    disguised = {"aaa": {"nctId": records[0]["protocolSection"]["identificationModule"]["nctId"]},
                 **records[5]}
    day1, day2 = tmp_path / "day1.ndjson", tmp_path / "day2.ndjson"
    day1.write_bytes(b"\n".join(day_lines(records, "2024-06-13")) + b"\n")
    lines = day_lines([*records[:3], edited, *records[4:5], disguised, *records[6:]],
                       "2025-07-06")
    day2.write_bytes(b"\n".join([*lines, b'{"protocolSection": broken'] ) + b"\n")
    parses: list[str] = []
    real_parsed = trialdiff.ingest.parsed
    monkeypatch.setattr(trialdiff.ingest, "parsed",
                        lambda item: parses.append(item.label) or real_parsed(item))
    tables = []
    for name, parse in (("lazy.db", False), ("eager.db", True)):
        db_path = str(tmp_path / name)
        import_ndjson(db_path, day1, T1, parse)
        parses.clear()
        totals = import_ndjson(db_path, day2, T2, parse)
        assert (totals.checked, totals.changed, totals.failed) == (len(records), 2, 1)
        conn = sqlite3.connect(db_path)
        tables.append([conn.execute(f"select * from {table} order by 1, 2").fetchall()
                       for table in ("studies", "sightings", "snapshots", "changes")])
        if not parse:  # only the moved lines: the edit, the disguised record, the broken line
            assert parses == [f"{day2}:4", f"{day2}:6", f"{day2}:{len(records) + 1}"]
    assert tables[0] == tables[1]
    assert {row[0] for row in tables[0][0]} == {study_id(r) for r in records}


@pytest.mark.parametrize("depth", [1000, 1020])
def test_a_record_nested_too_deep_to_store_fails_alone(
    tmp_path: Path, db_path: str, depth: int
) -> None:
    # orjson reads up to 1,024 levels; writing one back (json, past orjson's 255) overflowed
    # Python's stack near 1,000, and the RecursionError ended a probe's whole import.
    deep, other = copy.deepcopy(RECORDS[0]), copy.deepcopy(RECORDS[1])
    assert run(db_path, "import", "--at", "2025-01-01", str(write_day(tmp_path / "d1", [
        deep, other])))[0] == 0
    other["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    folder = tmp_path / "d2"
    folder.mkdir()
    nested = "[" * depth + '"x"' + "]" * depth  # as text: json.dumps overflows at this depth
    (folder / "deep.json").write_text(json.dumps(deep)[:-1] + f',"zzDeep":{nested}}}')
    (folder / "other.json").write_text(json.dumps(other))
    code, out, err = run(db_path, "import", "--at", "2025-01-02", str(folder))
    assert code == 1 and "Traceback" not in err
    assert f"{folder / 'deep.json'}: " in err and "nested too deep" in err
    assert "1 changed" in out and "1 failed" in out
    changes = [(c[0], c[1]) for c in changes_of(db_path)]
    assert changes == [(study_id(other), "status.overallStatus")]
    assert run(db_path, "check")[0] == 0
