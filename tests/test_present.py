"""The presenter: each change's body (word diff, item lines or values), its notes, its tally."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

from conftest import (
    CHANGE_DAYS,
    FIXTURES,
    real_changes,
    real_records,
    real_words,
    sample_changes,
    sample_report,
)

from trialdiff.diff import inner_edits
from trialdiff.meaning import NONE, Annotated, annotate
from trialdiff.model import FieldChange
from trialdiff.present import (
    Edit,
    ItemLine,
    ItemLines,
    Values,
    WordDiff,
    item_lines,
    present,
    record,
    reworded,
    short,
    short_pair,
    tally,
)
from trialdiff.worddiff import ELLIPSIS, marked

NCT = "NCT05827016"  # the sample study with text, list, date and site changes


def real_items(nct_id: str | None = None) -> list[Annotated]:
    """Return the sample archive's real changes annotated, of one study or of all."""
    return [a for a in annotate(real_changes()) if nct_id in (None, a.change.nct_id)]


def real_item(path: str) -> Annotated:
    """Return NCT05827016's real change of a path."""
    return next(a for a in real_items(NCT) if a.change.path == path)


def descriptions() -> list[str]:
    """Return the real records' detailed descriptions, longest first."""
    texts = [r["protocolSection"].get("descriptionModule", {}).get("detailedDescription", "")
             for r in real_records()]
    return sorted(filter(None, texts), key=len, reverse=True)


def test_short_folds_a_real_description_into_one_cut_line() -> None:
    text = descriptions()[0]  # 3,004 characters with line breaks
    line = short(text, 60)
    assert len(line) == 60 and line.endswith(ELLIPSIS)
    assert line[:-1] == " ".join(text.split())[:59]
    assert short("RECRUITING") == "RECRUITING" and short(None) == NONE


def test_short_reads_past_a_head_that_folds_too_short() -> None:
    # A head of blanks folds to nothing: the line must still be filled from the words after it.
    words = real_words()[:100]
    line = short(" " * 1000 + " ".join(words), 40)
    assert line == " ".join(words)[:39] + ELLIPSIS


def test_short_writes_other_values_as_compact_json() -> None:
    site = real_item("locations.university of thessaly- general university hospital of "
                     "larissa|larisa||greece").change.new
    assert short(site, 1000) == json.dumps(site, ensure_ascii=False, separators=(",", ":"))
    assert short(site, 30) == json.dumps(site, separators=(",", ":"))[:29] + ELLIPSIS
    assert short(False) == "false" and short(1062) == "1062"


def test_each_kind_of_real_change_gets_its_body() -> None:
    status = real_item("status.overallStatus")
    assert present(status).body == Values("NOT_YET_RECRUITING", "RECRUITING")
    criteria = present(real_item("eligibility.criteria")).body
    assert isinstance(criteria, WordDiff)
    assert "[-(MM)-] {+(MM).+}" in marked(criteria.segments)
    # A site added or removed is a site; a site changed lists its inner edits.
    by_kind = {a.change.kind: present(a).body for a in real_items(NCT)
               if a.change.path.startswith("locations.")}
    assert isinstance(by_kind["added"], Values) and by_kind["added"].form == "site"
    assert isinstance(by_kind["removed"], Values) and by_kind["removed"].form == "site"
    changed = by_kind["changed"]
    assert isinstance(changed, ItemLines) and {line.op for line in changed.lines} == {"edit"}


def test_a_backfilled_html_text_against_the_markdown_after_it_shows_words_not_tags() -> None:
    # The registry's HTML (history v0) and the API v2 Markdown of the same study, 2 years on.
    versions = sorted((FIXTURES / "versions" / "NCT04280705").glob("*.json"))
    texts = []
    for path in versions:
        study = json.loads(path.read_text(encoding="utf-8"))
        study = study.get("study", study)
        texts.append(" ".join(study["protocolSection"]["eligibilityModule"][
            "eligibilityCriteria"].split()))
    assert texts[0].startswith("<p>Inclusion Criteria:</p><ol><li>")  # HTML, then Markdown
    change = FieldChange("NCT04280705", "eligibility.criteria", "changed",
                         "2022-03-14T00:00:00.000Z", texts[0], texts[1])
    body = present(annotate([change])[0]).body
    assert isinstance(body, WordDiff)
    shown = marked(body.segments)
    assert not re.search(r"</?(?:p|ol|ul|li)>|&(?:gt|lt|#x2F);", shown)  # `< 72 hours` is text
    assert shown.startswith("Inclusion Criteria: 1. {+Admitted to a hospital")
    assert "provides [-written-] informed consent" in shown


def test_short_pair_cuts_two_long_values_where_they_differ_not_where_they_agree() -> None:
    # A real site of the sample whose status changed: cut from the start, both sides read
    # `{"city":"…` alike and hid the change (sync's lines, a digest mail's subject).
    site = next(a.change for a in real_items(NCT) if a.change.path.startswith("locations.")
                and a.change.kind == "changed")
    old, new = short_pair(site.old, site.new, 50)
    assert old != new and old.startswith("\u2026") and new.startswith("\u2026")
    assert max(len(old), len(new)) <= 50
    assert short(site.old, 50) == short(site.new, 50)  # what the lines showed before
    assert short_pair("RECRUITING", "COMPLETED") == ("RECRUITING", "COMPLETED")
    assert short_pair(None, "x" * 80, 20) == (NONE, "x" * 19 + ELLIPSIS)
    assert short_pair("a" * 30 + "b", "a" * 30 + "c", 20) == (
        ELLIPSIS + "a" * 6 + "b", ELLIPSIS + "a" * 6 + "c")


def test_long_values_and_inner_edits_show_where_they_differ() -> None:
    # A real official title with a suffix added: a title is a value, not a text field, and
    # both sides cut at 60 from the start read the same (the report, Markdown and Atom).
    title = real_records()[0]["protocolSection"]["identificationModule"]["officialTitle"]
    assert len(title) > 60
    change = FieldChange(NCT, "identification.officialTitle", "changed", CHANGE_DAYS[1],
                         title, title + " (Maintenance)")
    body = present(annotate([change])[0]).body
    assert isinstance(body, Values)
    old, new = body.texts(60)
    assert old != new and new.endswith("(Maintenance)") and len(new) <= 60
    # An inner edit of a long string (an arm's description), the same way.
    edit = Edit(**inner_edits({"description": title}, {"description": title + " Dose reduced."})[0])
    line_old, line_new = edit.texts(40)
    assert line_new.endswith("Dose reduced.") and line_old != line_new


def test_site_values_show_the_status_only() -> None:
    added = present(real_item("locations.university of thessaly- general university hospital "
                              "of larissa|larisa||greece")).body
    assert isinstance(added, Values)
    assert added.texts(60) == (NONE, "site (RECRUITING)")
    removed = next(a for a in real_items(NCT)
                   if a.change.kind == "removed" and a.change.path.startswith("locations."))
    assert "status" not in removed.change.old  # the real removed sites carry no status
    assert present(removed).body.texts(60) == ("site", NONE)  # type: ignore[union-attr]


def test_a_list_keyed_by_its_items_shows_items_removed_then_added() -> None:
    # ASCTm -> ASCT is one word against another: nothing alike word by word, so no rewording.
    body = present(real_item("conditions.keywords")).body
    assert body == ItemLines((ItemLine("removed", "ASCTm"), ItemLine("added", "ASCT"),
                              ItemLine("added", "CELMoD"),
                              ItemLine("added", "Cereblon Modulators")))


def test_reworded_list_items_show_a_word_diff() -> None:
    row = next(r for r in sample_report("NCT05827016").rows if r.path == "outcomes.secondary")
    assert isinstance(row.body, ItemLines)
    assert [line.op for line in row.body.lines] == ["reworded"]
    assert "[-6 months or-] 1 year apart" in marked(row.body.lines[0].words)


def test_item_lines_list_removed_and_reworded_then_added_changed_and_edits() -> None:
    outcome = real_item("outcomes.secondary").change.detail
    references = next(a for a in real_items() if a.change.path == "references.references")
    site = next(a for a in real_items(NCT) if a.change.kind == "changed"
                and a.change.path.startswith("locations."))
    detail = {"items_removed": ["ASCTm", *outcome["items_removed"]],
              "items_added": ["ASCT", *outcome["items_added"]],
              "items_changed": references.change.detail["items_changed"][:1],
              "edits": site.change.detail["edits"][:1]}
    lines = item_lines(detail)
    assert [line.op for line in lines] == ["removed", "reworded", "added", "changed", "edit"]
    assert lines[1].item == outcome["items_removed"][0]
    assert lines[3].edits[0].at == "type" and lines[3].edits[0].new == "BACKGROUND"
    assert lines[4].edits[0].at == detail["edits"][0]["at"]



def test_a_value_replaced_whole_shows_old_and_new_not_an_edit_with_no_place() -> None:
    # The diff stores an edit at "" when a value changes type or keeps too little in common;
    # an edit line for it would name no place (`` ` `: {"x":1} -> SUSPENDED``).
    change = FieldChange(NCT, "status.expandedAccessInfo", "changed", "2025-07-07T00:00:00.000Z",
                         {"x": 1}, "SUSPENDED")
    change = replace(change, detail={"edits": inner_edits(change.old, change.new)})
    assert change.detail["edits"][0]["at"] == ""
    (item,) = annotate([change])
    assert present(item).body == Values({"x": 1}, "SUSPENDED")


def test_reworded_picks_the_closest_added_item_above_the_threshold() -> None:
    detail = real_item("outcomes.secondary").change.detail
    old, new = detail["items_removed"][0], detail["items_added"][0]
    others = real_item("conditions.keywords").change.new
    assert reworded(old, [*others, new]) == new
    assert reworded(old, others) is None  # nothing alike enough
    assert reworded({"measure": old}, [new]) is None  # only text is reworded
    # Two texts too long to weigh in bounded time stay removed and added.
    long = " ".join(real_words()[:4100])
    assert reworded(long, [long + " more"]) is None


def test_date_rows_show_the_shift_in_days() -> None:
    row = next(r for r in sample_report("NCT06060392").rows if r.path == "status.completionDate")
    assert row.body == Values({"date": "2025-03-01", "type": "ESTIMATED"},
                              {"date": "2025-11-01", "type": "ESTIMATED"}, "date")
    assert row.body.texts(60) == ("2025-03-01 ESTIMATED", "2025-11-01 ESTIMATED")
    assert row.notes == ("moved +245 days",)


def test_a_month_date_and_an_odd_date_value() -> None:
    verified = present(real_item("status.statusVerifiedDate")).body
    assert isinstance(verified, Values)
    assert verified.texts(60) == ("2023-06", "2025-06")  # the registry's own month precision
    odd = Values({"date": "2025-03-01", "note": "x"}, None, "date")
    assert odd.texts(60) == ('{"date":"2025-03-01","note":"x"}', NONE)


def test_notes_keep_the_site_status_but_leave_the_site_counts_out() -> None:
    site = next(a for a in real_items(NCT) if a.change.kind == "changed"
                and a.change.path.startswith("locations."))
    assert site.facts["sites"] == {"added": 234, "removed": 230, "changed": 48}
    # Counts are shown once per study (tally), not on each of its 512 site rows.
    assert present(site).notes == ("site status \u2205 \u2192 RECRUITING",)


def test_record_is_the_change_with_its_facts_and_severity_as_json() -> None:
    item = real_item("status.startDate")
    data = record(item)
    assert json.loads(json.dumps(data)) == data
    assert data == {**item.change.as_dict(), "facts": item.facts, "severity": "minor"}
    assert data["facts"]["actualized"] is True and data["facts"]["date"]["days"] == 7


def test_tally_counts_by_severity_then_sites_per_study() -> None:
    items = real_items()
    severities = Counter(a.severity for a in items)
    sites = Counter(a.change.kind for a in items if a.change.path.startswith("locations."))
    assert tally(items, "field change") == (
        f"{len(items)} field changes: {severities['major']} major, {severities['minor']} minor, "
        f"{severities['info']} info; sites: {sites['added']} added, {sites['removed']} removed, "
        f"{sites['changed']} changed")
    # NCT06060392 has no site changes: no site phrase at all.
    assert tally(real_items("NCT06060392"), "changed field") == \
        "6 changed fields: 2 major, 0 minor, 4 info"
    assert tally([], "changed field") == "0 changed fields: 0 major, 0 minor, 0 info"


def test_tally_gives_each_observation_of_a_study_its_own_site_phrase() -> None:
    # The same real sites seen changing on two days are two observations, counted apart.
    later = "2025-07-08T06:00:00.000Z"
    items = annotate([*sample_changes(NCT, *CHANGE_DAYS),
                      *sample_changes(NCT, CHANGE_DAYS[1], later)])
    phrase = "sites: 234 added, 230 removed, 48 changed"
    assert tally(items, "field change").endswith(f"; {phrase}; {phrase}")
