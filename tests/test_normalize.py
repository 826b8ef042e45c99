"""The normaliser implements the field-path spec: rules 1 to 7 on real records."""

from __future__ import annotations

import copy
import json
import random
import re
from typing import Any

from conftest import ROOT, load, real_records, version_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialdiff.fields import FIELDS, IGNORED_SOURCES, expand_source, order_key
from trialdiff.normalize import (
    canonical_json,
    extract_fields,
    fallback_path,
    location_key,
)

RECORDS = real_records()


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


def test_canonical_json_is_the_specs_definition() -> None:
    value = {"b": [" x  y ", {"k": None}, 2, "a"], "a": "", "c": {"d": []}, "e": "é\n"}
    expected = {"b": ["a", "x y", 2], "e": "é"}  # sorted by their JSON: '"' < '2'
    assert canonical_json(value) == json.dumps(
        expected, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert canonical_json({"a": [None, "", {}]}) is None


def test_real_records_canonical_json_matches_a_straightforward_reference() -> None:
    def reference(value: Any) -> Any:
        if isinstance(value, str):
            return " ".join(value.split()) or None
        if isinstance(value, dict):
            kept = {k: reference(v) for k, v in value.items()}
            return {k: v for k, v in kept.items() if v is not None} or None
        if isinstance(value, list):
            kept = [reference(v) for v in value]
            dumped = sorted(
                (json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":")), v)
                for v in kept
                if v is not None
            )
            return [v for _, v in dumped] or None
        return value

    for record in RECORDS:
        for section in ("protocolSection", "resultsSection"):
            if section in record:
                expected = json.dumps(
                    reference(record[section]), sort_keys=True, ensure_ascii=False,
                    separators=(",", ":"),
                )
                assert canonical_json(record[section]) == expected


def test_rule_1_a_change_inside_a_field_is_that_field() -> None:
    record = load("v2/NCT04857515.json")
    edited = copy.deepcopy(record)
    edited["protocolSection"]["statusModule"]["completionDateStruct"]["type"] = "ESTIMATED"
    before, after = extract_fields(record), extract_fields(edited)
    assert {p for p in after if after[p] != before.get(p)} == {"status.completionDate"}


def test_ignored_sources_never_appear() -> None:
    for record in RECORDS:
        fields = extract_fields(record)
        assert not any(p.startswith("derived") for p in fields)
        edited = copy.deepcopy(record)
        edited["derivedSection"] = {"miscInfoModule": {"versionHolder": "2099-01-01"}}
        status = edited["protocolSection"]["statusModule"]
        status["lastUpdateSubmitDate"] = "2099-01-01"
        status["studyFirstSubmitQcDate"] = "2099-01-02"
        for site in edited["protocolSection"].get("contactsLocationsModule", {}).get(
            "locations", []
        ):
            site["geoPoint"] = {"lat": 1.5, "lon": 2.5}
        assert extract_fields(edited) == fields


def test_rule_5_sites_are_keyed_and_duplicates_numbered() -> None:
    record = load("v2/NCT06823401.json")
    fields = extract_fields(record)
    sites = record["protocolSection"]["contactsLocationsModule"]["locations"]
    keys = [location_key(s) for s in sites]
    duplicated = {k for k in keys if keys.count(k) > 1}
    assert duplicated, "this real record has sites sharing a key"
    for key in duplicated:
        assert f"locations.{key}" in fields
        assert f"locations.{key} #{keys.count(key)}" in fields
    assert sum(p.startswith("locations.") for p in fields) == len(sites)
    site_values = [json.loads(v) for p, v in fields.items() if p.startswith("locations.")]
    assert all("geoPoint" not in v for v in site_values)


def test_location_key_folds_case_and_whitespace() -> None:
    site = {"facility": "  The  First Hospital ", "city": "Hangzhou", "country": "China"}
    assert location_key(site) == "the first hospital|hangzhou||china"


def test_rule_6_unmapped_content_gets_a_fallback_path() -> None:
    fields = extract_fields(load("v2/NCT05905653.json"))
    assert "contactsLocations.locations_nested" in fields
    record = load("v2/NCT04857515.json")
    record["protocolSection"]["designModule"]["designInfo"]["newThing"] = "x"
    record["protocolSection"]["brandNewModule"] = {"k": 1}
    record["resultsSection"] = {"extraModule": {"a": 1}}
    record["annotationSection"] = {"annotationModule": {"newNote": "n"}}
    record["documentSection"] = {"largeDocumentModule": {"other": True}}
    record["topLevel"] = [1]
    fields = extract_fields(record)
    assert json.loads(fields["design.designInfo"]) == {"newThing": "x"}
    assert fields["brandNew.k"] == "1"
    assert fields["results.extra"] == '{"a":1}'
    assert fields["annotations.newNote"] == '"n"'
    assert fields["documents.other"] == "true"
    assert fields["topLevel"] == "[1]"


def test_fallback_paths_follow_rule_6() -> None:
    assert fallback_path(("protocolSection", "contactsLocationsModule", "x")) == (
        "contactsLocations.x"
    )
    assert fallback_path(("resultsSection", "fooModule")) == "results.foo"
    assert fallback_path(("documentSection", "largeDocumentModule", "k")) == "documents.k"
    assert fallback_path(("annotationSection", "annotationModule", "k")) == "annotations.k"
    assert fallback_path(("somethingElse",)) == "somethingElse"


def test_rule_7_orders_table_then_fallbacks_then_sites() -> None:
    paths = ["locations.b", "zeta.x", "status.overallStatus", "locations.a", "alpha.y",
             "status.completionDate"]
    assert sorted(paths, key=order_key) == [
        "status.completionDate", "status.overallStatus", "alpha.y", "zeta.x",
        "locations.a", "locations.b",
    ]


def test_odd_shapes_are_kept_not_lost() -> None:
    record = load("v2/NCT04857515.json")
    record["protocolSection"]["statusModule"] = "weird"
    record["protocolSection"]["contactsLocationsModule"] = {"locations": {"not": "a list"}}
    fields = extract_fields(record)
    assert fields["status"] == '"weird"'
    assert fields["contactsLocations.locations"] == '{"not":"a list"}'


DERIVED_ONLY_RERELEASES = (
    "NCT02552212", "NCT04642755", "NCT05911841", "NCT05913115", "NCT05913700", "NCT05914155",
    "NCT05915026", "NCT05915702", "NCT05915728", "NCT05921903",
)


def test_rereleases_that_differ_only_in_derived_data_are_equal() -> None:
    for nct_id in DERIVED_ONLY_RERELEASES:
        older, newer = version_pair(nct_id)
        assert extract_fields(older) == extract_fields(newer)


# Properties ---------------------------------------------------------------------------------


def _shuffled(value: Any, rng: random.Random) -> Any:
    """Return a copy with every list shuffled, at every depth."""
    if isinstance(value, dict):
        return {k: _shuffled(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        items = [_shuffled(v, rng) for v in value]
        rng.shuffle(items)
        return items
    return value


def _respaced(value: Any, rng: random.Random) -> Any:
    """Return a copy whose strings gain whitespace runs and padding."""
    if isinstance(value, dict):
        return {k: _respaced(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_respaced(v, rng) for v in value]
    if isinstance(value, str) and value.strip():
        words = value.split()
        return rng.choice(["", " ", "\n"]) + rng.choice([" ", "  ", "\t", "\n "]).join(words) + (
            rng.choice(["", "  ", "\r\n"])
        )
    return value


def _leaves(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the key paths of every string, number or bool leaf."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*prefix, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*prefix, i))]
    return [prefix]


SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
PICK = st.integers(min_value=0, max_value=len(RECORDS) - 1)
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(PICK, SEEDS)
def test_property_reordering_any_list_changes_nothing(index: int, seed: int) -> None:
    record = RECORDS[index]
    assert extract_fields(_shuffled(record, random.Random(seed))) == extract_fields(record)


@fast
@given(PICK, SEEDS)
def test_property_whitespace_changes_nothing(index: int, seed: int) -> None:
    record = RECORDS[index]
    assert extract_fields(_respaced(record, random.Random(seed))) == extract_fields(record)


def _tracked_path_of(record: dict[str, Any], keys: tuple[Any, ...]) -> str | None:
    """Return the tracked path a leaf falls under, or None for ignored or site key parts."""
    for field in FIELDS:
        source = expand_source(field.source)
        if keys[: len(source)] == source:
            return field.path
    return None


@fast
@given(PICK, st.data())
def test_property_editing_a_tracked_leaf_reports_exactly_its_path(index: int, data: Any) -> None:
    record = copy.deepcopy(RECORDS[index])
    candidates = [k for k in _leaves(record) if _tracked_path_of(record, k)]
    keys = data.draw(st.sampled_from(candidates))
    node: Any = record
    for key in keys[:-1]:
        node = node[key]
    old = node[keys[-1]]
    node[keys[-1]] = (
        not old if isinstance(old, bool)
        else old + 7 if isinstance(old, int | float)
        else f"{old} edited" if isinstance(old, str) and old.strip()
        else "edited"
    )
    before, after = extract_fields(RECORDS[index]), extract_fields(record)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed == {_tracked_path_of(record, keys)}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from(list("ab \t\n\u00a0\u2003\x1c\"\\[]{}e1.")), max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet="abc ", max_size=3), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_property_fast_canonical_json_agrees_with_the_reference(value: Any) -> None:
    from oracles import reference_canonical_json

    assert canonical_json(value) == reference_canonical_json(value)
    assert canonical_json({"k": value}) == reference_canonical_json({"k": value})


def test_floats_are_written_as_json_writes_them() -> None:
    from oracles import reference_canonical_json

    for number in (1e-05, 1e16, 0.1, 1.5e300, -0.0, 123456789.123, 2.5, 1e-7):
        assert canonical_json({"k": number}) == reference_canonical_json({"k": number})
