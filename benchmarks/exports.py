"""Peak memory and time of `trialdiff changes` in every format, and of one very long word diff.

Builds a database of real changes: the quickstart's archive (`snapshots/sample`, 528 real
changes of 3 studies) is imported, then its changes and studies are copied under new NCT ids and
observation days until the database holds `--changes` rows. Each export then runs as its own
subprocess (`-o FILE`), whose peak RSS (getrusage of the child) is recorded, at the full size
and at a tenth of it: memory that stays flat gives a ratio near 1.

    python benchmarks/exports.py --changes 250000
    python benchmarks/exports.py --changes 50000 --baseline /tmp/before  # git archive of a
                                                                          # commit, unpacked
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("json", "ndjson", "csv", "md", "atom")
SHARED = ROOT.parents[1] / "shared" / "ctgov-real" / "v2"  # as workload.py finds the records


def build_database(path: Path, changes: int) -> int:
    """Import the sample archive into a database, then copy its changes up to `changes` rows."""
    subprocess.run([sys.executable, "-m", "trialdiff", "--db", str(path), "import",
                    str(ROOT / "snapshots" / "sample")], check=True, capture_output=True)
    conn = sqlite3.connect(path)
    base = conn.execute("select count(*) from changes").fetchone()[0]
    copies = max(0, -(-changes // base) - 1)
    assert copies < 1000, "at most 999 copies: study ids are NCT9<copy><4 digits>"
    with conn:
        for copy in range(1, copies + 1):
            # A new study id and a new day for every copy, as if more studies changed.
            number, day = f"9{copy:03d}", f"2025-{1 + copy // 28 % 12:02d}-{1 + copy % 28:02d}"
            conn.execute(
                "insert into changes (nct_id, snapshot_id, path, kind, detected_at, old, new, "
                "detail) select 'NCT' || ? || substr(nct_id, 8), snapshot_id, path, kind, "
                "? || substr(detected_at, 11), old, new, detail from changes where id <= ?",
                [number, day, base])
            conn.execute(
                "insert into studies (nct_id, brief_title) select 'NCT' || ? || "
                "substr(nct_id, 8), brief_title from studies where nct_id like 'NCT0%'",
                [number])
    total: int = conn.execute("select count(*) from changes").fetchone()[0]
    conn.close()
    return total


def peak_rss_mb(args: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Run a command in a fresh process and return its child's peak RSS (MB) and seconds."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
             "time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", probe, *args], check=True, cwd=cwd,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024, float(out[1])


def export_rss(db: Path, fmt: str, work: Path, code: str | None = None) -> tuple[float, float]:
    """Return peak RSS (MB) and seconds of one `changes --format fmt -o FILE`."""
    # `code`: a folder holding another trialdiff package (say, `git archive` of the commit
    # before streaming), run instead of the installed one.
    # Run from `work`: `python -m` puts the current folder first on sys.path, and a checkout's
    # own trialdiff there would shadow `code`.
    prefix = ["env", f"PYTHONPATH={code}"] if code else []
    return peak_rss_mb([*prefix, sys.executable, "-m", "trialdiff", "--db", str(db), "changes",
                        "--format", fmt, "-o", str(work / f"out.{fmt}")], cwd=work)


def long_word_diff() -> dict[str, float]:
    """Time word diffs of long real text (60,000 words; 1.5 MB of criteria), 50 edits each."""
    from trialdiff.worddiff import word_diff

    words: list[str] = []
    for path in sorted((ROOT / "tests" / "fixtures" / "v2").glob("*.json")):
        section = json.loads(path.read_text(encoding="utf-8"))["protocolSection"]
        words += section.get("eligibilityModule", {}).get("eligibilityCriteria", "").split()
        words += section.get("descriptionModule", {}).get("detailedDescription", "").split()
    cases = [("distinct", words), ("repeated", (words * 6)[:60_000])]
    criteria: list[str] = []
    for path in sorted(SHARED.glob("*.json")):  # the real records, when this machine has them
        section = json.loads(path.read_text(encoding="utf-8"))["protocolSection"]
        criteria += section.get("eligibilityModule", {}).get("eligibilityCriteria", "").split()
        if len(criteria) >= 230_000:  # about 1.5 MB of criteria text
            cases.append(("criteria 1.5 MB", criteria[:230_000]))
            break
    out = {}
    for name, text in cases:
        edited, rng = text[:], random.Random(12)
        for number in range(50):
            edited[rng.randrange(len(edited))] = f"EDITED{number}"
        start = time.perf_counter()
        word_diff(" ".join(text), " ".join(edited))
        out[f"{name} ({len(text)} words) s"] = round(time.perf_counter() - start, 3)
    return out


def main() -> None:
    """Build the databases, run every export at both sizes, print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=250_000)
    parser.add_argument("--baseline", metavar="DIR",
                        help="also run the trialdiff package in DIR on the large database")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trialdiff-exports-"))
    try:
        results: dict[str, object] = {"word diff": long_word_diff()}
        sizes = {}
        for label, count in (("small", options.changes // 10), ("large", options.changes)):
            db = work / f"{label}.db"
            sizes[label] = build_database(db, count)
            for fmt in FORMATS:
                rss, seconds = export_rss(db, fmt, work)
                results[f"{fmt} {label}"] = {"changes": sizes[label], "peak_rss_mb": round(rss),
                                             "seconds": round(seconds, 1)}
                if options.baseline and label == "large":
                    rss, seconds = export_rss(db, fmt, work, options.baseline)
                    results[f"{fmt} {label} baseline"] = {
                        "changes": sizes[label], "peak_rss_mb": round(rss),
                        "seconds": round(seconds, 1)}
        for fmt in FORMATS:
            small, large = results[f"{fmt} small"], results[f"{fmt} large"]
            assert isinstance(small, dict) and isinstance(large, dict)
            results[f"{fmt} rss ratio large/small"] = round(
                large["peak_rss_mb"] / small["peak_rss_mb"], 2)
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
