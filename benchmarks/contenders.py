"""The contenders trialdiff is measured against: the floor, naive DeepDiff, git scraping.

Also the one way every process is measured (`run_measured`: wall time and the child's own
peak RSS from wait4). `python benchmarks/contenders.py floor DIR...` is the floor process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import xxhash

GNU_TIME = Path("/usr/bin/time")


@dataclass(frozen=True)
class Measured:
    """One finished process: wall seconds (process start included) and its peak RSS."""

    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr_tail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the measurement as JSON-ready data."""
        return asdict(self)


def run_measured(
    argv: Sequence[str], stdout: Path | None = None, env: dict[str, str] | None = None,
    cwd: Path | None = None, check: bool = True,
) -> Measured:
    """Run a process to its end; return its wall time and its own peak RSS.

    The peak comes from GNU time when installed: wait4's ru_maxrss of a child forked from this
    (large) process starts at this process's RSS, as Linux carries the high-water mark across
    fork and exec. Without /usr/bin/time the wait4 figure is used, an upper bound.
    """
    err_path = (stdout.with_suffix(".stderr") if stdout else Path(os.devnull))
    rss_file = None
    if GNU_TIME.exists():
        with tempfile.NamedTemporaryFile(prefix="rss-", delete=False) as handle:
            rss_file = Path(handle.name)
        argv = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *argv]
    with open(stdout or os.devnull, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_kb = usage.ru_maxrss
    if rss_file is not None:
        lines = rss_file.read_text().split()
        rss_file.unlink()
        peak_kb = int(lines[-1]) if lines and lines[-1].isdigit() else peak_kb
    tail = ""
    if stdout and err_path.exists():
        tail = err_path.read_text(errors="replace")[-2000:]
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
    return Measured(round(seconds, 3), round(peak_kb / 1024, 1), proc.returncode, tail)


def median_seconds(argv: Sequence[str], repeat: int, cwd: Path | None = None) -> float:
    """Return the median wall time of running a process `repeat` times."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(list(argv), check=True, cwd=cwd, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ndjson_lines(folder: Path) -> Iterator[bytes]:
    """Yield every record line of a day's NDJSON shards, in order.

    With a 1 MB buffer, as trialdiff reads them: with the default 8 KB one a ~30 KB line is read
    in pieces, and the floor would count that (57 ms of a 138 MB day) as work a tool must do.
    """
    for shard in sorted(folder.glob("shard-*.ndjson")):
        with shard.open("rb", buffering=1 << 20) as stream:
            yield from stream


# --- the floor ------------------------------------------------------------------------------

# Hashes a floor may use: XXH3-128, trialdiff's gate hash since schema 11, is the least work;
# blake2b was the floor's (and the gate's) before, and stays measurable for comparison.
FLOOR_HASHES: dict[str, Callable[[bytes], bytes]] = {
    "xxh3": xxhash.xxh3_128_digest,
    "blake2b": lambda line: hashlib.blake2b(line, digest_size=16).digest(),
}


def floor(folders: Sequence[Path], hash_name: str = "xxh3") -> dict[str, int]:
    """Read, parse (orjson) and hash every record: the least any tool must do."""
    hash_line = FLOOR_HASHES[hash_name]
    records = size = 0
    digest = xxhash.xxh3_128()
    for folder in folders:
        for line in ndjson_lines(folder):
            study = orjson.loads(line)
            digest.update(hash_line(line))
            records += isinstance(study, dict)
            size += len(line)
    return {"records": records, "bytes": size}


# --- what a user writes first: parse everything, DeepDiff whole records -----------------------

def naive_deepdiff(
    old: Path, new: Path, edited: set[int], sample: int, seed: int
) -> dict[str, Any]:
    """Parse both days whole, and time `DeepDiff(old, new)` on a sample of differing pairs.

    Parsing and comparing bytes is done for every pair (measured in full); DeepDiff runs on a
    seeded sample stratified by edited / only re-stamped, and its total is extrapolated
    linearly to every pair whose bytes differ.
    """
    from deepdiff import DeepDiff

    rng = random.Random(seed)
    total = sum(1 for _ in ndjson_lines(new))
    plain = [i for i in range(total) if i not in edited]
    picked_plain = set(rng.sample(plain, min(sample, len(plain))))
    picked_edited = set(rng.sample(sorted(edited), min(max(sample // 5, 1), len(edited))))
    times: dict[str, list[float]] = {"plain": [], "edited": []}
    differ = {"plain": 0, "edited": 0}
    reports = 0
    started = time.perf_counter()
    for index, (a, b) in enumerate(zip(ndjson_lines(old), ndjson_lines(new), strict=True)):
        left, right = orjson.loads(a), orjson.loads(b)
        if a == b:
            continue
        group = "edited" if index in edited else "plain"
        differ[group] += 1
        if index in picked_plain or index in picked_edited:
            t0 = time.perf_counter()
            result = DeepDiff(left, right)
            times[group].append(time.perf_counter() - t0)
            reports += bool(result)
    wall = time.perf_counter() - started
    diff_seconds = sum(sum(v) for v in times.values())
    parse_seconds = wall - diff_seconds
    mean = {g: statistics.fmean(v) if v else 0.0 for g, v in times.items()}
    estimate = parse_seconds + sum(differ[g] * mean[g] for g in differ)
    return {
        "pairs": total, "pairs_differing": differ, "sampled": {g: len(v) for g, v in times.items()},
        "mean_deepdiff_ms": {g: round(m * 1000, 2) for g, m in mean.items()},
        "parse_and_compare_seconds": round(parse_seconds, 3),
        "estimated_seconds": round(estimate, 1), "extrapolated": True,
        "nonempty_reports_in_sample": reports,
    }


# --- git scraping, the common practice ------------------------------------------------------

class GitScraper:
    """A git repository of one pretty-printed file per study, committed once a day."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        self.git("init", "-q")
        self.git("config", "user.name", "scraper")
        self.git("config", "user.email", "scraper@example.org")
        self.git("config", "gc.auto", "0")  # gc only when the benchmark says so

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run git in the repository; return its output."""
        done = subprocess.run(["git", *args], cwd=self.tree, check=True, env=env,
                              capture_output=True, text=True)
        return done.stdout

    def size(self) -> int:
        """Return the bytes of everything under .git."""
        return sum(p.stat().st_size for p in (self.tree / ".git").rglob("*") if p.is_file())

    def commit_day(self, when: str) -> dict[str, Any]:
        """Commit the working tree as of a day, then `git gc --aggressive`; time each step."""
        env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        add = run_measured(["git", "add", "-A"], cwd=self.tree)
        commit = run_measured(["git", "commit", "-q", "-m", f"snapshot {when}"], env=env,
                              cwd=self.tree)
        loose = self.size()
        gc = run_measured(["git", "gc", "--aggressive", "--prune=now", "-q"], cwd=self.tree)
        return {"add": add.as_dict(), "commit": commit.as_dict(), "gc": gc.as_dict(),
                "loose_bytes": loose, "packed_bytes": self.size(),
                "seconds": round(add.seconds + commit.seconds + gc.seconds, 3)}

    def log_seconds(self, path: str, since: str, repeat: int = 5) -> dict[str, Any]:
        """Time `git log -p --since=... -- <file>` as a whole process (median of `repeat`)."""
        argv = ["git", "log", "-p", f"--since={since}", "--", path]
        out = subprocess.run(argv, cwd=self.tree, check=True, capture_output=True).stdout
        commits = sum(line.startswith(b"commit ") for line in out.splitlines())
        return {"median_seconds": round(median_seconds(argv, repeat, self.tree), 4),
                "output_bytes": len(out), "commits_shown": commits}


def main() -> None:
    """`contenders.py floor [--hash NAME] DIR...`: run the floor as its own process."""
    args = sys.argv[1:]
    if not args or args[0] != "floor":
        raise SystemExit(f"usage: contenders.py floor [--hash {'|'.join(FLOOR_HASHES)}] "
                         "DAY_DIR...")
    hash_name = "xxh3"
    if args[1:2] == ["--hash"]:
        hash_name, args = args[2], args[2:]
    print(json.dumps(floor([Path(p) for p in args[1:]], hash_name)))


if __name__ == "__main__":
    main()
