"""Registry-scale benchmark of trialdiff (issue 5): one run, the same data, side by side.

Per day: the floor (read, parse, hash every record), trialdiff's import as a process, naive
whole-record DeepDiff (sampled, extrapolated), and git scraping (commit + gc --aggressive).
Then the Recent Field Changes query in-process and `trialdiff recent` as a process.
Ratios against the targets go to benchmarks/RESULTS.md and benchmarks/results.json.

    /tmp/venv/bin/python benchmarks/run.py --quick
    /tmp/venv/bin/python benchmarks/run.py --studies 60000 --days 3
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import report
from contenders import GitScraper, Measured, naive_deepdiff, run_measured
from workload import REAL_DIR, Config, Templates, Workload, day_date, disk_used, git_path

HERE = Path(__file__).resolve().parent
SCRATCH = ("day-", "manifest-", "subset-", "bench", "logs", "git", "pages", "code")  # ours


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, help="registry size (default 600,000; --quick 5,000)")
    p.add_argument("--days", type=int, help="daily observations after day 0 (default 3)")
    p.add_argument("--edit-share", type=float, default=0.005,
                   help="share of studies edited each day (default 0.005)")
    p.add_argument("--results-share", type=float, default=0.10,
                   help="share of day-0 studies with posted results (default 0.10)")
    p.add_argument("--work", type=Path, default=HERE / "work", help="scratch folder")
    p.add_argument("--skip-git", action="store_true", help="leave out the git contender")
    p.add_argument("--git-studies", type=int,
                   help="run git on the first N studies only and scale its growth (default "
                   "5,000; --quick 1,000): gc --aggressive costs ~25 ms per study per day")
    p.add_argument("--deepdiff-sample", type=int, help="pairs DeepDiff'd per day (default 300)")
    p.add_argument("--quick", action="store_true", help="5,000 studies, 2 days, sample 100")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--shard-size", type=int, default=10_000, help="studies per NDJSON shard")
    p.add_argument("--keep-days", action="store_true", help="keep every day's files")
    p.add_argument("--real", type=Path, default=REAL_DIR, help="folder of real records")
    p.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md goes")
    args = p.parse_args()
    args.studies = args.studies or (5_000 if args.quick else 600_000)
    args.days = args.days if args.days is not None else (2 if args.quick else 3)
    args.deepdiff_sample = args.deepdiff_sample or (100 if args.quick else 300)
    git_default = 1_000 if args.quick else 5_000
    args.git_studies = 0 if args.skip_git else min(args.git_studies or git_default, args.studies)
    return args


def trialdiff_argv() -> list[str]:
    """Return how to start the trialdiff command next to this Python."""
    script = Path(sys.executable).parent / "trialdiff"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trialdiff"]


def freeze_code(work: Path) -> str:
    """Copy trialdiff's code and run that copy all run long; return the copy's sha256.

    trialdiff is optimised while it is measured: a change halfway through (a new column, say)
    would break or skew the later days. Every process gets the copy first on PYTHONPATH (ahead
    of the editable install's finder), and so does this one.
    """
    source = HERE.parent / "trialdiff"
    copy = work / "code"
    shutil.copytree(source, copy / "trialdiff", ignore=shutil.ignore_patterns("__pycache__"))
    # Compiled as pip compiles an installed wheel: without it (PYTHONDONTWRITEBYTECODE, or a
    # read-only copy) every process would compile trialdiff from source: ~0.04 s no user pays.
    if not compileall.compile_dir(copy / "trialdiff", quiet=1):
        raise SystemExit(f"could not compile the code copy in {copy}")
    digest = hashlib.sha256()
    for path in sorted((copy / "trialdiff").rglob("*.py")):
        digest.update(path.relative_to(copy).as_posix().encode() + b"\0" + path.read_bytes())
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(copy), os.environ.get("PYTHONPATH", "")) if p)
    sys.path.insert(0, str(copy))
    return digest.hexdigest()[:16]


def clean(work: Path) -> None:
    """Remove what an earlier run left in the scratch folder (only files this tool makes)."""
    work.mkdir(parents=True, exist_ok=True)
    for path in work.iterdir():
        if path.name.startswith(SCRATCH):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (work / "logs").mkdir()


def check_disk(args: argparse.Namespace) -> str:
    """Refuse to start when the run's files would not fit; return the estimate."""
    per_study = 27_000 * 1.1  # compact record, with days' growth
    need = per_study * args.studies * (2 + (1 if args.keep_days else 0) * (args.days - 1))
    need += args.studies * 3_000 * (1 + args.days * args.edit_share * 20)  # the database
    need += args.git_studies * 45_000 * 1.3  # pretty files in the tree, plus .git
    free = shutil.disk_usage(args.work).free
    text = f"estimated disk need {need / 1e9:.1f} GB, free {free / 1e9:.1f} GB"
    if need > free - 2e9:
        raise SystemExit(f"not enough disk: {text}")
    return text


def db_bytes(db: Path) -> int:
    """Checkpoint the WAL into the database, then return the files' total size."""
    with sqlite3.connect(db) as conn:
        conn.execute("pragma wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def pick_study(db: Path, manifest: dict[str, Any], limit: int, since: str, until: str) -> str:
    """Return the first study edited on the last day (within git's share) that has changes."""
    from trialdiff.query import ChangeFilter, connect_readonly, query_changes

    conn = connect_readonly(str(db))
    try:
        for nct_id in manifest["edited"]:
            if limit and int(nct_id[3:]) - 90_000_000 >= limit:
                continue
            where = ChangeFilter(nct_ids=(nct_id,), since=since, until=until)
            if any(True for _ in query_changes(conn, where)):
                return str(nct_id)
    finally:
        conn.close()
    raise RuntimeError("no edited study of the last day has stored changes")


def recent_queries(db: Path, nct_id: str, as_of: date, repeat: int = 300) -> dict[str, Any]:
    """Time the Recent Field Changes query in-process, and `trialdiff recent` as a process."""
    from trialdiff.query import ChangeFilter, connect_readonly, query_changes
    from trialdiff.render import recent_section, recent_window

    since, until = recent_window(as_of, 30)
    where = ChangeFilter(nct_ids=(nct_id,), since=since, until=until)
    conn = connect_readonly(str(db))
    changes = list(query_changes(conn, where))
    query, rendered = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = list(query_changes(conn, where))
        t1 = time.perf_counter()
        recent_section(found, 30)
        rendered.append(time.perf_counter() - t0)
        query.append(t1 - t0)
    conn.close()
    argv = [*trialdiff_argv(), "--db", str(db), "recent", nct_id, "--as-of", as_of.isoformat()]
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - t0)
    return {"nct_id": nct_id, "window": [since, until], "changes": len(changes),
            "in_process_ms": round(statistics.median(query) * 1000, 3),
            "in_process_with_render_ms": round(statistics.median(rendered) * 1000, 3),
            "in_process_repeats": repeat,
            "process_ms": round(statistics.median(runs) * 1000, 1), "process_repeats": 5}


def page_rate(db: Path, work: Path, since: str, as_of: str) -> dict[str, Any]:
    """Time `trialdiff page --changed-since` if this trialdiff has it (best effort)."""
    helptext = subprocess.run([*trialdiff_argv(), "--help"], capture_output=True,
                              text=True).stdout
    if not any(line.split()[:1] == ["page"] for line in helptext.splitlines()):
        return {"skipped": "`trialdiff page` does not exist in this trialdiff"}
    usage = subprocess.run([*trialdiff_argv(), "page", "--help"], capture_output=True,
                           text=True).stdout
    if "--changed-since" not in usage or "--out" not in usage:
        return {"skipped": "`trialdiff page` has no --changed-since/--out options"}
    out = work / "pages"
    argv = [*trialdiff_argv(), "--db", str(db), "page", "--changed-since", since, "--out",
            str(out)] + (["--as-of", as_of] if "--as-of" in usage else [])
    log = work / "logs" / "page.out"
    try:
        done = run_measured(argv, stdout=log)
    except RuntimeError as exc:
        return {"skipped": f"`trialdiff page` failed: {exc}"[:500]}
    said = re.search(rb"(\d+) pages written, (\d+) unchanged", log.read_bytes())
    pages = (int(said[1]) + int(said[2]) if said
             else sum(1 for p in out.rglob("*") if p.is_file()))
    return {"argv": argv[1:], "pages": pages, "seconds": done.seconds,
            "peak_rss_mb": done.peak_rss_mb, "pages_per_second": round(pages / done.seconds, 1)}


def git_day(git: GitScraper, config: Config, day: int, at: str,
            before: dict[str, Any] | None) -> dict[str, Any]:
    """Commit and gc git's tree for a day; import the same studies into a trialdiff DB too.

    trialdiff on exactly git's studies is the like-for-like storage comparison; git's growth
    is also scaled to the whole registry (N / M) for the record.
    """
    g = git.commit_day(at.replace(".000Z", "+00:00"))
    subset_db = config.work / "bench-subset.db"
    g["trialdiff_import"] = run_measured(
        [*trialdiff_argv(), "--db", str(subset_db), "import", "--at", at,
         str(config.subset(day))], stdout=config.work / "logs" / f"subset-{day:02d}.out",
    ).as_dict()
    g["trialdiff_db_bytes"] = db_bytes(subset_db)
    g["growth_bytes"] = g["growth_bytes_scaled"] = g["trialdiff_db_growth_bytes"] = None
    if before is not None:
        studies = sum(1 for _ in config.subset(day).open("rb"))
        g["growth_bytes"] = g["packed_bytes"] - before["packed_bytes"]
        g["growth_bytes_scaled"] = round(g["growth_bytes"] * config.studies / studies)
        g["trialdiff_db_growth_bytes"] = g["trialdiff_db_bytes"] - before["trialdiff_db_bytes"]
    print(f"  git add+commit {g['add']['seconds'] + g['commit']['seconds']:.1f} s, gc "
          f"{g['gc']['seconds']:.1f} s, .git {g['packed_bytes'] / 1e6:,.1f} MB; trialdiff on the "
          f"same studies {g['trialdiff_db_bytes'] / 1e6:,.1f} MB", flush=True)
    return g


def main() -> None:
    """Run every contender on every day and write the results."""
    args = parse_args()
    work: Path = args.work.resolve()
    clean(work)
    code = freeze_code(work)
    machine = {**report.machine(), "code_sha256": code}
    disk_note = check_disk(args)
    print(f"trialdiff benchmark: {args.studies:,} studies, {args.days} days, edit share "
          f"{args.edit_share:.2%}, git on {args.git_studies:,} studies; {disk_note}", flush=True)
    config = Config(args.studies, args.days, args.edit_share, args.results_share,
                    args.shard_size, args.seed, work)
    workload = Workload(config, Templates.load(args.real))
    db = work / "bench.db"
    git = GitScraper(work / "git") if args.git_studies else None
    floor_argv = [sys.executable, str(HERE / "contenders.py"), "floor"]
    days: list[dict[str, Any]] = []
    previous_db = 0
    peak_disk = 0
    manifest: dict[str, Any] = {}
    for day in range(args.days + 1):
        manifest = workload.write_day(day, git.tree if git else None, args.git_studies)
        folder = config.day_dir(day)
        print(f"day {day} ({manifest['date']}): wrote {manifest['bytes'] / 1e6:,.0f} MB in "
              f"{manifest['seconds']:.0f} s, {len(manifest['edited'])} edited", flush=True)
        at = f"{manifest['date']}T07:00:00.000Z"
        first = run_measured([*floor_argv, str(folder)])
        imported: Measured = run_measured(
            [*trialdiff_argv(), "--db", str(db), "import", "--at", at, str(folder)],
            stdout=work / "logs" / f"import-{day:02d}.out")
        second = run_measured([*floor_argv, str(folder)])
        size = db_bytes(db)
        row: dict[str, Any] = {
            "day": day, "date": manifest["date"], "edited": len(manifest["edited"]),
            "input_bytes": manifest["bytes"], "generate_seconds": manifest["seconds"],
            "floor_seconds": min(first.seconds, second.seconds),
            "floor_runs": [first.as_dict(), second.as_dict()],
            "import": imported.as_dict(), "db_bytes": size,
            "db_growth_bytes": size - previous_db if day else None,
        }
        previous_db = size
        print(f"  floor {row['floor_seconds']:.1f} s; import {imported.seconds:.1f} s "
              f"({imported.seconds / row['floor_seconds']:.2f}x floor), peak "
              f"{imported.peak_rss_mb:.0f} MB; db {size / 1e6:,.1f} MB", flush=True)
        if day:
            edited = {int(n[3:]) - 90_000_000 for n in manifest["edited"]}
            row["naive"] = naive_deepdiff(config.day_dir(day - 1), folder, edited,
                                          args.deepdiff_sample, args.seed + day)
            print(f"  naive DeepDiff ~{row['naive']['estimated_seconds']:,.0f} s (extrapolated "
                  f"from {sum(row['naive']['sampled'].values())} pairs)", flush=True)
        if git:
            row["git"] = git_day(git, config, day, at, days[-1]["git"] if day else None)
        peak_disk = max(peak_disk, disk_used(work))
        if day and not args.keep_days:
            shutil.rmtree(config.day_dir(day - 1))
            config.subset(day - 1).unlink(missing_ok=True)
        days.append(row)
    last = day_date(args.days)
    since = (last - timedelta(days=29)).isoformat()
    window = (f"{since}T00:00:00.000Z", f"{(last + timedelta(days=1)).isoformat()}T00:00:00.000Z")
    nct_id = pick_study(db, manifest, args.git_studies, *window)
    result: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "config": {"studies": args.studies, "days": args.days, "edit_share": args.edit_share,
                   "results_share": args.results_share, "seed": args.seed,
                   "deepdiff_sample": args.deepdiff_sample, "git_studies": args.git_studies,
                   "shard_size": args.shard_size},
        "machine": machine, "days": days,
        "mean_record_bytes": statistics.fmean(d["input_bytes"] for d in days) / args.studies,
        "recent": recent_queries(db, nct_id, last),
        "page": page_rate(db, work, (last - timedelta(days=1)).isoformat(), last.isoformat()),
        "peak_disk_bytes": peak_disk,
    }
    if git:
        result["git"] = {"studies": args.git_studies, "log": git.log_seconds(
            git_path(int(nct_id[3:]) - 90_000_000), since)}
    result["notes"] = notes(result, args)
    result["targets"] = report.targets(result)
    report.write(result, args.out)
    print("\n" + report.table(result))
    print(f"\nwrote {args.out / 'RESULTS.md'} and results.json; peak disk used "
          f"{peak_disk / 1e9:.2f} GB under {work}")


def notes(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Return what a reader must know to read the numbers right."""
    recent = result["recent"]
    out = [
        "Input: each day is compact NDJSON shards (what the registry's bulk dump holds); the "
        "floor and `trialdiff import` read the same shards, just written (warm page cache).",
        "The floor is `contenders.py floor`: one process that reads every line, parses it with "
        "orjson and hashes it with XXH3-128 (trialdiff's gate hash; blake2b in runs before "
        "2026-12-02's sixth session), nothing else.",
        f"Naive DeepDiff: every pair of records is read, parsed and byte-compared in full; "
        f"`DeepDiff(old, new)` (default options) runs on a seeded sample of {args.deepdiff_sample}"
        " re-stamped pairs plus a fifth as many edited pairs, and its time is **extrapolated "
        "linearly** to every pair whose bytes differ (all of them: versionHolder moves daily).",
        f"Recent query: study {recent['nct_id']} ({recent['changes']} changes in the window "
        f"{recent['window'][0]} to {recent['window'][1]}); in-process `query_changes` median of "
        f"{recent['in_process_repeats']} (with rendering the section: "
        f"{recent['in_process_with_render_ms']} ms); `trialdiff recent` median of 5 processes.",
        f"Bootstrap (day 0): {result['days'][0]['import']['seconds']:,.0f} s for "
        f"{args.studies:,} studies; the 600,000 figure is a linear extrapolation."
        if args.studies != report.FULL_REGISTRY else "Bootstrap measured at full scale.",
        f"Peak disk used under the work folder: {result['peak_disk_bytes'] / 1e9:.2f} GB.",
    ]
    page = result["page"]
    out.append(f"`page --changed-since`: skipped, {page['skipped']}." if "skipped" in page else
               f"`trialdiff page --changed-since <the day before the last> --as-of <last day> "
               f"--out DIR` (a site's daily step, into an empty folder): {page['pages']:,} pages "
               f"in {page['seconds']} s = **{page['pages_per_second']} pages/s** (process start "
               f"included; peak RSS {page['peak_rss_mb']:.0f} MB). It selects every study seen "
               "since that day, and every study is seen every day.")
    if "git" in result:
        log = result["git"]["log"]
        scaled = (f" on the first {args.git_studies:,} studies, its growth scaled by "
                  f"{args.studies / args.git_studies:.1f} to the whole registry"
                  if args.git_studies != args.studies else " on every study")
        out.append(f"Git scraping{scaled}: one indented file per study, `git add -A`, `git "
                   "commit`, then `git gc --aggressive --prune=now` each day; growth is of .git "
                   "after gc. trialdiff also imports exactly git's studies into a second database "
                   "(bench-subset.db): the storage target compares the two on the same studies. "
                   "`git log -p --since=<30 days before the last day> -- <file>` took "
                   f"{log['median_seconds'] * 1000:.0f} ms (median of 5) and printed "
                   f"{log['commits_shown']} commits ({log['output_bytes']:,} bytes): every day "
                   "shows up, because versionHolder moves daily.")
    else:
        out.append("Git scraping skipped (--skip-git).")
    return out


if __name__ == "__main__":
    main()
