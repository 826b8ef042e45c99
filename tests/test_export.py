"""The changelog export: five formats, the same changes, in order, streamed from the database."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from conftest import ATOM, real_changes, run
from oracles import from_csv

from trialdiff import export
from trialdiff.atom import FEED_EPOCH
from trialdiff.export import feed_subject, records, to_atom, to_csv, to_json, to_markdown, to_ndjson
from trialdiff.jsoncsv import CSV_COLUMNS


def test_json_ndjson_and_csv_carry_the_same_changes() -> None:
    expected = records(real_changes())
    assert len(expected) == len(real_changes()) == 528
    assert json.loads(to_json(real_changes())) == expected
    assert [json.loads(line) for line in to_ndjson(real_changes()).splitlines()] == expected
    assert from_csv(to_csv(real_changes())) == [{k: item[k] for k in CSV_COLUMNS}
                                                for item in expected]


def test_every_change_carries_facts_and_severity() -> None:
    by_path = {item["path"]: item for item in records(real_changes())}
    assert by_path["status.overallStatus"]["severity"] == "major"
    assert by_path["status.overallStatus"]["facts"]["status"]["to"] == "RECRUITING"
    assert by_path["status.completionDate"]["facts"]["date"]["days"] == 245
    assert {item["severity"] for item in by_path.values()} == {"major", "minor", "info"}


def test_output_is_deterministic_whatever_the_input_order() -> None:
    shuffled = list(real_changes())
    random.Random(4).shuffle(shuffled)
    for render in (to_json, to_ndjson, to_csv, to_markdown, to_atom):
        assert render(shuffled) == render(real_changes())


def test_empty_exports_are_well_formed() -> None:
    assert to_json([]) == "[]\n" and to_ndjson([]) == ""
    assert to_csv([]).startswith('"nct_id"') and from_csv(to_csv([])) == []
    assert "_No field changes._" in to_markdown([])
    feed = ET.fromstring(to_atom([]))
    assert feed.findtext(f"{ATOM}updated") == FEED_EPOCH == "2024-01-01T00:00:00.000Z"
    assert feed.findall(f"{ATOM}entry") == []


def test_the_exporters_table_is_where_every_format_choice_comes_from() -> None:
    import click

    from trialdiff.cli import cli

    assert export.CHANGELOG_FORMATS == ("json", "ndjson", "csv", "md", "atom")
    assert export.REPORT_FORMATS == ("text", "json", "md")
    assert {e.suffix for e in export.EXPORTERS.values()} == {
        ".txt", ".json", ".ndjson", ".csv", ".md", ".atom"}
    assert export.EXPORTERS["atom"].media_type == "application/atom+xml"
    for command, formats in (("changes", export.CHANGELOG_FORMATS),
                             ("diff", export.REPORT_FORMATS)):
        option = next(p for p in cli.commands[command].params if p.name == "fmt")
        assert isinstance(option.type, click.Choice)
        assert tuple(option.type.choices) == formats
    with pytest.raises(ValueError, match="not a changelog format"):
        export.stream_export("text", lambda order: [])


def _exports_benchmark() -> Any:
    """Load benchmarks/exports.py, which builds the database of copied real changes."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("exports_benchmark",
                                                  ROOT / "benchmarks" / "exports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def growing_databases(tmp_path_factory: Any) -> tuple[Any, dict[int, Any]]:
    """Return the benchmark module and databases of ~1,000 and ~6,000 copied real changes."""
    bench = _exports_benchmark()
    folder = tmp_path_factory.mktemp("growing")
    databases = {}
    for count in (1_000, 6_000):
        databases[count] = folder / f"{count}.db"
        assert bench.build_database(databases[count], count) >= count
    return bench, databases


@pytest.mark.parametrize("fmt", ["json", "md"])
def test_export_memory_stays_flat_as_the_changelog_grows(
        tmp_path: Any, growing_databases: tuple[Any, dict[int, Any]], fmt: str) -> None:
    # The sample archive's 528 real changes copied to 1,056 and 6,336: the in-memory JSON
    # export took 36 MB and 97 MB (ratio 2.7); streamed, 29 MB and 30 MB.
    bench, databases = growing_databases
    rss = {count: bench.export_rss(db, fmt, tmp_path)[0] for count, db in databases.items()}
    assert rss[6_000] < rss[1_000] * 1.2, rss
    text = (tmp_path / f"out.{fmt}").read_text(encoding="utf-8")
    if fmt == "json":
        assert len(json.loads(text)) >= 6_000
    else:
        assert text.count("\n- `") >= 6_000


def _import_sample(tmp_path: Any, bend: Any = None) -> str:
    """Import the quickstart archive (its 2025 NCT05827016 record bent by `bend`) via the CLI."""
    import shutil

    from conftest import SAMPLE

    archive = tmp_path / "archive"
    shutil.copytree(SAMPLE, archive)
    if bend is not None:
        path = archive / "2025-07-07" / "NCT05827016.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        bend(record["protocolSection"])
        path.write_text(json.dumps(record), encoding="utf-8")
    db = str(tmp_path / "t.db")
    assert run(db, "import", str(archive))[0] == 0
    return db


@pytest.mark.parametrize("odd", [["COMPLETED", "RECRUITING"], {"x": 1}, "R" * 100_000])
def test_an_odd_status_is_stored_checked_and_served_by_every_read_path(
        tmp_path: Any, odd: Any) -> None:
    def bend(section: dict[str, Any]) -> None:
        section["statusModule"]["overallStatus"] = odd

    db = _import_sample(tmp_path, bend)
    code, out, _ = run(db, "check")
    assert code == 0 and "; 0 problems" in out
    for fmt in ("json", "ndjson", "csv", "md", "atom"):
        code, out, _ = run(db, "changes", "--format", fmt)
        assert code == 0 and "status.overallStatus" in out, out
    status = [c for c in json.loads(run(db, "changes")[1])
              if c["path"] == "status.overallStatus"]
    assert status[0]["new"] == odd
    assert (status[0]["facts"] == {}) == (not isinstance(odd, str))  # a huge string is a word
    assert status[0]["severity"] == "major"  # rule 2: the overall status changed
    for fmt in ("text", "md", "json"):
        code, out, err = run(db, "diff", "NCT05827016", "--format", fmt)
        assert code == 0 and err == "", out


def test_an_empty_feed_is_dated_by_the_last_observation(tmp_path: Any) -> None:
    db = _import_sample(tmp_path)
    feed = ET.fromstring(run(db, "changes", "--format", "atom", "--path", "nothing.here")[1])
    assert feed.findall(f"{ATOM}entry") == []
    assert feed.findtext(f"{ATOM}updated") == "2025-07-07T00:00:00.000Z"  # the archive's last day
    full = ET.fromstring(run(db, "changes", "--format", "atom")[1])
    assert full.findtext(f"{ATOM}updated") == max(
        e.findtext(f"{ATOM}updated", "") for e in full.findall(f"{ATOM}entry"))


def test_a_reader_that_stops_early_ends_the_stream_quietly(tmp_path: Any) -> None:
    # `trialdiff changes | head`: the 528 real changes (~400 KB) outgrow the pipe's buffer.
    import subprocess
    import sys

    db = _import_sample(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "trialdiff", "--db", db, "changes",
                                "--format", "ndjson"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(100).startswith(b'{"detail"')
    process.stdout.close()
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""


@pytest.mark.parametrize("filters", [
    ("--kind", "removed"),
    ("--min-severity", "minor"),
    ("--path", 'locations."azienda ospedaliera universitaria ""federico ii"""|naples||italy'),
    ("--path", "locations", "--kind", "added"),
])
def test_a_filtered_export_carries_the_facts_stored_with_each_change(
    db_path: str, filters: tuple[str, ...]
) -> None:
    import sqlite3

    from conftest import SAMPLE

    import trialdiff

    assert run(db_path, "import", str(SAMPLE))[0] == 0
    stored = {(nct, path): json.loads(facts) for nct, path, facts in sqlite3.connect(
        db_path).execute("select nct_id, path, facts from changes")}
    code, out, err = run(db_path, "changes", *filters)
    assert (code, err) == (0, "")
    exported = json.loads(out)
    # A site's `sites` counts its observation's sites, whatever the filter keeps of them.
    assert exported and all(c["facts"] == stored[(c["nct_id"], c["path"])] for c in exported)
    assert any("sites" in c["facts"] for c in exported) or "--min-severity" in filters
    given = dict(zip(filters[::2], filters[1::2], strict=True))
    assert "--kind" not in given or {c["kind"] for c in exported} == {given["--kind"]}
    with trialdiff.open(db_path) as tracker:  # the library reads the same
        assert [c.to_dict() for c in tracker.changes(
            kinds=given.get("--kind"), min_severity=given.get("--min-severity"),
            path=given.get("--path"))] == exported


def test_whole_observations_widens_only_what_cuts_an_observations_sites() -> None:
    from trialdiff.query import ChangeFilter

    plain = ChangeFilter(("NCT05827016",), path_prefixes=("status",))
    assert export.whole_observations(plain) == (plain, None)
    assert export.whole_observations(ChangeFilter(path_prefixes=("locations",))) == (
        ChangeFilter(path_prefixes=("locations",)), None)
    where, keep = export.whole_observations(ChangeFilter(path_prefixes=("locations.a|b||c",),
                                                         kinds=("added",)))
    assert where == ChangeFilter(path_prefixes=("locations",)) and keep is not None
    site = real_changes()[0]
    assert not keep(site) or (site.kind == "added" and site.path.startswith("locations.a|b"))
    # Several prefixes, one inside the sites: the sites are read whole, the rest as given.
    where, keep = export.whole_observations(ChangeFilter(path_prefixes=("status",
                                                                         "locations.a")))
    assert where == ChangeFilter(path_prefixes=("status", "locations")) and keep is not None


def test_repeated_paths_export_any_of_them_as_the_library_does(db_path: str) -> None:
    # A probe's `--path status --path design` kept only the last one: 3 rows of 24.
    from conftest import SAMPLE

    import trialdiff

    assert run(db_path, "import", str(SAMPLE))[0] == 0
    prefixes = ("status", "references", "locations")  # the sites: their observations whole
    code, out, _ = run(db_path, "changes", *(f"--path={p}" for p in prefixes),
                       "--kind", "changed", "--kind", "added", "--format", "json")
    exported = json.loads(out)
    assert code == 0 and {c["path"].split(".")[0] for c in exported} == set(prefixes)
    alone = [json.loads(run(db_path, "changes", "--path", p, "--kind", "changed", "--kind",
                            "added", "--format", "json")[1]) for p in prefixes]
    assert sorted(map(json.dumps, exported)) == sorted(json.dumps(c) for a in alone for c in a)
    with trialdiff.open(db_path) as tracker:
        assert [c.to_dict() for c in tracker.changes(path=prefixes, kinds=["changed", "added"])
                ] == exported



def test_feed_subject_names_what_a_filter_keeps_but_not_its_window() -> None:
    assert feed_subject() == ("", "")
    assert feed_subject(["NCT06060392", "NCT05827016"], ["status"], ["removed", "added"],
                        "major") == (
        "kind=added,removed&min_severity=major&nct_id=NCT05827016,NCT06060392&path=status",
        "kind=added,removed&min_severity=major&path=status")
    many = [f"NCT{n:08d}" for n in range(40)]
    feed, entries = feed_subject(many, ["locations"])
    assert feed.startswith("filter=sha256-") and len(feed) == 30 and entries == "path=locations"
    assert feed_subject(list(reversed(many)), ["locations"])[0] == feed
    assert feed_subject(paths=["status", "design"])[1] == "path=design,status"
    # A probe: the same feed asked twice over, or as `status.`, had other ids, and so had its
    # entries, which a reader then showed as new.
    assert feed_subject(["NCT05827016", "NCT06060392", "NCT05827016"], ["status", "status."],
                        ["added", "added"]) == feed_subject(
        ["NCT05827016", "NCT06060392"], ["status"], ["added"])


def test_a_filtered_atom_feed_and_its_entries_have_ids_of_their_own(db_path: str) -> None:
    # Two feeds of one database under two filters are two feeds: a reader subscribed to both
    # must not take one's entry for the other's, which holds other changes of that study-day.
    from conftest import SAMPLE

    assert run(db_path, "import", "--summary", str(SAMPLE))[0] == 0

    def ids(*args: str) -> list[str]:
        code, out, err = run(db_path, "changes", "--format", "atom", *args)
        assert (code, err) == (0, "")
        root = ET.fromstring(out)
        return [e.text or "" for e in root.iter("{http://www.w3.org/2005/Atom}id")]

    every, major = ids(), ids("--min-severity", "major", "--days", "3650",
                              "--as-of", "2025-07-08")
    assert every[0] == "tag:trialdiff,2024:changes"  # unfiltered: the ids it always had
    assert every[1] == "tag:trialdiff,2024:NCT05827016/2025-07-07"
    assert major[0] == "tag:trialdiff,2024:changes?min_severity=major"  # the window: no part
    assert major[1:] and all(i.endswith("?min_severity=major") for i in major[1:])
    assert not set(every) & set(major)
    one = ids("NCT05827016")
    assert one[0] == "tag:trialdiff,2024:changes?nct_id=NCT05827016"
    assert set(one[1:]) <= set(every)  # an id filter picks entries, and leaves them whole


@pytest.mark.parametrize("form", ["md", "atom"])
def test_an_export_asks_for_each_title_never_for_how_many_studies_have_one(
    db_path: str, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    # `titles or {}` took the mapping's truth, its len(): a count of the whole studies table
    # for each study-day, which made a probe's 30,000-study export quadratic (52 s for md).
    from conftest import SAMPLE

    from trialdiff.query import StudyTitles

    assert run(db_path, "import", str(SAMPLE))[0] == 0
    counted: list[int] = []
    monkeypatch.setattr(StudyTitles, "__len__", lambda self: counted.append(1) or 0)
    code, out, _ = run(db_path, "changes", "--format", form)
    assert code == 0 and "Iberdomide Maintenance" in out  # a title, read one study at a time
    assert counted == []
