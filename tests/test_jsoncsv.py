"""The JSON and CSV changelogs: their columns, and hostile values kept exactly, never a formula."""

from __future__ import annotations

import csv
import io
import json

from conftest import HOSTILE, HOSTILE_TEXT, real_changes
from oracles import from_csv

from trialdiff.export import records, to_csv, to_json, to_ndjson
from trialdiff.jsoncsv import CSV_COLUMNS


def test_csv_header_and_columns() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(real_changes()), newline="")))
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
