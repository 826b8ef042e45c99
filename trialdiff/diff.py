"""Turn two snapshots of a study into field-path changes (pure).

Fields are compared by their canonical JSON, so an unchanged field costs one string comparison.
DeepDiff runs only inside a field that did change, to say how it changed.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
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


def _object_edits(before: dict[str, Any], after: dict[str, Any],
                  at: str = "") -> list[dict[str, Any]] | None:
    """Return DeepDiff's edits of two objects, without DeepDiff (~100x faster); None: ask it.

    It answers for objects whose moved parts are scalars and objects (a date struct, a site and
    its geoPoint), and leaves to DeepDiff a list that moved or a null, which it reads its way.
    """
    keys = before.keys() | after.keys()
    if len(keys) > 1 and len(before.keys() & after.keys()) / len(keys) < _DIFF_DEEPER:
        return [{"at": at, "op": "changed", "old": before, "new": after}]
    edits: list[dict[str, Any]] = []
    for key in keys:
        here = f"{at}.{key}" if at else key
        if key not in after:
            edits.append({"at": here, "op": "removed", "old": before[key]})
        elif key not in before:
            edits.append({"at": here, "op": "added", "new": after[key]})
        else:
            old, new = before[key], after[key]
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
