"""Units: a record split into the modules its fields come from, as values and as bytes."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import orjson
from conftest import FIXTURES, real_records, version_pair

from trialdiff.normalize import extract_fields
from trialdiff.records import raw_json, stable_part
from trialdiff.units import (
    Split,
    Unit,
    maps_alone,
    moved_units,
    record_units,
    split_moved,
    unit_fields,
)

RECORDS = real_records()
PAIRS = [version_pair(p.name) for p in sorted((FIXTURES / "versions").iterdir())]


def test_a_records_fields_are_the_union_of_its_modules_fields() -> None:
    records = RECORDS + [r for p in sorted((FIXTURES / "versions").iterdir())
                         for r in version_pair(p.name)]
    for record in records:
        units = record_units(record)
        assert unit_fields(units, set(units)) == extract_fields(record)
        merged: dict[str, str] = {}
        for unit in units:
            part = unit_fields(units, {unit})
            assert not merged.keys() & part.keys()  # no field comes from two modules
            merged.update(part)
        assert merged == extract_fields(record)


def test_a_value_of_another_json_type_moves_its_module() -> None:
    # Python holds False == 0 == 0.0; JSON (and the canonical fields) do not. Found by test_fuzz.
    record = next(r for r in RECORDS if r.get("hasResults") is False)
    bent = copy.deepcopy(record)
    bent["hasResults"] = 0
    status = bent["protocolSection"]["statusModule"]
    status["expandedAccessInfo"]["hasExpandedAccess"] = 0.0
    moved = moved_units(record_units(record), record_units(bent))
    assert moved == {("hasResults",), ("protocolSection", "statusModule")}
    assert moved_units(record_units(record), record_units(copy.deepcopy(record))) == set()


def parsed_comparison(old: dict[str, Any], new: dict[str, Any]) -> tuple[Split, set[Unit]]:
    """Return what split_moved must find, and the units it must call moved, by parsing both."""
    old_units, new_units = record_units(old), record_units(new)
    moved = moved_units(old_units, new_units)
    return Split(raw_json(new), new_units, {u: old_units[u] for u in moved if u in old_units}), \
        moved


def assert_split_as_parsed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Assert split_moved agrees with parsing both records; return whether it split at all."""
    split = split_moved(raw_json(old), new)
    if split is None:
        return False
    expected, moved = parsed_comparison(old, new)
    assert split == expected
    assert split.moved == moved
    assert orjson.loads(split.raw) == new
    return True


def test_split_finds_what_parsing_both_records_finds_in_real_versions() -> None:
    split = 0
    for older, newer in PAIRS:
        old, new = stable_part(older), stable_part(newer)
        same_layout = list(record_units(old)) == list(record_units(new))
        assert assert_split_as_parsed(old, new) == same_layout
        split += same_layout
        assert assert_split_as_parsed(old, copy.deepcopy(old))
    assert split >= 14  # 14 of the 15 real pairs keep their modules: the fast path is taken


def test_split_finds_what_parsing_finds_for_random_edits_of_real_records() -> None:
    rng = random.Random(15)
    for record in RECORDS:
        old = stable_part(record)
        units = list(record_units(old))
        for _ in range(3):
            new = copy.deepcopy(old)
            for unit in rng.sample(units, k=min(len(units), rng.choice((1, 2, 3)))):
                node = new[unit[0]] if len(unit) == 1 else new[unit[0]][unit[1]]
                if isinstance(node, dict) and node:
                    key = rng.choice(sorted(node))
                    node[key] = rng.choice(("edited", 7, None, [1, 2], {"x": node[key]}))
                elif len(unit) == 1:
                    new[unit[0]] = rng.choice((True, 12, "edited"))
            assert assert_split_as_parsed(old, new)


def test_a_key_like_the_next_modules_inside_a_moved_module_gives_up_rather_than_guess() -> None:
    # The old description holds `,"conditionsModule":` nested: the first occurrence of what
    # leads to the next module is inside the value, so its slice is cut off and never parses.
    record = stable_part(RECORDS[0])
    protocol = list(record["protocolSection"])
    before = protocol[protocol.index("conditionsModule") - 1]
    old = copy.deepcopy(record)
    old["protocolSection"][before] = {"a": {"b": 1, "conditionsModule": {"c": 2}}}
    new = copy.deepcopy(old)
    new["protocolSection"][before] = {"a": 1}
    assert split_moved(raw_json(old), new) is None
    # Unmoved, the same nested key is no trouble: its bytes are equal and what follows them is.
    new = copy.deepcopy(old)
    new["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    assert assert_split_as_parsed(old, new)


def test_split_gives_up_on_other_layouts_and_reads_values_whole() -> None:
    old = {"protocolSection": {"statusModule": {"x": 1}, "designModule": {}}, "n": 12}
    assert split_moved(json.dumps(old).encode(), old) is None  # another writer's spacing
    added = {"protocolSection": {**old["protocolSection"], "armsModule": {}}, "n": 12}
    assert split_moved(raw_json(old), added) is None
    reordered = {"n": 12, "protocolSection": old["protocolSection"]}
    assert split_moved(raw_json(old), reordered) is None
    # A number the new one is a prefix of is a moved value, not the same one cut short.
    split = split_moved(raw_json(old), {**old, "n": 1})
    assert split == Split(raw_json({**old, "n": 1}), record_units({**old, "n": 1}), {("n",): 12})
    assert split.moved == {("n",)}
    empty = {"protocolSection": {}, "n": 1}
    split = split_moved(raw_json(empty), empty)
    assert split == Split(raw_json(empty), {("n",): 1}, {})
    assert split.moved == set()
    assert split_moved(raw_json({}), {}) is None
    assert split_moved(raw_json(old), {**old, "n": 2 ** 70}) is None  # orjson refuses it


def test_every_real_record_maps_module_by_module_and_an_unknown_module_does_not() -> None:
    assert all(maps_alone(record_units(stable_part(r))) for r in real_records())
    record = copy.deepcopy(real_records()[0])
    record["documentSection"] = {"largeDocumentModule": {"x": 1}, "otherModule": {"x": 2}}
    assert not maps_alone(record_units(record))
    assert maps_alone([("topLevelKey",), ("protocolSection", "statusModule")])
    assert not maps_alone([("status.overallStatus",), ("protocolSection", "statusModule")])


def test_a_top_level_key_named_like_a_tracked_path_never_stands_in_for_the_field(
    tmp_path: Any
) -> None:
    # A probe's stray top-level `status.overallStatus` became that field's value on the second
    # import (only the moved module was read), a made-up major change that `check` then found.
    from conftest import run

    record = copy.deepcopy(RECORDS[0])
    db = str(tmp_path / "t.db")
    for day, value in (("2026-05-01", "one"), ("2026-05-02", "two")):
        record["status.overallStatus"] = value
        (tmp_path / "r.json").write_text(json.dumps(record))
        assert run(db, "import", "--at", day, str(tmp_path / "r.json"))[0] == 0
    assert run(db, "changes") == (0, "[]\n", "")
    assert run(db, "check")[0] == 0
