"""The changelog export: five formats, the same changes, safe around hostile values."""

from __future__ import annotations

import csv
import io
import json
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from conftest import run, sample_changes
from markdown_it import MarkdownIt
from oracles import from_csv

from trialdiff import export
from trialdiff.atom import FEED_EPOCH, xml_safe
from trialdiff.export import records, to_atom, to_csv, to_json, to_markdown, to_ndjson
from trialdiff.jsoncsv import CSV_COLUMNS
from trialdiff.markdown import md_code
from trialdiff.model import FieldChange
from trialdiff.present import visible

A = "{http://www.w3.org/2005/Atom}"
DAY1, DAY2 = "2024-06-14T06:00:00.000Z", "2025-07-07T06:00:00.000Z"


REAL = [change for nct_id in ("NCT04642755", "NCT05827016", "NCT06060392")
        for change in sample_changes(nct_id, DAY1, DAY2)]
HOSTILE_TEXT = "a `tick` ``` | pipe\n# heading\r\n<script>&amp; \x00\x07\x1b[31m\x7f\u2028 end"
# Hand-made: hostile strings in every slot a registry record (or a path) can reach.
HOSTILE = [
    FieldChange("NCT00000001", "identification.briefTitle", "changed", DAY2,
                HOSTILE_TEXT, "=HYPERLINK(\"http://evil\")"),
    FieldChange("NCT00000001", "locations.`x`|<b>&c|\n- item|=1+1", "added", DAY2, None,
                {"facility": "+SUM(A1)", "status": "@cmd", "city": "-2+3"}),
    FieldChange("NCT00000001", "design.enrollmentCount", "changed", DAY2, -5, 10),
    FieldChange("NCT00000001", "description.briefSummary", "changed", DAY2,
                "Patients with `code` and <b>bold</b> & more", "Patients with | pipes\x1b and"
                " <b>bold</b> & more"),
    FieldChange("NCT00000001", "'quoted|path", "removed", DAY2, "\tTAB", None),
]


def test_json_ndjson_and_csv_carry_the_same_changes() -> None:
    expected = records(REAL)
    assert len(expected) == len(REAL) == 528
    assert json.loads(to_json(REAL)) == expected
    assert [json.loads(line) for line in to_ndjson(REAL).splitlines()] == expected
    assert from_csv(to_csv(REAL)) == [{k: item[k] for k in CSV_COLUMNS}
                                      for item in expected]


def test_every_change_carries_facts_and_severity() -> None:
    by_path = {item["path"]: item for item in records(REAL)}
    assert by_path["status.overallStatus"]["severity"] == "major"
    assert by_path["status.overallStatus"]["facts"]["status"]["to"] == "RECRUITING"
    assert by_path["status.completionDate"]["facts"]["date"]["days"] == 245
    assert {item["severity"] for item in by_path.values()} == {"major", "minor", "info"}


def test_output_is_deterministic_whatever_the_input_order() -> None:
    shuffled = REAL[:]
    random.Random(4).shuffle(shuffled)
    for render in (to_json, to_ndjson, to_csv, to_markdown, to_atom):
        assert render(shuffled) == render(REAL)


def test_csv_header_and_columns() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(REAL), newline="")))
    assert rows[0] == ["nct_id", "path", "kind", "detected_at", "old", "new", "severity",
                       "facts"]
    status = next(r for r in rows if r[1] == "status.overallStatus")
    assert status[4:6] == ['"NOT_YET_RECRUITING"', '"RECRUITING"']
    added = next(r for r in rows[1:] if r[2] == "added")
    assert added[4] == ""  # absent old value: an empty cell


def test_csv_cells_never_start_a_formula_and_round_trip() -> None:
    text = to_csv(HOSTILE)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'-5" in cells  # a negative number is JSON text that starts with '-'
    assert "''quoted|path" in cells  # a leading quote is escaped too, so reading is exact
    assert from_csv(text) == [{k: item[k] for k in CSV_COLUMNS}
                              for item in records(HOSTILE)]


def test_json_keeps_hostile_values_exactly() -> None:
    parsed = json.loads(to_json(HOSTILE))
    title = next(p for p in parsed if p["path"] == "identification.briefTitle")
    assert title["old"] == HOSTILE_TEXT
    assert {p["path"] for p in parsed} == {c.path for c in HOSTILE}
    assert [json.loads(line) for line in to_ndjson(HOSTILE).splitlines()] == parsed


def _markdown_tokens(text: str) -> list[Any]:
    """Return the block and inline tokens CommonMark (markdown-it) reads from text."""
    tokens = MarkdownIt("commonmark").parse(text)
    return tokens + [child for token in tokens for child in (token.children or [])]


def test_markdown_groups_by_day_then_study_with_every_path() -> None:
    older = FieldChange("NCT06060392", "status.overallStatus", "changed", DAY1, "A", "B")
    text = to_markdown([*REAL, older], titles={"NCT06060392": "Semaglutide & NASH"})
    days = [line for line in text.splitlines() if line.startswith("## ")]
    assert days == ["## 2025-07-07", "## 2024-06-14"]  # newest first
    studies = [line for line in text.splitlines() if line.startswith("### ")]
    assert studies == ["### NCT05827016", "### NCT06060392 \u2014 Semaglutide \\& NASH",
                       "### NCT06060392 \u2014 Semaglutide \\& NASH"]
    items = [t for t in _markdown_tokens(text) if t.type == "list_item_open"]
    assert len(items) == len(REAL) + 1
    spans = {t.content for t in _markdown_tokens(text) if t.type == "code_inline"}
    assert {c.path for c in REAL} <= spans
    assert "sites: 234 added, 230 removed, 48 changed" in text
    assert ("- `status.startDate` \u2014 changed _(minor)_: `2023-06-15 ESTIMATED` \u2192 "
            "`2023-06-22 ACTUAL` \u2014 moved +7 days; estimate became actual") in text


def test_markdown_survives_hostile_values() -> None:
    text = to_markdown(HOSTILE, title="Changes <b> & `x`")
    tokens = _markdown_tokens(text)
    assert [t.type for t in tokens if t.type.startswith("html")] == []
    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h1", "h2", "h3"]
    assert len([t for t in tokens if t.type == "list_item_open"]) == len(HOSTILE)
    spans = [t.content for t in tokens if t.type == "code_inline"]
    assert {visible(c.path) for c in HOSTILE} <= set(spans)
    assert not any(ch in text for ch in "\x00\x07\x1b\x7f\u2028\r")
    assert "\\x1b[31m" in text  # control characters are shown, not run


def test_atom_is_valid_with_one_entry_per_study_per_day() -> None:
    older = FieldChange("NCT06060392", "status.overallStatus", "changed", DAY1, "A", "B")
    feed = ET.fromstring(to_atom([*REAL, older], feed_id="tag:example.org,2026:feed",
                                 title="Changes"))
    assert feed.tag == f"{A}feed"
    assert feed.findtext(f"{A}id") == "tag:example.org,2026:feed"
    assert feed.findtext(f"{A}title") == "Changes"
    assert feed.findtext(f"{A}updated") == DAY2  # the newest change
    assert feed.findtext(f"{A}author/{A}name") == "trialdiff"
    entries = feed.findall(f"{A}entry")
    ids = [e.findtext(f"{A}id") for e in entries]
    assert ids == ["tag:trialdiff,2024:NCT05827016/2025-07-07",
                   "tag:trialdiff,2024:NCT06060392/2025-07-07",
                   "tag:trialdiff,2024:NCT06060392/2024-06-14"]
    for entry in entries:
        nct_id = entry.findtext(f"{A}id", "").split(":")[-1].split("/")[0]
        assert entry.findtext(f"{A}updated")
        assert entry.findtext(f"{A}title", "").startswith(nct_id)
        link = entry.find(f"{A}link")
        assert link is not None and link.get("rel") == "alternate"
        assert link.get("href") == f"https://clinicaltrials.gov/study/{nct_id}"
        content = entry.find(f"{A}content")
        assert content is not None and content.get("type") == "html"
    html = entries[1].findtext(f"{A}content", "")
    assert ("<li><code>status.completionDate</code> \u2014 changed <em>(major)</em>: "
            "<code>2025-03-01 ESTIMATED</code> \u2192 <code>2025-11-01 ESTIMATED</code>"
            " \u2014 moved +245 days</li>") in html
    assert entries[0].findtext(f"{A}title") == (
        "NCT05827016 on 2025-07-07: status NOT_YET_RECRUITING \u2192 RECRUITING; "
        "522 field changes (2 major)")


def test_atom_entry_ids_are_stable_and_updated_follows_the_newest_change() -> None:
    first = ET.fromstring(to_atom(REAL))
    later = FieldChange("NCT06060392", "oversight.hasDmc", "added", "2025-07-07T18:00:00.000Z",
                        None, True)
    second = ET.fromstring(to_atom([*REAL, later]))
    assert [e.findtext(f"{A}id") for e in first.findall(f"{A}entry")] == \
        [e.findtext(f"{A}id") for e in second.findall(f"{A}entry")]
    assert second.findtext(f"{A}updated") == "2025-07-07T18:00:00.000Z"
    assert ET.fromstring(to_atom(REAL, updated="2026-01-01T00:00:00Z")).findtext(
        f"{A}updated") == "2026-01-01T00:00:00Z"


def test_atom_survives_hostile_values() -> None:
    text = to_atom(HOSTILE, title="T\x00itle <&>", titles={"NCT00000001": "Bad\x1b\ud800 title"})
    feed = ET.fromstring(text)  # would raise on a control character or a broken tag
    assert feed.findtext(f"{A}title") == "Title <&>"
    entry = feed.find(f"{A}entry")
    assert entry is not None
    html = entry.findtext(f"{A}content", "")
    assert "&lt;script&gt;&amp;amp;" in html and "<script>" not in html
    assert "<code>locations.`x`|&lt;b&gt;&amp;c|\\x0a- item|=1+1</code>" in html
    assert "\\x1b" in entry.findtext(f"{A}title", "")


def test_xml_safe_drops_only_what_xml_forbids() -> None:
    assert xml_safe("a\x00b\x08c\td\ne\rf\ud800g\ufffeh\U0001f600\x85") == \
        "abc\td\ne\rfgh\U0001f600\x85"


def test_empty_exports_are_well_formed() -> None:
    assert to_json([]) == "[]\n" and to_ndjson([]) == ""
    assert to_csv([]).startswith('"nct_id"') and from_csv(to_csv([])) == []
    assert "_No field changes._" in to_markdown([])
    feed = ET.fromstring(to_atom([]))
    assert feed.findtext(f"{A}updated") == FEED_EPOCH == "2024-01-01T00:00:00.000Z"
    assert feed.findall(f"{A}entry") == []


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


@pytest.mark.parametrize("text", ["`", "``a``", " a", "a ", "`a`", "a\nb", ""])
def test_md_code_spans_hold_any_text(text: str) -> None:
    tokens = _markdown_tokens(f"x {md_code(text)} y")
    spans = [t.content for t in tokens if t.type == "code_inline"]
    assert spans == [visible(text) or " "]


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
    assert feed.findall(f"{A}entry") == []
    assert feed.findtext(f"{A}updated") == "2025-07-07T00:00:00.000Z"  # the archive's last day
    full = ET.fromstring(run(db, "changes", "--format", "atom")[1])
    assert full.findtext(f"{A}updated") == max(
        e.findtext(f"{A}updated", "") for e in full.findall(f"{A}entry"))


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
