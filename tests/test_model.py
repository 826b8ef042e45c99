"""The one canonical dump writes what json writes, whichever writer it takes; its head is its
start."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import real_records

from trialdiff.model import dump_json, dump_json_head

ODD_VALUES: list[Any] = [
    1e16, -1e-05, 0.1, [1.5, 2], {"ratio": 2.0}, float("nan"), float("inf"), 2**70,
    {"b": None, "a": "x"}, {1: "int key"}, "\ud800", "\u2028\u0000\x1f\"\\", "é😀",
    {"é": 1, "e": 2, "😀": 3, "\uffff": 4}, True, None, "",
]


@pytest.mark.parametrize("value", ODD_VALUES, ids=repr)
def test_dump_json_writes_what_json_writes(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert dump_json(value) == expected


def test_dump_json_of_real_records_is_jsons_text() -> None:
    for record in real_records():
        expected = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        assert dump_json(record) == expected
        assert dump_json(record, indent=2) == json.dumps(record, ensure_ascii=False,
                                                         sort_keys=True, indent=2)


def _heads(value: Any) -> None:
    """Check dump_json_head against the whole dump at several limits."""
    whole = dump_json(value)
    for limit in (0, 1, 7, 60, 240, 5000):
        head = dump_json_head(value, limit)
        assert whole.startswith(head)
        assert len(head) > limit or head == whole


@pytest.mark.parametrize("value", [*ODD_VALUES, {"a": [1e16, {"b": None}], "c": "x" * 300}],
                         ids=repr)
def test_the_head_of_a_dump_is_its_start(value: Any) -> None:
    _heads(value)


def test_the_head_of_every_real_value_is_its_start() -> None:
    for record in real_records():
        _heads(record)
        for section in record.values():  # hasResults is a bool, the others objects
            for module in section.values() if isinstance(section, dict) else ():
                _heads(module)
