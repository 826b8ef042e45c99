"""Edits prepared ahead in a worker process: the same rows as without it, on real records."""

from __future__ import annotations

import copy
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import copy_db, real_records

import trialdiff
from trialdiff import ahead

RECORDS = [r for r in real_records() if "resultsSection" not in r]
POSTED = next(r["resultsSection"] for r in real_records() if "resultsSection" in r)
TABLES = ("studies", "sightings", "snapshots", "changes", "records", "alerts")


def day(records: list[dict[str, Any]], folder: Path) -> Path:
    """Write records as the registry's compact NDJSON; return the folder."""
    folder.mkdir()
    (folder / "day.ndjson").write_bytes(b"\n".join(map(orjson.dumps, records)) + b"\n")
    return folder


def edited(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the next day: statuses moved, sites dropped, results posted, the rest re-stamped."""
    out = copy.deepcopy(records)
    for number, record in enumerate(out):
        record["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-05-12"
        protocol = record["protocolSection"]
        if number % 3 == 0:
            protocol["statusModule"]["overallStatus"] = "SUSPENDED"
        if number % 5 == 0:
            sites = protocol.get("contactsLocationsModule", {}).get("locations", [])
            del sites[: len(sites) // 2]
        if number % 11 == 0:
            record["resultsSection"] = POSTED
            record.pop("hasResults", None)  # then last again, as the registry writes it
            record["hasResults"] = True
    return out


def rows(db: str) -> dict[str, list[str]]:
    """Return every row a run writes, table by table (ids included), in a stable order."""
    conn = sqlite3.connect(db)
    return {table: sorted(map(repr, conn.execute(f"select * from {table}")))
            for table in TABLES}


def first_day(tmp_path: Path, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Import 1,200 real records under new ids into a database per name; return them."""
    first = [copy.deepcopy(RECORDS[n % len(RECORDS)]) for n in range(1200)]
    for number, record in enumerate(first):
        record["protocolSection"]["identificationModule"]["nctId"] = f"NCT9{number:07d}"
    db = str(tmp_path / f"{names[0]}.db")
    with trialdiff.open(db) as tracker:
        tracker.import_paths([str(day(first, tmp_path / "d1"))], at="2026-05-11")
    for name in names[1:]:
        copy_db(db, str(tmp_path / f"{name}.db"))
    return first


def count_takes(monkeypatch: pytest.MonkeyPatch, patient: bool = False) -> list[bool]:
    """Return a list that records, per record the writer takes, whether the worker prepared it.

    `patient`: once the worker is starting, the writer waits (up to 30 s) until it is ready, so
    that a loaded machine, which is slow to spawn it, cannot leave it nothing to do.
    """
    taken: list[bool] = []
    take = ahead.EditsAhead.take

    def counted(self: ahead.EditsAhead, item: Any) -> ahead.Prepared | None:
        deadline = time.monotonic() + 30
        while patient and self._process is not None and not self._ready and (
                time.monotonic() < deadline):
            self._receive(block=False)
            time.sleep(0.01)
        prepared = take(self, item)
        taken.append(prepared is not None)
        return prepared

    monkeypatch.setattr(ahead.EditsAhead, "take", counted)
    return taken


def test_a_worker_prepares_edits_and_the_rows_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = first_day(tmp_path, ("alone", "ahead"))
    # How many it prepares is the scheduler's: under load it was 8 of 100 (a probe's run of
    # the suite beside another). That it prepares some, and changes no row, is the design's.
    taken = count_takes(monkeypatch, patient=True)
    second = day(edited(first), tmp_path / "d2")
    runs = {}
    for name, workers in (("alone", 0), ("ahead", 1)):
        with trialdiff.open(str(tmp_path / f"{name}.db")) as tracker:
            runs[name] = tracker.import_paths([str(second)], at="2026-05-12", workers=workers)
    alone, with_worker = runs["alone"], runs["ahead"]
    assert (alone.checked, alone.changed, alone.changes, dict(alone.by_kind)) == (
        with_worker.checked, with_worker.changed, with_worker.changes, dict(with_worker.by_kind))
    assert with_worker.changed > 100 and with_worker.stored == alone.stored
    assert rows(str(tmp_path / "alone.db")) == rows(str(tmp_path / "ahead.db"))
    assert sum(taken) > 0  # the worker prepared edits: those taken from it


def test_a_worker_killed_mid_run_leaves_the_writer_to_finish_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = first_day(tmp_path, ("alone", "killed"))
    second = day(edited(first), tmp_path / "d2")
    killed: list[int] = []  # how many edits had been handed to the worker when it was killed
    after: list[tuple[int | None, bool]] = []  # each later edit: its dispatch number, taken
    take = ahead.EditsAhead.take

    def kill_on_first_edit(self: ahead.EditsAhead, item: Any) -> ahead.Prepared | None:
        pending = self._pending.get(item.label)
        prepared = take(self, item)
        if killed:
            after.append((pending[0] if pending else None, prepared is not None))
        elif prepared is not None:  # it has edits under way: kill it, as out of memory would
            killed.append(self._next)
            os.kill(self._process.pid, signal.SIGKILL)
        return prepared

    monkeypatch.setattr(ahead.EditsAhead, "take", kill_on_first_edit)
    with trialdiff.open(str(tmp_path / "killed.db")) as tracker:
        run = tracker.import_paths([str(second)], at="2026-05-12", workers=1)
    monkeypatch.undo()
    with trialdiff.open(str(tmp_path / "alone.db")) as tracker:
        alone = tracker.import_paths([str(second)], at="2026-05-12")
    assert killed and run.status == "ok" and run.changed == alone.changed > 100
    # What the worker finished before it died may still be taken (it prepares the furthest
    # first); every edit handed over later, or never, the writer prepared itself.
    late = [taken for number, taken in after if number is None or number >= killed[0]]
    # How many come after the kill depends on when the worker got going: 32 on a machine
    # running a second test suite beside this one, over 50 on a quiet one.
    assert len(late) > 10 and not any(late)
    assert rows(str(tmp_path / "alone.db")) == rows(str(tmp_path / "killed.db"))
