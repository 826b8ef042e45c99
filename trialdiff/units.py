"""Split a record into the units its fields come from, as values and as bytes (pure).

A unit is a module of a known section, or a top-level key. No field spans two units, so a
new record is compared with the stored one unit by unit and only the units that moved are
canonicalised. The stored record is the bytes `records.raw_json` writes (orjson's compact
JSON), so when both records hold the same units in the same order, each unit's old value is a
slice of those bytes: the equal ones are found by comparing bytes, and only the moved ones
are parsed (`split_moved`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .normalize import DEFAULT_RULES, DEFAULT_TREE, SECTIONS, Rules, SiteMemo, extract_fields

Unit = tuple[str, ...]  # a module of a known section, (section, module); else (top-level key,)
_MISSING = object()


def record_units(study: Mapping[str, Any]) -> dict[Unit, Any]:
    """Split a record into the units its fields come from, each mapped on its own.

    Every field path and fallback path comes from inside one module of a known section (or
    one top-level key), so a record's fields are the union of its units' fields: a unit
    whose value did not move keeps the fields it had.
    """
    units: dict[Unit, Any] = {}
    for key, value in study.items():
        if key in SECTIONS and isinstance(value, dict):
            for module, child in value.items():
                units[(key, module)] = child
        else:
            units[(key,)] = value
    return units


def maps_alone(units: Iterable[Unit]) -> bool:
    """Tell whether a record's units map on their own: it holds no module the field table lacks.

    Rule 6 writes a fallback path that two sources share (`documentSection.aModule.x` and
    `bModule.x`, both `documents.x`) as their full source paths, so one unit's paths depend on
    another's. Only a module the table lacks can share one, so a record with such a module is
    compared whole. So is one with a top-level key holding a dot: its fallback path is its
    name, which may be a tracked path's (`status.overallStatus`), and whole, the field wins.
    """
    return all("." not in unit[0] if len(unit) == 1 else unit[1] in DEFAULT_TREE.get(unit[0], {})
               for unit in units)


def moved_units(old: Mapping[Unit, Any], new: Mapping[Unit, Any]) -> set[Unit]:
    """Return the units whose value differs between two records' units (or is in one only)."""
    moved = {unit for unit, value in new.items() if not _same(old.get(unit, _MISSING), value)}
    return moved | (old.keys() - new.keys())


def _same(old: Any, new: Any) -> bool:
    """Return whether two parsed JSON values are the same JSON (Python has False == 0 == 0.0).

    They are compared as bytes (a third faster than Python's == first, since most units are
    the same); keys in another order count as moved, which only costs canonicalising a unit
    that did not change.
    """
    if old is _MISSING:
        return False
    try:
        return orjson.dumps(old) == orjson.dumps(new)
    except (orjson.JSONEncodeError, TypeError):  # integers past 64 bits, lone surrogates
        return json.dumps(old) == json.dumps(new)


def unit_fields(units: Mapping[Unit, Any], only: set[Unit], rules: Rules = DEFAULT_RULES,
                markup: str = "markdown", memo: SiteMemo | None = None) -> dict[str, str]:
    """Return the fields some units of a record hold (extract_fields of just those units).

    Given the `memo` of the same units of an earlier record, a site whose bytes are as they
    were is not canonicalised again: an edit touches a site or two of hundreds.
    """
    record: dict[str, Any] = {}
    for unit in sorted(only):
        if unit not in units:
            continue
        if len(unit) == 1:
            record[unit[0]] = units[unit]
        else:
            record.setdefault(unit[0], {})[unit[1]] = units[unit]
    return extract_fields(record, rules, markup=markup, memo=memo)


@dataclass(frozen=True)
class Split:
    """A new record compared with the old record's bytes, unit by unit (see split_moved)."""

    raw: bytes  # the new record's compact JSON: orjson.dumps of it, built from its units
    new: dict[Unit, Any]  # the new record's units
    old: dict[Unit, Any]  # the old record's values of the moved units, and of no other

    @property
    def moved(self) -> set[Unit]:
        """Return the units whose bytes moved: those whose old value had to be parsed."""
        return set(self.old)


def split_moved(old_raw: bytes, study: Mapping[str, Any]) -> Split | None:
    """Compare a record with an older one's compact JSON without parsing the older one whole.

    The new record is written unit by unit, each after the bytes that lead to it (keys,
    braces, commas). The old bytes must hold the same leading bytes in the same order; a unit
    whose old bytes equal the new ones did not move, and a moved one's old bytes are parsed
    alone. None when the layouts differ (a module added, removed or reordered; another
    writer's spacing) or a value will not encode: then compare parsed records (moved_units).

    Why a slice is the old value: the old bytes are valid JSON, and each slice sits where a
    value starts. A new unit's bytes are a whole JSON value, so old bytes that start with them
    and go on with the next leading bytes hold that value. A moved unit's slice ends at the
    next leading bytes' first occurrence; were that inside the value, the slice would be a
    cut-off value, which does not parse, so the split gives up rather than guess.
    """
    try:
        slots, tail, units = _layout(study)
        values = [orjson.dumps(units[unit]) for _, unit in slots]
    except (orjson.JSONEncodeError, TypeError):  # integers past 64 bits, lone surrogates
        return None
    if not slots or not old_raw.endswith(tail):
        return None
    old: dict[Unit, Any] = {}
    at = 0
    for index, ((lead, unit), value) in enumerate(zip(slots, values, strict=True)):
        if not old_raw.startswith(lead, at):
            return None
        start = at + len(lead)
        if index + 1 < len(slots):
            follow = slots[index + 1][0]
            at = start + len(value)
            if old_raw.startswith(value, start) and old_raw.startswith(follow, at):
                continue
            at = old_raw.find(follow, start)
        else:  # the last unit runs to the tail
            at = len(old_raw) - len(tail)
            if at - start == len(value) and old_raw.startswith(value, start):
                continue
        try:
            old[unit] = orjson.loads(memoryview(old_raw)[start:max(at, start)])
        except orjson.JSONDecodeError:
            return None
    raw = b"".join(lead + value for (lead, _), value in zip(slots, values, strict=True)) + tail
    return Split(raw, units, old)


def _layout(study: Mapping[str, Any]) -> tuple[list[tuple[bytes, Unit]], bytes, dict[Unit, Any]]:
    """Return a record's units, each with the compact JSON that leads to it, and the tail."""
    slots: list[tuple[bytes, Unit]] = []
    units: dict[Unit, Any] = {}
    lead = b"{"
    for index, (key, value) in enumerate(study.items()):
        lead += (b"," if index else b"") + orjson.dumps(key) + b":"
        if key in SECTIONS and isinstance(value, dict):
            lead += b"{"
            for number, (module, child) in enumerate(value.items()):
                lead += (b"," if number else b"") + orjson.dumps(module) + b":"
                slots.append((lead, (key, module)))
                units[(key, module)] = child
                lead = b""
            lead += b"}"  # an empty section is no unit, as in record_units
        else:
            slots.append((lead, (key,)))
            units[(key,)] = value
            lead = b""
    return slots, lead + b"}", units
