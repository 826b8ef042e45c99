"""The diff report of one study between two snapshots: word diff, data, and rendering.

`build_report` makes the report's data (pure); `render_report` prints it with rich,
`report_markdown` and `report_json` give the other `--format` choices. rich is imported only
by the renderer, so the pure parts (the word diff that exports use too) stay light.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from .diff import diff_snapshots
from .errors import UsageError
from .fields import LOCATION_PREFIX, field_kind
from .meaning import (
    NONE,
    Annotated,
    SiteCounts,
    annotate,
    describe_facts,
    site_counts,
    sites_phrase,
)
from .model import FieldChange, Snapshot, dump_json, utc_timestamp
from .render import plural
from .worddiff import ELLIPSIS, EXACT_CELLS, Segment, clip, marked, word_diff

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

ARROW: Final = "\u2192"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Line and paragraph separators and bidi controls: not Cc, but they can reorder or break lines.
_INVISIBLE = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def visible(text: str) -> str:
    """Return text with control characters written as escapes (`\\x1b`), so none takes effect."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if unicodedata.category(char) == "Cc" or char in _INVISIBLE:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _visible_diff(old: str, new: str) -> tuple[Segment, ...]:
    """Return the clipped word diff of two texts, control characters made visible."""
    return tuple(Segment(s.op, tuple(map(visible, s.words))) for s in clip(word_diff(old, new)))


def short(value: Any, width: int = 60) -> str:
    """Return a value as one visible line: strings as they are, others as JSON, cut at width."""
    if value is None:
        return NONE
    text = value if isinstance(value, str) else dump_json(value)
    text = visible(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def date_text(value: Any) -> str:
    """Return a date field's value as `2025-03-01 ESTIMATED` (or its JSON when unusual)."""
    if isinstance(value, Mapping) and set(value) <= {"date", "type"}:
        return short(" ".join(str(value[k]) for k in ("date", "type") if k in value))
    return short(value)


def site_text(value: Any) -> str:
    """Return an added or removed site as `site (RECRUITING)`: its path already names it."""
    status = value.get("status") if isinstance(value, Mapping) else None
    return f"site ({short(status, 40)})" if status else "site"


def resolve_ref(ref: str, snapshots: Sequence[Mapping[str, Any]]) -> int:
    """Return the snapshot number a REF names: N, a date or time, `latest` or `previous`."""
    # A date names the latest snapshot observed on or before that UTC day; a time, the latest
    # observed at or before it; `previous`, the one before the latest.
    seqs = [int(row["seq"]) for row in snapshots]
    if not seqs:
        raise UsageError("no snapshots stored for this study")
    text = ref.strip().lower()
    if text == "latest":
        return seqs[-1]
    if text == "previous":
        if len(seqs) < 2:
            raise UsageError("the study has one snapshot, so there is no previous one")
        return seqs[-2]
    if re.fullmatch(r"[0-9]+", text):
        if int(text) not in seqs:
            raise UsageError(f"no snapshot {text}: snapshots are numbered 1 to {seqs[-1]}")
        return int(text)
    try:
        bound = utc_timestamp(ref)
    except ValueError:
        raise UsageError(
            f"{ref!r} is not a snapshot number, a date, `latest` or `previous`") from None
    if _DAY.fullmatch(text):
        found = [int(r["seq"]) for r in snapshots if r["observed_at"][:10] <= text]
    else:
        found = [int(r["seq"]) for r in snapshots if r["observed_at"] <= bound]
    if not found:
        raise UsageError(f"no snapshot observed on or before {ref}")
    return found[-1]


def resolve_pair(
    from_ref: str | None, to_ref: str | None, snapshots: Sequence[Mapping[str, Any]]
) -> tuple[int | None, int]:
    """Return the (from, to) snapshot numbers; by default the last two, `from` None if one."""
    to = resolve_ref(to_ref or "latest", snapshots)
    if from_ref is not None:
        return resolve_ref(from_ref, snapshots), to
    earlier = [int(row["seq"]) for row in snapshots if int(row["seq"]) < to]
    return (earlier[-1] if earlier else None), to


class Line(NamedTuple):
    """One line under a row: `+` added, `-` removed, `~` changed, with its text."""

    mark: Literal["+", "-", "~"]
    text: str
    words: tuple[Segment, ...] = ()  # a reworded item: its word diff instead of the text


REWORDED: Final = 0.6  # difflib ratio above which a removed and an added item are one edit


@dataclass(frozen=True)
class Row:
    """What the report shows for one changed field."""

    path: str
    kind: str
    severity: str
    old: str  # one visible line each; the word diff replaces them for long text
    new: str
    words: tuple[Segment, ...] = ()
    lines: tuple[Line, ...] = ()
    notes: tuple[str, ...] = ()  # the change's facts in words


@dataclass(frozen=True)
class DiffReport:
    """The data of a diff report: which snapshots, and one row per changed field."""

    nct_id: str
    from_seq: int | None
    from_at: str | None
    to_seq: int | None
    to_at: str
    changes: tuple[Annotated, ...]
    rows: tuple[Row, ...]
    sites: SiteCounts


def _edit_line(edit: Mapping[str, Any]) -> Line:
    """Return one inner edit (`contacts[0].phone: a → b`) as a line."""
    mark: Literal["+", "-", "~"] = (
        "+" if edit["op"] == "added" else "-" if edit["op"] == "removed" else "~")
    return Line(mark, f"{visible(edit['at'])}: {short(edit.get('old'), 40)} {ARROW} "
                      f"{short(edit.get('new'), 40)}")


def _lines(change: FieldChange) -> tuple[Line, ...]:
    """Return the item-by-item lines of a list field, or the inner edits of an object."""
    detail = change.detail
    added = list(detail.get("items_added", ()))
    lines = []
    for item in detail.get("items_removed", ()):
        match = _reworded(item, added)
        if match is None:
            lines.append(Line("-", short(item, 90)))
        else:
            # A list keyed by its label (an outcome's measure) sees a reworded label as one
            # item removed and one added; showing the words that changed says far more.
            added.remove(match)
            words = _visible_diff(item, match)
            lines.append(Line("~", marked(words), words))
    lines += [Line("+", short(item, 90)) for item in added]
    for item in detail.get("items_changed", ()):
        edits = "; ".join(_edit_line(e).text for e in item["edits"])
        lines.append(Line("~", f"{short(item['item'], 50)}: {edits}"))
    lines += [_edit_line(edit) for edit in detail.get("edits", ())]
    return tuple(lines)


def _reworded(item: Any, candidates: Sequence[Any]) -> str | None:
    """Return the added item most like a removed one, if it is alike enough to be an edit."""
    if not isinstance(item, str):
        return None
    best, score = None, REWORDED
    for candidate in candidates:
        if not isinstance(candidate, str):
            continue
        words, other = item.split(), candidate.split()
        if len(words) * len(other) > EXACT_CELLS:
            continue  # too long to weigh in bounded time: shown as removed and added
        matcher = difflib.SequenceMatcher(None, words, other)
        if matcher.real_quick_ratio() <= score or matcher.quick_ratio() <= score:
            continue
        ratio = matcher.ratio()
        if ratio > score:
            best, score = candidate, ratio
    return best


def build_row(item: Annotated) -> Row:
    """Return the report row of one annotated change."""
    change = item.change
    kind = field_kind(change.path)
    old, new = short(change.old), short(change.new)
    words: tuple[Segment, ...] = ()
    lines: tuple[Line, ...] = ()
    if kind == "date":
        old, new = date_text(change.old), date_text(change.new)
    elif kind == "text" and isinstance(change.old, str) and isinstance(change.new, str):
        words = _visible_diff(change.old, change.new)
    else:
        lines = _lines(change)
        if not lines and change.path.startswith(LOCATION_PREFIX):
            old = site_text(change.old) if change.old is not None else NONE
            new = site_text(change.new) if change.new is not None else NONE
    if words or lines:
        old = new = ""
    return Row(visible(change.path), change.kind, item.severity, old, new, words, lines,
               tuple(describe_facts(item.facts, with_sites=False)))


def build_report(
    old: Snapshot | None, new: Snapshot, from_seq: int | None = None, to_seq: int | None = None
) -> DiffReport:
    """Return the diff report of a study from one snapshot to another (old None: baseline)."""
    changes = annotate(diff_snapshots(old, new))
    counts = site_counts(a.change for a in changes)
    return DiffReport(
        nct_id=new.nct_id,
        from_seq=from_seq,
        from_at=old.observed_at if old else None,
        to_seq=to_seq,
        to_at=new.observed_at,
        changes=tuple(changes),
        rows=tuple(build_row(item) for item in changes),
        sites=counts.get((new.nct_id, new.observed_at), SiteCounts()),
    )


def heading(report: DiffReport) -> str:
    """Return the report's first line: which snapshots it compares."""
    to = f"snapshot {report.to_seq} ({report.to_at})" if report.to_seq else report.to_at
    if report.from_at is None:
        return f"{report.nct_id}: {to}, the silent baseline: nothing to compare with"
    start = f"snapshot {report.from_seq} ({report.from_at})" if report.from_seq else \
        report.from_at
    return f"{report.nct_id}: {start} {ARROW} {to}"


def summary(report: DiffReport) -> str:
    """Return the count line: changed fields by severity, then sites."""
    if not report.rows:
        return "no field changes"
    by = {level: sum(1 for r in report.rows if r.severity == level)
          for level in ("major", "minor", "info")}
    text = plural(len(report.rows), "changed field") + ": " + ", ".join(
        f"{n} {k}" for k, n in by.items())
    if any(report.sites):
        text += "; " + sites_phrase(report.sites)
    return text


_STYLES: Final = {"+": "green", "-": "red", "~": "yellow", "delete": "red strike",
                  "insert": "bold green", "major": "bold red", "minor": "yellow", "info": "dim"}


def _append_words(cell: Text, words: Sequence[Segment], plain: bool) -> None:
    """Append a word diff: styled when colour is on, [-…-]{+…+} markers when it is not."""
    for index, segment in enumerate(words):
        if index:
            cell.append(" ")
        if segment.op == "equal" or not plain:
            cell.append(segment.text, None if segment.op == "equal" else _STYLES[segment.op])
        else:
            cell.append(marked([segment]))


def _change_cell(row: Row, plain: bool) -> Text:
    """Return the change column of a row: old → new, a word diff, or item lines; then facts."""
    from rich.text import Text

    cell = Text()
    if row.words:
        _append_words(cell, row.words, plain)
    elif row.lines:
        for index, line in enumerate(row.lines):
            cell.append(("\n" if index else "") + f"{line.mark} ", _STYLES[line.mark])
            if line.words:
                _append_words(cell, line.words, plain)
            else:
                cell.append(line.text, _STYLES[line.mark])
    else:
        cell.append(f"{row.old} {ARROW} {row.new}")
    if row.notes:
        cell.append("\n(" + "; ".join(visible(n) for n in row.notes) + ")", "italic")
    return cell


def render_report(report: DiffReport, console: Console) -> None:
    """Print a report with rich; plain markers when colour is off or not on a terminal."""
    from rich.table import Table
    from rich.text import Text

    plain = console.no_color or not console.is_terminal
    console.print(Text(visible(heading(report)), "bold"))
    console.print(Text(summary(report)))
    if not report.rows:
        return
    table = Table(show_header=True, header_style="bold", expand=True, show_lines=True)
    table.add_column("field", ratio=3, overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column(f"old {ARROW} new", ratio=5, overflow="fold")
    for row in report.rows:
        table.add_row(Text(row.path), Text(row.kind), Text(row.severity, _STYLES[row.severity]),
                      _change_cell(row, plain))
    console.print(table)


def report_markdown(report: DiffReport) -> str:
    """Return the report as Markdown: a heading, the counts, one list line per field."""
    # Imported here: export imports this module for the word diff.
    from .export import markdown_line, md_text

    out = [f"# {md_text(heading(report))}", "", md_text(summary(report)), ""]
    out += [markdown_line(item, with_sites=False) for item in report.changes]
    return "\n".join(out).rstrip("\n") + "\n"


def report_json(report: DiffReport) -> str:
    """Return the report as JSON: which snapshots, then every change with facts and severity."""
    from .export import json_text, record  # here for the same reason as above

    body = {
        "nct_id": report.nct_id,
        "from": {"seq": report.from_seq, "observed_at": report.from_at},
        "to": {"seq": report.to_seq, "observed_at": report.to_at},
        "sites": report.sites.as_dict(),
        "changes": [record(item) for item in report.changes],
    }
    return json_text(body, indent=2) + "\n"
