"""Raw records: stored against the first with a trained dictionary, the gate cut from a record's
own bytes, which study is compared by module, a posted results section stored once."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import zstandard
from conftest import changes_of, clones, load, real_records, run, write_day
from hypothesis import given, settings
from hypothesis import strategies as st

from trialdiff.codec import decompress, unpack_value
from trialdiff.normalize import extract_fields
from trialdiff.query import SHARED, baseline_record, iter_snapshots, latest_record, study_fields
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


def test_a_record_with_a_module_the_table_lacks_is_compared_whole(tmp_path: Path) -> None:
    # Its modules' fallback paths hang on each other (rule 6), so module by module would miss
    # that bModule's going moves aModule.x back to its own fallback path.
    record = load("v2/NCT04857515.json")
    record["documentSection"] = {"aModule": {"x": 1}, "bModule": {"x": 2}}
    edited = copy.deepcopy(record)
    edited["documentSection"]["aModule"]["x"] = 3
    alone = copy.deepcopy(edited)
    del alone["documentSection"]["bModule"]
    db = str(tmp_path / "t.db")
    for day, version in enumerate((record, edited, alone), start=1):
        folder = write_day(tmp_path / f"d{day}", [version])
        assert run(db, "import", "--at", f"2026-05-1{day}", str(folder))[0] == 0
    assert [(c[1], c[2], c[3][:10]) for c in changes_of(db)] == [
        ("documentSection.aModule.x", "changed", "2026-05-12"),
        ("documentSection.aModule.x", "removed", "2026-05-13"),
        ("documentSection.bModule.x", "removed", "2026-05-13"),
        ("documents.x", "added", "2026-05-13")]
    assert run(db, "check")[0] == 0


REAL_RECORDS = real_records()


def no_derived(record: dict[str, Any]) -> dict[str, Any]:
    """Return a record as stored: without its derivedSection."""
    return {k: v for k, v in record.items() if k != "derivedSection"}


def test_an_import_trains_a_dictionary_and_stores_changed_records_against_their_first(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "t.db")
    day1, day2 = clones(112), clones(112, edit=True)
    assert run(db, "import", "--at", "2026-05-11", str(write_day(tmp_path / "d1", day1)))[0] == 0
    assert run(db, "import", "--at", "2026-05-12", str(write_day(tmp_path / "d2", day2)))[0] == 0
    conn = sqlite3.connect(db)
    (dict_id, samples), = conn.execute("select id, samples from dictionaries").fetchall()
    assert (dict_id, samples) == (1, 112)
    for (blob,) in conn.execute("select record from records where base is null"):
        assert zstandard.get_frame_parameters(blob).dict_id == dict_id
    bases = conn.execute("select nct_id from records where base is not null").fetchall()
    edited = [n for n, (old, new) in enumerate(zip(day1, day2, strict=True)) if old != new]
    assert len(bases) == len(edited) > 30  # the edited third (a few were suspended already)
    for number, (old, new) in enumerate(zip(day1, day2, strict=True)):
        nct_id = f"NCT9{number:07d}"
        assert latest_record(conn, nct_id) == no_derived(new)
        assert baseline_record(conn, nct_id) == no_derived(old)
        assert study_fields(conn, nct_id) == extract_fields(new)
    lazy = conn.execute("select count(*) from snapshots where delta is null").fetchone()[0]
    assert lazy == 112  # no first snapshot was canonicalised into a stored baseline
    assert len(changes_of(db)) == len(edited) and run(db, "check")[0] == 0


def post_results(tmp_path: Path, db: str, count: int) -> tuple[Path, Path]:
    """Import two days of real records into `db`: on the second, half of them post results."""
    posted = next(r["resultsSection"] for r in REAL_RECORDS if "resultsSection" in r)
    day1 = [r for r in clones(count) if "resultsSection" not in r]
    day2 = copy.deepcopy(day1)
    for record in day2[::2]:
        record["resultsSection"] = posted
        record["hasResults"] = True
    days = write_day(tmp_path / "d1", day1), write_day(tmp_path / "d2", day2)
    for at, day in zip(("2026-05-11", "2026-05-12"), days, strict=True):
        assert run(db, "import", "--at", at, str(day))[0] == 0
    return days


def shared_paths(conn: sqlite3.Connection) -> dict[int, list[str]]:
    """Return each snapshot's shared paths (its delta's SHARED list), by snapshot id."""
    out = {}
    for row_id, delta in conn.execute("select id, delta from snapshots where delta is not null"):
        paths = json.loads(decompress(conn, delta)).get(SHARED)
        if paths:
            out[row_id] = paths
    return out


def all_fields(db: str) -> list[dict[str, str]]:
    """Return every stored snapshot's fields, folded, in study and sequence order."""
    conn = sqlite3.connect(db)
    ids = [row[0] for row in conn.execute("select nct_id from studies order by nct_id")]
    return [row.snapshot.fields for nct_id in ids for row in iter_snapshots(conn, nct_id)]


def test_a_posted_results_section_is_stored_once_for_its_snapshot_and_its_changes(
    tmp_path: Path, db_path: str
) -> None:
    _, day2 = post_results(tmp_path, db_path, 12)
    conn = sqlite3.connect(db_path)
    shared = shared_paths(conn)
    posted = len(list(day2.iterdir())[::2])
    assert len(shared) == posted and all("results.outcomeMeasures" in p for p in shared.values())
    for snapshot_id, paths in shared.items():
        delta = json.loads(decompress(conn, conn.execute(
            "select delta from snapshots where id = ?", [snapshot_id]).fetchone()[0]))
        assert not set(paths) & set(delta)  # the values are the changes' alone
        for path in paths:
            (cell,) = conn.execute("select new from changes where snapshot_id = ? and path = ?",
                                   [snapshot_id, path]).fetchone()
            assert isinstance(cell, bytes) and len(unpack_value(conn, cell) or "") > 1024
    for record in map(lambda p: json.loads(p.read_text()), sorted(day2.iterdir())):
        nct_id = record["protocolSection"]["identificationModule"]["nctId"]
        assert study_fields(conn, nct_id) == extract_fields(record)  # the fold reads them back
    assert run(db_path, "check")[0] == 0
    snapshot_id, paths = next(iter(shared.items()))
    nct_id, seq = conn.execute("select nct_id, seq from snapshots where id = ?",
                               [snapshot_id]).fetchone()
    conn.execute("delete from changes where snapshot_id = ? and path = ?", [snapshot_id, paths[0]])
    conn.commit()
    code, out, _ = run(db_path, "check")
    assert code == 1 and f"{nct_id}: its snapshots cannot be read: snapshot {seq}'s delta " \
        f"cannot be read: it shares the values of changes that are not stored: {paths[0]}" in out
