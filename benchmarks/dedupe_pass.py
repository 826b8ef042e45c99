"""What taking each study of an input once costs an import: dedupe.InputLedger's notes.

Builds an NDJSON dump of N real records (clones of /work/shared/ctgov-real/v2 under new ids),
then, in one run, times importing it into a fresh database (the bootstrap) and again (a day
where nothing changed: the cheapest import, so the ledger weighs most), and the ledger's own
work for that day alone (a lookup and a note per study, as save_studies does). Prints the
ledger's share of each import as JSON. (A first version read the input twice instead; this
script measured it at 1.8x the bootstrap and 1.95x the unchanged day at 5,000 studies.)

    /work/venvs/NAME/bin/python benchmarks/dedupe_pass.py --studies 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trialdiff.dedupe import InputLedger
from trialdiff.folders import read_studies
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.records import gate_hash
from trialdiff.schema import open_db
from trialdiff.sources import SourceItem

# The shared records sit beside the checkout: ../shared from /work/main, ../../shared from a
# worktree under /work/wt/.
REAL = next((p / "shared" / "ctgov-real" / "v2" for p in Path(__file__).resolve().parents
             if (p / "shared" / "ctgov-real" / "v2").is_dir()), Path("ctgov-real/v2"))


def write_dump(path: Path, studies: int) -> None:
    """Write an NDJSON dump of real records under new ids."""
    records = [json.loads(p.read_text()) for p in sorted(REAL.glob("*.json"))]
    with path.open("w") as out:
        for number in range(studies):
            record = records[number % len(records)]
            record["protocolSection"]["identificationModule"]["nctId"] = f"NCT9{number:07d}"
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


def timed_import(db_path: str, items: Iterable[SourceItem], at: str) -> float:
    """Import items into a database and return the seconds it took."""
    db = open_db(db_path)
    start = time.perf_counter()
    save_studies(db, items, at, RunTotals())
    seconds = time.perf_counter() - start
    db.close()
    return seconds


def ledger_seconds(db_path: str, items: Iterable[SourceItem]) -> float:
    """Return the seconds the ledger's lookups and notes take for an input, alone."""
    db = open_db(db_path)
    gates = [(i.nct_id, i.label, gate_hash(i.study, i.raw)) for i in items if i.nct_id]
    ledger = InputLedger(db)
    db.execute("begin immediate")
    start = time.perf_counter()
    for nct_id, label, gate in gates:
        if ledger.known(nct_id) is None:
            ledger.first(nct_id, label, gate)
    seconds = time.perf_counter() - start
    db.execute("rollback")
    db.close()
    return seconds


def main() -> None:
    """Run the measurement and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dump = Path(work) / "dump.ndjson"
        write_dump(dump, args.studies)
        db = str(Path(work) / "trialdiff.db")
        result: dict[str, Any] = {"studies": args.studies, "dump_mb": dump.stat().st_size >> 20}
        result["bootstrap_s"] = timed_import(db, read_studies([str(dump)]), "2026-05-01")
        result["unchanged_day_s"] = timed_import(db, read_studies([str(dump)]), "2026-05-02")
        result["ledger_s"] = ledger_seconds(db, read_studies([str(dump)]))
    for day in ("bootstrap", "unchanged_day"):
        result[f"ledger_share_of_{day}"] = result["ledger_s"] / result[f"{day}_s"]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                      for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
