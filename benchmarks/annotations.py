"""What storing each change's severity and facts costs an import (issue 14), as a ratio.

Imports the sample archive (snapshots/sample: 6 records, 528 changes on the second day, so
nearly all of its work is changes: the worst case for this cost) into a fresh database, with
the annotations stored and with `annotate` replaced by a no-op, alternating, and prints the
median of each and their ratio. Run: python benchmarks/annotations.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

import trialdiff.records as records  # noqa: E402
from trialdiff.folders import dated_folders, read_studies  # noqa: E402
from trialdiff.ingest import RunTotals, save_studies  # noqa: E402
from trialdiff.meaning import Annotated  # noqa: E402
from trialdiff.model import FieldChange, utc_timestamp  # noqa: E402
from trialdiff.schema import open_db  # noqa: E402

STORED = (records.annotate, records.annotation_columns)


def skipped(changes: list[FieldChange]) -> list[Annotated]:
    """Return the changes unannotated, as the store did before issue 14."""
    return [Annotated(change, {}, "info") for change in changes]


def import_seconds(annotated: bool) -> float:
    """Return the wall time of importing the sample archive into a fresh database."""
    records.annotate, records.annotation_columns = (  # type: ignore[assignment]
        STORED if annotated else (skipped, lambda item: {}))
    with tempfile.TemporaryDirectory() as folder:
        db = open_db(str(Path(folder) / "bench.db"))
        start = time.perf_counter()
        for day, path in dated_folders(str(HERE.parent / "snapshots" / "sample")):
            totals = RunTotals()
            save_studies(db, read_studies([str(path)]), utc_timestamp(day), totals)
        elapsed = time.perf_counter() - start
        db.close()
    return elapsed


def main() -> None:
    """Run both, alternating, and print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for annotated in (True, False):
            times[annotated].append(import_seconds(annotated))
    with_, without = statistics.median(times[True]), statistics.median(times[False])
    print(f"sample archive import (528 changes), median of {rounds}: with stored annotations "
          f"{with_ * 1000:.0f} ms, without {without * 1000:.0f} ms, ratio {with_ / without:.2f}")


if __name__ == "__main__":
    main()
