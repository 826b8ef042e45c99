"""What taking each study once costs an import: the first pass of dedupe.distinct_studies.

Builds an NDJSON dump of N real records (clones of /work/shared/ctgov-real/v2 under new ids),
then, in one run, times importing it into a fresh database (the bootstrap) and again (a day
where nothing changed: the cheapest import, so the pass weighs most), each with and without
the duplicate pass, and the pass alone with its peak Python memory. Prints ratios as JSON.

    /work/venvs/NAME/bin/python benchmarks/dedupe_pass.py --studies 5000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from trialdiff.dedupe import distinct_studies, repeated_studies
from trialdiff.schema import open_db
from trialdiff.sources import SourceItem, read_studies
from trialdiff.store import RunTotals, save_studies

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
    for _ in save_studies(db, items, at, RunTotals()):
        pass
    seconds = time.perf_counter() - start
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
        read: Callable[[], Any] = partial(read_studies, [str(dump)])
        result: dict[str, Any] = {"studies": args.studies, "dump_mb": dump.stat().st_size >> 20}
        for label, wrap in (("plain", read), ("deduped", partial(distinct_studies, read))):
            db = str(Path(work) / f"{label}.db")
            result[f"bootstrap_{label}_s"] = timed_import(db, wrap(), "2026-05-01")
            result[f"unchanged_day_{label}_s"] = timed_import(db, wrap(), "2026-05-02")
        tracemalloc.start()
        start = time.perf_counter()
        repeated_studies(read())
        result["first_pass_s"] = time.perf_counter() - start
        result["first_pass_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    for day in ("bootstrap", "unchanged_day"):
        result[f"{day}_ratio"] = result[f"{day}_deduped_s"] / result[f"{day}_plain_s"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                      for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
