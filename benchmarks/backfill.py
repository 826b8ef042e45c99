"""Backfill cost per version: rewriting from the first moved snapshot vs rewriting everything.

A study is synced once, then backfilled with K versions through the stand-in API on
127.0.0.1. The versions are NCT05827016's two real registry versions in turn, each with its
own last update post date a week after the one before (the only edit), so every version is a
snapshot with real changes. Each backfilled version slots in before the synced snapshot; the
run is timed as trialdiff does it (the snapshots before the new version stay as they are) and
with every snapshot rewritten for each version, in one run, on the same data.

    /work/venvs/NAME/bin/python benchmarks/backfill.py --versions 20
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import version_pair  # noqa: E402
from standin_api import StandinAPI  # noqa: E402

from trialdiff import history  # noqa: E402
from trialdiff.fetch import Client, Pacing  # noqa: E402
from trialdiff.history_api import HistoryAPI  # noqa: E402
from trialdiff.ingest import RunTotals, save_studies  # noqa: E402
from trialdiff.query import transaction  # noqa: E402
from trialdiff.schema import open_db  # noqa: E402
from trialdiff.sources import SourceItem  # noqa: E402

NCT = "NCT05827016"


def versions(count: int) -> list[tuple[str, dict[str, Any]]]:
    """Return `count` (QC day, body) pairs alternating the two real versions, a week apart."""
    old, new = version_pair(NCT)
    out = []
    for number in range(count):
        body = copy.deepcopy(old if number % 2 == 0 else new)
        body.pop("derivedSection", None)
        posted = date(2015, 1, 5) + timedelta(weeks=number)
        body["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = (
            posted.isoformat())
        out.append(((posted - timedelta(days=2)).isoformat(), body))
    return out


def backfill_once(api: StandinAPI, path: str, full: bool) -> tuple[float, int]:
    """Sync the study once, backfill every version; return (seconds, changes stored)."""
    db = open_db(path)
    current = copy.deepcopy(version_pair(NCT)[1])
    save_studies(db, [SourceItem("bench", current, NCT)], "2025-07-07T06:00:00.000Z",
                 RunTotals(), source="sync")
    original = history.rewrite_history
    if full:  # what a rewrite of every snapshot per version costs
        def rewrite_all(db: Any, nct_id: str, states: Any, stored: Any) -> None:
            original(db, nct_id, states, [])
        history.rewrite_history = rewrite_all
    try:
        started = time.perf_counter()
        client = Client(api.root_url, Pacing(delay=0, retries=1))
        totals = RunTotals()
        for _ in history.backfill_study(db, HistoryAPI(client), NCT, None, totals):
            pass
        elapsed = time.perf_counter() - started
    finally:
        history.rewrite_history = original
    with transaction(db):
        stored = db.execute("select count(*) from changes").fetchone()[0]
    db.close()
    return elapsed, int(stored)


def main() -> int:
    """Run both ways on the same versions and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=20)
    args = parser.parse_args()
    with StandinAPI() as api, tempfile.TemporaryDirectory() as work:
        api.set_history(NCT, versions(args.versions))
        partial, changes = backfill_once(api, str(Path(work) / "partial.db"), full=False)
        whole, changes_full = backfill_once(api, str(Path(work) / "full.db"), full=True)
    assert changes == changes_full, (changes, changes_full)
    print(f"{args.versions} versions behind one synced snapshot, {changes} changes stored")
    print(f"  from the first moved snapshot: {partial:.2f} s ({partial / args.versions * 1000:.0f} "
          "ms a version)")
    print(f"  every snapshot each time:      {whole:.2f} s ({whole / args.versions * 1000:.0f} "
          "ms a version)")
    print(f"  ratio: {whole / partial:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
