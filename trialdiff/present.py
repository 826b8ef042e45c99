"""Turn a change into format-neutral pieces that every renderer shows its own way (pure).

One presenter for the terminal report, Markdown and Atom (and `record`, the object JSON,
NDJSON and CSV carry): `present` gives a change's body as one of three shapes, and each
renderer only formats them:

- `WordDiff`: a text field's word diff (bounded, long rewritten runs clipped; worddiff.py);
- `ItemLines`: a list field item by item (added, removed, reworded, changed by item key) or a
  value's inner edits, in the order the report lists them;
- `Values`: old → new, shown as plain values, dates (`2025-03-01 ESTIMATED`) or sites.

With them come the facts in words (meaning.describe_facts) and the severity. Values stay raw:
each renderer decides how wide to cut them and how to escape them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from .fields import LOCATION_PREFIX, field_kind
from .meaning import NONE, Annotated, SiteCounts, describe_facts, site_counts, sites_phrase
from .model import dump_json, dump_json_head
from .render import plural, readable_pair, visible
from .worddiff import ELLIPSIS, EXACT_CELLS, Segment, clip, word_diff

ARROW: Final = "\u2192"
REWORDED: Final = 0.6  # difflib ratio above which a removed and an added item are one edit

def short(value: Any, width: int = 60) -> str:
    """Return a value as one visible line: strings as they are, others as JSON, cut at width."""
    if value is None:
        return NONE
    text = value if isinstance(value, str) else dump_json_head(value, width * 4)
    # A long text's line starts as its head's does (folding and `visible` map it piece by
    # piece), so the head alone is read unless it turns out too short to fill the width.
    head = text[: width * 4]
    line = visible(" ".join(head.split()))
    if len(head) < len(text) and len(line) <= width:
        whole = value if isinstance(value, str) else dump_json(value)
        line = visible(" ".join(whole.split()))
    return line if len(line) <= width else line[: width - 1] + ELLIPSIS


def short_pair(old: Any, new: Any, width: int = 60) -> tuple[str, str]:
    """Return old and new as one visible line each, cut so that both show where they differ.

    Cut from their starts, two long values that share a beginning (a site's JSON, criteria)
    read the same, `{"city":"Duarte",… → {"city":"Duarte",…`: both start a little before
    their first difference instead.
    """
    cut = short(old, width), short(new, width)
    if cut[0] != cut[1] or not isinstance(old, str | dict | list) or not isinstance(
            new, str | dict | list):
        return cut
    texts = [v if isinstance(v, str) else dump_json(v) for v in (old, new)]
    same = _common_prefix(*texts)
    if same == len(texts[0]) == len(texts[1]):
        return cut  # the same text (values that differ only in what JSON cannot show)
    return _from(texts[0], same, width), _from(texts[1], same, width)


def _common_prefix(a: str, b: str) -> int:
    """Return the length of the longest common prefix (slices compared, not characters)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _from(text: str, at: int, width: int) -> str:
    """Return one visible line of a text from a little before `at`, cut at width."""
    # Only a window is folded and made visible: a results section is 20 KB and more.
    head = " ".join(text[max(0, at - 2 * width):at].split())
    before = head[-(width // 3):]
    space = " " if text[at - 1:at + 1] != "".join(text[at - 1:at + 1].split()) else ""
    line = visible(" ".join((before + space + text[at:at + 4 * width]).split()))
    line = ELLIPSIS + line if at > 2 * width or len(head) > len(before) else line
    return line if len(line) <= width else line[: width - 1] + ELLIPSIS


def date_text(value: Any) -> str:
    """Return a date field's value as `2025-03-01 ESTIMATED` (or its JSON when unusual)."""
    if isinstance(value, Mapping) and set(value) <= {"date", "type"}:
        return short(" ".join(str(value[k]) for k in ("date", "type") if k in value))
    return short(value)


def site_name(value: Any) -> str:
    """Return a site as its name reads: `Research Site, Anchorage, Alaska, United States`."""
    parts = [value.get(key) for key in ("facility", "city", "state", "country")
             if isinstance(value, Mapping) and isinstance(value.get(key), str)]
    return short(", ".join(part for part in parts if part), 80) if any(parts) else NONE


def site_text(value: Any) -> str:
    """Return an added or removed site as `site (RECRUITING)`: its path already names it."""
    if value is None:
        return NONE
    status = value.get("status") if isinstance(value, Mapping) else None
    return f"site ({short(status, 40)})" if status else "site"


@dataclass(frozen=True)
class Values:
    """Old → new as whole values; `form` says how to show them: value, date or site."""

    old: Any
    new: Any
    form: Literal["value", "date", "site"] = "value"

    def texts(self, width: int) -> tuple[str, str]:
        """Return old and new as one visible line each, cut so that both show where they differ."""
        if self.form == "date":
            return date_text(self.old), date_text(self.new)
        if self.form == "site":
            return site_text(self.old), site_text(self.new)
        return short_pair(self.old, self.new, width)


@dataclass(frozen=True)
class WordDiff:
    """A text field's word diff, long rewritten runs clipped around an ellipsis."""

    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Edit:
    """One edit inside a value: where (`contacts[0].phone`), how, old and new."""

    at: str
    op: str  # added, removed or changed
    old: Any = None
    new: Any = None

    def texts(self, width: int) -> tuple[str, str]:
        """Return old and new as one visible line each, cut so that both show where they differ."""
        return short_pair(self.old, self.new, width)


@dataclass(frozen=True)
class ItemLine:
    """One line of a list field or object: an item added, removed, reworded, changed, or an edit.

    `item` is the item's label (added, removed, changed); a reworded item has the word diff of
    its old and new label in `words`; a changed item its inner `edits`; an `edit` line one edit.
    """

    op: Literal["added", "removed", "reworded", "changed", "edit"]
    item: Any = None
    words: tuple[Segment, ...] = ()
    edits: tuple[Edit, ...] = ()


@dataclass(frozen=True)
class ItemLines:
    """A list field item by item, or a value's inner edits, in the report's order."""

    lines: tuple[ItemLine, ...]


Body = Values | WordDiff | ItemLines


@dataclass(frozen=True)
class Presented:
    """One change ready to render: the change, its meaning, its body and its facts in words."""

    item: Annotated
    body: Body
    notes: tuple[str, ...]  # the facts as phrases (site counts are shown once per study)

    @property
    def path(self) -> str:
        """Return the change's field path."""
        return self.item.change.path

    @property
    def kind(self) -> str:
        """Return added, removed or changed."""
        return self.item.change.kind

    @property
    def severity(self) -> str:
        """Return major, minor or info."""
        return self.item.severity


def present(item: Annotated) -> Presented:
    """Return one annotated change as format-neutral pieces."""
    return Presented(item, body(item), tuple(describe_facts(item.facts, with_sites=False)))


def body(item: Annotated) -> Body:
    """Return what changed: a word diff, item lines, or old → new."""
    change = item.change
    kind = field_kind(change.path)
    if kind == "date":
        return Values(change.old, change.new, "date")
    if kind == "text" and isinstance(change.old, str) and isinstance(change.new, str):
        # A backfilled version's HTML against the Markdown after it: words, not tags.
        return WordDiff(tuple(clip(word_diff(*readable_pair(change.old, change.new)))))
    lines = item_lines(change.detail)
    if lines:
        return ItemLines(lines)
    if change.path.startswith(LOCATION_PREFIX) and change.kind != "changed":
        return Values(change.old, change.new, "site")
    return Values(change.old, change.new)


def _edit(edit: Mapping[str, Any]) -> Edit:
    """Return a stored edit as an Edit."""
    return Edit(edit["at"], edit["op"], edit.get("old"), edit.get("new"))


def item_lines(detail: Mapping[str, Any]) -> tuple[ItemLine, ...]:
    """Return the items removed (or reworded), added and changed, then the inner edits."""
    added = list(detail.get("items_added", ()))
    lines = []
    for item in detail.get("items_removed", ()):
        match = reworded(item, added)
        if match is None:
            lines.append(ItemLine("removed", item))
        else:
            # A list keyed by its label (an outcome's measure) sees a reworded label as one
            # item removed and one added; showing the words that changed says far more.
            added.remove(match)
            lines.append(ItemLine("reworded", item, tuple(clip(word_diff(item, match)))))
    lines += [ItemLine("added", item) for item in added]
    lines += [ItemLine("changed", item["item"], edits=tuple(map(_edit, item["edits"])))
              for item in detail.get("items_changed", ())]
    # An edit at "" is the whole value replaced (another type, or too little in common): no
    # inner edit, so the body is old → new.
    lines += [ItemLine("edit", edits=(_edit(edit),)) for edit in detail.get("edits", ())
              if edit["at"]]
    return tuple(lines)


def reworded(item: Any, candidates: Sequence[Any]) -> str | None:
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


def record(item: Annotated) -> dict[str, Any]:
    """Return one change as the JSON object every format carries."""
    return {**item.change.as_dict(), "facts": item.facts, "severity": item.severity}


def tally(items: Iterable[Annotated], noun: str) -> str:
    """Return `3 field changes: 1 major, 2 minor, 0 info` plus site counts when any."""
    items = list(items)
    by = ", ".join(f"{sum(1 for a in items if a.severity == level)} {level}"
                   for level in ("major", "minor", "info"))
    text = f"{plural(len(items), noun)}: {by}"
    counts: Iterable[SiteCounts] = site_counts(a.change for a in items).values()
    phrases = [sites_phrase(c) for c in counts if any(c)]
    return text + "; " + "; ".join(phrases) if phrases else text
