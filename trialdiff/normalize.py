"""Turn an API v2 study record into its tracked fields, in canonical JSON (pure).

A coverage tree built from the registry in `fields` maps each part of a record to its field
path; anything the tree does not name is kept under rule 6's fallback paths.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .canonical import canonical_json
from .errors import UsageError
from .fields import (
    FIELD_BY_PATH,
    IGNORE_LIST,
    LOCATION_DROPPED_KEY,
    LOCATION_PREFIX,
    LOCATIONS_SOURCE,
    SITE_GEO_POINT,
    Field,
    expand_source,
)
from .registry import DEFAULT

# A coverage tree: nested dicts of record keys whose leaves say what a key is.
_LOCATIONS = "\0locations"
_IGNORED = "\0ignored"
# How deep the fallback path reaches into each section (rule 6), counting the section.
_FALLBACK_DEPTH = {"protocolSection": 3, "resultsSection": 2, "documentSection": 3,
                   "annotationSection": 3}
# The sections whose modules map on their own: no field spans two of a section's modules.
SECTIONS = frozenset(_FALLBACK_DEPTH)
_ABSENT_JSON = frozenset({"null", '""', "[]", "{}"})
_SITE_MUTABLE = frozenset({"status", "contacts"})  # left out of a duplicate site's identity

Tree = dict[str, Any]


def _build_tree(ignored: tuple[str, ...], fields: tuple[Field, ...] = DEFAULT.fields) -> Tree:
    """Return the coverage tree for a field table and an ignore list."""
    tree: Tree = {}
    leaves = [(expand_source(f.source), f.path) for f in fields]
    leaves.append((expand_source(LOCATIONS_SOURCE), _LOCATIONS))
    leaves.extend((expand_source(source), _IGNORED) for source in ignored)
    for keys, leaf in leaves:
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return tree


@dataclass(frozen=True)
class Rules:
    """What a database tracks: its coverage tree, and what its records and sites leave out."""

    tree: Tree
    volatile: tuple[str, ...]  # top-level keys the gate and the stored record leave out
    site_drops: frozenset[str]  # keys a site's value leaves out (its geoPoint)
    again: tuple[str, ...] = ()  # the entries of the ignore list it tracks again, sorted


def tracking_rules(again: Iterable[str] = ()) -> Rules:
    """Return the rules that also track some entries of the ignore list (`IGNORE_LIST`) again.

    What they hold is then tracked under rule 6's fallback paths (`status.lastUpdateSubmitDate`,
    `identification.nctId`, `derivedSection`), and a site's value keeps its geoPoint.
    """
    chosen = tuple(sorted(set(again)))
    unknown = [source for source in chosen if source not in IGNORE_LIST]
    if unknown:
        raise UsageError(f"not on the ignore list: {', '.join(unknown)} (it holds "
                         f"{', '.join(IGNORE_LIST)})")
    ignored = tuple(source for source in DEFAULT.ignored if source not in chosen)
    return Rules(_build_tree(ignored, DEFAULT.fields),
                 tuple(key for key in DEFAULT.volatile if key not in chosen),
                 frozenset() if SITE_GEO_POINT in chosen else frozenset({LOCATION_DROPPED_KEY}),
                 chosen)


def tracked_again_path(source: str) -> str:
    """Return the path an ignore-list entry's content takes once tracked again (rule 6)."""
    if source == SITE_GEO_POINT:
        return LOCATION_PREFIX + "*"  # inside each site's value
    keys = expand_source(source)
    return fallback_path(keys[:_FALLBACK_DEPTH.get(keys[0], 1)])


DEFAULT_RULES = tracking_rules()
DEFAULT_TREE = DEFAULT_RULES.tree


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
    return "|".join([_site_part(site, "facility", markup), _site_part(site, "city", markup),
                     _site_part(site, "state", markup), _site_part(site, "country", markup)])


def _site_part(site: Mapping[str, Any], name: str, markup: str) -> str:
    """Return one part of a site, folded and lower-cased ("" when missing or not text)."""
    part = site.get(name)
    if not isinstance(part, str):
        return ""
    if markup == "html":
        part = html.unescape(part)  # `&amp;` in HTML is `&` in Markdown: one site, one key
    return " ".join(part.split()).lower()


_Site = tuple[str, str, Any]  # key, canonical JSON, the site itself


def _site_entry(site: Any, markup: str, drops: frozenset[str] = frozenset()) -> _Site | None:
    """Return (key, canonical JSON, site) for a site, its `drops` keys left out, or None."""
    if not isinstance(site, dict):
        # Not an object: keep it, keyed by nothing, rather than lose it.
        text = canonical_json(site)
        return None if text is None else ("|||", text, site)
    content = {k: v for k, v in site.items() if k not in drops}
    text = canonical_json(content)
    return None if text is None else (location_key(site, markup), text, content)


def _identity(site: _Site) -> tuple[str, str]:
    """Return what orders sites sharing a path: the site without status and contacts, then all."""
    content = site[2]
    if not isinstance(content, dict):
        return site[1], site[1]
    # Leaving out what a site's own edits touch means those edits never renumber it.
    kept = {k: v for k, v in content.items() if k not in _SITE_MUTABLE}
    return canonical_json(kept) or "", site[1]


def _site_fields(entries: list[_Site], markup: str) -> dict[str, str]:
    """Return one field per site, telling duplicate keys apart by zip, then by number (rule 5)."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry[0]] = counts.get(entry[0], 0) + 1
    by_path: dict[str, list[_Site]] = {}
    for entry in entries:
        path = LOCATION_PREFIX + entry[0]
        if counts[entry[0]] > 1 and isinstance(entry[2], dict):
            zip_code = _site_part(entry[2], "zip", markup)
            if zip_code:
                path += " #" + zip_code
        by_path.setdefault(path, []).append(entry)
    if len(by_path) == len(entries):
        return {path: group[0][1] for path, group in by_path.items()}
    out: dict[str, str] = {}
    for base in sorted(by_path):
        group = by_path[base]
        if len(group) > 1:
            group.sort(key=_identity)
        for number, entry in enumerate(group, start=1):
            path = base if number == 1 else f"{base} #{number}"
            # Only a hostile record gets here (a zip "2" beside a numbered "#2"): never overwrite.
            extra = 2
            while path in out:
                path, extra = f"{base} #{number} #{extra}", extra + 1
            out[path] = entry[1]
    return out


SiteMemo = dict[bytes, _Site | None]  # a site's entry by its JSON bytes: see unit_fields


def _location_fields(sites: list[Any], out: dict[str, str], markup: str,
                     memo: SiteMemo | None, drops: frozenset[str]) -> None:
    """Add one field per site of a record's list of sites (rule 5)."""
    if memo is None:
        entries = [_site_entry(site, markup, drops) for site in sites]
    else:
        entries = []
        for site in sites:
            try:
                key = orjson.dumps(site)
            except (orjson.JSONEncodeError, TypeError):
                entries.append(_site_entry(site, markup, drops))
                continue
            if key not in memo:
                memo[key] = _site_entry(site, markup, drops)
            entries.append(memo[key])
    out.update(_site_fields([e for e in entries if e is not None], markup))


def rekey_locations(fields: Mapping[str, str], markup: str = "markdown") -> dict[str, str]:
    """Return fields with every site re-keyed by rule 5 from its stored value.

    A site's path is a function of the sites' canonical values alone, so this turns fields
    keyed by any earlier rule into today's, and leaves today's as they are.
    """
    out = {path: text for path, text in fields.items() if not path.startswith(LOCATION_PREFIX)}
    entries = [e for e in (_site_entry(json.loads(text), markup)
                           for path, text in fields.items() if path.startswith(LOCATION_PREFIX))
               if e is not None]
    out.update(_site_fields(entries, markup))
    return out


def _add_residual(residuals: dict[tuple[str, ...], Any], keys: tuple[str, ...],
                  value: Any) -> None:
    """Keep uncovered content by its source cut at the fallback depth, nested below it."""
    depth = _FALLBACK_DEPTH.get(keys[0], 1)
    anchor, below = keys[:depth], keys[depth:]
    if not below:
        residuals[anchor] = value
        return
    node = residuals.setdefault(anchor, {})
    if not isinstance(node, dict):  # defensive: the anchor itself was a scalar
        return
    for key in below[:-1]:
        node = node.setdefault(key, {})
    node[below[-1]] = value


def _residual_paths(anchors: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Return each uncovered source's rule-6 path: its fallback path, else its full source path.

    A fallback path that is a tracked field's, or that two sources would share (say
    `documentSection.aModule.x` and `documentSection.bModule.x`, both `documents.x`), is
    written as the full source path instead, so unmapped content never overwrites any other.
    """
    paths = {anchor: fallback_path(anchor) for anchor in anchors}
    shared = Counter(paths.values())
    return {anchor: ".".join(anchor) if shared[path] > 1 or path in FIELD_BY_PATH
            or path.startswith(LOCATION_PREFIX) else path for anchor, path in paths.items()}


def _walk(value: Any, tree: Tree, keys: tuple[str, ...], out: dict[str, str],
          residuals: dict[tuple[str, ...], Any], markup: str, memo: SiteMemo | None,
          drops: frozenset[str]) -> None:
    """Map one record node onto field paths, collecting what the tree does not cover."""
    for key, child in value.items():
        here = (*keys, key)
        cover = tree.get(key)
        if cover == _IGNORED:
            continue
        if cover == _LOCATIONS and isinstance(child, list):
            _location_fields(child, out, markup, memo, drops)
        elif isinstance(cover, str) and cover != _LOCATIONS:
            text = canonical_json(child)
            if text is not None:
                out[cover] = text
        elif isinstance(child, dict) and (
            isinstance(cover, dict) or len(here) < _FALLBACK_DEPTH.get(here[0], 1)
        ):
            _walk(child, cover if isinstance(cover, dict) else {}, here, out, residuals, markup,
                  memo, drops)
        else:
            _add_residual(residuals, here, child)


def extract_fields(
    study: Mapping[str, Any], rules: Rules = DEFAULT_RULES, markup: str = "markdown",
    memo: SiteMemo | None = None,
) -> dict[str, str]:
    """Return {path: canonical JSON} for every field a record holds that `rules` track.

    `markup` is the record's text markup: "markdown" (API v2) or "html" (record history).
    `memo` keeps each site's canonical entry by its bytes, for a second record (unit_fields).
    """
    out: dict[str, str] = {}
    residuals: dict[tuple[str, ...], Any] = {}
    _walk(study, rules.tree, (), out, residuals, markup, memo, rules.site_drops)
    for anchor, path in _residual_paths(residuals).items():
        text = canonical_json(residuals[anchor])
        if text is not None and path not in out:  # a tracked field is never overwritten
            out[path] = text
    return out


def study_id(study: Any) -> str | None:
    """Return a record's NCT id, or None when it is not a study object."""
    return DEFAULT.study_id(study)


def is_nct_id(text: str) -> bool:
    """Tell whether a string is a well-formed NCT id."""
    return DEFAULT.is_id(text)
