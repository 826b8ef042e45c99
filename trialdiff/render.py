"""Render changes as text: the Recent Field Changes section and the plain diff (pure)."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from .errors import UsageError
from .fields import order_key
from .model import FieldChange
from .settings import MAX_DAYS


def plural(count: int, noun: str, many: str | None = None) -> str:
    """Return `1 study`, `2 studies`: a count and its noun, plural unless the count is 1."""
    if count == 1:
        return f"{count} {noun}"
    if many is None:
        many = noun[:-1] + "ies" if re.search(r"[^aeiou]y$", noun) else noun + "s"
    return f"{count} {many}"


# A tag of the registry's HTML (record history, backfill): its few formatting tags, nothing
# else, so `x<y and a>b` or a record's `<img …>` text stays text. API v2's Markdown holds no
# tag: it writes a `<` in text as `\<` (none of the 1,682 shared records has a bare tag).
_HTML_TAG = re.compile(r"(?<!\\)</?(p|br|ul|ol|li|em|strong|b|i|u|sub|sup|a|span|div|h[1-6]|"
                       r"table|thead|tbody|tr|td|th|blockquote|pre|code)(?:\s[^<>]*)?/?>", re.I)
_INLINE_TAGS = frozenset({"a", "b", "i", "u", "em", "strong", "sub", "sup", "span", "code"})
MARKDOWN_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark's: `\<` is a `<`


def readable_pair(old: str, new: str) -> tuple[str, str]:
    """Return two texts alike in markup when either is the registry's HTML, for a word diff.

    A backfilled version's HTML against the Markdown after it would show every tag as a
    removed word; both are shown as the text Markdown's reader sees (lists numbered, escapes
    and entities resolved). Two Markdown texts are shown as stored: every difference shows.
    """
    if not (_HTML_TAG.search(old) or _HTML_TAG.search(new)):
        return old, new
    return _plain(old), _plain(new)


def _plain(text: str) -> str:
    """Return HTML as the Markdown API v2 writes of it, or Markdown with its escapes resolved."""
    if not _HTML_TAG.search(text):
        return MARKDOWN_ESCAPE.sub(r"\1", text)
    out: list[str] = []
    lists: list[list[Any]] = []  # open lists: [tag, items so far]
    at = 0
    for tag in _HTML_TAG.finditer(text):
        out.append(text[at:tag.start()])
        at = tag.end()
        name = tag.group(1).lower()
        marker = _list_marker(lists, name, closing=tag.group(0).startswith("</"))
        if marker is not None:
            out.append(f" {marker}")
        else:
            out.append("" if name in _INLINE_TAGS else " ")  # H<sub>2</sub>O is one word
    out.append(text[at:])
    return " ".join(html.unescape("".join(out)).split())


def _list_marker(lists: list[list[Any]], name: str, closing: bool) -> str | None:
    """Open or close a list by one tag; return an item's marker (`3. `, `* `) for an `<li>`."""
    if name in ("ol", "ul"):
        if closing and lists:
            lists.pop()
        elif not closing:
            lists.append([name, 0])
        return None
    if name != "li" or closing:
        return None
    if not lists or lists[-1][0] != "ol":
        return "* "
    lists[-1][1] += 1
    return f"{lists[-1][1]}. "


_BLOCK_TAGS = frozenset({"p", "div", "blockquote", "pre", "table", "thead", "tbody", "tr",
                         "h1", "h2", "h3", "h4", "h5", "h6"})
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>])")
_INDENT = "\x00"  # a list item's indentation, until the lines are stripped


def markdown_of_html(text: str) -> str:
    """Return the registry's HTML as Markdown: paragraphs, numbered and bulleted lists, escapes.

    A backfilled version's text (record history writes HTML) on a page, as API v2 writes the
    same text: its words as they read, `<` written `\\<`. Text with no tag is returned as is.
    """
    if not _HTML_TAG.search(text):
        return text
    out: list[str] = []
    lists: list[list[Any]] = []  # open lists: [tag, items so far]
    at = 0
    for tag in [*_HTML_TAG.finditer(text), None]:
        piece = text[at:tag.start() if tag else len(text)]
        out.append(_MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(html.unescape(piece).split(" "))
                                         .replace("\n", " ").replace("\t", " ")))
        if tag is None:
            break
        at = tag.end()
        name, closing = tag.group(1).lower(), tag.group(0).startswith("</")
        marker = _list_marker(lists, name, closing)
        if name in ("ol", "ul"):
            # A list is a paragraph of its own; a list in a list goes on its item's lines.
            out.append("\n\n" if not lists or (not closing and len(lists) == 1) else "")
        elif marker is not None:
            out.append("\n" + _INDENT * 3 * max(len(lists) - 1, 0) + marker)
        elif name == "br":
            out.append("\n")
        elif name in _BLOCK_TAGS:
            out.append(" " if lists else "\n\n")  # a paragraph in a list item: its text
    lines = (" ".join(line.split()).replace(_INDENT, " ") for line in "".join(out).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# What acts or shows nothing, so that two paths or values that differ by one such character
# do not print the same: controls (Cc), format characters (Cf: bidi controls, zero-width
# spaces, the soft hyphen, tags), line and paragraph separators (Zl, Zp), surrogates and
# unassigned code points (Cs, Cn). Not the zero-width (non-)joiner, which Persian words and
# emoji sequences need. None of the 1,682 shared real records holds one.
_ACTING = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
_JOINERS = frozenset("\u200c\u200d")


def _acts(char: str) -> bool:
    """Tell whether a character acts or shows nothing rather than shows: a control, a tag."""
    return char not in _JOINERS and unicodedata.category(char) in _ACTING


def acts(text: str) -> bool:
    """Tell whether a text holds a character that acts, line breaks and tabs aside."""
    return not text.isprintable() and any(_acts(c) and c not in "\t\n\r" for c in text)


def visible(text: str) -> str:
    """Return text with control characters written as escapes (`\\x1b`), so none takes effect."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if _acts(char):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def one_line(text: str, limit: int = 200) -> str:
    """Return another program's text as one line of at most `limit` characters, controls escaped."""
    # A proxy's HTML error page is many lines, and a body may hold a terminal's escape sequence.
    return visible(" ".join(text.split()))[:limit]


def code_span(text: str) -> str:
    """Return text as a Markdown code span that no backtick run inside can close."""
    if not text:
        return "` `"  # an empty span is not a code span at all
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    # CommonMark strips one space each side when both are there, so padding is undone.
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def recent_window(as_of: date, days: int) -> tuple[str, str]:
    """Return the [since, until) timestamps of the `days` UTC days ending on `as_of`."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise UsageError(f"a window of days must be 1 to {MAX_DAYS:,}, not {days!r}")
    try:
        first, after = as_of - timedelta(days=days - 1), as_of + timedelta(days=1)
    except OverflowError:  # 9999-12-31, or a window reaching back past year 1
        raise UsageError(f"{days} days ending {as_of.isoformat()} leave the calendar") from None
    return f"{first.isoformat()}T00:00:00.000Z", f"{after.isoformat()}T00:00:00.000Z"


def recent_order(changes: Iterable[FieldChange]) -> list[FieldChange]:
    """Order changes newest day first, then by rule 7 within a day."""
    ordered = sorted(changes, key=lambda c: (order_key(c.path), c.detected_at))
    return sorted(ordered, key=lambda c: c.detected_at[:10], reverse=True)


def recent_section(changes: Sequence[FieldChange], days: int, limit: int | None = None) -> str:
    """Return the Recent Field Changes section exactly as a trial page shows it."""
    heading = f"## Recent Field Changes (last {plural(days, 'day')})\n\n"
    lines = [
        f"- {code_span(visible(c.path))} \u2014 {c.kind} _({c.detected_at[:10]})_\n"
        for c in recent_order(changes)
    ]
    if limit is not None:
        lines = lines[:limit]
    if not lines:
        return heading + f"_No field changes in the last {plural(days, 'day')}._\n"
    return heading + "".join(lines)


def history_table(
    nct_id: str, rows: Sequence[dict[str, Any]], listed: Mapping[int, dict[str, Any]] | None = None
) -> str:
    """Return a study's stored snapshots as a plain table.

    `listed` is what the registry's version listing said of each backfilled version, by
    number: its status, QC date and the sections it changed, shown after the hash.
    """
    if not rows:
        return f"{nct_id}: no snapshots stored\n"
    listed = listed or {}
    header = f"{'#':>3}  {'observed_at':<24}  {'source':<12}  {'changes':>7}  content_hash"
    out = [header + ("      registry listing" if listed else "")]
    for row in rows:
        number = row.get("source_version")
        version = f" v{number}" if number is not None else ""
        line = (f"{row['seq']:>3}  {row['observed_at']:<24}  {row['source'] + version:<12}  "
                f"{row['changes']:>7}  {row['content_hash'][:16]}")
        note = listed.get(number) if row["source"] == "backfill" and number is not None else None
        if note:
            parts = [note.get("status") or "no status", f"QC {note.get('qc_date') or '?'}"]
            parts.append(", ".join(note.get("module_labels") or ()) or "no sections listed")
            line += "  " + " · ".join(parts)
        out.append(line)
    return "\n".join(out) + "\n"
