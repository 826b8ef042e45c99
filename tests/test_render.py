"""The plain-text renderings: the recent window and section, and a study's snapshot table."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from conftest import CHANGE_DAYS, SAMPLE, load, real_changes, real_records, run, sample_changes
from markdown_it import MarkdownIt

from trialdiff.query import snapshots_of
from trialdiff.render import (
    MARKDOWN_ESCAPE,
    code_span,
    history_table,
    markdown_of_html,
    readable_pair,
    recent_order,
    recent_section,
    recent_window,
    visible,
)
from trialdiff.schema import open_db

NCT = "NCT06060392"
# NCT06060392's six real changed fields in the report's table order (rule 7), as stored.
PATHS = ["status.completionDate", "status.lastUpdatePostDate", "status.primaryCompletionDate",
         "status.statusVerifiedDate", "oversight.isUsExport", "references.references"]
EARLY, LATE, NEXT_DAY = CHANGE_DAYS[1], "2025-07-07T23:00:00.000Z", "2025-07-08T01:00:00.000Z"


def test_recent_window_spans_whole_utc_days_ending_on_the_day() -> None:
    # 18 days of April (13-30) and 12 of May make 30; the end is the next day's midnight.
    assert recent_window(date(2026, 5, 12), 30) == ("2026-04-13T00:00:00.000Z",
                                                    "2026-05-13T00:00:00.000Z")
    assert recent_window(date(2024, 3, 1), 2) == ("2024-02-29T00:00:00.000Z",
                                                  "2024-03-02T00:00:00.000Z")
    assert recent_window(date(2025, 12, 31), 1) == ("2025-12-31T00:00:00.000Z",
                                                     "2026-01-01T00:00:00.000Z")


def test_recent_window_selects_stored_times_by_string_order() -> None:
    # Stored times are ISO strings: the window's bounds must sort with them as text.
    since, until = recent_window(date(2025, 7, 7), 1)
    assert all(since <= at < until for at in (EARLY, LATE))
    assert not since <= NEXT_DAY < until
    assert not since <= "2025-07-06T23:59:59.999Z" < until


def test_recent_order_puts_the_newest_day_first_then_the_table_order() -> None:
    # The same real changes seen three times: twice on 07-07 (06:00 and 23:00), once on 07-08,
    # given in no useful order.
    changes = [*sample_changes(NCT, CHANGE_DAYS[0], LATE),
               *reversed(sample_changes(NCT, CHANGE_DAYS[0], NEXT_DAY)),
               *sample_changes(NCT, CHANGE_DAYS[0], EARLY)]
    ordered = [(c.path, c.detected_at) for c in recent_order(changes)]
    # Within a day, table order decides; a later time never moves a field up.
    assert ordered == [(p, NEXT_DAY) for p in PATHS] + [
        (p, at) for p in PATHS for at in (EARLY, LATE)]


def test_recent_section_lists_newest_first_and_cuts_at_the_limit() -> None:
    changes = [*sample_changes(NCT, CHANGE_DAYS[0], EARLY),
               *sample_changes(NCT, CHANGE_DAYS[0], NEXT_DAY)]
    section = recent_section(changes, 7, limit=3)
    assert section == (
        "## Recent Field Changes (last 7 days)\n\n"
        "- `status.completionDate` \u2014 changed _(2025-07-08)_\n"
        "- `status.lastUpdatePostDate` \u2014 changed _(2025-07-08)_\n"
        "- `status.primaryCompletionDate` \u2014 changed _(2025-07-08)_\n")
    whole = recent_section(changes, 7).splitlines()
    assert len(whole) == 2 + len(changes)
    assert whole[-1] == "- `references.references` \u2014 changed _(2025-07-07)_"
    assert recent_section(changes, 7, limit=0).endswith("_No field changes in the last 7 days._\n")


def test_a_site_path_holding_backticks_stays_one_code_span() -> None:
    # Site keys are the registry's own text: a facility may hold backticks (St. Mary`s).
    change = next(c for c in real_changes() if c.path.startswith("locations."))
    path = change.path.replace("|", "`s hospital|", 1)
    site = replace(change, path=path)
    assert recent_section([site], 7).splitlines()[2] == (
        f"- ``{path}`` \u2014 {change.kind} _({change.detected_at[:10]})_")
    assert code_span("a``b") == "```a``b```"
    assert code_span("`a") == "`` `a ``"  # CommonMark strips the padding back off
    assert code_span("") == "` `"



def test_control_characters_in_a_site_path_show_as_escapes() -> None:
    # A facility's name is the registry's text: ESC, BEL, NUL or a bidi override in it must not
    # act on the terminal that shows the section, nor reach a published page raw.
    change = next(c for c in real_changes() if c.path.startswith("locations."))
    path = change.path.replace("|", "\x1b[31m\x07\x00\u202eclinic|", 1)
    line = recent_section([replace(change, path=path)], 7).splitlines()[2]
    assert "\\x1b[31m\\x07\\x00\\u202eclinic|" in line
    assert line.isprintable() and visible(path) in line
    assert visible("plain text \u00e9") == "plain text \u00e9"


def test_history_table_of_a_real_import_lines_up_its_columns(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    rows = snapshots_of(open_db(db_path).conn, "NCT05827016")
    lines = history_table("NCT05827016", rows).splitlines()
    assert len(lines) == 1 + len(rows) == 3 and "registry listing" not in lines[0]
    assert all(line == line.rstrip() for line in lines)  # no padding after the last column
    header = lines[0]
    for line, row in zip(lines[1:], rows, strict=True):
        # Text columns start under their header; the count ends under its; the hash is cut.
        for name in ("observed_at", "source"):
            assert line[header.index(name):].startswith(row[name] + " ")
        end = header.index("changes") + len("changes")
        assert line[:end].endswith(f" {row['changes']}")
        assert line[header.index("content_hash"):] == row["content_hash"][:16]
    assert history_table("NCT05827016", []) == "NCT05827016: no snapshots stored\n"


def test_history_table_notes_backfilled_versions_with_what_their_listing_lacks() -> None:
    rows = [
        {"seq": 1, "observed_at": "2023-06-07T00:00:00.000Z", "source": "backfill",
         "source_version": 0, "changes": 0, "content_hash": "a" * 64},
        {"seq": 2, "observed_at": "2025-07-01T00:00:00.000Z", "source": "backfill",
         "source_version": 1, "changes": 522, "content_hash": "b" * 64},
        {"seq": 3, "observed_at": "2025-07-02T00:00:00.000Z", "source": "backfill",
         "source_version": 2, "changes": 1, "content_hash": "c" * 64},
        {"seq": 4, "observed_at": "2025-07-07T06:00:00.000Z", "source": "sync",
         "source_version": None, "changes": 0, "content_hash": "d" * 64},
    ]
    listed = {0: {"status": None, "qc_date": None, "module_labels": []},
              1: {"status": "RECRUITING", "qc_date": "2025-06-28",
                  "module_labels": ["Study Status", "Eligibility"]}}
    lines = history_table("NCT05827016", rows, listed).splitlines()
    assert lines[0].endswith("  registry listing")
    assert lines[1].endswith("backfill v0         0  aaaaaaaaaaaaaaaa  "
                             "no status \u00b7 QC ? \u00b7 no sections listed")
    assert lines[2].endswith("backfill v1       522  bbbbbbbbbbbbbbbb  "
                             "RECRUITING \u00b7 QC 2025-06-28 \u00b7 Study Status, Eligibility")
    # A version the listing does not name, and a synced snapshot, have no note.
    assert lines[3].endswith("backfill v2         1  cccccccccccccccc")
    assert lines[4].endswith("sync                0  dddddddddddddddd")


def test_visible_escapes_control_characters_and_keeps_printable_text() -> None:
    assert visible("a\tb\nc") == "a\\x09b\\x0ac"
    # Not Cc, but a bidi override or line separator could still reorder or break a line.
    assert visible("x\u202ey\u2028z\x1b[2J") == "x\\u202ey\\u2028z\\x1b[2J"
    assert visible("≥ 5 years, Velcade®") == "≥ 5 years, Velcade®"
    # Characters that show nothing: two paths differing by one must not print the same.
    assert visible("Mayo\u200bClinic\ufeff\u200e") == "Mayo\\u200bClinic\\ufeff\\u200e"
    # So do a soft hyphen, a tag character and a noncharacter (RECRUITING printed as itself).
    assert visible("RECRU\u00adITING\U000e0041\ufffe") == "RECRU\\xadITING\\ue0041\\ufffe"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a joiner inside a word
    technologist = "\U0001f469\u200d\U0001f4bb"  # an emoji sequence, joined
    assert visible(persian) == persian and visible(technologist) == technologist
    titles = [r["protocolSection"]["identificationModule"]["briefTitle"] for r in real_records()]
    assert [visible(t) for t in titles] == titles


def test_html_is_read_as_markdown_for_a_word_diff_and_markdown_as_stored() -> None:
    html = ("<p>Inclusion:</p><ol><li>Age &gt;&#x2F;=18</li><li>H<sub>2</sub>O</li></ol>"
            "<ul><li>one</li></ul>")
    markdown = "Inclusion: 1. Age \\>/=18 2. H2O * one"
    assert readable_pair(html, markdown) == ("Inclusion: 1. Age >/=18 2. H2O * one",) * 2
    # Two Markdown texts (no bare tag: API v2 escapes `<`) stay as stored, escapes and all,
    # so a reformat that changes only them still shows.
    pair = ("* ANC =\\< 1500 \\<b>", "- ANC =\\< 1500 \\<b>")
    assert readable_pair(*pair) == pair
    # Only the registry's formatting tags are markup: other tag-like text is the text.
    pair = ("value x<y and a>b <img src=x onerror=alert(3)>", "value x<y and a>c")
    assert readable_pair(*pair) == pair
    assert readable_pair("<p>new <style>s</style></p>", "old") == ("new <style>s</style>",
                                                                    "old")



def html_texts(value: object) -> list[str]:
    """Return every string of a record that holds one of the registry's HTML tags."""
    if isinstance(value, dict):
        return [t for child in value.values() for t in html_texts(child)]
    if isinstance(value, list):
        return [t for child in value for t in html_texts(child)]
    return [value] if isinstance(value, str) and readable_pair(value, "")[0] != value else []


def test_the_registrys_html_is_written_as_the_markdown_api_v2_writes() -> None:
    # A real record-history version (HTML): on a page its text reads as API v2's would.
    texts = html_texts(load("history/NCT04280705_v0.json")["study"])
    assert texts  # the criteria: the only text of the version with tags
    for text in texts:
        markdown = markdown_of_html(text)
        # The same words and list numbers the word diff reads, now on lines of their own.
        assert " ".join(MARKDOWN_ESCAPE.sub(r"\1", markdown).split()) == readable_pair(
            text, "")[0]
        rendered = MarkdownIt("commonmark").render(markdown)
        assert rendered.count("<li>") == text.count("<li>")
        assert "&lt;p&gt;" not in rendered and "&lt;li&gt;" not in rendered
    criteria = next(t for t in texts if t.startswith("<p>Inclusion Criteria:</p><ol>"))
    assert markdown_of_html(criteria).startswith("Inclusion Criteria:\n\n1. Subject (or legally")
    assert "\n   * Radiographic infiltrates" in markdown_of_html(criteria)  # a nested list
    assert markdown_of_html("x<y **a**") == "x<y **a**"  # no tag: Markdown, as it is
    assert markdown_of_html("<p>x&lt;y *a*</p>") == "x\\<y \\*a\\*"
    # An item outside any list (malformed HTML) reads as a bullet in both, as in a <ul>.
    assert markdown_of_html("<p>Criteria:</p><li>one</li><li>two</li>") == (
        "Criteria:\n\n* one\n* two")
    assert readable_pair("<p>Criteria:</p><li>one</li>", "")[0] == "Criteria: * one"
