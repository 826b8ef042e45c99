"""Canonical JSON is the spec's definition, written by orjson where it can and by Python else."""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from typing import Any

from conftest import real_records
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import reference_canonical_json

from trialdiff.canonical import _canonical_text, canonical_json, fold_whitespace

RECORDS = real_records()


def test_canonical_json_is_the_specs_definition() -> None:
    value = {"b": [" x  y ", {"k": None}, 2, "a"], "a": "", "c": {"d": []}, "e": "é\n"}
    expected = {"b": ["a", "x y", 2], "e": "é"}  # sorted by their JSON: '"' < '2'
    assert canonical_json(value) == json.dumps(
        expected, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    assert canonical_json({"a": [None, "", {}]}) is None


def test_real_records_sections_agree_with_the_reference() -> None:
    for record in RECORDS:
        for section in ("protocolSection", "resultsSection"):
            if section in record:
                assert canonical_json(record[section]) == reference_canonical_json(
                    record[section])


def test_real_records_modules_and_list_items_agree_with_python_alone() -> None:
    # orjson's walk against the Python writer it falls back on, on every module of the real
    # records and every item of their lists one level down (results' groups, measures).
    compared = 0
    for record in RECORDS:
        for section in record.values():
            if not isinstance(section, dict):
                continue
            for module in section.values():
                assert canonical_json(module) == _canonical_text(module)
                compared += 1
                for child in module.values() if isinstance(module, dict) else ():
                    for item in child if isinstance(child, list) else ():
                        assert canonical_json(item) == _canonical_text(item)
                        compared += 1
    assert compared > 1_500


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from(list("ab \t\n\u00a0\u2003\x1c\"\\[]{}e1.\x00\x7f\x85é")),
              max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet="abc \n\"", max_size=3), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(JSON_VALUES)
def test_property_canonical_json_agrees_with_the_reference(value: Any) -> None:
    assert canonical_json(value) == reference_canonical_json(value)
    assert canonical_json({"k": value}) == reference_canonical_json({"k": value})
    assert canonical_json([value, {"k": [value]}]) == reference_canonical_json(
        [value, {"k": [value]}])


def test_floats_are_written_as_json_writes_them() -> None:
    for number in (1e-05, 1e16, 0.1, 1.5e300, -0.0, 123456789.123, 2.5, 1e-7):
        for value in ({"k": number}, {"k": [number, 1]}, [number], [[number, "x "]]):
            assert canonical_json(value) == reference_canonical_json(value)


def test_integers_past_64_bits_and_lone_surrogates_are_written_by_python() -> None:
    # orjson writes neither; each is still the spec's canonical JSON, inside lists too.
    for value in ({"k": [2**70, -(2**64)]}, [2**64, 1], {"a": {"b": 2**70}, "c": [" x "]},
                  {"k": ["\ud800 a", "b"]}, ["\udfff"], {"\ud800": "x"}, "\ud800  x"):
        assert canonical_json(value) == reference_canonical_json(value)


def test_mapping_and_text_subclasses_are_written_as_their_values() -> None:
    class Text(str):
        pass

    value = OrderedDict([("b", [Text(" y  z"), OrderedDict(a=1)]), ("a", Text("x"))])
    assert canonical_json(value) == '{"a":"x","b":["y z",{"a":1}]}'
    assert canonical_json({"k": [Text("a "), None]}) == '{"k":["a"]}'


def test_a_printable_text_holds_no_whitespace_str_split_splits_on_but_the_space() -> None:
    # fold_whitespace returns a printable text with single inner spaces as it is: sound only
    # because every other character str.split() splits on is unprintable.
    splitting = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert [c for c in splitting if c != " " and c.isprintable()] == []
    for text in ("a b", " a", "a ", "a  b", "a\u00a0b", "a\tb", "", " ", "ab\u2028", "é x"):
        assert fold_whitespace(text) == " ".join(text.split())


def test_a_text_field_is_written_by_orjson_as_python_writes_it() -> None:
    # A str value takes orjson's path: the same escapes as json's, for controls, quotes,
    # backslashes, line and paragraph separators, and characters past the BMP.
    specials = [chr(c) for c in range(0x800)] + ["\u2028", "\u2029", "\ufeff", "\U0010ffff"]
    for char in specials:
        text = f"a{char}b  {char}"
        assert canonical_json(text) == reference_canonical_json(text), hex(ord(char))
