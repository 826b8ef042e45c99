"""What a change means: facts and severity rules, on changes diffed from real records."""

from __future__ import annotations

import copy
import fnmatch
import json
from typing import Any

import pytest
from conftest import FIXTURES, sample_changes, sample_record, version_pair

from trialdiff.diff import diff_snapshots
from trialdiff.errors import UsageError
from trialdiff.fields import FIELDS
from trialdiff.meaning import (
    SEVERITY_RULES,
    SiteCounts,
    annotate,
    describe_facts,
    facts,
    keep_severity,
    matching_rule,
    parse_partial_date,
    rule_matches,
    severity,
    severity_at_least,
    severity_rules_markdown,
    site_counts,
)
from trialdiff.model import FieldChange, Snapshot
from trialdiff.normalize import extract_fields

BEFORE, AFTER = "2024-06-14T00:00:00.000Z", "2025-07-07T00:00:00.000Z"


def changes_between(old: dict[str, Any], new: dict[str, Any], nct_id: str) -> list[FieldChange]:
    """Return the changes the engine finds from one record to another."""
    return diff_snapshots(Snapshot(nct_id, BEFORE, extract_fields(old)),
                          Snapshot(nct_id, AFTER, extract_fields(new)))


def real_changes(nct_id: str) -> dict[str, FieldChange]:
    """Return the real changes of a study from 2024-06-14 to 2025-07-07, by path."""
    return {change.path: change for change in sample_changes(nct_id, BEFORE, AFTER)}


def edited(record: dict[str, Any], *edits: tuple[tuple[str, ...], Any]) -> dict[str, Any]:
    """Return a copy of a real record with values set at key paths (a registry edit)."""
    copied = copy.deepcopy(record)
    for keys, value in edits:
        node = copied
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return copied


def one_change(new: dict[str, Any], old: dict[str, Any], path: str) -> FieldChange:
    """Return the change at `path` between two versions of a record."""
    nct_id = old["protocolSection"]["identificationModule"]["nctId"]
    return next(c for c in changes_between(old, new, nct_id) if c.path == path)


P = "protocolSection"
LATEST = sample_record("2025-07-07", "NCT05827016")


def variant(path: str, *edits: tuple[tuple[str, ...], Any]) -> FieldChange:
    """Return the change at `path` after editing the real 2025-07-07 NCT05827016 record."""
    return one_change(edited(LATEST, *edits), LATEST, path)


# Registry edits no real version pair holds: a stop, its reason, a small enrollment change.
STOPPED = variant("status.overallStatus", ((P, "statusModule", "overallStatus"), "TERMINATED"))
WHY = variant("status.whyStopped", ((P, "statusModule", "whyStopped"), "Sponsor decision"))
ENROLLED_A_LITTLE = variant("design.enrollmentCount",
                            ((P, "designModule", "enrollmentInfo", "count"), 1300))


def pair_changes(nct_id: str) -> dict[str, FieldChange]:
    """Return the changes between a study's two real versions in tests/fixtures/versions."""
    old, new = version_pair(nct_id)
    return {c.path: c for c in changes_between(old, new, nct_id)}


REAL = real_changes("NCT05827016")
REAL_DATES = real_changes("NCT06060392")
# NOT_YET_RECRUITING -> COMPLETED with results, PHASE2 -> PHASE3, enrollment 394 -> 1062.
COMPLETED = pair_changes("NCT04280705")
SITE_CONTACT = COMPLETED["locations.university of nebraska medical center - infectious "
                         "diseases|omaha|nebraska|united states"]


def test_status_transition_is_major_and_says_whether_the_study_stopped() -> None:
    change = REAL["status.overallStatus"]
    assert facts(change)["status"] == {"from": "NOT_YET_RECRUITING", "to": "RECRUITING",
                                       "stopped": False}
    assert severity(change) == "major"
    assert facts(STOPPED)["status"] == {"from": "RECRUITING", "to": "TERMINATED",
                                        "stopped": True}
    assert matching_rule(STOPPED) is SEVERITY_RULES[0]
    assert describe_facts(facts(STOPPED)) == ["stopped (TERMINATED)"]


def test_date_shift_in_days_and_estimated_to_actual_flip() -> None:
    found = facts(REAL["status.startDate"])
    assert found["date"] == {"from": "2023-06-15", "to": "2023-06-22", "days": 7,
                             "precision": "day"}
    assert found["type"] == {"from": "ESTIMATED", "to": "ACTUAL"}
    assert found["actualized"] is True
    assert describe_facts(found) == ["moved +7 days", "estimate became actual"]
    assert severity(REAL["status.startDate"]) == "minor"


def test_month_precision_dates_count_from_the_first_of_the_month() -> None:
    found = facts(REAL["status.statusVerifiedDate"])  # real: "2023-06" -> "2025-06"
    assert found["date"] == {"from": "2023-06", "to": "2025-06", "days": 731,
                             "precision": "month"}
    mixed = FieldChange("NCT05827016", "status.completionDate", "changed", AFTER,
                        {"date": "2025-06", "type": "ESTIMATED"},
                        {"date": "2025-09-15", "type": "ESTIMATED"})
    assert facts(mixed)["date"]["days"] == 106  # 2025-06-01 -> 2025-09-15
    assert facts(mixed)["date"]["precision"] == "month"
    assert describe_facts(facts(mixed)) == ["moved +106 days, month precision"]


@pytest.mark.parametrize(("text", "expected"), [
    ("2025", ("2025-01-01", "year")),
    ("2025-06", ("2025-06-01", "month")),
    ("2025-06-15", ("2025-06-15", "day")),
    ("2025-13", None),
    ("June 2025", None),
    (None, None),
])
def test_parse_partial_date(text: Any, expected: tuple[str, str] | None) -> None:
    parsed = parse_partial_date(text)
    assert (None if parsed is None else (parsed[0].isoformat(), parsed[1])) == expected


def test_completion_dates_moving_180_days_or_more_are_major() -> None:
    assert facts(REAL_DATES["status.completionDate"])["date"]["days"] == 245
    assert severity(REAL_DATES["status.completionDate"]) == "major"
    assert facts(REAL_DATES["status.primaryCompletionDate"])["date"]["days"] == 274
    assert severity(REAL_DATES["status.lastUpdatePostDate"]) == "info"
    finished = COMPLETED["status.primaryCompletionDate"]  # completed years before the estimate
    assert facts(finished)["date"]["days"] == -1045 and facts(finished)["actualized"] is True
    assert severity(finished) == "major"
    assert describe_facts(facts(finished)) == ["moved \u22121045 days", "estimate became actual"]


def test_enrollment_delta_and_percent() -> None:
    enrolled = COMPLETED["design.enrollmentCount"]
    assert facts(enrolled)["enrollment"] == {"from": 394, "to": 1062, "delta": 668,
                                             "delta_pct": 169.5}
    assert severity(enrolled) == "major"
    assert describe_facts(facts(enrolled)) == ["enrollment \u0394 +668, +169.5%"]
    assert facts(COMPLETED["design.enrollmentType"]) == {
        "type": {"from": "ESTIMATED", "to": "ACTUAL"}, "actualized": True}
    assert facts(ENROLLED_A_LITTLE)["enrollment"]["delta_pct"] == 6.9
    assert severity(ENROLLED_A_LITTLE) == "minor"
    from_zero = FieldChange("NCT05827016", "design.enrollmentCount", "changed", AFTER, 0, 40)
    assert facts(from_zero)["enrollment"]["delta_pct"] is None
    # A move from 0 has no percentage and is more than any: major, as a watch counts it.
    assert severity(from_zero) == "major"
    assert describe_facts(facts(from_zero)) == ["enrollment \u0394 +40"]
    quarter = FieldChange("NCT05827016", "design.enrollmentCount", "changed", AFTER, 100, 125)
    assert severity(quarter) == "major"
    assert severity(FieldChange("NCT05827016", "design.enrollmentCount", "changed", AFTER,
                                100, 124)) == "minor"
    huge = FieldChange("NCT05827016", "design.enrollmentCount", "changed", AFTER, 49, 999999)
    assert describe_facts(facts(huge)) == ["enrollment \u0394 +999950, +2040714.3%"]
    assert describe_facts(facts(quarter)) == ["enrollment \u0394 +25, +25%"]


def test_results_posted_by_each_sign() -> None:
    posted = {path for path, c in COMPLETED.items() if facts(c).get("results_posted")}
    assert posted == {"results.hasResults", "status.resultsFirstPostDate",
                      "results.participantFlow", "results.baselineCharacteristics",
                      "results.outcomeMeasures", "results.adverseEvents", "results.moreInfo"}
    assert {severity(COMPLETED[path]) for path in posted} == {"major"}
    # The sample page's partial sighting adds hasResults=false: that is no posting.
    partial = json.loads((FIXTURES / "NCT05085444" / "partial.json").read_text())
    full = json.loads((FIXTURES / "NCT05085444" / "full.json").read_text())
    assert "results_posted" not in facts(one_change(full, partial, "results.hasResults"))


def test_site_counts_aggregate_one_observation_of_one_study() -> None:
    counts = site_counts(REAL.values())
    assert counts == {("NCT05827016", AFTER): SiteCounts(added=234, removed=230, changed=48)}
    annotated = annotate(list(REAL.values()))
    site = next(a for a in annotated if a.change.path.startswith("locations."))
    assert site.facts["sites"] == {"added": 234, "removed": 230, "changed": 48}
    assert "sites" not in next(a for a in annotated if a.change.path == "status.startDate").facts
    assert "sites: 234 added, 230 removed, 48 changed" in describe_facts(site.facts)
    assert "sites: 234 added" not in " ".join(describe_facts(site.facts, with_sites=False))


def test_site_status_change_is_minor_contact_edit_is_info() -> None:
    site = REAL["locations.augusta university - georgia cancer center|augusta|georgia|"
                "united states"]
    assert facts(site)["site_status"] == {"from": None, "to": "RECRUITING"}
    assert severity(site) == "minor"
    assert "site_status" not in facts(SITE_CONTACT)
    assert severity(SITE_CONTACT) == "info"


# Each rule of the table, reached by a change from (an edit of) a real record.
RULE_CASES = {
    0: STOPPED,
    1: REAL["status.overallStatus"],
    2: COMPLETED["results.hasResults"],
    3: WHY,
    4: COMPLETED["design.enrollmentCount"],
    5: REAL_DATES["status.completionDate"],
    6: COMPLETED["design.phases"],
    7: COMPLETED["outcomes.primary"],
    8: REAL["eligibility.criteria"],
    9: REAL["status.lastUpdatePostDate"],
    10: REAL["locations.augusta university - georgia cancer center|augusta|georgia|"
             "united states"],
    11: REAL["locations.cancer care associates of york|york|pennsylvania|united states"],
    12: SITE_CONTACT,
    13: REAL["conditions.keywords"],
    14: REAL["outcomes.secondary"],
}


@pytest.mark.parametrize("number", sorted(RULE_CASES))
def test_every_rule_decides_for_its_case(number: int) -> None:
    assert matching_rule(RULE_CASES[number]) is SEVERITY_RULES[number]


def test_the_table_is_covered_and_ends_with_a_catch_all() -> None:
    assert sorted(RULE_CASES) == list(range(len(SEVERITY_RULES)))
    last = SEVERITY_RULES[-1]
    assert last.paths == ("*",) and not last.kinds and not last.fact
    fallback = REAL["contactsLocations.locations_nested"]  # a rule-6 fallback path
    assert matching_rule(fallback) is last


def test_a_rules_paths_match_as_its_fnmatch_patterns_do() -> None:
    # rule_matches joins a rule's patterns into one regex: it must agree with fnmatch on every
    # path the registry has, every path a real change has, and near misses of each.
    paths = {field.path for field in FIELDS} | {c.path for c in REAL.values()}
    paths |= {p + suffix for p in list(paths) for suffix in (".x", "x", "")}
    paths |= {p[:-1] for p in list(paths) if p}
    for rule in SEVERITY_RULES:
        for path in sorted(paths):
            change = FieldChange("NCT00000000", path, "changed", AFTER)
            by_path = any(fnmatch.fnmatchcase(path, pattern) for pattern in rule.paths)
            matched = rule_matches(rule, change, {})
            # Past the path, a rule may ask for a kind or a fact: only a plain rule must match.
            assert matched is by_path if not (rule.kinds or rule.fact) else not matched \
                or by_path, (rule.why, path)


def test_every_real_change_gets_exactly_the_documented_severity() -> None:
    expected = {
        "status.lastUpdatePostDate": "info", "status.overallStatus": "major",
        "status.startDate": "minor", "status.statusVerifiedDate": "info",
        "eligibility.criteria": "major", "outcomes.secondary": "minor",
        "conditions.keywords": "info", "contacts.central": "info",
        "references.seeAlsoLinks": "info", "contactsLocations.locations_nested": "minor",
    }
    got = {path: severity(c) for path, c in REAL.items() if not path.startswith("locations.")}
    assert got == expected


def test_min_severity_filter() -> None:
    kept = keep_severity(annotate(list(REAL_DATES.values())), "major")
    assert [i.change.path for i in kept] == ["status.completionDate",
                                             "status.primaryCompletionDate"]
    assert len(keep_severity(annotate(list(REAL_DATES.values())), "info")) == len(REAL_DATES)
    assert severity_at_least("minor", "info") and not severity_at_least("info", "minor")
    with pytest.raises(UsageError, match="unknown severity"):  # the library's own error
        keep_severity([], "critical")


def test_the_documented_table_lists_every_rule() -> None:
    table = severity_rules_markdown().splitlines()
    assert len(table) == 2 + len(SEVERITY_RULES)
    assert "`enrollment.delta_pct` \u2265 25" in table[2 + 4]


def test_the_sample_pages_partial_sighting() -> None:
    partial = json.loads((FIXTURES / "NCT05085444" / "partial.json").read_text())
    full = json.loads((FIXTURES / "NCT05085444" / "full.json").read_text())
    found = changes_between(partial, full, "NCT05085444")
    assert len(found) == 16 and {c.kind for c in found} == {"added"}
    major = {c.path for c in found if severity(c) == "major"}
    assert major == {"status.overallStatus", "design.phases", "eligibility.criteria",
                     "eligibility.sex", "outcomes.primary"}


ODD_VALUES: list[Any] = [["RECRUITING", "X"], {"date": ["2025-01"], "type": {"a": 1}},
                         {"status": ["RECRUITING"]}, 7, 10**40, 2.5, True, None, "",
                         "RECRUITING " * 50_000, {"count": 3}]


@pytest.mark.parametrize("odd", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_an_odd_value_anywhere_gets_no_facts_and_never_raises(odd: Any) -> None:
    # Every real change of NCT05827016 and of NCT04280705's version pair (every kind of
    # tracked field, sites included), with an odd value put on one side or both.
    real = [*REAL.values(), *COMPLETED.values()]
    assert {"status.overallStatus", "design.enrollmentCount"} <= {c.path for c in real}
    for change in real:
        for old, new in ((change.old, odd), (odd, change.new), (odd, odd)):
            bent = FieldChange(change.nct_id, change.path, change.kind, change.detected_at,
                               old, new, change.detail)
            found = facts(bent)
            assert severity(bent, found) in ("major", "minor", "info")
            describe_facts(found)
            json.dumps(found)
            if change.path == "status.overallStatus":
                assert ("status" in found) == isinstance(odd, str | None)
            if change.path == "design.enrollmentCount":
                counts = all(type(v) is int and v < 10**15 for v in (old, new))
                assert ("enrollment" in found) == counts
    status = FieldChange("NCT05827016", "status.overallStatus", "changed", AFTER,
                         "RECRUITING", ["TERMINATED"])
    assert facts(status) == {}
    assert matching_rule(status).why == "the overall recruitment status changed"
    annotate([status])
