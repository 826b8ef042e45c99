"""Heavy days and storage against git (issue 15): one run, the same data, side by side.

Day 0 bootstraps N studies; day 1 is a typical day (0.5% edited), days 2 and 3 are heavy days
(10% edited), day 4 is a reformat day (every record's text rewritten, as when the registry
moved to Markdown). Every day every record is re-stamped (versionHolder). Each day:
`trialdiff import` as a process IMPORT_RUNS times from the same state (into the database and
into copies of it; the fastest time and the highest peak RSS count, and all must store the same
changes), the floor (parse every record, hash it with XXH3) before and after each, the fastest
counting, and beside each the floor with blake2b (the earlier runs' floor, for comparison), the
database's size, and git scraping of the same N studies (add, commit, gc --aggressive). Then
`trialdiff compact` runs on a copy of the day's database, git's `gc --aggressive` counterpart:
its time, peak RSS and the size it leaves (the next day imports into the uncompacted file).

    /work/venvs/perf/bin/python benchmarks/heavy.py --studies 5000
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import report
from contenders import GitScraper, run_measured
from run import HERE, clean, db_bytes, freeze_code, trialdiff_argv
from workload import REAL_DIR, Config, Study, Templates, Workload

# (name, edit share) per day after day 0; "reformat" rewrites every record's text.
SCHEDULE: tuple[tuple[str, float], ...] = (
    ("typical", 0.005), ("heavy", 0.10), ("heavy", 0.10), ("reformat", 0.0),
)
TEXT_MODULES = ("descriptionModule", "eligibilityModule", "outcomesModule")
# The machine is shared: one run of each could land on a burst of load. Three, interleaved.
IMPORT_RUNS = 3


def reformat(value: Any) -> Any:
    """Rewrite a text as a markup migration would: line breaks doubled, `* ` bullets as `- `."""
    if isinstance(value, str):
        return value.replace("\n", "\n\n").replace("* ", "- ")
    if isinstance(value, dict):
        return {key: reformat(child) for key, child in value.items()}
    if isinstance(value, list):
        return [reformat(child) for child in value]
    return value


class Scenarios(Workload):
    """The issue-5 workload with a per-day edit share and a reformat day."""

    def __init__(self, config: Config, templates: Templates, novel: bool = True) -> None:
        super().__init__(config, templates)
        self.novel = novel
        # The registry posts a trial's own results, which no other record holds. A section
        # some clone copied is already in git's pack, in another study's file, which `gc
        # --aggressive` could delta a posting against: a saving no real posting offers (it
        # proved small, benchmarks/README.md). Novel postings take the sections of the records
        # no clone copies, each once, in one seeded order; day 0 is the same either way.
        copied = set()
        for index in range(config.studies):
            with_results, position = self.draw_template(self.rng(0, index))
            if with_results:
                copied.add(position)
        self.postings = [n for n in range(len(templates.results_sections)) if n not in copied]
        self.rng(3).shuffle(self.postings)

    def posted_results(self, rng: random.Random) -> bytes:
        """Return the next section of the posting order (novel), else a random one."""
        drawn = super().posted_results(rng)  # the same draw either way: the edits stay alike
        if not self.novel:
            return drawn
        if not self.postings:
            raise SystemExit("more postings than real results sections: fewer --studies")
        return self.templates.results_sections[self.postings.pop()]

    def edited(self, day: int) -> list[int]:
        """Return the indexes of the studies a day edits (its scheduled share)."""
        name, share = SCHEDULE[day - 1]
        if name == "reformat":
            return []
        count = max(1, round(self.config.studies * share))
        return sorted(self.rng(1, day).sample(range(self.config.studies), count))

    def lines(self, day: int) -> Iterator[tuple[int, bytes, list[str] | None]]:
        """Yield a day's lines; a reformat day rewrites every record's text modules."""
        if day == 0 or SCHEDULE[day - 1][0] != "reformat":
            yield from super().lines(day)
            return
        for index, line, _ in super().lines(day):
            study: Study = orjson.loads(line)
            protocol = study.get("protocolSection", {})
            for name in TEXT_MODULES:
                if name in protocol:
                    protocol[name] = reformat(protocol[name])
            yield index, orjson.dumps(study), ["reformat"]


def main() -> None:
    """Run the scenario days and write HEAVY.md and heavy.json next to RESULTS.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=5_000)
    p.add_argument("--work", type=Path, default=HERE / "work")
    p.add_argument("--real", type=Path, default=REAL_DIR)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--skip-git", action="store_true", help="trialdiff and the floor only")
    p.add_argument("--results", choices=("novel", "copied"), default="novel",
                   help="posted results: sections no clone holds (default), or any clone's")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)  # before the run, not after its 15 minutes
    work: Path = args.work.resolve()
    clean(work)
    code = freeze_code(work)
    config = Config(args.studies, len(SCHEDULE), 0.005, 0.10, 10_000, args.seed, work)
    workload = Scenarios(config, Templates.load(args.real), args.results == "novel")
    git = None if args.skip_git else GitScraper(work / "git")
    db = work / "bench.db"
    floor = [sys.executable, str(HERE / "contenders.py"), "floor"]
    days: list[dict[str, Any]] = []
    for day in range(len(SCHEDULE) + 1):
        manifest = workload.write_day(day, git.tree if git else None, args.studies)
        folder = config.day_dir(day)
        at = f"{manifest['date']}T07:00:00.000Z"
        # The same import twice more, from the same state, into copies; floors between them,
        # so a burst of load on the shared machine does not decide a ratio.
        twins = [work / f"twin{n}.db" for n in range(1, IMPORT_RUNS)]
        if db.exists():
            db_bytes(db)  # checkpoints the WAL, so the file alone is the state
            for twin in twins:
                shutil.copyfile(db, twin)
        floors, runs, blake2b_floors = [], [], []
        for n, path in enumerate((db, *twins)):
            floors.append(run_measured([*floor, str(folder)]))
            # The floor of the runs before the gate's hash was XXH3, for comparison with them.
            blake2b_floors.append(run_measured([*floor, "--hash", "blake2b", str(folder)]))
            runs.append(run_measured([*trialdiff_argv(), "--db", str(path), "import", "--at",
                                      at, str(folder)],
                                     stdout=work / "logs" / f"import-{day:02d}-{n}.out"))
        floors.append(run_measured([*floor, str(folder)]))
        if any(changes_digest(db) != changes_digest(twin) for twin in twins):
            raise SystemExit(f"day {day}: the imports stored different changes")
        for leftover in work.glob("twin*.db*"):
            leftover.unlink()
        imported = min(runs, key=lambda m: m.seconds)
        compacted = work / "compacted.db"
        size = db_bytes(db)  # checkpointed: the copy is the whole state
        shutil.copyfile(db, compacted)
        compaction = run_measured([*trialdiff_argv(), "--db", str(compacted), "compact"],
                                  stdout=work / "logs" / f"compact-{day:02d}.out")
        g = (git.commit_day(at.replace(".000Z", "+00:00")) if git
             else {"packed_bytes": 1, "gc": {"seconds": 0.0}})
        row = {"day": day, "scenario": SCHEDULE[day - 1][0] if day else "bootstrap",
               "edited": len(manifest["edited"]), "input_bytes": manifest["bytes"],
               "floor_seconds": min(m.seconds for m in floors),
               "blake2b_floor_seconds": min(m.seconds for m in blake2b_floors),
               "import": {**imported.as_dict(),
                          "peak_rss_mb": max(m.peak_rss_mb for m in runs)},
               "import_seconds_each": [round(m.seconds, 3) for m in runs],
               "db_bytes": size,
               "compact": {**compaction.as_dict(), "db_bytes": db_bytes(compacted)},
               "git_packed_bytes": g["packed_bytes"], "git_gc_seconds": g["gc"]["seconds"]}
        row["ratio"] = round(imported.seconds / row["floor_seconds"], 3)
        row["blake2b_ratio"] = round(imported.seconds / row["blake2b_floor_seconds"], 3)
        for leftover in work.glob("compacted.db*"):
            leftover.unlink()
        days.append(row)
        print(f"day {day} {row['scenario']}: floor {row['floor_seconds']:.2f} s, import "
              f"{imported.seconds:.2f} s ({row['ratio']:.2f}x), RSS {imported.peak_rss_mb:.0f} "
              f"MB, db {row['db_bytes'] / 1e6:.2f} MB (compacted "
              f"{row['compact']['db_bytes'] / 1e6:.2f} MB in {compaction.seconds:.1f} s), "
              f"git {g['packed_bytes'] / 1e6:.2f} MB",
              flush=True)
        if day:
            shutil.rmtree(config.day_dir(day - 1))
            config.subset(day - 1).unlink(missing_ok=True)
    result = {"command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name,
                                                            *sys.argv]),
              "studies": args.studies, "results": args.results,
              "machine": {**report.machine(), "code_sha256": code},
              "days": days, "targets": targets(days, git is not None)}
    (args.out / "heavy.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "HEAVY.md").write_text(markdown(result))
    print(markdown(result))


def changes_digest(db: Path) -> str:
    """Return a digest of every change a database stores, as read back (values unpacked)."""
    import hashlib

    from trialdiff.query import ChangeFilter, connect_readonly, query_changes

    digest = hashlib.sha256()
    conn = connect_readonly(str(db))
    try:
        for change in query_changes(conn, ChangeFilter()):
            digest.update(orjson.dumps(change.as_dict(), option=orjson.OPT_SORT_KEYS))
    finally:
        conn.close()
    return digest.hexdigest()


def growth(days: list[dict[str, Any]], key: str, first: int, last: int) -> int:
    """Return how much a size grew from the day before `first` to day `last`."""
    return int(days[last][key] - days[first - 1][key])


def targets(days: list[dict[str, Any]], with_git: bool = True) -> list[dict[str, Any]]:
    """Return issue 15's targets with their measured ratios (against git only `with_git`)."""
    out = []

    def add(name: str, goal: float, value: float, shown: str) -> None:
        out.append({"target": name, "goal": f"<= {goal}x", "value": round(value, 3),
                    "shown": shown, "pass": value <= goal})

    for day, name, goal in ((1, "typical day (0.5% edited), import vs the floor", 1.5),
                            (2, "heavy day (10% edited), import vs the floor", 2.0),
                            (3, "second heavy day, import vs the floor", 2.0),
                            (4, "reformat day (every record's text), import vs the floor", 4.0)):
        d = days[day]
        add(name, goal, d["ratio"], f"{d['import']['seconds']:.2f} s / {d['floor_seconds']:.2f} s")
    rss = days[4]["import"]["peak_rss_mb"]
    out.append({"target": "reformat day, peak RSS", "goal": "<= 300 MB", "value": rss,
                "shown": f"{rss:.0f} MB", "pass": rss <= 300})
    if not with_git:
        return out
    d0 = days[0]
    add("database after day 0 vs git gc --aggressive", 0.75,
        d0["db_bytes"] / d0["git_packed_bytes"],
        f"{d0['db_bytes'] / 1e6:.2f} MB / {d0['git_packed_bytes'] / 1e6:.2f} MB")
    ours, theirs = growth(days, "db_bytes", 2, 3), growth(days, "git_packed_bytes", 2, 3)
    add("growth over two heavy days vs git's packed growth", 1.0, ours / theirs,
        f"{ours / 1e6:.2f} MB / {theirs / 1e6:.2f} MB")
    ours, theirs = growth(days, "db_bytes", 1, 1), growth(days, "git_packed_bytes", 1, 1)
    add("typical day, growth vs git", 0.5, ours / theirs,
        f"{ours / 1e6:.3f} MB / {theirs / 1e6:.3f} MB")
    # Both compacted: `trialdiff compact` against the `gc --aggressive` git had already.
    packed = [{**d, "db_bytes": d["compact"]["db_bytes"]} for d in days]
    add("database after day 0, compacted, vs git gc --aggressive", 0.75,
        packed[0]["db_bytes"] / d0["git_packed_bytes"],
        f"{packed[0]['db_bytes'] / 1e6:.2f} MB / {d0['git_packed_bytes'] / 1e6:.2f} MB")
    ours, theirs = growth(packed, "db_bytes", 2, 3), growth(days, "git_packed_bytes", 2, 3)
    add("growth over two heavy days, compacted, vs git", 1.0, ours / theirs,
        f"{ours / 1e6:.2f} MB / {theirs / 1e6:.2f} MB")
    return out


def markdown(result: dict[str, Any]) -> str:
    """Return the scenario results as Markdown."""
    m = result["machine"]
    posted = {"novel": "each posted results section one no clone holds",
              "copied": "posted results sections drawn from the clones' own"}
    lines = [f"Run with `{result['command']}`: {result['studies']:,} studies, "
             f"{posted[result.get('results', 'copied')]}, code "
             f"{m.get('commit', '?')} (sha256 {m['code_sha256']}).", "",
             "| target | goal | measured | ratio | pass |", "|---|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['goal']} | {t['shown']} | {t['value']} | "
                     f"{'yes' if t['pass'] else 'no'} |")
    lines += ["", "| day | scenario | edited | floor s | import s (each run) | import/floor "
              "| blake2b floor s (import/it) | peak RSS MB | DB MB | compacted MB (s, RSS MB) "
              "| .git MB (gc --aggressive) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in result["days"]:
        both = ", ".join(f"{s:.2f}" for s in d["import_seconds_each"])
        lines.append(f"| {d['day']} | {d['scenario']} | {d['edited']:,} | "
                     f"{d['floor_seconds']:.2f} | {d['import']['seconds']:.2f} ({both}) | "
                     f"{d['ratio']:.2f} | {d['blake2b_floor_seconds']:.2f} "
                     f"({d['blake2b_ratio']:.2f}) | {d['import']['peak_rss_mb']:.0f} | "
                     f"{d['db_bytes'] / 1e6:.2f} | {d['compact']['db_bytes'] / 1e6:.2f} "
                     f"({d['compact']['seconds']:.1f}, {d['compact']['peak_rss_mb']:.0f}) | "
                     f"{d['git_packed_bytes'] / 1e6:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
