"""Render changes as JSON, NDJSON or CSV: every change as the object `present.record` gives.

CSV quotes every cell, and, as OWASP's CSV-injection advice says, a cell that begins with `=`,
`+`, `-`, `@`, tab or carriage return gets a single quote `'` put in front so no spreadsheet
runs it as a formula; a cell that begins with `'` gets one too, so readers undo the escape by
dropping exactly one leading `'`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any, Final

from .meaning import Annotated
from .model import dump_json
from .present import record
from .report import DiffReport

CSV_COLUMNS: Final = ("nct_id", "path", "kind", "detected_at", "old", "new", "severity",
                      "facts")
JSON_COLUMNS: Final = ("old", "new", "facts")  # CSV cells that hold JSON text
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
_RAW_BREAKS: Final = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _flat(groups: Iterable[list[Annotated]]) -> Iterator[Annotated]:
    """Return the items of the groups one after another."""
    return (item for group in groups for item in group)


def json_text(value: Any, indent: int | None = None) -> str:
    """Return dump_json's text with the line breaks json leaves raw (U+0085, U+2028/9) escaped."""
    # Line readers such as str.splitlines() split on them, which would cut an NDJSON line.
    return dump_json(value, indent).translate(_RAW_BREAKS)


def iter_json(groups: Iterable[list[Annotated]]) -> Iterator[str]:
    """Yield a JSON array of the changes piece by piece: the text json.dumps(indent=2) gives."""
    # json escapes every line break inside a string, so indenting each line by two spaces
    # nests an item exactly as dumping the whole array would.
    empty = True
    for item in _flat(groups):
        yield ("[\n" if empty else ",\n") + "  " + json_text(record(item), indent=2).replace(
            "\n", "\n  ")
        empty = False
    yield "[]\n" if empty else "\n]\n"


def iter_ndjson(groups: Iterable[list[Annotated]]) -> Iterator[str]:
    """Yield newline-delimited JSON, one change a line."""
    for item in _flat(groups):
        yield json_text(record(item)) + "\n"


def csv_cell(text: str) -> str:
    """Return a cell that no spreadsheet runs as a formula (OWASP: prefix a single quote)."""
    return "'" + text if text.startswith((*_FORMULA_STARTS, "'")) else text


def _json_cell(value: Any) -> str:
    """Return a value as compact JSON text; absent (None) is an empty cell."""
    if value is None:
        return ""
    return json_text(value)


def iter_csv(groups: Iterable[list[Annotated]]) -> Iterator[str]:
    """Yield CSV: a header, then one row per change, JSON in old/new/facts."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in map(record, _flat(groups)):
        row = [_json_cell(item[c]) if c in JSON_COLUMNS else str(item[c]) for c in CSV_COLUMNS]
        writer.writerow([csv_cell(cell) for cell in row])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def report_json(report: DiffReport) -> str:
    """Return the report as JSON: which snapshots, then every change with facts and severity."""
    body = {
        "nct_id": report.nct_id,
        "from": {"seq": report.from_seq, "observed_at": report.from_at},
        "to": {"seq": report.to_seq, "observed_at": report.to_at},
        "sites": report.sites.as_dict(),
        "changes": [record(item) for item in report.changes],
    }
    return json_text(body, indent=2) + "\n"
