"""Turn an API v2 study record into its tracked fields, in canonical JSON (pure).

A coverage tree built from the registry in `fields` maps each part of a record to its field
path; anything the tree does not name is kept under rule 6's fallback paths.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

import orjson

from .fields import (
    FIELDS,
    IGNORED_SOURCES,
    LOCATION_DROPPED_KEY,
    LOCATION_PREFIX,
    LOCATIONS_SOURCE,
    expand_source,
)

# A coverage tree: nested dicts of record keys whose leaves say what a key is.
_LOCATIONS = "\0locations"
_IGNORED = "\0ignored"
# How deep the fallback path reaches into each section (rule 6), counting the section.
_FALLBACK_DEPTH = {"protocolSection": 3, "resultsSection": 2, "documentSection": 3,
                   "annotationSection": 3}
_ABSENT_JSON = frozenset({"null", '""', "[]", "{}"})
_NCT_ID = re.compile(r"NCT\d{8}")

Tree = dict[str, Any]


def _build_tree(ignored: tuple[str, ...]) -> Tree:
    """Return the coverage tree for the registry and an ignore list."""
    tree: Tree = {}
    leaves = [(expand_source(f.source), f.path) for f in FIELDS]
    leaves.append((expand_source(LOCATIONS_SOURCE), _LOCATIONS))
    leaves.extend((expand_source(source), _IGNORED) for source in ignored)
    for keys, leaf in leaves:
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return tree


DEFAULT_TREE = _build_tree(IGNORED_SOURCES)


def fold_whitespace(text: str) -> str:
    """Fold runs of whitespace to one space and strip the ends (rule 3)."""
    return " ".join(text.split())


_UNICODE_SPACE = re.compile(r"[^\S ]")  # e.g. U+00A0, which str.split() folds too
# A float after ':' ',' or '[': orjson and json write some differently (1e16 and 1e+16,
# 0.00001 and 1e-05), so floats take the slow path; registry records hardly have any.
_FLOAT = re.compile(r"[:,\[]-?\d+[.eE]")


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
    return _FLOAT.search(text) is None


def canonical_json(value: Any) -> str | None:
    """Return a value's canonical JSON (the spec's definition), or None when it is absent."""
    # Fast path: orjson with sorted keys already is the canonical JSON of a subtree with no
    # lists, no absent values and no whitespace to fold; most of a record is such subtrees.
    if isinstance(value, dict):
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        except (orjson.JSONEncodeError, TypeError):
            text = "["  # orjson refuses big integers and lone surrogates: take the slow path
        if _plain(text):
            return text
        items = []
        for key in sorted(value):
            child = canonical_json(value[key])
            if child is not None:
                items.append(encode_basestring(key) + ":" + child)
        return "{" + ",".join(items) + "}" if items else None
    if isinstance(value, str):
        value = fold_whitespace(value)
        return encode_basestring(value) if value else None
    if isinstance(value, list):
        texts = [t for t in map(canonical_json, value) if t is not None]
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


def fallback_path(keys: tuple[str, ...]) -> str:
    """Return rule 6's fallback path for a key path cut at its section's fallback depth."""
    section, rest = keys[0], keys[1:]
    if not rest:
        return section
    module = rest[0].removesuffix("Module") if rest[0].endswith("Module") else rest[0]
    if section == "protocolSection":
        return ".".join((module, *rest[1:]))
    if section == "resultsSection":
        return ".".join(("results", module, *rest[1:]))
    if section == "documentSection":
        return ".".join(("documents", *rest[1:])) if len(rest) > 1 else "documents." + module
    if section == "annotationSection":
        if rest[0] == "annotationModule" and len(rest) > 1:
            return ".".join(("annotations", *rest[1:]))
        return ".".join(("annotations", module, *rest[1:]))
    return ".".join(keys)


def location_key(site: Mapping[str, Any], markup: str = "markdown") -> str:
    """Return rule 5's key for a site: facility|city|state|country, folded and lower-cased."""
    parts = []
    for name in ("facility", "city", "state", "country"):
        part = site.get(name)
        if isinstance(part, str) and markup == "html":
            part = html.unescape(part)  # `&amp;` in HTML is `&` in Markdown: one site, one key
        parts.append(fold_whitespace(part).lower() if isinstance(part, str) else "")
    return "|".join(parts)


def _location_fields(sites: list[Any], out: dict[str, str], markup: str) -> None:
    """Add one field per site, numbering sites whose key repeats (rule 5)."""
    by_key: dict[str, list[str]] = {}
    for site in sites:
        if isinstance(site, dict):
            key = location_key(site, markup)
            content = {k: v for k, v in site.items() if k != LOCATION_DROPPED_KEY}
        else:
            # Not an object: keep it, keyed by nothing, rather than lose it.
            key, content = "|||", site
        text = canonical_json(content)
        if text is not None:
            by_key.setdefault(key, []).append(text)
    for key, texts in by_key.items():
        texts.sort()
        for number, text in enumerate(texts, start=1):
            suffix = "" if number == 1 else f" #{number}"
            out[LOCATION_PREFIX + key + suffix] = text


def _add_residual(residuals: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    """Keep uncovered content under its fallback path, nested below the fallback depth."""
    depth = _FALLBACK_DEPTH.get(keys[0], 1)
    anchor, below = keys[:depth], keys[depth:]
    path = fallback_path(anchor)
    if not below:
        residuals[path] = value
        return
    node = residuals.setdefault(path, {})
    if not isinstance(node, dict):  # defensive: the anchor itself was a scalar
        return
    for key in below[:-1]:
        node = node.setdefault(key, {})
    node[below[-1]] = value


def _walk(value: Any, tree: Tree, keys: tuple[str, ...], out: dict[str, str],
          residuals: dict[str, Any], markup: str) -> None:
    """Map one record node onto field paths, collecting what the tree does not cover."""
    for key, child in value.items():
        here = (*keys, key)
        cover = tree.get(key)
        if cover == _IGNORED:
            continue
        if cover == _LOCATIONS and isinstance(child, list):
            _location_fields(child, out, markup)
        elif isinstance(cover, str) and cover != _LOCATIONS:
            text = canonical_json(child)
            if text is not None:
                out[cover] = text
        elif isinstance(child, dict) and (
            isinstance(cover, dict) or len(here) < _FALLBACK_DEPTH.get(here[0], 1)
        ):
            _walk(child, cover if isinstance(cover, dict) else {}, here, out, residuals, markup)
        else:
            _add_residual(residuals, here, child)


def extract_fields(
    study: Mapping[str, Any], tree: Tree = DEFAULT_TREE, markup: str = "markdown"
) -> dict[str, str]:
    """Return {path: canonical JSON} for every tracked field a record holds.

    `markup` is the record's text markup: "markdown" (API v2) or "html" (record history).
    """
    out: dict[str, str] = {}
    residuals: dict[str, Any] = {}
    _walk(study, tree, (), out, residuals, markup)
    for path, residual in residuals.items():
        text = canonical_json(residual)
        if text is not None:
            out[path] = text
    return out


_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"\w+")
# A Markdown list item's number: HTML numbers <ol> items itself, so `1.` is markup, not words.
# Canonical text has its line breaks folded, so any standalone `12.` or `3)` counts as one.
_LIST_NUMBER = re.compile(r"(?<!\S)\d+[.)](?!\S)")


def neutral_text(text: str) -> str:
    """Return the words of a text with its markup gone: HTML tags, entities, Markdown marks."""
    text = _LIST_NUMBER.sub(" ", html.unescape(_TAG.sub(" ", text)))
    return " ".join(_WORD.findall(text))


def neutral_json(text: str) -> str | None:
    """Return canonical JSON of a value with every string reduced to its words.

    Two values equal here differ at most by markup (HTML versus Markdown for the same words),
    which is never a change. Punctuation goes too: across markups it cannot be told apart.
    """
    def strip(node: Any) -> Any:
        if isinstance(node, str):
            return neutral_text(node)
        if isinstance(node, dict):
            return {key: strip(child) for key, child in node.items()}
        if isinstance(node, list):
            return [strip(child) for child in node]
        return node

    return canonical_json(strip(json.loads(text)))


def study_id(study: Any) -> str | None:
    """Return a record's NCT id, or None when it is not a study object."""
    if not isinstance(study, dict):
        return None
    try:
        nct_id = study["protocolSection"]["identificationModule"]["nctId"]
    except (KeyError, TypeError):
        return None
    if isinstance(nct_id, str) and _NCT_ID.fullmatch(nct_id):
        return nct_id
    return None


def is_nct_id(text: str) -> bool:
    """Tell whether a string is a well-formed NCT id."""
    return _NCT_ID.fullmatch(text) is not None
