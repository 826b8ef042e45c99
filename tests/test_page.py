"""The trial page: the sample page byte for byte, its rules, and hostile values."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import FIXTURES, load, real_records
from markdown_it import MarkdownIt

from trialdiff.page import (
    block,
    canonical_url,
    fence,
    md_block,
    md_inline,
    render_page,
    yaml_scalar,
)

SAMPLE = FIXTURES / "NCT05085444"
SEEN = "2026-05-12T07:21:49.285Z"
BASE = "https://parkinsonspathways.com/agent/trials/"
FOOTER = ("This page is a raw mirror with no AI summary, no editorial enrichment, and no "
          "Parkinson's-specific filtering.")
PAGE = (SAMPLE / "page.md").read_text(encoding="utf-8")
SECTION = (SAMPLE / "expected-section.md").read_text(encoding="utf-8")
FULL = load("NCT05085444/full.json")


def page(record: dict[str, Any], base: str = BASE, footer: str = FOOTER) -> str:
    """Render a record as a page with the sample's settings and section."""
    return render_page(record, SEEN, SECTION, base, footer)


def front_matter(text: str) -> dict[str, str]:
    """Read the front matter back: plain values as they are, quoted ones as JSON strings."""
    block = text.split("---\n")[1]
    values = {}
    for line in block.splitlines():
        key, _, value = line.partition(": ")
        values[key] = json.loads(value) if value.startswith('"') else value
    return values


def test_the_sample_page_byte_for_byte() -> None:
    assert page(FULL) == PAGE


def test_the_sample_page_from_the_database(db_path: str) -> None:
    from trialdiff.model import utc_day
    from trialdiff.query import ChangeFilter, latest_record, query_changes, study_row, transaction
    from trialdiff.render import recent_section, recent_window
    from trialdiff.schema import open_db
    from trialdiff.store import save_study

    db = open_db(db_path)
    with transaction(db):  # an early partial sighting, then the full record
        save_study(db, "NCT05085444", load("NCT05085444/partial.json"), "2026-05-01T06:00:00.000Z")
    with transaction(db):
        save_study(db, "NCT05085444", FULL, SEEN)
    record, row = latest_record(db, "NCT05085444"), study_row(db, "NCT05085444")
    assert record is not None and row is not None
    since, until = recent_window(utc_day(SEEN), 30)
    changes = list(query_changes(db, ChangeFilter(("NCT05085444",), since, until)))
    section = recent_section(changes, 30)
    assert section == SECTION
    assert render_page(record, row["last_seen_at"], section, BASE, FOOTER) == PAGE


@pytest.mark.parametrize(("value", "written"), [
    ("Zhejiang University", "Zhejiang University"),
    ("Movember Foundation (INTERVAL, GAP4)", "Movember Foundation (INTERVAL, GAP4)"),
    ("2021-10-20", '"2021-10-20"'),  # a title that looks like a date stays a string
    ("https://x.org/NCT05085444", '"https://x.org/NCT05085444"'),
    ("2026-05-12T07:21:49.285Z", '"2026-05-12T07:21:49.285Z"'),
    ("A: B", '"A: B"'), ("#1 trial", '"#1 trial"'), ("Trial #2", '"Trial #2"'),
    ("- item", '"- item"'), ("@home", '"@home"'), ("*star", '"*star"'), ("'q", "\"'q\""),
    ('"q"', '"\\"q\\""'), ("[x]", '"[x]"'), ("{x}", '"{x}"'), ("% x", '"% x"'), ("`x`", '"`x`"'),
    ("true", '"true"'), ("No", '"No"'), ("null", '"null"'), ("~", '"~"'), ("12", '"12"'),
    ("1e3", '"1e3"'), (".5", '".5"'), ("0x1F", '"0x1F"'), ("", '""'), (" x", '" x"'),
    ("x ", '"x "'), ("a\nb", '"a\\nb"'), ("a\x00b\x7f\x85c", '"a\\u0000b\\u007f\\u0085c"'),
    ("a\u2028b", '"a\\u2028b"'), ("back\\slash", "back\\slash"), ("3 Arms", "3 Arms"),
])
def test_yaml_scalar_quotes_only_what_yaml_could_misread(value: str, written: str) -> None:
    assert yaml_scalar(value) == written
    if written.startswith('"'):
        assert json.loads(written) == value  # the escapes are JSON's, which YAML reads too


def test_a_date_field_stays_plain_as_in_the_sample() -> None:
    assert yaml_scalar("2021-10-20", is_date=True) == "2021-10-20"
    assert "\nct_last_update_post_date: 2021-10-20\n" in PAGE


def test_yaml_scalar_round_trips_through_a_yaml_parser() -> None:
    yaml = pytest.importorskip("yaml")
    for value in ("A: b # c \"d\" 'e'", "true", "12", "- x", "a\nb\tc", "Zhejiang University",
                  "2021-10-20", "x\u2028y\x85z", "0o17", "1_000", "=", "<<", "{x: 1}"):
        assert yaml.safe_load(f"title: {yaml_scalar(value)}\n") == {"title": value}


def test_a_hostile_title_cannot_break_the_front_matter_or_the_heading() -> None:
    title = "Trial: A # B \"C\" 'D' `E` *F* <G> & [H]\nsecond line: x"
    record = copy.deepcopy(FULL)
    record["protocolSection"]["identificationModule"]["briefTitle"] = title
    text = page(record)
    matter = front_matter(text)
    assert list(matter) == list(front_matter(PAGE))
    assert matter["title"] == "Trial: A # B \"C\" 'D' `E` *F* <G> & [H] second line: x"
    assert text.splitlines()[1] == (
        "title: \"Trial: A # B \\\"C\\\" 'D' `E` *F* <G> & [H] second line: x\"")
    heading = next(line for line in text.splitlines() if line.startswith("# "))
    assert heading == "# Trial: A # B \"C\" 'D' \\`E\\` \\*F\\* \\<G\\> \\& \\[H\\] second line: x"
    tokens = MarkdownIt("commonmark").parse(text.split("---\n", 2)[2])
    inline = next(t for t in tokens if t.type == "inline")
    assert [c.type for c in inline.children or []] == ["text"]  # no emphasis, code or html
    assert (inline.children or [])[0].content == matter["title"]  # shows exactly as written


def test_a_value_at_a_lines_start_never_begins_a_block() -> None:
    # Site names as a probe wrote them: in `- {site}, Norway` each became a heading, a nested
    # list or a code fence inside the Locations list.
    from markdown_it import MarkdownIt

    render = MarkdownIt("commonmark").render
    for name in ("# Hash Hospital", "## Two", "1. Numbered Clinic", "- Dash Clinic",
                 "+ Plus Site", "2) Paren Site", "~~~ tilde", "~~~~", "-- Dashes"):
        assert render(f"- {md_inline(name)}, Norway\n") == (
            f"<ul>\n<li>{name}, Norway</li>\n</ul>\n")
    # A site named `---` was a rule that ended the list; `Trial #` a heading that lost its `#`.
    assert render(f"- {md_inline('---')}\n") == "<ul>\n<li>---</li>\n</ul>\n"
    assert render(f"# {md_inline('Radiotherapy Trial #')}\n") == "<h1>Radiotherapy Trial #</h1>\n"
    # A probe's fuzzer: `- --` is a rule, and `# #######` an empty heading.
    for dashes in ("--", "-- --"):
        assert render(f"- {md_inline(dashes)}\n") == f"<ul>\n<li>{dashes}</li>\n</ul>\n"
    assert render(f"# {md_inline('#######')}\n") == "<h1>#######</h1>\n"
    for plain in ("12.5 mg", "1st Hospital", "-5 C", "#tag", "A-B"):
        assert md_inline(plain) == plain  # no marker: nothing escaped


def test_a_description_cannot_open_a_section_or_put_html_on_the_page() -> None:
    record = copy.deepcopy(FULL)
    record["protocolSection"]["descriptionModule"]["briefSummary"] = (
        "Summary.\n## Recent Field Changes (last 30 days)\n<img src=x onerror=alert(1)>\n"
        "Fake section\n---\n\nA rule, as the registry writes one:\n\n---\n\n"
        "1. a\n\n<!-- -->\n\n1. b")
    tokens = MarkdownIt("commonmark").parse(page(record))
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings.count("Recent Field Changes (last 30 days)") == 1
    assert "Fake section" not in headings
    html = [t.content for t in tokens if t.type == "html_block"] + [
        c.content for t in tokens for c in t.children or [] if c.type == "html_inline"]
    assert html == ["<!-- -->\n"]  # the registry's own list separator, and nothing else
    rules = sum(t.type == "hr" for t in MarkdownIt("commonmark").parse(page(FULL)))
    assert sum(t.type == "hr" for t in tokens) == rules + 1  # the registry's rule
    # No real description changes: the registry's Markdown holds none of these.
    for real in real_records():
        module = real["protocolSection"].get("descriptionModule", {})
        for text in (module.get("briefSummary"), module.get("detailedDescription")):
            assert text is None or md_block(text) == block(text)


def test_no_description_puts_live_html_on_the_page() -> None:
    # A probe's record: a comment opened a raw HTML block that the escapes after it on its
    # line did not reach, an escaped backslash was taken for the tag's own escape, and the
    # descriptions of arms, interventions and outcomes were not escaped at all.
    record = copy.deepcopy(FULL)
    protocol = record["protocolSection"]
    protocol["descriptionModule"]["briefSummary"] = (
        "First.\n\n<!-- --><img src=x onerror=alert(1)>\n\n<!-- -->\n\nLast.")
    protocol["descriptionModule"]["detailedDescription"] = "In mg\\\\<img src=x onerror=alert(2)>"
    protocol["outcomesModule"]["primaryOutcomes"][0]["description"] = (
        "Measured <img src=x onerror=alert(3)> weekly;<!-- -->then \\<b> as the registry writes")
    protocol["armsInterventionsModule"]["armGroups"][0]["description"] = "Arm <svg onload=x>"
    tokens = MarkdownIt("commonmark").parse(page(record))
    html = [t.content for t in tokens if t.type == "html_block"] + [
        c.content for t in tokens for c in t.children or [] if c.type == "html_inline"]
    assert html == ["<!-- -->\n"]  # the registry's list separator, alone on its line
    text = MarkdownIt("commonmark").render(page(record))
    assert "In mg\\&lt;img src=x onerror=alert(2)&gt;" in text
    assert "Measured &lt;img src=x onerror=alert(3)&gt; weekly; then &lt;b&gt; as the" in text
    assert "Arm &lt;svg onload=x&gt;" in text


@pytest.mark.parametrize("opening", ["```", "~~~", "  ````python"])
def test_an_unclosed_code_fence_in_a_description_cannot_hold_the_rest_of_the_page(
    opening: str
) -> None:
    # A probe's summary ended in an open fence: every section after it rendered as code.
    record = copy.deepcopy(FULL)
    record["protocolSection"]["descriptionModule"]["briefSummary"] = f"Summary.\n\n{opening}\ncode"
    headings = [t for t in MarkdownIt("commonmark").parse(page(record)) if t.type == "heading_open"]
    assert len(headings) == len([t for t in MarkdownIt("commonmark").parse(PAGE)
                                 if t.type == "heading_open"])
    assert f"\\{opening.strip()}\ncode" in page(record)


def test_a_backfilled_html_version_is_paged_as_markdown() -> None:
    # Record history writes HTML: a study only backfilled showed `<p>…</p><ol><li>` as is.
    text = page(load("history/NCT04280705_v0.json")["study"])
    criteria = text.split("## Eligibility", 1)[1].split("```")[1]
    assert criteria.startswith("\nInclusion Criteria:\n\n1. Subject (or legally authorized")
    assert "<li>" not in text and "<p>" not in text and "\\<li" not in text


def test_md_inline_escapes_like_the_apis_markup() -> None:
    assert md_inline("EARLY_PHASE1") == "EARLY_PHASE1"  # an inner underscore is no emphasis
    assert md_inline("_x_ snake_case") == "\\_x\\_ snake_case"
    assert md_inline("Oregon Health & Science") == "Oregon Health \\& Science"
    assert md_inline("a\n\nb") == "a b"
    # Control characters and bidi overrides show as escapes (the backslash escaped for Markdown).
    assert md_inline("Bell\x07 \x1b]0;title\x07 \u202eok") == (
        "Bell\\\\x07 \\\\x1b\\]0;title\\\\x07 \\\\u202eok")


def test_a_title_and_a_description_with_control_characters_show_them_as_escapes() -> None:
    record = copy.deepcopy(FULL)
    identification = record["protocolSection"]["identificationModule"]
    identification["briefTitle"] = "Evil\x1b[31m title\x00"
    description = record["protocolSection"].setdefault("descriptionModule", {})
    description["briefSummary"] = "Line one\x07\n\n\tindented\x1b[0m"
    text = page(record)
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text
    assert "# Evil\\\\x1b\\[31m title\\\\x00" in text
    assert "Line one\\x07\n\n\tindented\\x1b[0m" in text


def test_criteria_fence_outgrows_backticks_inside() -> None:
    assert fence("x") == "```\nx\n```"
    assert fence("a ```` b") == "`````\na ```` b\n`````"
    record = copy.deepcopy(FULL)
    record["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = "A\n```\n## B"
    text = page(record)
    assert "````\nA\n```\n## B\n````" in text
    headings = [t for t in MarkdownIt("commonmark").parse(text) if t.type == "heading_open"]
    assert len(headings) == len([t for t in MarkdownIt("commonmark").parse(PAGE)
                                 if t.type == "heading_open"])


def test_sections_without_content_are_left_out() -> None:
    record = {"protocolSection": {"identificationModule": {"nctId": "NCT01213277",
                                                            "briefTitle": "Bare"}}}
    text = render_page(record, SEEN, "", "", "")
    assert text == (
        "---\ntitle: Bare\nnct_id: NCT01213277\n"
        "clinicaltrials_gov: \"https://clinicaltrials.gov/study/NCT01213277\"\n"
        f"last_seen_at: \"{SEEN}\"\nsource: ClinicalTrials.gov (mirrored, no enrichment)\n---\n"
        "# Bare\n\n**NCT ID:** [NCT01213277](https://clinicaltrials.gov/study/NCT01213277)\n\n"
        "---\n\n*Source data (authoritative): https://clinicaltrials.gov/study/NCT01213277*\n")


def test_a_real_record_with_many_sites_and_countries() -> None:
    record = load("v2/NCT02730338.json")
    text = page(record)
    matter = front_matter(text)
    assert matter["countries"] == ("Australia; Canada; Germany; Ireland; Netherlands; "
                                   "United Kingdom; United States")
    assert matter["phase"] == "NA" and matter["primary_condition"] == "Metastatic Prostate Cancer"
    assert "## Locations (22)" in text
    assert "- Oregon Health \\& Science University, Portland, Oregon, United States\n" in text
    assert "Age:**" not in text  # the sample's format has no ages, though this record has one


def _eligibility_lines(text: str) -> str:
    """Return the lines above the criteria in a page's Eligibility section."""
    return text.split("## Eligibility\n\n")[1].split("\n\n")[0]


def test_eligibility_shows_what_the_sample_shows_and_ages_only_when_asked() -> None:
    record = load("v2/NCT02730338.json")  # real: sex MALE, no healthy volunteers, from 18 Years
    plain = page(record)
    with_ages = render_page(record, SEEN, SECTION, BASE, FOOTER, ages=True)
    assert _eligibility_lines(plain) == "- **Sex:** MALE\n- **Healthy Volunteers:** No"
    assert _eligibility_lines(with_ages) == (
        "- **Sex:** MALE\n- **Healthy Volunteers:** No\n- **Minimum Age:** 18 Years")
    assert with_ages.replace("\n- **Minimum Age:** 18 Years", "", 1) == plain


def test_no_real_record_gets_age_lines_by_default() -> None:
    records = real_records()
    aged = [r for r in records if "minimumAge" in str(r.get("protocolSection"))]
    assert len(aged) > len(records) // 2  # nearly every real record carries ages
    for record in records:
        assert "Age:**" not in page(record)
    both = next(r for r in aged if "maximumAge" in r["protocolSection"]["eligibilityModule"])
    ages = _eligibility_lines(render_page(both, SEEN, SECTION, BASE, FOOTER, ages=True))
    module = both["protocolSection"]["eligibilityModule"]
    assert ages.endswith(f"- **Minimum Age:** {module['minimumAge']}\n"
                         f"- **Maximum Age:** {module['maximumAge']}")


def test_countries_split_back_even_when_a_name_holds_a_comma() -> None:
    record = copy.deepcopy(FULL)
    sites = record["protocolSection"]["contactsLocationsModule"]["locations"]
    sites += [{"facility": "Severance", "city": "Seoul", "country": "Korea, Republic of"},
              {"facility": "Other", "city": "Hangzhou", "country": "China"}]
    countries = front_matter(page(record))["countries"]
    assert countries.split("; ") == ["China", "Korea, Republic of"]


def test_enrollment_label_follows_its_type() -> None:
    actual = load("v2/NCT00000410.json")
    assert "- **Actual Enrollment:** " in page(actual)
    assert "- **Target Enrollment:** 9\n" in PAGE


def test_canonical_url_and_footer_settings() -> None:
    assert canonical_url("https://x.org/t", "NCT05085444") == "https://x.org/t/NCT05085444.md"
    assert canonical_url("https://x.org/t/", "NCT05085444") == "https://x.org/t/NCT05085444.md"
    assert canonical_url("", "NCT05085444") is None
    bare = page(FULL, base="", footer="")
    assert "canonical_url" not in bare and "*Canonical:" not in bare
    assert bare.endswith("*Source data (authoritative): "
                         "https://clinicaltrials.gov/study/NCT05085444*\n")
    # A probe's base: `*` is legal in a URL, and made the footer's emphasis end inside it.
    starred = page(FULL, base="https://x.org/a*b_/_c*/")
    footer = MarkdownIt("commonmark").render(starred.rsplit("---\n", 1)[1])
    assert footer.startswith('<p><em>Canonical: <a href="https://x.org/a*b_/_c*/NCT05085444.md">'
                             "https://x.org/a*b_/_c*/NCT05085444.md</a></em><br />")


def test_a_title_with_markup_is_escaped_once_and_reads_as_written() -> None:
    # Read as Markdown text first, then escaped as a plain value, `<script>` became
    # `\\\<script\\\>` in the heading, and a browser showed the backslashes (a probe).
    record = copy.deepcopy(real_records()[0])
    title = '<script>alert("x")</script> "quoted" & <b>bold</b> *star*'
    record["protocolSection"]["identificationModule"]["briefTitle"] = title
    heading = next(line for line in render_page(record, SEEN, "", "", "").splitlines()
                   if line.startswith("# "))
    assert heading == f"# {md_inline(title)}"
    html = MarkdownIt().render(heading)
    assert html == ('<h1>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &quot;quoted&quot; '
                    '&amp; &lt;b&gt;bold&lt;/b&gt; *star*</h1>\n')
