"""The Markdown changelog: grouped by day and study, and CommonMark-safe whatever the values."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import CHANGE_DAYS, HOSTILE, real_changes
from markdown_it import MarkdownIt

from trialdiff.export import to_markdown
from trialdiff.markdown import md_code
from trialdiff.model import FieldChange
from trialdiff.present import visible

DAY1 = CHANGE_DAYS[0]


def _markdown_tokens(text: str) -> list[Any]:
    """Return the block and inline tokens CommonMark (markdown-it) reads from text."""
    tokens = MarkdownIt("commonmark").parse(text)
    return tokens + [child for token in tokens for child in (token.children or [])]


def test_markdown_groups_by_day_then_study_with_every_path() -> None:
    older = FieldChange("NCT06060392", "status.overallStatus", "changed", DAY1, "A", "B")
    text = to_markdown([*real_changes(), older], titles={"NCT06060392": "Semaglutide & NASH"})
    days = [line for line in text.splitlines() if line.startswith("## ")]
    assert days == ["## 2025-07-07", "## 2024-06-14"]  # newest first
    studies = [line for line in text.splitlines() if line.startswith("### ")]
    assert studies == ["### NCT05827016", "### NCT06060392 \u2014 Semaglutide \\& NASH",
                       "### NCT06060392 \u2014 Semaglutide \\& NASH"]
    items = [t for t in _markdown_tokens(text) if t.type == "list_item_open"]
    assert len(items) == len(real_changes()) + 1
    spans = {t.content for t in _markdown_tokens(text) if t.type == "code_inline"}
    assert {c.path for c in real_changes()} <= spans
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


@pytest.mark.parametrize("text", ["`", "``a``", " a", "a ", "`a`", "a\nb", ""])
def test_md_code_spans_hold_any_text(text: str) -> None:
    tokens = _markdown_tokens(f"x {md_code(text)} y")
    spans = [t.content for t in tokens if t.type == "code_inline"]
    assert spans == [visible(text) or " "]
