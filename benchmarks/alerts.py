"""What alerts cost a daily import: the same day imported with no watch rule and with several.

Day 0 is the 1,682 real records; day 1 edits a share of them (status, completion date, a site).
Both databases take day 0, then day 1 is imported (the timed part) into one with no watch and
into one with `--watches` rules (every study; status facts; a path filter; a digest). The
ratio is the cost of writing the outbox in the store's transaction. Then delivering the
alerts to a webhook receiver on 127.0.0.1 is timed per alert. Not part of the test suite.

    python benchmarks/alerts.py [--real /work/shared/ctgov-real/v2] [--edit-share 0.1]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trialdiff.folders import read_studies
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.lifecycle import start_run
from trialdiff.notify import deliver_pending
from trialdiff.query import transaction
from trialdiff.schema import open_db
from trialdiff.watch import Watch, add_watch, parse_fact


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def edit(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Return a record with a realistic day's edit."""
    edited = copy.deepcopy(record)
    status = edited["protocolSection"].setdefault("statusModule", {})
    status["overallStatus"] = rng.choice(["TERMINATED", "COMPLETED", "ACTIVE_NOT_RECRUITING"])
    status["completionDateStruct"] = {"date": "2031-03-01", "type": "ESTIMATED"}
    return edited


def import_day(db_path: str, folder: Path, at: str) -> float:
    """Import a folder as observed at a time; return the CPU seconds it took.

    CPU time of this process (SQLite runs in it), as the machine is shared: wall time swings
    with the other jobs' load more than with what is measured.
    """
    db = open_db(db_path)
    run_id = start_run(db, "import", at)
    started = time.process_time()
    save_studies(db, read_studies([str(folder)]), at, RunTotals(), run_id=run_id)
    elapsed = time.process_time() - started
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", default="/work/shared/ctgov-real/v2")
    parser.add_argument("--edit-share", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(13)
    records = [json.loads(p.read_text()) for p in sorted(Path(args.real).glob("*.json"))]
    with tempfile.TemporaryDirectory() as work, ThreadingHTTPServer(("127.0.0.1", 0),
                                                                    _Ok) as server:
        Thread(target=server.serve_forever, daemon=True).start()
        os.environ["BENCH_ALERT_HOOK"] = f"http://127.0.0.1:{server.server_address[1]}/hook"
        url = "env:BENCH_ALERT_HOOK"  # the database holds references, never URLs
        day0, day1 = Path(work, "day0"), Path(work, "day1")
        day0.mkdir()
        day1.mkdir()
        for number, record in enumerate(records):
            (day0 / f"{number}.json").write_text(json.dumps(record))
            changed = edit(record, rng) if rng.random() < args.edit_share else record
            (day1 / f"{number}.json").write_text(json.dumps(changed))
        rules = [Watch("all", (url,)), Watch("stops", (url,), facts=(parse_fact("stopped"),)),
                 Watch("status", (url,), paths=("status",), min_severity="major"),
                 Watch("digest", (url,), digest=True)]
        plain, watched, delivery = [], [], []
        for repeat in range(args.repeats):
            for name, times in (("plain", plain), ("watched", watched)):
                path = str(Path(work, f"{name}{repeat}.db"))
                db = open_db(path)
                if name == "watched":
                    with transaction(db):
                        for rule in rules:
                            add_watch(db, rule)
                db.close()
                import_day(path, day0, "2026-01-01T00:00:00.000Z")
                times.append(import_day(path, day1, "2026-01-02T00:00:00.000Z"))
                if name == "watched":
                    db = open_db(path)
                    started = time.perf_counter()
                    totals = deliver_pending(db)
                    delivery.append((time.perf_counter() - started) / max(totals.delivered, 1))
                    alerts = totals.delivered
                    db.close()
    base, with_rules = statistics.median(plain), statistics.median(watched)
    print(f"studies: {len(records)}, edited share: {args.edit_share}, repeats: {args.repeats}")
    print(f"day-1 import, no watch:        {base:.3f} CPU s (median)")
    print(f"day-1 import, {len(rules)} watches:      {with_rules:.3f} CPU s (median)")
    print(f"ratio with / without:          {with_rules / base:.3f}x")
    print(f"alerts delivered per run:      {alerts}")
    print(f"delivery per alert (loopback): {statistics.median(delivery) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
