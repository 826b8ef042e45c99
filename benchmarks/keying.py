"""Time `extract_fields` on the real records, in ms per record: all, and those with duplicate sites.

`python benchmarks/keying.py [ROUNDS [V2_DIR [BASELINE]]]` prints JSON. BASELINE is the root of
another checkout (say `git archive e3c3656 trialdiff | tar -x -C /tmp/old`, then `/tmp/old`):
its `trialdiff` is loaded beside this one and the two are timed in alternating rounds, in CPU
time, so the ratio holds on a shared, noisy machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import trialdiff.normalize

V2 = Path(__file__).resolve().parents[2] / "shared" / "ctgov-real" / "v2"


def _load_baseline(root: Path) -> ModuleType:
    """Import another checkout's trialdiff package as `trialdiff_baseline`; return its normalize."""
    spec = importlib.util.spec_from_file_location(
        "trialdiff_baseline", root / "trialdiff" / "__init__.py",
        submodule_search_locations=[str(root / "trialdiff")])
    assert spec and spec.loader
    package = importlib.util.module_from_spec(spec)
    sys.modules["trialdiff_baseline"] = package
    spec.loader.exec_module(package)
    return importlib.import_module("trialdiff_baseline.normalize")


def _has_duplicate_keys(record: dict[str, Any]) -> bool:
    """Tell whether a record has two sites sharing rule 5's key."""
    sites = record.get("protocolSection", {}).get("contactsLocationsModule", {}).get(
        "locations", [])
    keys = [trialdiff.normalize.location_key(s) for s in sites if isinstance(s, dict)]
    return len(keys) != len(set(keys))


def _cpu_ms(module: ModuleType, records: list[dict[str, Any]]) -> float:
    """Return the CPU time of extracting every record once, in ms per record."""
    start = time.process_time()
    for record in records:
        module.extract_fields(record)
    return 1000 * (time.process_time() - start) / len(records)


def main() -> None:
    """Print the best round of each version on each set of records, as JSON."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    v2 = Path(sys.argv[2]) if len(sys.argv) > 2 else V2
    modules = {"current": trialdiff.normalize}
    if len(sys.argv) > 3:
        modules["baseline"] = _load_baseline(Path(sys.argv[3]))
    records = [json.loads(p.read_bytes()) for p in sorted(v2.glob("*.json"))]
    sets = {"all": records, "duplicates": [r for r in records if _has_duplicate_keys(r)]}
    best = {(m, s): float("inf") for m in modules for s in sets}
    for _ in range(rounds):
        for name, module in modules.items():
            for which, chosen in sets.items():
                best[name, which] = min(best[name, which], _cpu_ms(module, chosen))
    result: dict[str, Any] = {"records": len(records), "with_duplicates": len(sets["duplicates"]),
                              "rounds": rounds}
    for (name, which), ms in best.items():
        result[f"{name}_ms_per_record_{which}"] = round(ms, 4)
    if "baseline" in modules:
        for which in sets:
            result[f"ratio_{which}"] = round(
                best["current", which] / best["baseline", which], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
