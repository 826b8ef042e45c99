"""Worker processes prepare a heavy day's edits; the database gets the same rows all the same."""

from __future__ import annotations

import copy
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import FIXTURES, real_records

from trialdiff.fields import LOCATION_PREFIX
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import Observation, Outcome
from trialdiff.schema import open_db
from trialdiff.sources import read_studies
from trialdiff.workers import EditPool, default_workers

T1, T2 = "2024-06-14T00:00:00.000Z", "2025-07-07T00:00:00.000Z"
TABLES = ("studies", "sightings", "records", "snapshots", "changes")


def _lines(records: list[dict[str, Any]], stamp: str) -> list[bytes]:
    """Return records as compact NDJSON lines, re-stamped as a data release does."""
    out = []
    for record in records:
        record = copy.deepcopy(record)
        record.setdefault("derivedSection", {}).setdefault("miscInfoModule", {})[
            "versionHolder"] = stamp
        out.append(orjson.dumps(record))
    return out


def _heavy_days(tmp_path: Path) -> tuple[Path, Path]:
    """Write two days of real records: the second edits most studies, as a heavy day does.

    The edits are the registry's own (the real multi-version sets) and of the kinds a heavy
    day has: a status move, a site closed, results posted, a text rewritten; and the inputs a
    writer must get right in order: a repeat with the same bytes, a repeat that conflicts, a
    line whose bytes pass the gate but do not parse, and an unchanged study between them.
    """
    records = real_records()
    versions = [sorted(p.glob("*.json")) for p in sorted((FIXTURES / "versions").iterdir())]
    before = records + [orjson.loads(pair[0].read_bytes()) for pair in versions]
    after = copy.deepcopy(records) + [orjson.loads(pair[1].read_bytes()) for pair in versions]
    results = next(r["resultsSection"] for r in records if "resultsSection" in r)
    for index, record in enumerate(after[:len(records)]):
        protocol = record["protocolSection"]
        match index % 5:
            case 0:
                protocol["statusModule"]["overallStatus"] = "WITHDRAWN"
            case 1:
                sites = protocol.get("contactsLocationsModule", {}).get("locations", [])
                if sites:
                    sites.pop()
            case 2:
                if "resultsSection" not in record:
                    record["resultsSection"] = results
                    record["derivedSection"] = record.pop("derivedSection")  # keep key order
            case 3:
                description = protocol.get("descriptionModule", {})
                description["briefSummary"] = description.get("briefSummary", "") + "\n\n* Amended."
    day1, day2 = tmp_path / "day1.ndjson", tmp_path / "day2.ndjson"
    day1.write_bytes(b"\n".join(_lines(before, "2024-06-13")) + b"\n")
    lines = _lines(after, "2025-07-06")
    # The title's quote cut short: the gate sees moved bytes, the parser a broken record.
    broken = lines[7].replace(b'"briefTitle":"', b'"briefTitle":"\\x', 1)
    conflict = copy.deepcopy(after[9])
    conflict["protocolSection"]["statusModule"]["overallStatus"] = "TERMINATED"
    day2.write_bytes(b"\n".join([*lines[:7], broken, *lines[8:], lines[3],
                                 *_lines([conflict], "2025-07-06")]) + b"\n")
    return day1, day2


def _import(db_path: str, path: Path, at: str, workers: int) -> tuple[RunTotals, list[Outcome]]:
    """Import one NDJSON file unparsed, handing every edit to `workers` processes (0: none)."""
    totals, seen = RunTotals(), []
    db = open_db(db_path)
    save_studies(db, read_studies([str(path)], parse=False), at, totals, emit=seen.append,
                 workers=workers, start_after=0, batch_size=7)
    db.close()
    return totals, seen


def test_a_heavy_day_prepared_by_workers_stores_what_the_writer_alone_stores(
    tmp_path: Path
) -> None:
    day1, day2 = _heavy_days(tmp_path)
    tables, outcomes = [], []
    for workers in (0, 1, 2):
        db_path = str(tmp_path / f"w{workers}.db")
        _import(db_path, day1, T1, workers)
        totals, seen = _import(db_path, day2, T2, workers)
        conn = sqlite3.connect(db_path)
        tables.append({t: conn.execute(f"select * from {t} order by 1, 2").fetchall()
                       for t in TABLES})
        outcomes.append(seen)
        assert totals.failed == 2 and totals.changed > 25  # the broken line and the conflict
    assert tables[1] == tables[0] and tables[2] == tables[0]  # byte for byte, ids included
    assert outcomes[1] == outcomes[0] and outcomes[2] == outcomes[0]  # in input order
    changed = [o for o in outcomes[0] if isinstance(o, Observation) and o.changes]
    assert {c.path for o in changed for c in o.changes} >= {
        "status.overallStatus", "results.outcomeMeasures", "description.briefSummary"}
    assert any(c.path.startswith(LOCATION_PREFIX) for o in changed for c in o.changes)


def test_the_workers_start_only_once_an_input_has_had_enough_edits(tmp_path: Path) -> None:
    db = open_db(str(tmp_path / "t.db"))
    pool = EditPool(db, workers=1, start_after=2)
    try:
        assert [pool.wanted() for _ in range(4)] == [False, False, True, True]
    finally:
        pool.close()
    none = EditPool(db, workers=0, start_after=0)
    assert not none.wanted()
    assert 0 <= default_workers() <= 4


def test_a_worker_killed_mid_import_is_redone_by_the_writer(tmp_path: Path) -> None:
    day1, day2 = _heavy_days(tmp_path)
    expected = str(tmp_path / "inline.db")
    _import(expected, day1, T1, 0)
    _import(expected, day2, T2, 0)
    db_path = str(tmp_path / "killed.db")
    _import(db_path, day1, T1, 0)

    import trialdiff.workers

    real = trialdiff.workers.EditPool.submit
    killed: list[int] = []

    def submit_then_kill(self: EditPool, *args: Any) -> Any:
        future = real(self, *args)
        if not killed:  # the first worker dies as soon as it is up: out of memory, say
            assert self._pool is not None
            while not self._pool._processes:
                time.sleep(0.01)
            killed.extend(self._pool._processes)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        return future

    trialdiff.workers.EditPool.submit = submit_then_kill  # type: ignore[method-assign]
    try:
        _import(db_path, day2, T2, 1)
    finally:
        trialdiff.workers.EditPool.submit = real  # type: ignore[method-assign]
    assert killed
    tables = [{t: sqlite3.connect(p).execute(f"select * from {t} order by 1, 2").fetchall()
               for t in TABLES} for p in (expected, db_path)]
    assert tables[0] == tables[1]


def test_a_worker_whose_writer_is_killed_exits(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from trialdiff.schema import open_db
        from trialdiff.workers import EditPool
        pool = EditPool(open_db({str(tmp_path / "w.db")!r}), workers=1, start_after=0)
        assert pool.wanted()
        pool._pool.submit(time.sleep, 0).result()  # the worker is up
        print(*pool._pool._processes, flush=True)
        time.sleep(60)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    pids = [int(pid) for pid in writer.stdout.readline().split()]
    assert pids
    writer.kill()  # SIGKILL: no cleanup of its own runs
    writer.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    """Tell whether a process runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("value", ["-1", "17", "many"])
def test_workers_takes_auto_or_a_number(value: str, db_path: str) -> None:
    from click.testing import CliRunner

    from trialdiff.cli import cli

    result = CliRunner().invoke(cli, ["--db", db_path, "import", "--workers", value,
                                      str(FIXTURES / "v2")])
    assert result.exit_code == 2 and "--workers" in result.stderr and not result.stdout
