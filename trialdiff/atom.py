"""Render presented changes as an Atom feed (RFC 4287), the diff in HTML inside (pure).

One entry per study per UTC day, with a stable `tag:` id, so a later sync that day updates the
entry. Characters XML 1.0 does not allow are dropped; the XML serialiser escapes the rest.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final
from urllib.parse import quote

from .meaning import NONE, Annotated
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
from .registry import DEFAULT
from .render import plural, visible
from .worddiff import Segment

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
# RFC 4151 tag URIs name an authority and a date; sites should pass their own domain.
DEFAULT_TAG_AUTHORITY: Final = "trialdiff,2024"
# An empty feed from an empty database is dated by the tag authority's date: the first day
# trialdiff existed, so it is older than anything a feed reader has seen from it, never 1970.
FEED_EPOCH: Final = "2024-01-01T00:00:00.000Z"
VALUE_WIDTH: Final = 120  # as in Markdown
ITEM_WIDTH: Final = 300
_GROUPS: Final = ("added", "removed", "reworded", "changed", "edit")
_XML_BAD = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TAGS: Final = {"delete": "del", "insert": "ins"}


def xml_safe(text: str) -> str:
    """Drop the characters XML 1.0 does not allow (most C0 controls, surrogates, U+FFFE/F)."""
    return _XML_BAD.sub("", text)


def _code(text: str) -> str:
    """Return text as an HTML code element."""
    return f"<code>{html.escape(text)}</code>"


def _words(segments: Sequence[Segment]) -> str:
    """Return a word diff as HTML: del and ins around the words that went and came."""
    # Control characters and bidi overrides show as escapes, as everywhere else in the entry.
    return " ".join(f"<{_TAGS[s.op]}>{html.escape(visible(s.text))}</{_TAGS[s.op]}>"
                    if s.op in _TAGS else html.escape(visible(s.text)) for s in segments)


def _edit(edit: Edit) -> str:
    """Return one inner edit as `at: old → new`."""
    old, new = edit.texts(VALUE_WIDTH)
    return f"{_code(visible(edit.at))}: {_code(old)} {ARROW} {_code(new)}"


def _clauses(lines: Sequence[ItemLine]) -> str:
    """Return item lines as clauses, grouped as Markdown groups them."""
    clauses = []
    for op in _GROUPS:
        group = [line for line in lines if line.op == op]
        if not group:
            continue
        if op == "edit":
            clauses += [_edit(line.edits[0]) for line in group]
        elif op == "changed":
            clauses += [f"changed {_code(short(line.item, ITEM_WIDTH))} ("
                        + ", ".join(_edit(e) for e in line.edits) + ")" for line in group]
        elif op == "reworded":
            clauses.append("reworded " + ", ".join(_words(line.words) for line in group))
        else:
            clauses.append(f"{op} " + ", ".join(_code(short(line.item, ITEM_WIDTH))
                                                for line in group))
    return "; ".join(clauses)


def html_body(row: Presented) -> str:
    """Return what changed as HTML: a word diff, item clauses, or old → new."""
    match row.body:
        case WordDiff(segments):
            return _words(segments)
        case ItemLines(lines):
            return _clauses(lines)
        case Values() as values:
            old, new = values.texts(VALUE_WIDTH)
            if values.form == "site":
                return f"{html.escape(old)} {ARROW} {html.escape(new)}"
            return f"{_code(old)} {ARROW} {_code(new)}"
    raise AssertionError(row.body)


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
    lines = [f"<p>{html.escape(tally(items, 'field change'))}</p>", "<ul>"]
    for row in map(present, items):
        notes = f" \u2014 {html.escape('; '.join(row.notes))}" if row.notes else ""
        lines.append(f"<li>{_code(visible(row.path))} \u2014 {html.escape(row.kind)} "
                     f"<em>({row.severity})</em>: {html_body(row)}{notes}</li>")
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
    subject: str = "",
    entry_subject: str = "",
) -> Iterator[str]:
    """Yield an Atom feed from study-day groups: one entry each, the diff inside.

    `subject` and `entry_subject` name what a filtered feed keeps (export.feed_subject): its
    id carries the one, its entries' the other, since another filter's feed is another feed
    and its entry for a study-day holds other changes.
    """
    entry_qualifier = f"?{entry_subject}" if entry_subject else ""
    feed = ET.Element("feed", {"xmlns": ATOM_NS})
    _add(feed, "id", feed_id or f"tag:{tag_authority}:changes" + (f"?{subject}" if subject
                                                                   else ""))
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
        _add(entry, "id", f"tag:{tag_authority}:{quote(nct_id, safe='')}/{day}{entry_qualifier}")
        _add(entry, "title", entry_title(nct_id, day, items, (titles or {}).get(nct_id)))
        _add(entry, "updated", max(a.change.detected_at for a in items))
        _add(entry, "link", rel="alternate", type="text/html",
             href=DEFAULT.study_url(nct_id))
        _add(entry, "content", entry_html(items), type="html")
        ET.indent(entry, level=1)  # as ET.indent(feed) would indent it inside the feed
        yield "\n  " + ET.tostring(entry, "unicode")
    yield "\n" + close + "\n"
