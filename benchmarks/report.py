"""Turn one benchmark run's measurements into ratios against the targets, Markdown and JSON."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FULL_REGISTRY = 600_000


def machine() -> dict[str, Any]:
    """Describe the machine and software the run used."""
    cpu = "unknown"
    memory_gb = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    repo = Path(__file__).resolve().parents[1]

    def out(*argv: str) -> str:
        try:
            return subprocess.run(argv, cwd=repo, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    from deepdiff import __version__ as deepdiff_version

    from trialdiff import __version__ as trialdiff_version

    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gb": memory_gb,
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(), "git": out("git", "--version"),
        "trialdiff": trialdiff_version, "deepdiff": deepdiff_version,
        "commit": out("git", "rev-parse", "--short", "HEAD"),
        "dirty_files": len(out("git", "status", "--porcelain", "--", "trialdiff").splitlines()),
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target with what was measured, as a ratio where the target is one."""
    days = [d for d in result["days"] if d["day"] > 0]
    boot = result["days"][0]
    rows: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: float | None, shown: str, ok: bool | None) -> None:
        rows.append({"target": name, "goal": goal, "value": value, "measured": shown,
                     "pass": ok})

    ratio = _median([d["import"]["seconds"] / d["floor_seconds"] for d in days])
    add("daily import vs the floor (process start included)", "≤ 2x", ratio,
        f"{ratio:.2f}x (median of {len(days)} days)" if ratio else "n/a",
        None if ratio is None else ratio <= 2)
    speed = _median([d["naive"]["estimated_seconds"] / d["import"]["seconds"]
                     for d in days if d.get("naive")])
    add("faster than naive whole-record DeepDiff (extrapolated)", "≥ 30x", speed,
        f"{speed:,.0f}x (median of {len(days)} days)" if speed else "n/a",
        None if speed is None else speed >= 30)
    git = result.get("git")
    db_growth = _median([d["db_growth_bytes"] for d in days])
    if git and days:
        same_db = sum(d["git"]["trialdiff_db_growth_bytes"] for d in days)
        same_git = sum(d["git"]["growth_bytes"] for d in days)
        growth = same_db / same_git if same_git > 0 else None
        scaled = sum(d["git"]["growth_bytes_scaled"] for d in days)
        whole = sum(d["db_growth_bytes"] for d in days)
        add("DB growth per day vs git's packed growth (same studies)", "≤ 1x", growth,
            f"{growth:.2f}x ({same_db / len(days) / 1e6:.2f} MB vs "
            f"{same_git / len(days) / 1e6:.2f} MB a day on git's {git['studies']:,} studies; "
            f"whole registry {whole / scaled:.2f}x vs git scaled)" if growth is not None
            else "n/a", None if growth is None else growth <= 1)
    else:
        add("DB growth per day vs git's packed growth", "≤ 1x", None,
            "git skipped" if db_growth is None else f"{db_growth / 1e6:.1f} MB a day (git skipped)",
            None)
    recent = result.get("recent", {})
    ms = recent.get("in_process_ms")
    add("Recent Field Changes query, in-process", "≤ 5 ms", ms,
        f"{ms:.2f} ms" if ms is not None else "n/a", None if ms is None else ms <= 5)
    ms = recent.get("process_ms")
    add("`trialdiff recent` as a process", "≤ 250 ms", ms,
        f"{ms:.0f} ms" if ms is not None else "n/a", None if ms is None else ms <= 250)
    rss = max(d["import"]["peak_rss_mb"] for d in result["days"])
    add("peak RSS of any import (bootstrap included)", "≤ 300 MB", rss, f"{rss:.0f} MB",
        rss <= 300)
    studies = result["config"]["studies"]
    minutes = boot["import"]["seconds"] * FULL_REGISTRY / studies / 60
    scaled = f" (extrapolated linearly from {studies:,})" if studies != FULL_REGISTRY else ""
    add(f"bootstrap of {FULL_REGISTRY:,} studies", "≤ 15 min", minutes,
        f"{minutes:.1f} min{scaled}", minutes <= 15)
    return rows


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def markdown(result: dict[str, Any]) -> str:
    """Return the run as RESULTS.md."""
    cfg, m = result["config"], result["machine"]
    lines = [
        "# trialdiff registry-scale benchmark: results", "",
        f"Run {m['date_utc']} with `{result['command']}`.", "",
        f"- **Workload:** {cfg['studies']:,} studies, {cfg['days']} daily observations after the "
        f"bootstrap, edit share {cfg['edit_share']:.2%}, results share {cfg['results_share']:.0%},"
        f" seed {cfg['seed']}; every record re-stamped (versionHolder) every day; "
        f"{result['mean_record_bytes']:,.0f} bytes per record on average (compact JSON).",
        f"- **Machine:** {m['nproc']} cores, {m['cpu']}, {m['ram_gb']} GB RAM, Python "
        f"{m['python']}, SQLite {m['sqlite']}, {m['git']}, {m['platform']} (shared and noisy: "
        "compare ratios within this run, not absolute numbers across runs).",
        f"- **Code:** trialdiff {m['trialdiff']} at {m['commit']}"
        + (f" with {m['dirty_files']} uncommitted file(s) under trialdiff/" if m["dirty_files"]
           else "") + f", frozen for the run as a copy with sha256 {m.get('code_sha256', '?')}"
        f" (of its .py files); deepdiff {m['deepdiff']}.", "",
        "## Targets", "", "| target | goal | measured | pass |", "|---|---|---|---|",
    ]
    for row in result["targets"]:
        mark = {True: "yes", False: "**no**", None: "-"}[row["pass"]]
        lines.append(f"| {row['target']} | {row['goal']} | {row['measured']} | {mark} |")
    lines += [
        "", "## Per day", "",
        "Seconds are wall time of a whole process (start included) unless noted; the floor is "
        "the faster of two runs (before and after the import). Naive DeepDiff is an "
        "**extrapolation** from a sample (see below).", "",
        "| day | date | edited | floor s | import s | import/floor | import peak RSS MB | "
        "DB MB | DB growth MB | naive DeepDiff s (est.) | naive/import | git add+commit s | "
        "git gc s | .git MB | .git growth MB (scaled to N) | trialdiff growth MB, git's studies |",
        "|" + "---|" * 16,
    ]
    for d in result["days"]:
        naive = d.get("naive") or {}
        g = d.get("git") or {}
        est = naive.get("estimated_seconds")
        lines.append(
            f"| {d['day']} | {d['date']} | {d['edited']:,} | {d['floor_seconds']:.1f} | "
            f"{d['import']['seconds']:.1f} | {d['import']['seconds'] / d['floor_seconds']:.2f} | "
            f"{d['import']['peak_rss_mb']:.0f} | {_mb(d['db_bytes'])} | "
            f"{_mb(d.get('db_growth_bytes'))} | {_s(est)} | "
            f"{_s(est / d['import']['seconds']) if est else '-'} | "
            f"{_s(g['add']['seconds'] + g['commit']['seconds']) if g else '-'} | "
            f"{_s(g['gc']['seconds']) if g else '-'} | {_mb(g.get('packed_bytes'))} | "
            f"{_mb(g.get('growth_bytes'))} ({_mb(g.get('growth_bytes_scaled'))}) | "
            f"{_mb(g.get('trialdiff_db_growth_bytes'))} |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    lines += ["", "Machine-readable: `benchmarks/results.json`.", ""]
    return "\n".join(lines)


def write(result: dict[str, Any], folder: Path) -> None:
    """Write RESULTS.md and results.json next to the benchmark."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / "RESULTS.md").write_text(markdown(result))


def table(result: dict[str, Any]) -> str:
    """Return the targets as a plain table for the terminal."""
    width = max(len(r["target"]) for r in result["targets"])
    out = []
    for r in result["targets"]:
        mark = {True: "PASS", False: "FAIL", None: "  - "}[r["pass"]]
        out.append(f"{mark}  {r['target']:<{width}}  {r['goal']:>9}  {r['measured']}")
    return "\n".join(out)
