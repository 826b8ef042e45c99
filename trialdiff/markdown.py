"""Render presented changes as Markdown: the changelog and the diff report (pure).

Registry values may hold backticks, pipes, newlines or control characters. Values sit in code
spans whose fence outgrows any backtick run inside, with control characters written as escapes
(`\\x1b`); prose is backslash-escaped. A word diff is one code span with [-…-]{+…+} markers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from .meaning import Annotated
from .present import (
    ARROW,
    Edit,
    ItemLine,
    ItemLines,
    Presented,
    Values,
    WordDiff,
    present,
    short,
    tally,
)
from .render import code_span, visible
from .report import DiffReport, heading, summary
from .worddiff import Segment, marked

VALUE_WIDTH: Final = 120  # longest value a line shows; JSON/NDJSON/CSV carry all
ITEM_WIDTH: Final = 300  # list items (outcome measures) often differ only near their end
# Item lines are grouped in this order, each group one clause: `added a, b; removed c`.
_GROUPS: Final = ("added", "removed", "reworded", "changed", "edit")


def md_code(text: str) -> str:
    """Return text as a Markdown code span that nothing inside can close or break."""
    return code_span(visible(text))


def md_text(text: str) -> str:
    """Return text as Markdown prose with every character that could act as syntax escaped."""
    return re.sub(r"([\\`*_\[\]<>&|~#])", r"\\\1", visible(text))


def _words(segments: Sequence[Segment]) -> str:
    """Return a word diff as one code span with [-…-]{+…+} markers."""
    return md_code(marked(segments))


def _edit(edit: Edit) -> str:
    """Return one inner edit as `at: old → new`."""
    old, new = edit.texts(VALUE_WIDTH)
    return f"{md_code(visible(edit.at))}: {md_code(old)} {ARROW} {md_code(new)}"


def _clause(op: str, lines: Sequence[ItemLine]) -> list[str]:
    """Return the clauses of one group of item lines (one, or one per changed item or edit)."""
    if op == "edit":
        return [_edit(line.edits[0]) for line in lines]
    if op == "changed":
        return [f"changed {md_code(short(line.item, ITEM_WIDTH))} ("
                + ", ".join(_edit(e) for e in line.edits) + ")" for line in lines]
    if op == "reworded":
        return ["reworded " + ", ".join(_words(line.words) for line in lines)]
    return [f"{op} " + ", ".join(md_code(short(line.item, ITEM_WIDTH)) for line in lines)]


def md_body(row: Presented) -> str:
    """Return what changed as Markdown: a word diff, item clauses, or old → new."""
    match row.body:
        case WordDiff(segments):
            return _words(segments)
        case ItemLines(lines):
            clauses = []
            for op in _GROUPS:
                group = [line for line in lines if line.op == op]
                clauses += _clause(op, group) if group else []
            return "; ".join(clauses)
        case Values() as values:
            old, new = values.texts(VALUE_WIDTH)
            if values.form == "site":
                return f"{md_text(old)} {ARROW} {md_text(new)}"
            return f"{md_code(old)} {ARROW} {md_code(new)}"
    raise AssertionError(row.body)


def markdown_line(row: Presented) -> str:
    """Return one change as a Markdown list line that always shows its path."""
    line = (f"- {md_code(row.path)} \u2014 {md_text(row.kind)} "
            f"_({row.severity})_: {md_body(row)}")
    return line + (" \u2014 " + md_text("; ".join(row.notes)) if row.notes else "")


def iter_markdown(
    groups: Iterable[list[Annotated]],
    title: str = "trialdiff changelog",
    titles: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Yield a Markdown changelog from study-day groups (export.annotated_stream with by_day)."""
    yield f"# {md_text(title)}\n"
    current = ""
    for items in groups:
        day, nct_id = items[0].change.detected_at[:10], items[0].change.nct_id
        if day != current:
            yield f"\n## {md_text(day)}\n"
            current = day
        name = (titles or {}).get(nct_id)
        out = ["", f"### {md_text(nct_id)}" + (f" \u2014 {md_text(name)}" if name else ""), "",
               md_text(tally(items, "field change")), ""]
        out += [markdown_line(present(item)) for item in items]
        yield "\n".join(out) + "\n"
    if not current:
        yield "\n_No field changes._\n"


def report_markdown(report: DiffReport) -> str:
    """Return the report as Markdown: a heading, the counts, one list line per field."""
    out = [f"# {md_text(heading(report))}", "", md_text(summary(report)), ""]
    out += [markdown_line(row) for row in report.rows]
    return "\n".join(out).rstrip("\n") + "\n"


__all__ = ["ITEM_WIDTH", "VALUE_WIDTH", "iter_markdown", "markdown_line", "md_body", "md_code",
           "md_text", "report_markdown"]
