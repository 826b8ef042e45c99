"""Raw records: the gate cut from a record's own bytes, and which study is compared by module."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from conftest import load, real_records
from hypothesis import given, settings
from hypothesis import strategies as st

from trialdiff.records import byte_gate, compares_by_module, gate_hash

PROTOCOL = real_records()[0]["protocolSection"]  # for the property test's many examples


def test_the_gate_cuts_the_derived_section_out_of_the_records_own_bytes() -> None:
    record = load("v2/NCT04857515.json")
    restamped = copy.deepcopy(record)
    restamped["derivedSection"]["miscInfoModule"]["versionHolder"] = "2099-01-01"
    edited = copy.deepcopy(restamped)
    edited["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    compact = [orjson.dumps(r) for r in (record, restamped, edited)]
    gates = [gate_hash(r, raw) for r, raw in zip((record, restamped, edited), compact, strict=True)]
    assert gates[0] == gates[1] != gates[2]
    assert gate_hash(record) == gate_hash(restamped) != gate_hash(edited)  # without bytes too
    indented = json.dumps(record, indent=2).encode()
    assert gate_hash(record, indented) == gate_hash(record)  # not found: written anew


def test_the_byte_gate_needs_no_parse_and_says_when_it_cannot_tell() -> None:
    for record in real_records():
        raw = orjson.dumps(record) + b"\n"
        assert byte_gate(raw) == gate_hash(record, raw) is not None
        # The line's end is no part of the record: the same record in any file, the same gate.
        assert byte_gate(raw) == byte_gate(raw[:-1]) == byte_gate(raw[:-1] + b"\r\n")
    record = real_records()[0]
    derived = record["derivedSection"]
    rest = {k: v for k, v in record.items() if k != "derivedSection"}
    unsure = [
        json.dumps(record).encode(),  # not compact
        orjson.dumps({"derivedSection": derived, **rest}),  # the first key
        orjson.dumps({**rest, "derivedSection": derived}),  # the last key
        orjson.dumps({**rest, "derivedSection": derived, "x": {"a": 1, "b": 2}}),  # `,"` in x
        orjson.dumps({**record, "x": {"derivedSection": 1}}),  # again, after the part
        orjson.dumps({**rest, "derivedSection": {**derived, "derivedSection": {"a": [1]}},
                      "hasResults": False}),  # nested in the part itself
    ]
    assert [byte_gate(raw) for raw in unsure] == [None] * len(unsure)
    # Nested before the part, the key is data like any other: the gate holds it.
    earlier = {"protocolSection": {"derivedSection": {"a": 1}}, "derivedSection": derived,
               "hasResults": False}
    moved = {**earlier, "protocolSection": {"derivedSection": {"a": 2}}}
    gates = [byte_gate(orjson.dumps(r)) for r in (earlier, moved)]
    assert None not in gates and gates[0] != gates[1]


# JSON that orjson writes (no integers past 64 bits), with the characters that make a byte cut
# tricky: quotes, braces, commas, colons and the volatile key's own name.
TRICKY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.lists(st.sampled_from([*'a",:{}[]\\ ', '"derivedSection":', ',"']),
               max_size=4).map("".join),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "derivedSection", "hasResults", ",\""]), children,
                      max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(TRICKY_JSON, TRICKY_JSON, TRICKY_JSON, TRICKY_JSON)
def test_property_equal_byte_gates_mean_equal_records_but_the_derived_part(
    derived_a: Any, derived_b: Any, rest_a: Any, rest_b: Any
) -> None:
    one = {"protocolSection": PROTOCOL, "x": rest_a, "derivedSection": derived_a, "hasResults": 1}
    two = {"protocolSection": PROTOCOL, "x": rest_b, "derivedSection": derived_b, "hasResults": 1}
    raw_one, raw_two = orjson.dumps(one), orjson.dumps(two)
    gate_one, gate_two = byte_gate(raw_one), byte_gate(raw_two)
    if gate_one is not None:
        assert gate_one == gate_hash(one, raw_one)
    if gate_one is not None and gate_one == gate_two:
        assert orjson.loads(raw_one)["x"] == orjson.loads(raw_two)["x"]  # only derived differs
    if gate_one is not None and gate_two is not None and rest_a == rest_b \
            and orjson.dumps(rest_a) == orjson.dumps(rest_b):
        assert gate_one == gate_two  # a new data release alone never moves the gate


def test_only_a_gated_markdown_study_with_a_record_is_compared_by_module() -> None:
    assert compares_by_module("a1b2", "markdown", has_record=True)
    assert compares_by_module("a1b2", None, has_record=True)  # before markup was kept
    assert not compares_by_module("", "markdown", has_record=True)  # a backfilled version
    assert not compares_by_module(None, "markdown", has_record=True)
    assert not compares_by_module("a1b2", "html", has_record=True)  # the old site's versions
    assert not compares_by_module("a1b2", "markdown", has_record=False)
