"""The field registry: the spec's table, its ignore list and order, and what real records hold."""

from __future__ import annotations

import re
from typing import Any

from conftest import ROOT, real_records

from trialdiff.fields import (
    FIELDS,
    IGNORED_SOURCES,
    LOCATION_PREFIX,
    LOCATIONS_SOURCE,
    expand_source,
    field_kind,
    order_key,
)

PARTIAL_DATE = re.compile(r"\d{4}-\d{2}(-\d{2})?")  # the registry's dates: a day or a month


def spec_table() -> list[tuple[str, str]]:
    """Return (path, source) rows of the spec's table of tracked fields."""
    text = (ROOT / "docs" / "field-paths.md").read_text(encoding="utf-8")
    table = text.split("## Tracked fields, in order")[1].split("## Ignored by default")[0]
    rows = re.findall(r"^\| ([\w.]+) \| ([\w.]+) \|$", table, flags=re.M)
    return [(path, source) for path, source in rows if path != "path"]


def test_registry_is_the_spec_table_in_order() -> None:
    assert [(f.path, f.source) for f in FIELDS] == spec_table()


def test_ignore_list_matches_the_spec() -> None:
    text = (ROOT / "docs" / "field-paths.md").read_text(encoding="utf-8")
    ignored = text.split("## Ignored by default")[1].split("## The line format")[0]
    named = {name.split(".")[-1] for name in re.findall(r"`([\w.]+)`", ignored)}
    for source in IGNORED_SOURCES:
        assert expand_source(source)[-1] in named


def test_rule_7_orders_table_then_fallbacks_then_sites() -> None:
    paths = ["locations.b", "zeta.x", "status.overallStatus", "locations.a", "alpha.y",
             "status.completionDate"]
    assert sorted(paths, key=order_key) == [
        "status.completionDate", "status.overallStatus", "alpha.y", "zeta.x",
        "locations.a", "locations.b",
    ]


def test_no_source_lies_inside_another() -> None:
    # A source inside another (tracked, ignored or the sites) would put one edit under two
    # paths, or track what is ignored; rule 1 needs each leaf to belong to one field at most.
    sources = [expand_source(s) for s in (*(f.source for f in FIELDS), *IGNORED_SOURCES,
                                          LOCATIONS_SOURCE)]
    assert len(set(sources)) == len(sources)
    for outer in sources:
        for inner in sources:
            assert inner == outer or inner[: len(outer)] != outer, (outer, inner)
    assert len({f.path for f in FIELDS}) == len(FIELDS)
    assert not any(f.path.startswith(LOCATION_PREFIX) for f in FIELDS)


def test_expand_source_spells_out_the_protocol_section() -> None:
    assert expand_source("P.statusModule.overallStatus") == (
        "protocolSection", "statusModule", "overallStatus")
    assert expand_source("hasResults") == ("hasResults",)
    # Only a leading `P.` abbreviates: a key merely starting with P is left as it is.
    assert expand_source("Pxyz.a") == ("Pxyz", "a")


def test_field_kind_is_the_tables_and_plain_value_for_any_other_path() -> None:
    assert {f.path: field_kind(f.path) for f in FIELDS} == {f.path: f.kind for f in FIELDS}
    assert field_kind("eligibility.criteria") == "text"
    assert field_kind("status.completionDate") == "date"
    assert field_kind("locations.gsk investigational site|miami|florida|united states") == "value"
    assert field_kind("contactsLocations.locations_nested") == "value"  # a rule-6 fallback


def sources_in_real_records() -> dict[str, list[Any]]:
    """Return each tracked path's values in the real fixture records that have it."""
    found: dict[str, list[Any]] = {f.path: [] for f in FIELDS}
    for record in real_records():
        for field in FIELDS:
            value: Any = record
            for key in expand_source(field.source):
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                found[field.path].append(value)
    return found


def test_each_kind_fits_what_real_records_hold() -> None:
    found = sources_in_real_records()
    for field in FIELDS:
        for value in found[field.path]:
            if field.kind == "date":  # a date struct, or a bare month (statusVerifiedDate)
                day = value["date"] if isinstance(value, dict) else value
                assert PARTIAL_DATE.fullmatch(day), (field.path, value)
            elif field.kind == "text":
                assert isinstance(value, str), field.path
            elif field.kind == "list":
                assert isinstance(value, list), field.path
    # The real records reach every kind, and most of the table.
    assert {f.kind for f in FIELDS if found[f.path]} == {"value", "date", "text", "list"}
    assert sum(bool(values) for values in found.values()) >= 70


def test_a_list_of_objects_names_every_real_item_by_its_item_key() -> None:
    found = sources_in_real_records()
    for field in FIELDS:
        if field.kind != "list":
            assert not field.item_key, field.path
            continue
        items = [item for value in found[field.path] for item in value]
        if field.item_key:
            assert all(isinstance(i, dict) and i.get(field.item_key) for i in items), field.path
        else:  # a list of plain values needs no key
            assert all(isinstance(i, str) for i in items), field.path
    keyed = [f for f in FIELDS if f.item_key and found[f.path]]
    assert len(keyed) >= 12  # outcomes, arms, interventions, sponsors, contacts, references...


def test_a_path_is_under_its_own_prefix_and_its_parents_never_a_sibling() -> None:
    from trialdiff.fields import is_under

    for path, prefix in (("status.overallStatus", "status"), ("status.overallStatus", "status."),
                         ("status", "status"), ('locations."x"|a||b', "locations")):
        assert is_under(path, prefix), (path, prefix)
    for path, prefix in (("statusX.a", "status"), ("status", "status.overallStatus"),
                         ("Status.a", "status")):  # case as written
        assert not is_under(path, prefix), (path, prefix)
