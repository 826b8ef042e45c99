"""Deterministic registry-scale workload for the trialdiff benchmark (issue 5).

Clones the real API v2 records into a registry of N studies (NCT90000000 upwards, nctId
rewritten, titles, dates, enrollment and sites perturbed so no two clones are byte-identical),
then writes day 0 and D daily observations, each from the one before:

- `WORK/day-NN/shard-NNNN.ndjson`: the day as compact NDJSON shards (what trialdiff and the
  floor read); `WORK/manifest-NN.json`: its date and which studies were edited how;
- for git, one indented file per study in a working tree (1,000 files a folder), and the same
  studies as `WORK/subset-NN.ndjson`.

Every day re-stamps every record's versionHolder and gives `--edit-share` of the studies
real-looking edits (status moves, date slips, sites, outcome text, results posted). Everything
depends only on the seed, N and the day number, never on the clock. See README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson


def find_real_dir() -> Path:
    """Return shared/ctgov-real/v2 from the nearest parent folder that has it (any checkout)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "ctgov-real" / "v2"
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "shared" / "ctgov-real" / "v2"  # absent: --real must say where


REAL_DIR = find_real_dir()
START = date(2026, 1, 5)  # day 0; fixed so the workload never depends on the clock
Study = dict[str, Any]

ACTIVE = ("RECRUITING", "ENROLLING_BY_INVITATION", "ACTIVE_NOT_RECRUITING", "NOT_YET_RECRUITING")
WHY_STOPPED = (
    "Sponsor decision", "Slow accrual", "Funding withdrawn by the sponsor",
    "Study terminated early due to low enrollment", "Business reasons, not safety related",
    "The PI left the institution", "Futility at the planned interim analysis",
)
TITLE_SUFFIXES = (
    "", "", "", " in Adults", " (Extension)", " - Part B", " in Adolescents and Adults",
    " With Long-term Follow-up", " (Pilot)", " in Routine Care",
)
OUTCOME_NOTES = (
    " Assessed at each scheduled visit.", " Measured by a blinded central reader.",
    " Per protocol amendment 3.", " Including unscheduled visits.",
)
EDIT_KINDS = ("status", "dates", "sites", "outcomes", "results")
EDIT_WEIGHTS = (0.25, 0.25, 0.2, 0.15, 0.15)


def day_date(day: int) -> date:
    """Return the observation date of a day number."""
    return START + timedelta(days=day)


def nct(index: int) -> str:
    """Return the NCT id of the study with this index."""
    return f"NCT9{index:07d}"


def git_path(index: int) -> str:
    """Return a study's file inside the git working tree (1,000 files a folder)."""
    ident = nct(index)
    return f"studies/{ident[:-3]}xxx/{ident}.json"


def shift_date(text: str, days: int) -> str:
    """Shift a registry date (YYYY-MM-DD or YYYY-MM) by days, keeping its format."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return (date.fromisoformat(text) + timedelta(days=days)).isoformat()
    if re.fullmatch(r"\d{4}-\d{2}", text):
        year, month = int(text[:4]), int(text[5:7]) - 1 + round(days / 30.4)
        return f"{year + month // 12:04d}-{month % 12 + 1:02d}"
    return text


def _get(study: Study, *keys: str) -> Any:
    """Return a nested value, creating dicts on the way (for edits)."""
    node: Any = study
    for key in keys:
        node = node.setdefault(key, {})
    return node


@dataclass
class Templates:
    """The real records, kept as compact JSON bytes (parsed anew for each clone)."""

    plain: list[bytes] = field(default_factory=list)
    with_results: list[bytes] = field(default_factory=list)
    results_sections: list[bytes] = field(default_factory=list)
    sites: list[bytes] = field(default_factory=list)

    @classmethod
    def load(cls, real_dir: Path) -> Templates:
        """Read every real record once."""
        out = cls()
        for path in sorted(real_dir.glob("*.json")):
            study = orjson.loads(path.read_bytes())
            raw = orjson.dumps(study)
            if "resultsSection" in study:
                out.with_results.append(raw)
                out.results_sections.append(orjson.dumps(study["resultsSection"]))
            else:
                out.plain.append(raw)
            locations = study["protocolSection"].get("contactsLocationsModule", {})
            for site in locations.get("locations", [])[:5]:
                out.sites.append(orjson.dumps(site))
        if not out.plain or not out.with_results:
            raise SystemExit(f"{real_dir}: need real records with and without results")
        return out


@dataclass(frozen=True)
class Config:
    """What the workload is: its size, its edit rate and where it goes."""

    studies: int = 600_000
    days: int = 3
    edit_share: float = 0.005
    results_share: float = 0.10  # share of the registry with posted results (CT.gov: ~11%)
    shard_size: int = 10_000
    seed: int = 5
    work: Path = Path("benchmarks/work")

    def day_dir(self, day: int) -> Path:
        """Return the folder of a day's NDJSON shards."""
        return self.work / f"day-{day:02d}"

    def manifest(self, day: int) -> Path:
        """Return the file that says what a day edited."""
        return self.work / f"manifest-{day:02d}.json"

    def subset(self, day: int) -> Path:
        """Return the NDJSON of the studies git covers, for trialdiff on the same studies."""
        return self.work / f"subset-{day:02d}.ndjson"


class Workload:
    """Writes the registry's days one at a time, each from the one before."""

    def __init__(self, config: Config, templates: Templates) -> None:
        self.config = config
        self.templates = templates

    def rng(self, *parts: int) -> random.Random:
        """Return a generator seeded by the config's seed and the given numbers."""
        seed = self.config.seed
        for part in parts:
            seed = seed * 1_000_003 + part
        return random.Random(seed)

    # --- day 0: clone and perturb -----------------------------------------------------------

    def draw_template(self, rng: random.Random) -> tuple[bool, int]:
        """Draw the real record a clone copies: (from the pool with results, its position)."""
        with_results = rng.random() < self.config.results_share
        pool = self.templates.with_results if with_results else self.templates.plain
        return with_results, rng.randrange(len(pool))

    def clone(self, index: int) -> Study:
        """Return study `index` of day 0: a perturbed copy of a real record."""
        rng = self.rng(0, index)
        with_results, position = self.draw_template(rng)
        pool = self.templates.with_results if with_results else self.templates.plain
        study: Study = orjson.loads(pool[position])
        protocol = study["protocolSection"]
        ident = protocol["identificationModule"]
        ident["nctId"] = nct(index)
        ident.pop("nctIdAliases", None)
        org = ident.setdefault("orgStudyIdInfo", {})
        org["id"] = f"{org.get('id', 'STUDY')}-{index % 9973:04d}"
        suffix = rng.choice(TITLE_SUFFIXES)
        for key in ("briefTitle", "officialTitle"):
            if isinstance(ident.get(key), str):
                ident[key] += suffix
        shift = rng.randint(-400, 30)
        status = protocol.get("statusModule", {})
        for value in status.values():
            if isinstance(value, dict) and isinstance(value.get("date"), str):
                value["date"] = shift_date(value["date"], shift)
        for key in ("studyFirstSubmitDate", "studyFirstSubmitQcDate", "lastUpdateSubmitDate"):
            if isinstance(status.get(key), str):
                status[key] = shift_date(status[key], shift)
        enrollment = protocol.get("designModule", {}).get("enrollmentInfo", {})
        if isinstance(enrollment.get("count"), int):
            enrollment["count"] = max(1, round(enrollment["count"] * rng.uniform(0.7, 1.3)))
        sites = protocol.get("contactsLocationsModule", {}).get("locations")
        if isinstance(sites, list) and len(sites) > 1:
            kept = [s for s in sites if rng.random() > 0.1] or sites[:1]
            protocol["contactsLocationsModule"]["locations"] = kept
        _get(study, "derivedSection", "miscInfoModule")["versionHolder"] = day_date(0).isoformat()
        return study

    # --- days 1..D: re-stamp everything, edit a share ----------------------------------------

    def edited(self, day: int) -> list[int]:
        """Return the indexes of the studies a day edits."""
        count = max(1, round(self.config.studies * self.config.edit_share))
        return sorted(self.rng(1, day).sample(range(self.config.studies), count))

    def edit(self, study: Study, index: int, day: int) -> list[str]:
        """Apply one or two real-looking edits to a study; return what was done."""
        rng = self.rng(2, day, index)
        kinds = rng.choices(EDIT_KINDS, EDIT_WEIGHTS, k=1 + (rng.random() < 0.3))
        done: list[str] = []
        when = day_date(day)
        for kind in dict.fromkeys(kinds):
            done.append(EDITORS[kind](self, study, rng, when))
        status = _get(study, "protocolSection", "statusModule")
        status["lastUpdatePostDateStruct"] = {"date": when.isoformat(), "type": "ACTUAL"}
        status["lastUpdateSubmitDate"] = (when - timedelta(days=1)).isoformat()
        return done

    def _status(self, study: Study, rng: random.Random, when: date) -> str:
        status = _get(study, "protocolSection", "statusModule")
        current = status.get("overallStatus")
        if current not in ACTIVE:
            return self._dates(study, rng, when)
        if current == "NOT_YET_RECRUITING":
            new = rng.choice(("RECRUITING", "RECRUITING", "WITHDRAWN"))
        elif current == "ACTIVE_NOT_RECRUITING":
            new = rng.choice(("COMPLETED", "COMPLETED", "TERMINATED"))
        else:
            new = rng.choice(("ACTIVE_NOT_RECRUITING", "COMPLETED", "TERMINATED"))
        status["overallStatus"] = new
        status["statusVerifiedDate"] = when.isoformat()[:7]
        if new in ("TERMINATED", "WITHDRAWN"):
            status["whyStopped"] = rng.choice(WHY_STOPPED)
        if new in ("COMPLETED", "TERMINATED"):
            for key in ("primaryCompletionDateStruct", "completionDateStruct"):
                status[key] = {"date": when.isoformat(), "type": "ACTUAL"}
            enrollment = _get(study, "protocolSection", "designModule", "enrollmentInfo")
            if isinstance(enrollment.get("count"), int):
                enrollment["count"] = max(1, round(enrollment["count"] * rng.uniform(0.5, 1.0)))
            enrollment["type"] = "ACTUAL"
        return f"status:{current}->{new}"

    def _dates(self, study: Study, rng: random.Random, when: date) -> str:
        status = _get(study, "protocolSection", "statusModule")
        slip = rng.choice((30, 61, 92, 183, 365, rng.randint(7, 400)))
        for key in ("primaryCompletionDateStruct", "completionDateStruct"):
            struct = status.get(key)
            if not isinstance(struct, dict) or not isinstance(struct.get("date"), str):
                status[key] = struct = {"date": when.isoformat(), "type": "ESTIMATED"}
            if struct.get("type") == "ESTIMATED" and rng.random() < 0.2:
                struct.update(date=when.isoformat(), type="ACTUAL")
            else:
                struct["date"] = shift_date(struct["date"], slip)
        return f"dates:+{slip}d"

    def _sites(self, study: Study, rng: random.Random, when: date) -> str:
        module = _get(study, "protocolSection", "contactsLocationsModule")
        sites = module.setdefault("locations", [])
        action = rng.choice(("open", "close", "status")) if sites else "open"
        if action == "open":
            site = orjson.loads(rng.choice(self.templates.sites))
            site["facility"] = f"{site.get('facility', 'Site')} - Site {rng.randint(100, 999)}"
            site["status"] = "RECRUITING"
            sites.append(site)
        elif action == "close":
            sites.pop(rng.randrange(len(sites)))
        else:
            site = sites[rng.randrange(len(sites))]
            site["status"] = {"RECRUITING": "ACTIVE_NOT_RECRUITING"}.get(
                site.get("status", ""), rng.choice(("RECRUITING", "COMPLETED", "WITHDRAWN")))
        return f"sites:{action}"

    def _outcomes(self, study: Study, rng: random.Random, when: date) -> str:
        module = _get(study, "protocolSection", "outcomesModule")
        which = rng.choice(("primaryOutcomes", "secondaryOutcomes"))
        items = module.get(which) or module.setdefault("primaryOutcomes", [])
        if not items:
            items.append({"measure": "Overall survival", "timeFrame": "Up to 5 years"})
        item = items[rng.randrange(len(items))]
        if rng.random() < 0.5 and isinstance(item.get("timeFrame"), str):
            number = re.search(r"\d+", item["timeFrame"])
            item["timeFrame"] = (item["timeFrame"].replace(number.group(), str(
                int(number.group()) + rng.randint(1, 12)), 1) if number
                else item["timeFrame"] + ", up to 24 months")
            return "outcomes:timeFrame"
        item["description"] = str(item.get("description", "")) + rng.choice(OUTCOME_NOTES)
        return "outcomes:description"

    def _results(self, study: Study, rng: random.Random, when: date) -> str:
        if study.get("hasResults"):
            return self._outcomes(study, rng, when)
        study["hasResults"] = True
        study["resultsSection"] = orjson.loads(self.posted_results(rng))
        status = _get(study, "protocolSection", "statusModule")
        status["resultsFirstSubmitDate"] = (when - timedelta(days=20)).isoformat()
        status["resultsFirstPostDateStruct"] = {"date": when.isoformat(), "type": "ACTUAL"}
        if status.get("overallStatus") in ACTIVE:
            status["overallStatus"] = "COMPLETED"
        # keep the study's order of top-level keys as the API writes it
        study["derivedSection"] = study.pop("derivedSection", {})
        study["hasResults"] = study.pop("hasResults")
        return "results:posted"

    def posted_results(self, rng: random.Random) -> bytes:
        """Return the results section a posting adds: a real one, drawn at random."""
        return rng.choice(self.templates.results_sections)

    # --- writing ----------------------------------------------------------------------------

    def lines(self, day: int) -> Iterator[tuple[int, bytes, list[str] | None]]:
        """Yield (index, compact JSON line, edits or None) for every study of a day."""
        if day == 0:
            for index in range(self.config.studies):
                yield index, orjson.dumps(self.clone(index)), None
            return
        edited = set(self.edited(day))
        old = f'"versionHolder":"{day_date(day - 1).isoformat()}"'.encode()
        new = f'"versionHolder":"{day_date(day).isoformat()}"'.encode()
        index = 0
        for shard in sorted(self.config.day_dir(day - 1).glob("shard-*.ndjson")):
            with shard.open("rb") as stream:
                for raw in stream:
                    line = raw.rstrip(b"\n")
                    if index in edited:
                        study = orjson.loads(line)
                        done = self.edit(study, index, day)
                        _get(study, "derivedSection", "miscInfoModule")["versionHolder"] = (
                            day_date(day).isoformat())
                        yield index, orjson.dumps(study), done
                    else:
                        if old not in line:
                            raise ValueError(f"{nct(index)}: no versionHolder of the day before")
                        yield index, line.replace(old, new, 1), None
                    index += 1
        if index != self.config.studies:
            raise ValueError(f"day {day - 1} holds {index} studies, not {self.config.studies}")

    def write_day(
        self, day: int, git_tree: Path | None = None, git_studies: int = 0
    ) -> dict[str, Any]:
        """Write a day's shards and manifest (and git's files and subset); return the manifest."""
        folder = self.config.day_dir(day)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        edits: dict[str, list[str]] = {}
        subset = self.config.subset(day).open("wb") if git_tree is not None else None
        out = None
        written = 0
        started = time.perf_counter()
        for index, line, done in self.lines(day):
            if index % self.config.shard_size == 0:
                if out is not None:
                    out.close()
                out = (folder / f"shard-{index // self.config.shard_size:04d}.ndjson").open("wb")
            assert out is not None
            out.write(line + b"\n")
            written += len(line) + 1
            if done is not None:
                edits[nct(index)] = done
            if git_tree is not None and subset is not None and index < git_studies:
                _write_pretty(git_tree / git_path(index), line)
                subset.write(line + b"\n")
        for stream in (out, subset):
            if stream is not None:
                stream.close()
        manifest = {"day": day, "date": day_date(day).isoformat(), "studies": self.config.studies,
                    "bytes": written, "seconds": round(time.perf_counter() - started, 2),
                    "edited": edits}
        self.config.manifest(day).write_text(json.dumps(manifest, indent=1))
        return manifest


_MADE: set[Path] = set()


def _write_pretty(path: Path, line: bytes) -> None:
    """Write a study as a git scraper stores it: indented JSON, one file per study."""
    if path.parent not in _MADE:
        path.parent.mkdir(parents=True, exist_ok=True)
        _MADE.add(path.parent)
    path.write_bytes(orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2) + b"\n")


EDITORS: dict[str, Callable[[Workload, Study, random.Random, date], str]] = {
    "status": Workload._status, "dates": Workload._dates, "sites": Workload._sites,
    "outcomes": Workload._outcomes, "results": Workload._results,
}


def disk_used(path: Path) -> int:
    """Return the bytes of every file under a path."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    """Write a whole workload (every day kept) for inspection or for other tools."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option, kind, default in (
        ("--studies", int, 600_000), ("--days", int, 3), ("--edit-share", float, 0.005),
        ("--results-share", float, 0.10), ("--shard-size", int, 10_000), ("--seed", int, 5),
        ("--work", Path, Path("benchmarks/work")), ("--real", Path, REAL_DIR),
    ):
        parser.add_argument(option, type=kind, default=default)
    parser.add_argument("--git-tree", type=Path, help="also write per-study files here")
    parser.add_argument("--git-studies", type=int, default=0)
    args = parser.parse_args()
    config = Config(args.studies, args.days, args.edit_share, args.results_share,
                    args.shard_size, args.seed, args.work)
    workload = Workload(config, Templates.load(args.real))
    for day in range(args.days + 1):
        manifest = workload.write_day(day, args.git_tree, args.git_studies)
        print(f"day {day} ({manifest['date']}): {manifest['bytes'] / 1e6:,.0f} MB, "
              f"{len(manifest['edited'])} edited, {manifest['seconds']} s")
    print(f"disk used under {config.work}: {disk_used(config.work) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
