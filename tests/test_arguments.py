"""The Python API's argument checks: one value or several, NCT ids, times and days."""

from __future__ import annotations

import datetime

import pytest

from trialdiff.arguments import check_base_url, checked_ids, day_of, listed, timestamp_of
from trialdiff.errors import UsageError


def test_one_string_is_one_value_and_nothing_is_no_value() -> None:
    assert listed("query.cond=a") == ["query.cond=a"]  # not its characters
    assert listed(("a", "b")) == ["a", "b"] and listed(iter(["a"])) == ["a"]
    assert listed(None) == [] and listed([]) == []


def test_nct_ids_are_read_as_the_cli_reads_them() -> None:
    assert checked_ids(" nct05827016 ") == ("NCT05827016",)
    assert checked_ids(["NCT05827016", "nct06060392"]) == ("NCT05827016", "NCT06060392")
    assert checked_ids(["NCT05827016", "nct05827016 ", "NCT05827016"]) == ("NCT05827016",)
    # Digits are ASCII digits: another script's (fullwidth, Arabic-Indic) would be sent to the
    # registry as they are.
    fullwidth = "NCT" + "".join(chr(0xFF10 + int(d)) for d in "05827016")
    arabic_indic = "NCT" + "".join(chr(0x0660 + int(d)) for d in "05827016")
    for bad in ("", "NCT1", ["NCT05827016", "N"], fullwidth, arabic_indic):
        with pytest.raises(UsageError, match="is not an NCT id like NCT01234567"):
            checked_ids(bad)


def test_times_are_utc_timestamps_whatever_form_they_come_in() -> None:
    expected = "2025-07-07T10:00:00.000Z"
    for value in ("2025-07-07T12:00:00+02:00", "2025-07-07T10:00:00",
                  datetime.datetime(2025, 7, 7, 10),  # naive: UTC, as a naive text is
                  datetime.datetime(2025, 7, 7, 12, tzinfo=datetime.timezone(
                      datetime.timedelta(hours=2)))):
        assert timestamp_of(value) == expected
    assert timestamp_of(datetime.date(2025, 7, 7)) == "2025-07-07T00:00:00.000Z"
    assert timestamp_of(None) is None
    for bad in ("last week", 20250707, ["2025-07-07"]):
        with pytest.raises(UsageError, match="is not an ISO 8601 date or time"):
            timestamp_of(bad)  # type: ignore[arg-type]


def test_a_day_is_the_utc_day_of_its_moment() -> None:
    assert day_of(datetime.date(2025, 7, 7)) == datetime.date(2025, 7, 7)
    late = datetime.datetime(2025, 7, 7, 23, 30, tzinfo=datetime.timezone(
        datetime.timedelta(hours=-2)))  # 01:30 UTC the next day
    assert day_of(late) == datetime.date(2025, 7, 8) == day_of("2025-07-07T23:30:00-02:00")
    assert day_of(datetime.datetime(2025, 7, 7, 12)) == datetime.date(2025, 7, 7)
    assert day_of(None) == datetime.datetime.now(datetime.UTC).date()



def test_a_base_url_is_http_with_a_host_and_no_query() -> None:
    assert check_base_url(" https://clinicaltrials.gov/api/v2/ ") == (
        "https://clinicaltrials.gov/api/v2")
    assert check_base_url("http://[::1]:8080/api") == "http://[::1]:8080/api"
    for bad, why in (("ftp://x.org", "does not start with http"), ("http://", "no valid host"),
                     ("http://x.org/?q=1", "no query"), ("http://x.org:99999", "out of range")):
        with pytest.raises(UsageError, match=why) as refused:
            check_base_url(bad, "canonical_base", "https://example.org/trials/")
        assert refused.value.setting == "canonical_base"
    # A site's base goes into every page's links as written: `<b>` would be HTML, `)` the
    # link's end. An API URL may hold `(` `)` `'` (valid in a URL: a password's).
    for bad in ("https://example.org/<b>/", 'https://example.org/a"b', "https://x.org/a)b"):
        with pytest.raises(UsageError, match="a character a URL must percent-encode"):
            check_base_url(bad, "canonical_base", "https://example.org/trials/")
    assert check_base_url("https://u:p(1)@x.org/api") == "https://u:p(1)@x.org/api"
    assert check_base_url("https://x.org/%7Euser/", "canonical_base") == "https://x.org/%7Euser"
