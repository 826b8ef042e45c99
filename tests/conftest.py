"""Shared fixtures: real records from tests/fixtures and a fresh database file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def load(relative: str) -> dict[str, Any]:
    """Load one fixture record."""
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def version_pair(nct_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the older and newer real versions of a study."""
    older, newer = sorted((FIXTURES / "versions" / nct_id).glob("*.json"))
    return load(str(older.relative_to(FIXTURES))), load(str(newer.relative_to(FIXTURES)))


def real_records() -> list[dict[str, Any]]:
    """Return every real v2 fixture record, sorted by NCT id."""
    return [load(f"v2/{p.name}") for p in sorted((FIXTURES / "v2").glob("*.json"))]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Return the path of a fresh database file."""
    return str(tmp_path / "trialdiff.db")
