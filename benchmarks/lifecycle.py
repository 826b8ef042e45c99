"""What the Python API's run lifecycle costs an import: Tracker.import_paths vs save_studies.

Writes the real records of /work/shared/ctgov-real/v2 as one NDJSON input, then, in one run,
imports it into fresh databases three ways, alternating: `ingest.save_studies` alone (no lock,
no run row, no sink), `Tracker.import_paths` with no sink, and with a sink that `match`es
every outcome. Prints the seconds of each (best of `--repeat`) and their ratios as JSON.

    /work/venvs/NAME/bin/python benchmarks/lifecycle.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import trialdiff
from trialdiff.folders import read_studies
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import Observation, Outcome
from trialdiff.schema import open_db

# The shared records sit beside the checkout: ../shared from /work/main, ../../shared from a
# worktree under /work/wt/.
REAL = next((p / "shared" / "ctgov-real" / "v2" for p in Path(__file__).resolve().parents
             if (p / "shared" / "ctgov-real" / "v2").is_dir()), Path("ctgov-real/v2"))


class Matching:
    """A sink that looks at every outcome, as the CLI's printer does."""

    def __init__(self) -> None:
        self.changes = 0

    def show(self, outcome: Outcome) -> None:
        """Count the changes an outcome carries."""
        match outcome:
            case Observation(changes=changes):
                self.changes += len(changes)
            case _:
                pass

    def finish(self, run: object) -> None:
        """Do nothing at the end."""

    def close(self) -> None:
        """Hold nothing."""


def timed(way: str, folder: Path, dump: Path, at: str) -> float:
    """Import the dump into a new database one way; return the seconds it took."""
    db_path = str(folder / f"{way}-{time.monotonic_ns()}.db")
    start = time.perf_counter()
    if way == "save_studies":
        db = open_db(db_path)
        save_studies(db, read_studies([str(dump)]), at, RunTotals())
        db.close()
    else:
        sinks = [Matching()] if way == "tracker+sink" else []
        with trialdiff.open(db_path) as tracker:
            tracker.import_paths([str(dump)], at=at, sinks=sinks)
    return time.perf_counter() - start


def main() -> None:
    """Run the comparison and print it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ways = ("save_studies", "tracker", "tracker+sink")
    best = dict.fromkeys(ways, float("inf"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        dump = folder / "studies.ndjson"
        files = sorted(args.real.glob("*.json"))
        dump.write_text("".join(json.dumps(json.loads(p.read_text())) + "\n" for p in files))
        for _ in range(args.repeat):
            for way in ways:
                best[way] = min(best[way], timed(way, folder, dump, "2026-05-12T07:00:00Z"))
    print(json.dumps({
        "studies": len(files), "repeat": args.repeat,
        "seconds": {way: round(best[way], 3) for way in ways},
        "ratio_tracker": round(best["tracker"] / best["save_studies"], 3),
        "ratio_tracker_with_sink": round(best["tracker+sink"] / best["save_studies"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
