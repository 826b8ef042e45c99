"""The diff turns real version pairs into exactly their real field changes."""

from __future__ import annotations

import copy
import itertools
import json
import random
import time
from typing import Any

import pytest
from conftest import html_record, load, real_records, version_pair
from test_normalize import DERIVED_ONLY_RERELEASES

import trialdiff.diff
from trialdiff.canonical import canonical_json
from trialdiff.diff import changed_paths, diff_snapshots, inner_edits, neutral_text
from trialdiff.model import Snapshot
from trialdiff.normalize import extract_fields


def snapshots(nct_id: str) -> tuple[Snapshot, Snapshot]:
    """Return the real older and newer versions of a study as snapshots."""
    older, newer = version_pair(nct_id)
    return (
        Snapshot(nct_id, "2024-06-14T00:00:00.000Z", extract_fields(older)),
        Snapshot(nct_id, "2025-07-07T00:00:00.000Z", extract_fields(newer)),
    )


def test_first_snapshot_is_a_silent_baseline() -> None:
    _, newer = snapshots("NCT06060392")
    assert diff_snapshots(None, newer) == []


def test_rereleases_differing_only_in_derived_data_report_nothing() -> None:
    for nct_id in DERIVED_ONLY_RERELEASES:
        old, new = snapshots(nct_id)
        assert diff_snapshots(old, new) == []


def test_nct06060392_reports_its_real_changes() -> None:
    old, new = snapshots("NCT06060392")
    changes = diff_snapshots(old, new)
    assert [(c.path, c.kind) for c in changes] == [
        ("status.completionDate", "changed"),
        ("status.lastUpdatePostDate", "changed"),
        ("status.primaryCompletionDate", "changed"),
        ("status.statusVerifiedDate", "changed"),
        ("oversight.isUsExport", "added"),
        ("references.references", "changed"),
    ]
    by_path = {c.path: c for c in changes}
    completion = by_path["status.completionDate"]
    assert completion.old == {"date": "2025-03-01", "type": "ESTIMATED"}
    assert completion.new == {"date": "2025-11-01", "type": "ESTIMATED"}
    assert completion.detail == {
        "edits": [{"at": "date", "op": "changed", "old": "2025-03-01", "new": "2025-11-01"}]
    }
    assert by_path["oversight.isUsExport"].new is False
    assert all(c.detected_at == "2025-07-07T00:00:00.000Z" for c in changes)
    references = by_path["references.references"].detail
    assert references["count_after"] >= references["count_before"]


def test_nct05827016_reports_its_real_changes() -> None:
    old, new = snapshots("NCT05827016")
    changes = diff_snapshots(old, new)
    head = [(c.path, c.kind) for c in changes if not c.path.startswith("locations.")]
    assert head == [
        ("status.lastUpdatePostDate", "changed"),
        ("status.overallStatus", "changed"),
        ("status.startDate", "changed"),
        ("status.statusVerifiedDate", "changed"),
        ("eligibility.criteria", "changed"),
        ("outcomes.secondary", "changed"),
        ("conditions.keywords", "changed"),
        ("contacts.central", "changed"),
        ("references.seeAlsoLinks", "changed"),
        ("contactsLocations.locations_nested", "removed"),
    ]
    status = next(c for c in changes if c.path == "status.overallStatus")
    assert (status.old, status.new) == ("NOT_YET_RECRUITING", "RECRUITING")
    keywords = next(c for c in changes if c.path == "conditions.keywords").detail
    assert keywords["items_added"] == ["ASCT", "CELMoD", "Cereblon Modulators"]
    assert keywords["items_removed"] == ["ASCTm"]
    assert (keywords["count_before"], keywords["count_after"]) == (9, 11)
    sites = [c for c in changes if c.path.startswith("locations.")]
    assert len(sites) == 512
    assert [c.path for c in sites] == sorted(c.path for c in sites)
    kinds = {k: sum(c.kind == k for c in sites) for k in ("added", "removed", "changed")}
    assert kinds == {"added": 234, "removed": 230, "changed": 48}


def test_real_estimated_to_actual_flips_are_reported() -> None:
    for nct_id in ("NCT05923112", "NCT05923281"):
        old, new = snapshots(nct_id)
        changes = diff_snapshots(old, new)
        assert [(c.path, c.kind) for c in changes] == [
            ("status.lastUpdatePostDate", "changed"),
            ("status.studyFirstPostDate", "changed"),
        ]
        assert changes[0].detail["edits"] == [
            {"at": "type", "op": "changed", "old": "ESTIMATED", "new": "ACTUAL"}
        ]


def test_list_detail_names_items_added_removed_and_edited() -> None:
    record = load("v2/NCT04857515.json")
    fields = extract_fields(record)
    outcomes = record["protocolSection"]["outcomesModule"]["primaryOutcomes"]
    edited_outcomes = [dict(o) for o in outcomes]
    edited_outcomes[0]["timeFrame"] = "52 weeks"
    edited_outcomes.append({"measure": "A new outcome", "timeFrame": "1 year"})
    record["protocolSection"]["outcomesModule"]["primaryOutcomes"] = edited_outcomes
    old = Snapshot("NCT04857515", "2026-01-01T00:00:00.000Z", fields)
    new = Snapshot("NCT04857515", "2026-01-02T00:00:00.000Z", extract_fields(record))
    (change,) = diff_snapshots(old, new)
    assert change.path == "outcomes.primary"
    assert change.detail["items_added"] == ["A new outcome"]
    assert change.detail["items_removed"] == []
    (edited,) = change.detail["items_changed"]
    assert edited["item"] == outcomes[0]["measure"]
    assert edited["edits"] == [
        {"at": "timeFrame", "op": "changed", "old": outcomes[0]["timeFrame"], "new": "52 weeks"}
    ]


def test_changed_paths_compares_canonical_text_only() -> None:
    assert changed_paths({"a.b": "1", "c.d": "2"}, {"a.b": "1", "c.d": "3", "e.f": "4"}) == [
        ("c.d", "changed"),
        ("e.f", "added"),
    ]
    assert changed_paths({"x.y": "1"}, {}) == [("x.y", "removed")]


def test_inner_edits_ignores_order() -> None:
    assert inner_edits({"a": [1, 2]}, {"a": [2, 1]}) == []


def _mutated(value: Any, rng: random.Random, objects: list[dict[str, Any]]) -> Any:
    """Return a copy of a real value with random edits at any depth (types, keys, lists)."""
    if isinstance(value, list):
        items = [_mutated(item, rng, objects) if rng.random() < 0.1 else item for item in value]
        roll = rng.random()
        if roll < 0.1:
            items.reverse()  # the same items in another order: no change to DeepDiff
        elif roll < 0.15 and items:
            items.pop()
        return items
    if not isinstance(value, dict):
        return value
    if rng.random() < 0.05:
        return dict(rng.choice(objects))  # another object: few keys shared
    after = dict(value)
    for key in list(after):
        roll = rng.random()
        if roll < 0.1:
            del after[key]
        elif roll < 0.2:  # type changes DeepDiff reports although 1 == 1.0 == True
            after[key] = rng.choice([1, 1.0, True, 0, False, None, "x", str(after[key]), {}])
        elif roll < 0.5:
            after[key] = _mutated(after[key], rng, objects)
    if rng.random() < 0.2:
        after[f"new{rng.randint(0, 2)}"] = rng.choice([1, "y", 2.5, None, {"k": 1}, [1]])
    return after


def test_edits_of_objects_are_deepdiffs_without_deepdiff(monkeypatch: pytest.MonkeyPatch) -> None:
    objects: list[dict[str, Any]] = []

    def collect(value: object) -> None:
        if isinstance(value, dict):
            objects.append(value)
            for child in value.values():
                collect(child)
        elif isinstance(value, list):
            for child in value:
                collect(child)

    for record in real_records()[:300]:
        collect(record.get("protocolSection", {}))
    rng = random.Random(7)
    pairs = []
    for _ in range(3000):
        before = rng.choice(objects)
        pairs.append((before, _mutated(before, rng, objects)))
    fast = [inner_edits(before, after) for before, after in pairs]
    answered = sum(trialdiff.diff._object_edits(b, a) is not None for b, a in pairs)
    assert answered > 2000  # most real edits never need DeepDiff, and these say it
    monkeypatch.setattr(trialdiff.diff, "_object_edits", lambda *args: None)
    for (before, after), edits in zip(pairs, fast, strict=True):
        assert edits == inner_edits(before, after), (before, after)


def across_markups(old_html: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the changes from a record in the history endpoint's HTML to one in Markdown."""
    return [(path, str(kind)) for path, kind in changed_paths(
        extract_fields(old_html, markup="html"), extract_fields(new), ("html", "markdown"))]


@pytest.mark.parametrize("record", real_records(), ids=lambda r: r["protocolSection"][
    "identificationModule"]["nctId"])
def test_the_same_real_record_in_html_and_markdown_is_no_change(record: dict[str, Any]) -> None:
    # Before schema 13, 7 of these (446 of the 1,682 shared records) read a Markdown `<` as
    # a tag's start and reported their criteria changed.
    assert across_markups(html_record(record), record) == []


def test_a_word_edited_across_markups_is_a_change_even_after_a_less_than() -> None:
    edited = 0
    for record in real_records():
        module = record["protocolSection"].get("eligibilityModule", {})
        criteria = module.get("eligibilityCriteria", "")
        at = criteria.find("\\<")
        if at < 0:
            continue
        # The first word after the `<`: the span the old rule swallowed as a tag.
        word = next(w for w in criteria[at + 2:].split() if w.isalpha())
        new = copy.deepcopy(record)
        new["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = (
            criteria[:at] + criteria[at:].replace(word, word + "zz", 1))
        assert across_markups(html_record(record), new) == [("eligibility.criteria", "changed")]
        edited += 1
    assert edited >= 3


def test_markdown_text_keeps_what_sits_between_a_less_than_and_a_greater_than() -> None:
    # Real criteria write `\<` and `>` as text: only HTML has tags to drop.
    markdown = "ANC \\< 1500 mm3 TRACK I PLT > 100,000 and snake\\_case 1. item"
    words = "ANC 1500 mm3 TRACK I PLT 100 000 and snake case item"
    assert neutral_text(markdown, "markdown") == words
    html = "<p>ANC &lt; 1500 mm3 TRACK I PLT &gt; 100,000 and snake_case</p><ol><li>item</li></ol>"
    assert neutral_text(html, "html") == neutral_text(markdown, "markdown")


def _nodes(value: Any) -> int:
    """Count a JSON value's nodes."""
    if isinstance(value, dict):
        return 1 + sum(map(_nodes, value.values()))
    if isinstance(value, list):
        return 1 + sum(map(_nodes, value))
    return 1


def _largest_results_module() -> tuple[str, dict[str, Any]]:
    """Return the bundled real records' largest results module (by nodes) and its field path."""
    found = []
    for record in real_records():
        fields = extract_fields(record)
        for path in ("results.adverseEvents", "results.outcomeMeasures"):
            if path in fields:
                value = json.loads(fields[path])
                found.append((_nodes(value), path, value))
    _, path, value = max(found, key=lambda item: item[0])
    return path, value


def test_a_results_section_with_counts_edited_is_walked_in_bounded_time() -> None:
    # A probe's sponsor edited 1% of a real adverse-events table's counts: DeepDiff took
    # 8-20 s a study, on import and again on `check` and `diff`.
    path, module = _largest_results_module()
    # The bundled records are small ones: a large trial's table holds ten times the rows (each
    # row's copies told apart, as a real table's rows are).
    before = json.loads(canonical_json({
        key: [{**row, "copy": n} for n in range(10) for row in copy.deepcopy(child)]
        if isinstance(child, list) else child for key, child in module.items()}) or "{}")
    after = copy.deepcopy(before)
    rng, edited = random.Random(7), []

    def bump(node: Any, at: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in list(items):
            here = f"{at}[{key}]" if isinstance(key, int) else (f"{at}.{key}" if at else key)
            if (isinstance(child, int) and not isinstance(child, bool) and key != "copy"
                    and rng.random() < 0.02):
                node[key] = child + 1
                edited.append({"at": here, "op": "changed", "old": child, "new": child + 1})
            elif isinstance(child, dict | list):
                bump(child, here)

    bump(after, "")
    # As stored: canonical lists are sorted by their items' JSON, so an edited row moves (its
    # counts sort before its term), and pairing rows in order renamed a probe's two rows.
    after = json.loads(canonical_json(after) or "{}")
    assert trialdiff.diff.beyond_deepdiff(before, after) and len(edited) > 20
    started = time.process_time()
    detail = trialdiff.diff.describe(path, before, after)
    assert time.process_time() - started < 1.0
    assert detail == {"edits": sorted(edited, key=trialdiff.diff._edit_order)}
    # Items that one list lacks are added or removed, as DeepDiff's ignore_order says.
    key = next(k for k, v in module.items() if isinstance(v, list) and len(v) > 2)
    shorter = {**module, key: module[key][1:]}
    for old, new, op, item in ((module, shorter, "removed", "old"),
                               (shorter, module, "added", "new")):
        walked = trialdiff.diff._walked_edits(old, new)
        assert walked == [{"at": f"{key}[0]", "op": op, item: module[key][0]}]
        assert inner_edits(old, new) == walked  # DeepDiff's answer within the bounds


@pytest.mark.parametrize("depth", [8, 16, 50])
def test_lists_nested_deep_are_walked_not_given_to_deepdiff(depth: int) -> None:
    # Each level of lists doubled DeepDiff's time: 16 levels took a probe's import a minute.
    def nest(leaf: str) -> Any:
        value: Any = leaf
        for _ in range(depth):
            value = [{"a": value}]
        return value

    started = time.process_time()
    edits = inner_edits({"x": nest("a")}, {"x": nest("b")})
    assert time.process_time() - started < 0.5
    assert edits == [{"at": "x" + "[0].a" * depth, "op": "changed", "old": "a", "new": "b"}]


def test_real_values_within_the_bounds_are_still_deepdiffs() -> None:
    # The bounds leave every real list field (outcomes, sites, arms...) to DeepDiff, as before.
    for record in real_records()[:400]:
        for path, text in extract_fields(record).items():
            if not path.startswith("results.") and text.startswith("["):
                value = json.loads(text)
                assert not trialdiff.diff.beyond_deepdiff(value, value), path


def test_edited_rows_that_move_in_a_sorted_list_are_paired_by_likeness() -> None:
    # Canonical lists are sorted by their items' JSON, and a row's counts sort before its term:
    # edit two rows' counts and they may swap places. Paired in order, a probe's two real
    # adverse-event rows were taken for each other and "renamed".
    _, module = _largest_results_module()
    rows = json.loads(canonical_json(module["otherEvents"]) or "[]")
    for first, second in itertools.pairwise(rows):  # alike but for their terms
        if {k: v for k, v in first.items() if k != "term"} == {
                k: v for k, v in second.items() if k != "term"}:
            break
    else:
        pytest.fail("no two neighbouring rows alike but for their terms")
    i, j = rows.index(first), rows.index(second)
    edited = copy.deepcopy(rows)
    edited[i]["stats"][0]["numAffected"] += 2  # the first now sorts after the second
    edited[j]["stats"][0]["numAffected"] += 1
    after = json.loads(canonical_json(edited) or "[]")
    assert [r["term"] for r in after] != [r["term"] for r in rows]  # they did move
    walked = trialdiff.diff._walked_edits(rows, after)
    assert sorted(walked, key=trialdiff.diff._edit_order) == sorted([
        {"at": f"[{i}].stats[0].numAffected", "op": "changed", "old": rows[i]["stats"][0][
            "numAffected"], "new": rows[i]["stats"][0]["numAffected"] + 2},
        {"at": f"[{j}].stats[0].numAffected", "op": "changed", "old": rows[j]["stats"][0][
            "numAffected"], "new": rows[j]["stats"][0]["numAffected"] + 1},
    ], key=trialdiff.diff._edit_order)
