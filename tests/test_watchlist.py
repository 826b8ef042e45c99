"""The watchlist: tracked studies, saved queries, and the studies each query returned."""

from __future__ import annotations

import re

import pytest

from trialdiff.errors import UnknownStudy, UsageError
from trialdiff.schema import open_db
from trialdiff.watch import remember_members
from trialdiff.watchlist import (
    parse_query,
    query_members,
    track,
    tracked_ids,
    tracks_nothing,
    untrack,
)

AT = "2026-05-11T06:00:00.000Z"


def test_a_query_is_saved_in_one_canonical_form() -> None:
    assert parse_query("?query.cond=lung cancer&filter.overallStatus=RECRUITING") == (
        "filter.overallStatus=RECRUITING&query.cond=lung+cancer")
    assert parse_query("filter.overallStatus=RECRUITING&query.cond=lung+cancer") == (
        parse_query("query.cond=lung%20cancer&filter.overallStatus=RECRUITING"))


@pytest.mark.parametrize(("expr", "message"), [
    ("", "is not a query"),
    ("foo=bar", "'foo' is not a parameter a saved query takes: query.{cond,term,locn,titles,"
                "intr,outc,spons,lead,id,patient}, filter.{overallStatus,geo,ids,advanced,"
                "synonyms} or postFilter.* of the same, or aggFilters"),
    ("query.cond=a&pageSize=5", "'pageSize' is not a parameter a saved query takes: "),
    # Names the API does not have answered 400 to every sync (a probe): refused when tracked.
    ("query.conditon=asthma", "'query.conditon' is not a parameter"),
    ("aggFiltersX=1", "'aggFiltersX' is not a parameter"),
    ("filter.ids=NCT01234567&geoDecay=func:exp", "'geoDecay' is not a parameter"),
    ("query.spons=Johnson & Johnson", "' Johnson' is not a parameter a saved query takes (an & "
                                      "inside a value is written %26): "),
    # A part with no value was dropped: a broader query than the one typed was saved.
    ("query.cond=melanoma&filter.overallStatus=", "filter.overallStatus has no value"),
    ("query.cond=a&b", "'b' is not a parameter a saved query takes (an & inside a value is "),
    # The API takes one value; sync sent only the first of two.
    ("query.cond=melanoma&query.cond=lung cancer", "query.cond is given twice"),
])
def test_a_query_that_would_not_be_sent_as_typed_is_refused(expr: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_query(expr)


def test_untracking_a_query_forgets_its_studies_and_a_new_query_starts_with_none(
    db_path: str
) -> None:
    # The id of an untracked query came back for the next one, with the old query's studies:
    # a watch of the new query alerted on them.
    db = open_db(db_path)
    melanoma, obesity = parse_query("query.cond=melanoma"), parse_query("query.cond=obesity")
    assert track(db, ["NCT00000001"], [melanoma], AT) == (1, 1)
    (query_id,) = db.execute("select id from queries").fetchone()
    remember_members(db, query_id, ["NCT00000002", "NCT00000003"], AT)
    assert query_members(db.conn) == {"NCT00000002", "NCT00000003"}
    assert tracked_ids(db.conn) == ["NCT00000001"]
    assert untrack(db, [], [melanoma]) == 1
    assert query_members(db.conn) == set()
    # An older database may hold such rows already: the new query's id is cleared of them.
    db.execute("insert into query_studies (query_id, nct_id, first_seen_at) values (?, ?, ?)",
               [query_id, "NCT00000002", AT])
    assert track(db, [], [obesity], AT) == (0, 1)
    assert db.execute("select id from queries").fetchone() == (query_id,)
    assert query_members(db.conn) == set()


def test_untrack_is_all_or_none(db_path: str) -> None:
    db = open_db(db_path)
    assert tracks_nothing(db.conn)
    track(db, ["NCT00000001"], [], AT)
    assert not tracks_nothing(db.conn)
    with pytest.raises(UnknownStudy, match="NCT00000009 is not tracked"):
        untrack(db, ["NCT00000001", "NCT00000009"], [])
    assert tracked_ids(db.conn) == ["NCT00000001"]


def test_a_query_an_older_version_saved_with_a_name_now_refused_can_be_untracked() -> None:
    # Older versions saved any query.* name: a typo then failed every sync, and once the
    # names were checked it could not be untracked either (a review).
    db = open_db(":memory:")
    db.execute("insert into queries (expr, added_at) values ('query.conditon=asthma', ?)", [AT])
    with pytest.raises(UsageError, match=r"'query\.conditon' is not a parameter"):
        parse_query("query.conditon=asthma")
    assert untrack(db, [], [parse_query("query.conditon=asthma", known_names=False)]) == 1
    assert db.execute("select count(*) from queries").fetchone() == (0,)
    with pytest.raises(UsageError, match="'foo' is not a parameter"):
        parse_query("foo=bar", known_names=False)
