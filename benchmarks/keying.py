"""Time `extract_fields` on the real records, in ms per record: all, and those with duplicate sites.

`python benchmarks/keying.py [ROUNDS [V2_DIR]]` prints JSON. Run it with PYTHONPATH set to another
checkout's root to time that version on the same machine in the same session.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import trialdiff.normalize as normalize

V2 = Path(__file__).resolve().parents[2] / "shared" / "ctgov-real" / "v2"


def _has_duplicate_keys(record: dict[str, Any]) -> bool:
    """Tell whether a record has two sites sharing rule 5's key."""
    sites = record.get("protocolSection", {}).get("contactsLocationsModule", {}).get(
        "locations", [])
    keys = [normalize.location_key(s) for s in sites if isinstance(s, dict)]
    return len(keys) != len(set(keys))


def _best_ms(records: list[dict[str, Any]], rounds: int) -> float:
    """Return the best of some rounds of extracting every record, in ms per record."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for record in records:
            normalize.extract_fields(record)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(records)


def main() -> None:
    """Print the timings as JSON."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    v2 = Path(sys.argv[2]) if len(sys.argv) > 2 else V2
    records = [json.loads(p.read_bytes()) for p in sorted(v2.glob("*.json"))]
    duplicates = [r for r in records if _has_duplicate_keys(r)]
    print(json.dumps({
        "module": normalize.__file__,
        "records": len(records),
        "with_duplicates": len(duplicates),
        "ms_per_record_all": round(_best_ms(records, rounds), 4),
        "ms_per_record_duplicates": round(_best_ms(duplicates, rounds), 4),
    }))


if __name__ == "__main__":
    main()
