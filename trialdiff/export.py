"""Export changes as JSON, NDJSON, CSV, Markdown or Atom (pure and deterministic).

Every format carries the same changes, each with its `facts` and `severity` (see meaning.py).
JSON, NDJSON and CSV list them oldest first (then by study, then in rule 7's order); Markdown
and Atom group them by UTC day, newest first, then by study. Nothing reads the clock: the
Atom feed's `updated` is the newest change's `detected_at` unless the caller passes one.

Output safety: registry values may hold backticks, pipes, newlines, `<`, `&` or control
characters. Markdown shows values in code spans whose fence outgrows any backtick run inside,
with control characters written as escapes (`\\x1b`); prose is backslash-escaped. Atom drops
characters XML 1.0 does not allow and lets the XML serialiser escape the rest. CSV quotes
every cell, and, as OWASP's CSV-injection advice says, a cell that begins with `=`, `+`,
`-`, `@`, tab or carriage return gets a single quote `'` put in front so no spreadsheet runs
it as a formula; a cell that begins with `'` gets one too, so readers undo the escape by
dropping exactly one leading `'` (`from_csv` does).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import groupby
from typing import Any, Final
from urllib.parse import quote

from .fields import LOCATION_PREFIX, field_kind, order_key
from .meaning import (
    NONE,
    Annotated,
    annotate,
    describe_facts,
    filter_severity,
    site_counts,
    sites_phrase,
)
from .model import FieldChange, dump_json
from .registry import DEFAULT
from .render import plural
from .report import ARROW, date_text, short, site_text, visible
from .worddiff import MARKS, clip, word_diff

CSV_COLUMNS: Final = ("nct_id", "path", "kind", "detected_at", "old", "new", "severity",
                      "facts")
_JSON_COLUMNS: Final = ("old", "new", "facts")
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
ATOM_NS: Final = "http://www.w3.org/2005/Atom"
# RFC 4151 tag URIs name an authority and a date; sites should pass their own domain.
DEFAULT_TAG_AUTHORITY: Final = "trialdiff,2024"
# An empty feed from an empty database is dated by the tag authority's date: the first day
# trialdiff existed, so it is older than anything a feed reader has seen from it, never 1970.
FEED_EPOCH: Final = "2024-01-01T00:00:00.000Z"
VALUE_WIDTH: Final = 120  # longest value an export line shows; JSON/NDJSON/CSV carry all
ITEM_WIDTH: Final = 300  # list items (outcome measures) often differ only near their end

Piece = tuple[str, str]  # (style, text); style: text, code, equal, delete or insert


def ordered(changes: Iterable[FieldChange]) -> list[FieldChange]:
    """Return changes oldest first, then by study, then in rule 7's order."""
    return sorted(changes, key=lambda c: (c.detected_at, c.nct_id, order_key(c.path)))


def annotated_stream(
    changes: Iterable[FieldChange], minimum: str | None = None, by_day: bool = False
) -> Iterator[list[Annotated]]:
    """Yield annotated changes one study-observation (or study-day) at a time, kept in order.

    The input must come grouped: oldest first then by study (query_changes' order), or with
    `by_day`, by UTC day then study (its `day-newest` order). Each group is put in rule 7's
    order, filtered by `minimum` severity, and annotated, so memory holds one group at a time.
    """
    def key(change: FieldChange) -> tuple[str, str]:
        return (change.detected_at[:10] if by_day else change.detected_at, change.nct_id)

    for _, group in groupby(changes, key=key):
        out: list[Annotated] = []
        for _, seen in groupby(group, key=lambda c: c.detected_at):
            observation = sorted(seen, key=lambda c: order_key(c.path))
            if minimum is not None:
                observation = filter_severity(observation, minimum)
            out += annotate(observation)
        if out:
            yield sorted(out, key=lambda a: (order_key(a.change.path), a.change.detected_at))


def _groups(changes: Iterable[FieldChange], by_day: bool = False) -> Iterator[list[Annotated]]:
    """Return annotate(ordered(changes)) in groups, whatever order the changes come in."""
    if by_day:
        ranked = sorted(changes, key=lambda c: (c.nct_id, c.detected_at))
        ranked.sort(key=lambda c: c.detected_at[:10], reverse=True)
        return annotated_stream(ranked, by_day=True)
    return annotated_stream(ordered(changes))


def _flat(groups: Iterable[list[Annotated]]) -> Iterator[Annotated]:
    """Return the items of the groups one after another."""
    return (item for group in groups for item in group)


def record(item: Annotated) -> dict[str, Any]:
    """Return one change as the JSON object every format carries."""
    return {**item.change.as_dict(), "facts": item.facts, "severity": item.severity}


def records(changes: Iterable[FieldChange]) -> list[dict[str, Any]]:
    """Return the changes as JSON objects, in export order."""
    return [record(item) for item in _flat(_groups(changes))]


_RAW_BREAKS: Final = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


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


def to_json(changes: Iterable[FieldChange]) -> str:
    """Return the changes as a JSON array."""
    return "".join(iter_json(_groups(changes)))


def to_ndjson(changes: Iterable[FieldChange]) -> str:
    """Return the changes as newline-delimited JSON, one change a line."""
    return "".join(iter_ndjson(_groups(changes)))


def csv_cell(text: str) -> str:
    """Return a cell that no spreadsheet runs as a formula (OWASP: prefix a single quote)."""
    return "'" + text if text.startswith((*_FORMULA_STARTS, "'")) else text


def csv_uncell(text: str) -> str:
    """Undo csv_cell: drop one leading single quote."""
    return text[1:] if text.startswith("'") else text


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
        row = [_json_cell(item[c]) if c in _JSON_COLUMNS else str(item[c]) for c in CSV_COLUMNS]
        writer.writerow([csv_cell(cell) for cell in row])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def to_csv(changes: Iterable[FieldChange]) -> str:
    """Return the changes as CSV: a header, then one row per change, JSON in old/new/facts."""
    return "".join(iter_csv(_groups(changes)))


def from_csv(text: str) -> list[dict[str, Any]]:
    """Read to_csv's output back: cells unescaped, JSON columns parsed (empty is None)."""
    rows = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        item: dict[str, Any] = {key: csv_uncell(value) for key, value in row.items()}
        for column in _JSON_COLUMNS:
            item[column] = json.loads(item[column]) if item[column] else None
        rows.append(item)
    return rows


def md_code(text: str) -> str:
    """Return text as a Markdown code span that nothing inside can close or break."""
    text = visible(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if not text:
        return "` `"  # an empty span is not a code span at all
    # CommonMark strips one space each side when both are there, so padding is undone.
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_text(text: str) -> str:
    """Return text as Markdown prose with every character that could act as syntax escaped."""
    return re.sub(r"([\\`*_\[\]<>&|~#])", r"\\\1", visible(text))


def _list_pieces(detail: Mapping[str, Any]) -> list[Piece]:
    """Return a list field's items added, removed and changed, or an object's inner edits."""
    groups: list[list[Piece]] = []
    for key, label in (("items_added", "added"), ("items_removed", "removed")):
        if detail.get(key):
            group: list[Piece] = [("text", f"{label} ")]
            for index, item in enumerate(detail[key]):
                group += [("text", ", ")] if index else []
                group.append(("code", short(item, ITEM_WIDTH)))
            groups.append(group)
    for item in detail.get("items_changed", ()):
        group = [("text", "changed "), ("code", short(item["item"], ITEM_WIDTH)), ("text", " (")]
        for index, edit in enumerate(item["edits"]):
            group += [("text", ", ")] if index else []
            group += _edit_pieces(edit)
        groups.append([*group, ("text", ")")])
    groups += [_edit_pieces(edit) for edit in detail.get("edits", ())]
    pieces: list[Piece] = []
    for index, group in enumerate(groups):
        pieces += [("text", "; ")] if index else []
        pieces += group
    return pieces


def _edit_pieces(edit: Mapping[str, Any]) -> list[Piece]:
    """Return one inner edit as `at: old → new`."""
    return [("code", visible(edit["at"])), ("text", ": "),
            ("code", short(edit.get("old"), VALUE_WIDTH)), ("text", f" {ARROW} "),
            ("code", short(edit.get("new"), VALUE_WIDTH))]


def body(change: FieldChange) -> list[Piece]:
    """Return what changed, format-neutral: a word diff, items, edits, or old → new."""
    kind = field_kind(change.path)
    if kind == "text" and isinstance(change.old, str) and isinstance(change.new, str):
        return [(s.op, s.text) for s in clip(word_diff(change.old, change.new))]
    if kind == "date":
        return [("code", date_text(change.old)), ("text", f" {ARROW} "),
                ("code", date_text(change.new))]
    pieces = _list_pieces(change.detail)
    if pieces:
        return pieces
    if change.path.startswith(LOCATION_PREFIX) and change.kind != "changed":
        return [("text", site_text(change.old) if change.old is not None else NONE),
                ("text", f" {ARROW} "),
                ("text", site_text(change.new) if change.new is not None else NONE)]
    return [("code", short(change.old, VALUE_WIDTH)), ("text", f" {ARROW} "),
            ("code", short(change.new, VALUE_WIDTH))]


def _md_pieces(pieces: Sequence[Piece]) -> str:
    """Render pieces as Markdown; a word diff becomes one code span with [-…-]{+…+} markers."""
    out = []
    for is_diff, run in groupby(pieces, key=lambda p: p[0] in ("equal", "delete", "insert")):
        items = list(run)
        if is_diff:
            out.append(md_code(" ".join(MARKS[s].format(t) for s, t in items)))
        else:
            out += [md_code(t) if s == "code" else md_text(t) for s, t in items]
    return "".join(out)


def markdown_line(item: Annotated, with_sites: bool = True) -> str:
    """Return one change as a Markdown list line that always shows its path."""
    change = item.change
    line = (f"- {md_code(change.path)} \u2014 {md_text(change.kind)} "
            f"_({item.severity})_: {_md_pieces(body(change))}")
    phrases = describe_facts(item.facts, with_sites=with_sites)
    return line + (" \u2014 " + md_text("; ".join(phrases)) if phrases else "")


def study_summary(items: Sequence[Annotated]) -> str:
    """Return `3 field changes: 1 major, 2 minor, 0 info` plus site counts when any."""
    by = ", ".join(f"{sum(1 for a in items if a.severity == level)} {level}"
                   for level in ("major", "minor", "info"))
    text = f"{plural(len(items), 'field change')}: {by}"
    counts = site_counts(a.change for a in items)
    if counts:
        text += "; " + "; ".join(sites_phrase(c) for c in counts.values())
    return text


def iter_markdown(
    groups: Iterable[list[Annotated]],
    title: str = "trialdiff changelog",
    titles: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Yield a Markdown changelog from study-day groups (annotated_stream with by_day)."""
    yield f"# {md_text(title)}\n"
    current = ""
    for items in groups:
        day, nct_id = items[0].change.detected_at[:10], items[0].change.nct_id
        if day != current:
            yield f"\n## {md_text(day)}\n"
            current = day
        name = (titles or {}).get(nct_id)
        out = ["", f"### {md_text(nct_id)}" + (f" \u2014 {md_text(name)}" if name else ""), "",
               md_text(study_summary(items)), ""]
        out += [markdown_line(item, with_sites=False) for item in items]
        yield "\n".join(out) + "\n"
    if not current:
        yield "\n_No field changes._\n"


def to_markdown(
    changes: Iterable[FieldChange],
    title: str = "trialdiff changelog",
    titles: Mapping[str, str] | None = None,
) -> str:
    """Return a Markdown changelog: by day (newest first), then study; a line per change."""
    return "".join(iter_markdown(_groups(changes, by_day=True), title, titles))


_XML_BAD = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Drop the characters XML 1.0 does not allow (most C0 controls, surrogates, U+FFFE/F)."""
    return _XML_BAD.sub("", text)


def _html_pieces(pieces: Sequence[Piece]) -> str:
    """Render pieces as HTML: code for values, del and ins for a word diff."""
    tags = {"code": "code", "delete": "del", "insert": "ins"}
    out = []
    for style, text in pieces:
        escaped = html.escape(text)
        out.append(f"<{tags[style]}>{escaped}</{tags[style]}>" if style in tags else escaped)
        if style in ("equal", "delete", "insert"):
            out.append(" ")
    return "".join(out).rstrip(" ")


def entry_title(nct_id: str, day: str, items: Sequence[Annotated], name: str | None) -> str:
    """Return an entry's title: study, day, the headline facts, then the counts."""
    headline = []
    for item in items:
        if status := item.facts.get("status"):
            stopped = " (stopped)" if status["stopped"] else ""
            headline.append(f"status {status['from'] or NONE} {ARROW} {status['to'] or NONE}"
                            f"{stopped}")
    if any(item.facts.get("results_posted") for item in items):
        headline.append("results posted")
    major = sum(1 for item in items if item.severity == "major")
    counts = plural(len(items), "field change") + (f" ({major} major)" if major else "")
    study = f"{nct_id} {name}" if name else nct_id
    return visible(f"{study} on {day}: " + "; ".join([*headline, counts]))


def entry_html(items: Sequence[Annotated]) -> str:
    """Return one study-day's change list as HTML, every line with its path and old → new."""
    lines = [f"<p>{html.escape(study_summary(items))}</p>", "<ul>"]
    for item in items:
        change = item.change
        phrases = describe_facts(item.facts, with_sites=False)
        facts_html = f" \u2014 {html.escape('; '.join(phrases))}" if phrases else ""
        lines.append(f"<li><code>{html.escape(visible(change.path))}</code> \u2014 "
                     f"{html.escape(change.kind)} <em>({item.severity})</em>: "
                     f"{_html_pieces(body(change))}{facts_html}</li>")
    return "\n".join([*lines, "</ul>"])


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    """Append an element whose text and attributes are XML-safe."""
    element = ET.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_safe(text)
    return element


def iter_atom(
    groups: Iterable[list[Annotated]],
    updated: str,
    *,
    feed_id: str | None = None,
    title: str = "trialdiff: ClinicalTrials.gov field changes",
    tag_authority: str = DEFAULT_TAG_AUTHORITY,
    self_href: str | None = None,
    titles: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Yield an Atom feed (RFC 4287) from study-day groups: one entry each, the diff inside."""
    feed = ET.Element("feed", {"xmlns": ATOM_NS})
    _add(feed, "id", feed_id or f"tag:{tag_authority}:changes")
    _add(feed, "title", title)
    _add(feed, "updated", updated)
    if self_href:
        _add(feed, "link", rel="self", type="application/atom+xml", href=self_href)
    _add(_add(feed, "author"), "name", "trialdiff")
    _add(feed, "generator", "trialdiff")
    ET.indent(feed)
    head, close = ET.tostring(feed, "unicode").rsplit("\n", 1)
    yield '<?xml version="1.0" encoding="utf-8"?>\n' + head
    for items in groups:
        day, nct_id = items[0].change.detected_at[:10], items[0].change.nct_id
        entry = ET.Element("entry")
        # The id names the study and day only, so a later sync that day updates the entry.
        _add(entry, "id", f"tag:{tag_authority}:{quote(nct_id, safe='')}/{day}")
        _add(entry, "title", entry_title(nct_id, day, items, (titles or {}).get(nct_id)))
        _add(entry, "updated", max(a.change.detected_at for a in items))
        _add(entry, "link", rel="alternate", type="text/html",
             href=DEFAULT.study_url(nct_id))
        _add(entry, "content", entry_html(items), type="html")
        ET.indent(entry, level=1)  # as ET.indent(feed) would indent it inside the feed
        yield "\n  " + ET.tostring(entry, "unicode")
    yield "\n" + close + "\n"


def to_atom(
    changes: Iterable[FieldChange],
    *,
    feed_id: str | None = None,
    title: str = "trialdiff: ClinicalTrials.gov field changes",
    updated: str | None = None,
    tag_authority: str = DEFAULT_TAG_AUTHORITY,
    self_href: str | None = None,
    titles: Mapping[str, str] | None = None,
) -> str:
    """Return an Atom feed: `updated` defaults to the newest change, or FEED_EPOCH if none."""
    changes = list(changes)
    newest = max((c.detected_at for c in changes), default=None)
    return "".join(iter_atom(_groups(changes, by_day=True), updated or newest or FEED_EPOCH,
                             feed_id=feed_id, title=title, tag_authority=tag_authority,
                             self_href=self_href, titles=titles))


def stream_export(
    fmt: str,
    fetch: Callable[[str], Iterable[FieldChange]],
    minimum: str | None = None,
    titles: Mapping[str, str] | None = None,
    last_seen: str | None = None,
) -> Iterator[str]:
    """Yield one format's text piece by piece from changes `fetch(order)` reads as they come.

    `fetch` takes a CHANGE_ORDERS key of query.py. Memory holds one study-observation (or
    study-day) at a time. An empty feed is dated `last_seen` (the database's last
    observation), else FEED_EPOCH.
    """
    if fmt in ("json", "ndjson", "csv"):
        groups = annotated_stream(fetch("oldest"), minimum)
        render = {"json": iter_json, "ndjson": iter_ndjson, "csv": iter_csv}[fmt]
        return render(groups)
    groups = annotated_stream(fetch("day-newest"), minimum, by_day=True)
    if fmt == "md":
        return iter_markdown(groups, titles=titles)
    # The feed is as new as its newest change: the first kept group, newest first.
    newest = next(annotated_stream(fetch("newest"), minimum), None)
    updated = max(a.change.detected_at for a in newest) if newest else last_seen
    return iter_atom(groups, updated or FEED_EPOCH, titles=titles)


EXPORTERS: Final[dict[str, Callable[[Iterable[FieldChange]], str]]] = {
    "json": to_json,
    "ndjson": to_ndjson,
    "csv": to_csv,
    "md": to_markdown,
    "atom": to_atom,
}
