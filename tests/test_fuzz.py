"""Fuzz the normaliser, the diff and import with real records bent at random places.

The only outcomes allowed: a correct import (the self-check then passes) or a clean per-input
error. Never an exception.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

from conftest import real_records, sample_record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialdiff.check import CheckTotals, check_database
from trialdiff.diff import diff_snapshots
from trialdiff.folders import read_studies
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import FieldChange, Snapshot
from trialdiff.normalize import extract_fields, study_id
from trialdiff.schema import open_db

RECORDS = real_records()[:12]

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["", " ", "\u00a0", "\ud800", "x\x00y", "=cmd", "<b>&amp;</b>"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return every key path inside a record, containers included."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(_paths(child, (*prefix, index)))
    return out


@st.composite
def bent_records(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a real record and a copy with random values put at random places."""
    original = draw(st.sampled_from(RECORDS))
    record = copy.deepcopy(original)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(record)
        if not paths:  # every key was deleted: nothing left to bend
            break
        keys = draw(st.sampled_from(paths))
        node: Any = record
        for key in keys[:-1]:
            node = node[key]
        if draw(st.booleans()) and isinstance(node, dict):
            del node[keys[-1]]
        else:
            node[keys[-1]] = draw(VALUES)
    return original, record


fuzz = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@fuzz
@given(bent_records())
def test_normaliser_and_diff_take_anything(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, record = pair
    fields = extract_fields(record)
    for path, text in fields.items():
        assert isinstance(path, str) and json.loads(text) is not None
    old = Snapshot("NCT00000000", "2026-01-01T00:00:00.000Z", extract_fields(original))
    new = Snapshot("NCT00000000", "2026-01-02T00:00:00.000Z", fields)
    changes = diff_snapshots(old, new)
    assert {c.path for c in changes} == {
        p for p in old.fields.keys() | fields.keys() if old.fields.get(p) != fields.get(p)
    }
    json.dumps([c.as_dict() for c in changes])  # every change is JSON-serialisable


@fuzz
@given(st.lists(bent_records(), min_size=1, max_size=3))
def test_import_of_bent_records_is_correct_or_a_clean_error(
    tmp_path_factory: Any, pairs: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    folder: Path = tmp_path_factory.mktemp("bent")
    for number, (original, record) in enumerate(pairs):
        (folder / f"a{number}.json").write_text(json.dumps(original), encoding="utf-8")
        (folder / f"b{number}.json").write_bytes(
            json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")
        )
    db_path = str(folder / "fuzz.db")
    db = open_db(db_path)
    totals = RunTotals()
    for name, at in (("a", "2026-01-01T00:00:00.000Z"), ("b", "2026-01-02T00:00:00.000Z")):
        items = list(read_studies(sorted(str(p) for p in folder.glob(f"{name}*.json"))))
        outcomes: list[Any] = []
        save_studies(db, items, at, totals, emit=outcomes.append)
        for outcome in outcomes:
            error = getattr(outcome, "error", None)
            assert error is None or isinstance(error, str)
    bent_ids = {study_id(record) for _, record in pairs}
    assert totals.failed <= len([i for i in bent_ids if i is None]) + len(pairs)
    problems = list(check_database(sqlite3.connect(db_path), CheckTotals()))
    assert problems == []
    db.close()


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(RECORDS), st.data())
def test_reading_mangled_bytes_never_raises(
    tmp_path: Path, record: dict[str, Any], data: st.DataObject
) -> None:
    raw = bytearray(json.dumps(record).encode())
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[at] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=1, max_value=len(raw)))
    path = tmp_path / "mangled.json"
    path.write_bytes(bytes(raw[:cut]))
    for item in read_studies([str(path)]):
        assert (item.study is None) == (item.error is not None)


HOSTILE_TEXT = st.text(
    alphabet=st.sampled_from(list("a `|\n\r\t<>&#*_[]()!\\'\"=+-@\x00\x07\x1b\x7f\u2028\u00a0é"))
    | st.characters(), max_size=30,
)
CHANGES = st.lists(
    st.builds(
        FieldChange,
        nct_id=st.sampled_from(["NCT00000001", "NCT00000002"]),
        path=st.sampled_from(["status.overallStatus", "eligibility.criteria",
                              "outcomes.primary", "design.enrollmentCount"])
        | HOSTILE_TEXT.map(lambda t: "locations." + t),
        kind=st.sampled_from(["added", "removed", "changed"]),
        detected_at=st.sampled_from(["2026-05-11T06:00:00.000Z", "2026-05-12T07:21:49.285Z"]),
        old=st.none() | HOSTILE_TEXT | st.lists(st.fixed_dictionaries({"measure": HOSTILE_TEXT})),
        new=st.none() | HOSTILE_TEXT | st.integers(),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(CHANGES)
def test_renderers_stay_well_formed_with_hostile_strings(changes: list[FieldChange]) -> None:
    import csv
    import io
    import xml.etree.ElementTree as ET

    from markdown_it import MarkdownIt
    from oracles import from_csv

    from trialdiff.export import to_atom, to_csv, to_json, to_markdown

    atom = ET.fromstring(to_atom(changes).encode("utf-8"))
    ns = "{http://www.w3.org/2005/Atom}"
    groups = {(c.nct_id, c.detected_at[:10]) for c in changes}
    assert len(atom.findall(f"{ns}entry")) == len(groups)
    for entry in atom.findall(f"{ns}entry"):
        assert entry.findtext(f"{ns}id", "").startswith("tag:")
        assert entry.find(f"{ns}content") is not None

    text = to_csv(changes)
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == len(changes) + 1 and all(len(r) == len(rows[0]) for r in rows)
    for row in rows[1:]:
        assert not row[0].startswith(("=", "+", "-", "@"))
        assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)
    back = from_csv(text)
    exported = json.loads(to_json(changes))
    assert [(r["path"], r["old"], r["new"]) for r in back] == [
        (e["path"], e["old"], e["new"]) for e in exported]

    tokens = MarkdownIt("commonmark").parse(to_markdown(changes))
    assert [t for t in tokens if t.type.startswith("html")] == []
    assert len([t for t in tokens if t.type == "list_item_open"]) == len(changes)


# A real study's two days, its sites cut to the few named `university of t…` for speed.
SAMPLE_FIELDS = {
    day: {path: text for path, text in extract_fields(sample_record(day, "NCT05827016")).items()
          if not path.startswith("locations.") or path.startswith("locations.university of t")}
    for day in ("2024-06-14", "2025-07-07")
}
TRACKED = sorted(SAMPLE_FIELDS["2024-06-14"].keys() | SAMPLE_FIELDS["2025-07-07"].keys())
HUGE = st.sampled_from(["RECRUITING " * 30_000, "x" * 200_000])


@st.composite
def odd_snapshots(draw: st.DrawFn) -> tuple[Snapshot, Snapshot]:
    """Return the real 2024 and 2025 snapshots of NCT05827016 with fuzz values put in fields."""
    fields = [dict(SAMPLE_FIELDS["2024-06-14"]), dict(SAMPLE_FIELDS["2025-07-07"])]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        side = fields[draw(st.integers(min_value=0, max_value=1))]
        path = draw(st.sampled_from([*TRACKED, "status.overallStatus", "design.enrollmentCount"]))
        value = draw(VALUES | HUGE)
        if value is None:
            side.pop(path, None)
        else:
            side[path] = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return (Snapshot("NCT05827016", "2024-06-14T00:00:00.000Z", fields[0]),
            Snapshot("NCT05827016", "2025-07-07T00:00:00.000Z", fields[1]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_snapshots())
def test_meaning_and_every_presenter_take_any_value(pair: tuple[Snapshot, Snapshot]) -> None:
    # The importer's fuzz values (and huge strings) in any tracked field of a real study: facts,
    # severity, the report (terminal, Markdown, JSON), the five exports and the page section
    # must all render, and each stay well formed.
    import csv
    import io
    import xml.etree.ElementTree as ET
    from io import StringIO

    from rich.console import Console

    from trialdiff.export import to_atom, to_csv, to_json, to_markdown, to_ndjson
    from trialdiff.jsoncsv import report_json
    from trialdiff.markdown import report_markdown
    from trialdiff.render import recent_section
    from trialdiff.report import build_report
    from trialdiff.terminal import render_report

    report = build_report(pair[0], pair[1], 1, 2)
    changes = [item.change for item in report.changes]
    for colour in (True, False):
        render_report(report, Console(file=StringIO(), width=100, force_terminal=colour,
                                      no_color=not colour))
    assert report_markdown(report).startswith("# ")
    assert len(json.loads(report_json(report))["changes"]) == len(changes)
    assert len(json.loads(to_json(changes))) == len(changes)
    assert len(to_ndjson(changes).splitlines()) == len(changes)
    csv.field_size_limit(1 << 30)  # the huge strings are longer than the reader's default
    assert len(list(csv.reader(io.StringIO(to_csv(changes), newline="")))) == len(changes) + 1
    assert to_markdown(changes).count("\n- ") == len(changes)
    ET.fromstring(to_atom(changes).encode("utf-8"))
    assert recent_section(changes, 30).count("\n- ") == len(changes)


@settings(fuzz, max_examples=25)
@given(st.lists(bent_records(), min_size=1, max_size=2))
def test_a_bent_import_checks_clean_and_every_read_path_serves_it(
    tmp_path_factory: Any, pairs: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    # Import real records, then bent copies, through the CLI; check, every changes format
    # and diff of every study must then succeed for the whole database.
    from click.testing import CliRunner

    from trialdiff.cli import cli

    folder: Path = tmp_path_factory.mktemp("bentcli")
    for number, (original, record) in enumerate(pairs):
        for day, value in (("2026-01-01", original), ("2026-01-02", record)):
            (folder / day).mkdir(exist_ok=True)
            (folder / day / f"s{number}.json").write_bytes(
                json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    db = str(folder / "fuzz.db")
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", db, "import", str(folder)]).exit_code in (0, 1)
    result = runner.invoke(cli, ["--db", db, "check"])
    assert result.exit_code == 0, result.output
    for fmt in ("json", "ndjson", "csv", "md", "atom"):
        result = runner.invoke(cli, ["--db", db, "changes", "--format", fmt])
        assert result.exit_code == 0, result.output
    studies = sqlite3.connect(db).execute("select nct_id from studies").fetchall()
    for (nct_id,) in studies:
        for fmt in ("text", "md", "json"):
            result = runner.invoke(cli, ["--db", db, "diff", nct_id, "--format", fmt])
            assert result.exit_code == 0, result.output
