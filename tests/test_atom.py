"""The Atom feed: valid, one entry per study per day, stable ids, safe whatever the values."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import ATOM, CHANGE_DAYS, HOSTILE, real_changes

from trialdiff.atom import xml_safe
from trialdiff.export import to_atom
from trialdiff.model import FieldChange

DAY1, DAY2 = CHANGE_DAYS


def test_atom_is_valid_with_one_entry_per_study_per_day() -> None:
    older = FieldChange("NCT06060392", "status.overallStatus", "changed", DAY1, "A", "B")
    feed = ET.fromstring(to_atom([*real_changes(), older], feed_id="tag:example.org,2026:feed",
                                 title="Changes"))
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}id") == "tag:example.org,2026:feed"
    assert feed.findtext(f"{ATOM}title") == "Changes"
    assert feed.findtext(f"{ATOM}updated") == DAY2  # the newest change
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "trialdiff"
    entries = feed.findall(f"{ATOM}entry")
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    assert ids == ["tag:trialdiff,2024:NCT05827016/2025-07-07",
                   "tag:trialdiff,2024:NCT06060392/2025-07-07",
                   "tag:trialdiff,2024:NCT06060392/2024-06-14"]
    for entry in entries:
        nct_id = entry.findtext(f"{ATOM}id", "").split(":")[-1].split("/")[0]
        assert entry.findtext(f"{ATOM}updated")
        assert entry.findtext(f"{ATOM}title", "").startswith(nct_id)
        link = entry.find(f"{ATOM}link")
        assert link is not None and link.get("rel") == "alternate"
        assert link.get("href") == f"https://clinicaltrials.gov/study/{nct_id}"
        content = entry.find(f"{ATOM}content")
        assert content is not None and content.get("type") == "html"
    html = entries[1].findtext(f"{ATOM}content", "")
    assert ("<li><code>status.completionDate</code> \u2014 changed <em>(major)</em>: "
            "<code>2025-03-01 ESTIMATED</code> \u2192 <code>2025-11-01 ESTIMATED</code>"
            " \u2014 moved +245 days</li>") in html
    assert entries[0].findtext(f"{ATOM}title") == (
        "NCT05827016 on 2025-07-07: status NOT_YET_RECRUITING \u2192 RECRUITING; "
        "522 field changes (2 major)")


def test_atom_entry_ids_are_stable_and_updated_follows_the_newest_change() -> None:
    first = ET.fromstring(to_atom(real_changes()))
    later = FieldChange("NCT06060392", "oversight.hasDmc", "added", "2025-07-07T18:00:00.000Z",
                        None, True)
    second = ET.fromstring(to_atom([*real_changes(), later]))
    assert [e.findtext(f"{ATOM}id") for e in first.findall(f"{ATOM}entry")] == \
        [e.findtext(f"{ATOM}id") for e in second.findall(f"{ATOM}entry")]
    assert second.findtext(f"{ATOM}updated") == "2025-07-07T18:00:00.000Z"
    assert ET.fromstring(to_atom(real_changes(), updated="2026-01-01T00:00:00Z")).findtext(
        f"{ATOM}updated") == "2026-01-01T00:00:00Z"


def test_atom_survives_hostile_values() -> None:
    text = to_atom(HOSTILE, title="T\x00itle <&>", titles={"NCT00000001": "Bad\x1b\ud800 title"})
    feed = ET.fromstring(text)  # would raise on a control character or a broken tag
    assert feed.findtext(f"{ATOM}title") == "Title <&>"
    entry = feed.find(f"{ATOM}entry")
    assert entry is not None
    html = entry.findtext(f"{ATOM}content", "")
    assert "&lt;script&gt;&amp;amp;" in html and "<script>" not in html
    assert "<code>locations.`x`|&lt;b&gt;&amp;c|\\x0a- item|=1+1</code>" in html
    assert "\\x1b" in entry.findtext(f"{ATOM}title", "")


def test_xml_safe_drops_only_what_xml_forbids() -> None:
    assert xml_safe("a\x00b\x08c\td\ne\rf\ud800g\ufffeh\U0001f600\x85") == \
        "abc\td\ne\rfgh\U0001f600\x85"


def test_a_word_diff_shows_control_characters_and_bidi_overrides_as_escapes() -> None:
    # A probe's RTL override and ESC reached the feed's (and the web page's) word diff raw.
    change = FieldChange("NCT00000001", "description.briefSummary", "changed",
                         "2025-08-01T00:00:00.000Z", "A plain summary.",
                         "A plain \u202eevil\u200b\x1b[31m summary.\ufeff")
    feed = to_atom([change])
    assert not any(c in feed for c in "\u202e\u200b\x1b\ufeff")
    assert "\\u202eevil\\u200b\\x1b[31m" in feed and "\\ufeff" in feed
