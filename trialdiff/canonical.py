"""Write a value's canonical JSON, the spec's definition (pure): the form every field is kept in.

Canonical JSON is a value with its whitespace folded (rule 3), its absent values (null, "",
{}, []) left out, its object keys and list items sorted, written compactly; `canonical_json`
is None for a value that is absent altogether. orjson writes most of it; Python writes what
orjson refuses (a lone surrogate).
"""

from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from typing import Any

import orjson

from .model import FLOAT_IN_JSON


def fold_whitespace(text: str) -> str:
    """Fold runs of whitespace to one space and strip the ends (rule 3)."""
    # Every whitespace character str.split() splits on but the space is unprintable, so a
    # printable text with no double space and no space at an end is folded already: one scan,
    # where splitting a long description into its words costs ten.
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return " ".join(text.split())


_UNICODE_SPACE = re.compile(r"[^\S ]")  # e.g. U+00A0, which str.split() folds too
_SORTED = orjson.OPT_SORT_KEYS
_ORJSON_INTS = range(-(1 << 63), 1 << 64)  # the integers orjson writes; json writes the rest


def _plain(text: str) -> bool:
    """Tell whether orjson's sorted-key text of a dict is already its canonical JSON."""
    # Substrings that mean it may not be: escapes (whitespace such as \n is escaped), runs of
    # spaces or spaces by a quote (whitespace to fold), absent values, lists (to sort). A false
    # alarm only costs the slow path. Chained `in` tests run at C speed.
    if ("[" in text or "\\" in text or "  " in text or '" ' in text or ' "' in text
            or "null" in text or '""' in text or "{}" in text):
        return False
    if not text.isascii() and _UNICODE_SPACE.search(text):
        return False
    return FLOAT_IN_JSON.search(text) is None  # floats: slow path


def canonical_json(value: Any) -> str | None:
    """Return a value's canonical JSON (the spec's definition), or None when it is absent."""
    # Fast path: orjson with sorted keys already is the canonical JSON of a subtree with no
    # lists, no absent values and no whitespace to fold; most of a record is such subtrees.
    # Else one walk folds the subtree into what orjson writes canonically, each list as its
    # own sorted text, so no node is written twice (real results modules: 1.3-1.5x faster
    # than a walk that tried the fast path again at every level).
    try:
        if type(value) is str:  # a text field: most of what a record's prose modules hold
            text = fold_whitespace(value)
            return orjson.dumps(text).decode("utf-8") if text else None
        if type(value) is dict:
            text = orjson.dumps(value, option=_SORTED).decode("utf-8")
            if _plain(text):
                return text
            folded = _folded_object(value)
            return orjson.dumps(folded, option=_SORTED).decode("utf-8") if folded else None
        if type(value) is list:
            items = _folded_list(value)
            return None if items is None else items.decode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        pass  # a lone surrogate, which orjson refuses, or a type JSON has not: json's way
    return _canonical_text(value)


def _folded_object(value: dict[str, Any]) -> dict[str, Any]:
    """Return an object as orjson writes its canonical JSON: folded, absent values left out."""
    out: dict[str, Any] = {}
    for key, child in value.items():
        kind = type(child)
        if kind is str:
            child = fold_whitespace(child)
            if child:
                out[key] = child
        elif kind is dict:
            child = _folded_object(child)
            if child:
                out[key] = child
        elif kind is list:
            items = _folded_list(child)
            if items is not None:
                out[key] = orjson.Fragment(items)
        elif child is not None:
            out[key] = _folded_scalar(child)
    return out


def _folded_list(value: list[Any]) -> bytes | None:
    """Return a list's canonical JSON: its items' canonical JSON, sorted; None when empty."""
    texts = []
    for child in value:
        kind = type(child)
        if kind is str:
            child = fold_whitespace(child)
            if child:
                texts.append(orjson.dumps(child))
        elif kind is dict:
            child = _folded_object(child)
            if child:
                texts.append(orjson.dumps(child, option=_SORTED))
        elif kind is list:
            items = _folded_list(child)
            if items is not None:
                texts.append(items)
        elif child is not None:
            texts.append(orjson.dumps(_folded_scalar(child)))
    if not texts:
        return None
    texts.sort()  # UTF-8 bytes sort as their code points do
    return b"[" + b",".join(texts) + b"]"


def _folded_scalar(value: Any) -> Any:
    """Return a number or boolean as orjson writes its canonical JSON."""
    if value is True or value is False:
        return value
    if type(value) is int:
        return value if value in _ORJSON_INTS else orjson.Fragment(int.__repr__(value))
    if type(value) is float:
        return orjson.Fragment(json.dumps(value))  # json's spelling: 1e+16, not orjson's 1e16
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _canonical_text(value: Any) -> str | None:
    """Return a value's canonical JSON written by Python alone (canonical_json's way out)."""
    if isinstance(value, dict):
        items = []
        for key in sorted(value):
            child = _canonical_text(value[key])
            if child is not None:
                items.append(encode_basestring(key) + ":" + child)
        return "{" + ",".join(items) + "}" if items else None
    if isinstance(value, str):
        value = fold_whitespace(value)
        return encode_basestring(value) if value else None
    if isinstance(value, list):
        texts = [t for t in map(_canonical_text, value) if t is not None]
        if not texts:
            return None
        texts.sort()
        return "[" + ",".join(texts) + "]"
    if value is None:
        return None
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)
