"""Test-only oracles: the obvious, slow versions the package's fast code must agree with."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from trialdiff.canonical import fold_whitespace
from trialdiff.jsoncsv import JSON_COLUMNS


def reference_canonical_json(value: Any) -> str | None:
    """Return canonical JSON the obvious way (the fast path must agree with it)."""
    def canonical(node: Any) -> Any:
        if isinstance(node, str):
            return fold_whitespace(node) or None
        if isinstance(node, dict):
            kept = {k: canonical(v) for k, v in node.items()}
            return {k: v for k, v in kept.items() if v is not None} or None
        if isinstance(node, list):
            items = [canonical(v) for v in node]
            return sorted((v for v in items if v is not None), key=_dumps) or None
        return node

    form = canonical(value)
    return None if form is None else _dumps(form)


def _dumps(value: Any) -> str:
    """Write JSON as the spec's canonical JSON is written."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def csv_uncell(text: str) -> str:
    """Undo jsoncsv.csv_cell: drop one leading single quote."""
    return text[1:] if text.startswith("'") else text


def from_csv(text: str) -> list[dict[str, Any]]:
    """Read the CSV export back: cells unescaped, JSON columns parsed (empty is None)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        item: dict[str, Any] = {key: csv_uncell(value) for key, value in row.items()}
        for column in JSON_COLUMNS:
            item[column] = json.loads(item[column]) if item[column] else None
        rows.append(item)
    return rows
