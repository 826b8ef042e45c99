"""Turn two snapshots of a study into field-path changes (pure).

Fields are compared by their canonical JSON, so an unchanged field costs one string comparison.
DeepDiff runs only inside a field that did change, to say how it changed.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from .canonical import canonical_json
from .fields import FIELD_BY_PATH, LOCATION_PREFIX, order_key
from .model import ChangeKind, FieldChange, Snapshot, dump_json, parse_json
from .render import MARKDOWN_ESCAPE

_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"[^\W_]+")  # letters and digits: `_` is Markdown emphasis or punctuation
# A Markdown list item's number: HTML numbers <ol> items itself, so `1.` is markup, not words.
# Canonical text has its line breaks folded, so any standalone `12.` or `3)` counts as one.
_LIST_NUMBER = re.compile(r"(?<!\S)\d+[.)](?!\S)")


def neutral_text(text: str, markup: str) -> str:
    """Return the words of a text in a markup, its marks gone: HTML tags and entities, escapes.

    Only HTML has tags: in Markdown a `<` is text (`ANC < 1500 and PLT > 100` keeps its words).
    """
    if markup == "html":
        text = html.unescape(_TAG.sub(" ", text))
    else:
        text = MARKDOWN_ESCAPE.sub(r"\1", text)  # `\_` is the character itself
    return " ".join(_WORD.findall(_LIST_NUMBER.sub(" ", text)))


def neutral_json(text: str, markup: str) -> str | None:
    """Return canonical JSON of a value in a markup with every string reduced to its words.

    Two values equal here differ at most by markup (HTML versus Markdown for the same words),
    which is never a change. Punctuation goes too: across markups it cannot be told apart.
    """
    def strip(node: Any) -> Any:
        if isinstance(node, str):
            return neutral_text(node, markup)
        if isinstance(node, dict):
            return {key: strip(child) for key, child in node.items()}
        if isinstance(node, list):
            return [strip(child) for child in node]
        return node

    return canonical_json(strip(json.loads(text)))


_REPORT_OPS = {
    "values_changed": "changed",
    "type_changes": "changed",
    "dictionary_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_added": "added",
    "iterable_item_removed": "removed",
    "set_item_added": "added",
    "set_item_removed": "removed",
}


def changed_paths(
    old: Mapping[str, str], new: Mapping[str, str], markups: tuple[str, str] | None = None
) -> list[tuple[str, ChangeKind]]:
    """Return (path, kind) for every field that differs, in rule 7's order.

    Across markups (`markups`, old's and new's: a history version in HTML against a Markdown
    record), a field whose words are the same is not a change: markup alone never is.
    """
    old_markup, new_markup = markups or ("markdown", "markdown")
    found: list[tuple[str, ChangeKind]] = []
    for path, text in new.items():
        before = old.get(path)
        if before is None:
            found.append((path, "added"))
        elif before != text and not (
            old_markup != new_markup
            and neutral_json(before, old_markup) == neutral_json(text, new_markup)
        ):
            found.append((path, "changed"))
    found.extend((path, "removed") for path in old if path not in new)
    found.sort(key=lambda item: order_key(item[0]))
    return found


def diff_snapshots(old: Snapshot | None, new: Snapshot) -> list[FieldChange]:
    """Return the changes from one snapshot to the next; a first snapshot has none (rule 4)."""
    if old is None:
        return []
    changes = []
    for path, kind in changed_paths(old.fields, new.fields, (old.markup, new.markup)):
        before = parse_json(old.fields[path]) if kind != "added" else None
        after = parse_json(new.fields[path]) if kind != "removed" else None
        changes.append(
            FieldChange(
                nct_id=new.nct_id,
                path=path,
                kind=kind,
                detected_at=new.observed_at,
                old=before,
                new=after,
                detail=describe(path, before, after),
            )
        )
    return changes


def _item_label(item: Any, key: str) -> str:
    """Return the name a report gives one item of a list field."""
    if isinstance(item, dict):
        label = item.get(key) if key else None
        if isinstance(label, str):
            return label
        return json.dumps(item, sort_keys=True, ensure_ascii=False)
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)


def _dotted(parts: list[Any]) -> str:
    """Return a DeepDiff path list as `a.b[0].c`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# DeepDiff's threshold_to_diff_deeper: objects sharing fewer keys than this changed whole.
_DIFF_DEEPER = 0.33


def _apart(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Tell whether two objects share too few keys to be one object edited (changed whole)."""
    keys = before.keys() | after.keys()
    return len(keys) > 1 and len(before.keys() & after.keys()) / len(keys) < _DIFF_DEEPER


def _by_key(before: dict[str, Any], after: dict[str, Any], at: str,
            edits: list[dict[str, Any]]) -> Iterator[tuple[str, Any, Any]]:
    """Add to `edits` the keys one object lacks; yield (path, old, new) of the keys both hold."""
    for key in sorted(before.keys() | after.keys()):
        here = f"{at}.{key}" if at else key
        if key not in after:
            edits.append({"at": here, "op": "removed", "old": before[key]})
        elif key not in before:
            edits.append({"at": here, "op": "added", "new": after[key]})
        else:
            yield here, before[key], after[key]


def _object_edits(before: dict[str, Any], after: dict[str, Any],
                  at: str = "") -> list[dict[str, Any]] | None:
    """Return DeepDiff's edits of two objects, without DeepDiff (~100x faster); None: ask it.

    It answers for objects whose moved parts are scalars and objects (a date struct, a site and
    its geoPoint), and leaves to DeepDiff a list that moved or a null, which it reads its way.
    """
    if _apart(before, after):
        return [{"at": at, "op": "changed", "old": before, "new": after}]
    edits: list[dict[str, Any]] = []
    for here, old, new in _by_key(before, after, at, edits):
        if old is None or new is None:
            if old is not new:
                return None
        elif type(old) is not type(new):
            # DeepDiff counts a type change (1 to 1.0, 1 to true) as a change, and so does this.
            edits.append({"at": here, "op": "changed", "old": old, "new": new})
        elif isinstance(old, dict):
            inner = _object_edits(old, new, here)
            if inner is None:
                return None
            edits.extend(inner)
        elif isinstance(old, list):
            if dump_json(old) != dump_json(new):  # == takes 1 for 1.0 and true
                return None
        elif old != new:
            edits.append({"at": here, "op": "changed", "old": old, "new": new})
    return edits


def inner_edits(before: Any, after: Any) -> list[dict[str, Any]]:
    """Return what changed inside one value, as sorted {at, op, old, new} edits."""
    if isinstance(before, dict) and isinstance(after, dict):
        edits = _object_edits(before, after)
        if edits is not None:
            return sorted(edits, key=_edit_order)
    if beyond_deepdiff(before, after):
        return sorted(_walked_edits(before, after), key=_edit_order)
    # Imported here: most runs change nothing, and DeepDiff takes a tenth of a second to load.
    from deepdiff import DeepDiff
    from deepdiff.helper import NotPresent

    edits = []
    try:
        report = DeepDiff(before, after, ignore_order=True, view="tree")
    except UnicodeError:
        # DeepDiff hashes text as UTF-8; a lone surrogate cannot be. Say the value changed.
        return [{"at": "", "op": "changed", "old": before, "new": after}]
    for report_type, levels in report.items():
        op = _REPORT_OPS.get(report_type, "changed")
        for level in levels:
            edit: dict[str, Any] = {"at": _dotted(level.path(output_format="list")), "op": op}
            if not isinstance(level.t1, NotPresent):
                edit["old"] = level.t1
            if not isinstance(level.t2, NotPresent):
                edit["new"] = level.t2
            edits.append(edit)
    edits.sort(key=_edit_order)
    return edits


# DeepDiff's ignore_order pairs list items by likeness: its time grows faster than a value's
# size and doubles with each level of lists (a real results section with a few counts edited:
# 8-20 s; a value 16 lists deep: a minute). Past these bounds one walk finds the edits.
MAX_DEEPDIFF_NODES = 2_000
MAX_DEEPDIFF_LISTS = 6
_MAX_WALK = 100  # levels the walk goes down; below, a value that moved is changed whole


def beyond_deepdiff(before: Any, after: Any) -> bool:
    """Tell whether two values hold more nodes, or lists deeper, than DeepDiff is given."""
    budget = MAX_DEEPDIFF_NODES
    stack = [(before, 0), (after, 0)]
    while stack:
        value, lists = stack.pop()
        budget -= 1
        if budget < 0 or lists > MAX_DEEPDIFF_LISTS:
            return True
        if isinstance(value, dict):
            stack.extend((child, lists) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, lists + 1) for child in value)
    return False


def _walked_edits(before: Any, after: Any, at: str = "", depth: int = 0) -> list[dict[str, Any]]:
    """Return the edits between two values in one walk: objects by key, lists by their items.

    The items one list holds and the other lacks are the edits, as in DeepDiff's ignore_order;
    an object that went is paired with the likeliest that came, and walked (a count edited in a
    results table).
    """
    if type(before) is not type(after) or depth > _MAX_WALK or not isinstance(
            before, dict | list):
        same = type(before) is type(after) and (
            dump_json(before) == dump_json(after) if isinstance(before, dict | list)
            else before == after)  # one type: 1 == 1.0 and true == 1 cannot meet here
        return [] if same else [{"at": at, "op": "changed", "old": before, "new": after}]
    edits: list[dict[str, Any]] = []
    if isinstance(before, dict):
        if _apart(before, after):  # as DeepDiff and _object_edits read it
            return [{"at": at, "op": "changed", "old": before, "new": after}]
        for here, old, new in _by_key(before, after, at, edits):
            edits += _walked_edits(old, new, here, depth + 1)
        return edits
    # Items both hold are no edit; canonical lists are sorted, so an edited item may move.
    after_texts = [dump_json(item) for item in after]  # each item dumped once
    unmatched = Counter(after_texts)
    gone = []
    for index, item in enumerate(before):
        text = dump_json(item)
        if unmatched[text] > 0:
            unmatched[text] -= 1
        else:
            gone.append(index)
    came = []
    for index, text in enumerate(after_texts):
        if unmatched[text] > 0:
            unmatched[text] -= 1
            came.append(index)
    pairs = _likeliest_pairs([before[i] for i in gone], [after[j] for j in came])
    for old, new in pairs:
        edits += _walked_edits(before[gone[old]], after[came[new]], f"{at}[{gone[old]}]",
                               depth + 1)
    paired_old, paired_new = {old for old, _ in pairs}, {new for _, new in pairs}
    edits += [{"at": f"{at}[{index}]", "op": "removed", "old": before[index]}
              for number, index in enumerate(gone) if number not in paired_old]
    edits += [{"at": f"{at}[{index}]", "op": "added", "new": after[index]}
              for number, index in enumerate(came) if number not in paired_new]
    return edits


_MAX_PAIRINGS = 250_000  # items gone x items came that are compared for likeness


def _likeliest_pairs(gone: list[Any], came: list[Any]) -> list[tuple[int, int]]:
    """Pair each object that went with the one that came sharing most of its keys' values.

    Canonical lists are sorted by each item's JSON, so an edited row moves (a results table's
    counts sort before its term): pairing in order took a probe's two edited rows for each
    other, renamed. A pair must share half the keys' values (but a lone item that went and a
    lone one that came are a pair); the rest are removed and added.
    """
    if len(gone) == len(came) == 1 and type(gone[0]) is type(came[0]):
        return [(0, 0)]  # one item edited: nothing else it could be
    if len(gone) * len(came) > _MAX_PAIRINGS:
        return []
    texts = [{key: dump_json(value) for key, value in item.items()} if isinstance(item, dict)
             else None for item in came]
    pairs: list[tuple[int, int]] = []
    free = set(range(len(came)))
    for number, item in enumerate(gone):
        if not isinstance(item, dict):
            continue
        mine = {key: dump_json(value) for key, value in item.items()}
        best, score = None, 0
        for other in sorted(free):
            theirs = texts[other]
            if theirs is None:
                continue
            shared = sum(1 for key, text in mine.items() if theirs.get(key) == text)
            if shared > score and 2 * shared >= len(mine.keys() | theirs.keys()):
                best, score = other, shared
        if best is not None:
            free.discard(best)
            pairs.append((number, best))
    return pairs


def _edit_order(edit: dict[str, Any]) -> tuple[str, str, str]:
    """Return the key edits are sorted by: where, what, then the whole edit."""
    return edit["at"], edit["op"], json.dumps(edit, sort_keys=True, default=str)


def _list_detail(key: str, before: list[Any], after: list[Any]) -> dict[str, Any]:
    """Say which items of a list field were added, removed or edited, and how."""
    old_texts = {dump_json(i): i for i in before}
    new_texts = {dump_json(i): i for i in after}
    gone = [item for text, item in old_texts.items() if text not in new_texts]
    came = [item for text, item in new_texts.items() if text not in old_texts]
    came_by_label: dict[str, list[Any]] = {}
    for item in came:
        came_by_label.setdefault(_item_label(item, key), []).append(item)
    removed, edited = [], []
    for item in gone:
        label = _item_label(item, key)
        partners = came_by_label.get(label)
        if key and partners:
            edited.append({"item": label, "edits": inner_edits(item, partners.pop(0))})
        else:
            removed.append(label)
    added = [label for label, items in came_by_label.items() for _ in items]
    return {
        "items_added": sorted(added),
        "items_removed": sorted(removed),
        "items_changed": sorted(edited, key=lambda e: e["item"]),
        "count_before": len(before),
        "count_after": len(after),
    }


def describe(path: str, before: Any, after: Any) -> dict[str, Any]:
    """Return the detail stored with a change: what moved inside the field."""
    if before is None or after is None:
        return {}
    field = FIELD_BY_PATH.get(path)
    if field is not None and field.kind == "list" and isinstance(before, list) and isinstance(
        after, list
    ):
        return _list_detail(field.item_key, before, after)
    if path.startswith(LOCATION_PREFIX) or isinstance(before, dict | list):
        return {"edits": inner_edits(before, after)}
    return {}
