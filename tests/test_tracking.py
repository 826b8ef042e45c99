"""The ignore list tracked again: chosen per database before its first snapshot, then kept."""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import changes_of, load, real_records, run, version_pair, write_day
from test_ahead import count_takes, day, rows
from test_normalize import DERIVED_ONLY_RERELEASES

import trialdiff
from trialdiff.fields import IGNORE_LIST, SITE_GEO_POINT
from trialdiff.normalize import extract_fields, tracked_again_path, tracking_rules
from trialdiff.query import latest_record
from trialdiff.tracking import rules_of

SUBMIT_DATE = "P.statusModule.lastUpdateSubmitDate"


def import_versions(db: str, tmp_path: Path, pairs: list[tuple[Any, Any]]) -> None:
    """Import the older records on one day and the newer ones the next."""
    for number, records in enumerate(zip(*pairs, strict=True), start=1):
        folder = write_day(tmp_path / f"{Path(db).stem}-d{number}", list(records))
        code, _, err = run(db, "import", "--at", f"2026-05-1{number}", str(folder))
        assert code == 0, err


def paths_of(db: str) -> set[tuple[str, str, str]]:
    """Return the stored changes as (study, path, kind)."""
    return {(c[0], c[1], c[2]) for c in changes_of(db)}


def test_the_rules_track_each_entry_under_its_fallback_path() -> None:
    record = load("v2/NCT04857515.json")
    everything = extract_fields(record, tracking_rules(IGNORE_LIST))
    default = extract_fields(record)
    assert sorted(everything.keys() - default.keys()) == [
        "derivedSection", "identification.nctId", "status.lastUpdateSubmitDate",
        "status.studyFirstSubmitDate", "status.studyFirstSubmitQcDate"]
    assert everything["identification.nctId"] == '"NCT04857515"'
    sites = [path for path in default if path.startswith("locations.")]
    assert sites and all("geoPoint" in everything[p] and "geoPoint" not in default[p]
                         for p in sites)
    assert [tracked_again_path(s) for s in (SUBMIT_DATE, "derivedSection", SITE_GEO_POINT)] == [
        "status.lastUpdateSubmitDate", "derivedSection", "locations.*"]


def test_a_database_tracking_the_submission_date_again_reports_its_real_changes(
    tmp_path: Path
) -> None:
    tracked, default = str(tmp_path / "tracked.db"), str(tmp_path / "default.db")
    code, out, err = run(tracked, "ignored", "--track-again", SUBMIT_DATE)
    assert (code, err) == (0, "")
    assert out.splitlines()[:3] == [
        "ignored        derivedSection", "ignored        P.identificationModule.nctId",
        f"tracked again  {SUBMIT_DATE}  as status.lastUpdateSubmitDate"]
    pairs = [version_pair(nct_id) for nct_id in ("NCT05827016", "NCT06060392")]
    for db in (tracked, default):
        import_versions(db, tmp_path, pairs)
        assert run(db, "check")[0] == 0
    assert paths_of(tracked) - paths_of(default) == {
        ("NCT05827016", "status.lastUpdateSubmitDate", "changed"),
        ("NCT06060392", "status.lastUpdateSubmitDate", "changed")}
    assert paths_of(default) <= paths_of(tracked)


def test_tracking_the_derived_section_again_reports_its_re_releases(tmp_path: Path) -> None:
    # Real re-releases that differ in derivedSection alone: nothing, unless it is tracked.
    tracked, default = str(tmp_path / "tracked.db"), str(tmp_path / "default.db")
    with trialdiff.open(tracked) as opened:
        assert opened.track_again(["derivedSection"]) == ("derivedSection",)
        assert opened.tracked_again() == ("derivedSection",)
    pairs = [version_pair(nct_id) for nct_id in DERIVED_ONLY_RERELEASES]
    for db in (tracked, default):
        import_versions(db, tmp_path, pairs)
        assert run(db, "check")[0] == 0
    assert paths_of(default) == set()
    assert paths_of(tracked) == {(nct_id, "derivedSection", "changed")
                                 for nct_id in DERIVED_ONLY_RERELEASES}
    # The stored record keeps what the database tracks: here its derived section too.
    for db, kept in ((tracked, True), (default, False)):
        record = latest_record(sqlite3.connect(db), DERIVED_ONLY_RERELEASES[0])
        assert record is not None and ("derivedSection" in record) is kept


def test_a_site_moved_on_the_map_is_a_change_where_geo_points_are_tracked(
    tmp_path: Path
) -> None:
    record = load("v2/NCT04857515.json")
    moved = copy.deepcopy(record)
    site = moved["protocolSection"]["contactsLocationsModule"]["locations"][0]
    site["geoPoint"]["lat"] += 0.5
    tracked, default = str(tmp_path / "tracked.db"), str(tmp_path / "default.db")
    assert run(tracked, "ignored", "--track-again", SITE_GEO_POINT)[0] == 0
    for db in (tracked, default):
        import_versions(db, tmp_path, [(record, moved)])
        assert run(db, "check")[0] == 0
    assert paths_of(default) == set()
    ((_, path, kind),) = paths_of(tracked)
    assert path.startswith("locations.") and kind == "changed"


def test_what_a_database_tracks_is_fixed_once_it_holds_snapshots(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    assert run(db, "ignored", "--track-again", SUBMIT_DATE)[0] == 0
    import_versions(db, tmp_path, [version_pair("NCT06060392")])
    code, out, err = run(db, "ignored", "--ignore-again", SUBMIT_DATE)
    assert (code, out) == (2, "")
    assert err.startswith("trialdiff: error: what a database tracks is chosen before its first "
                          "snapshot, and this one holds snapshots")
    assert run(db, "ignored", "--track-again", SUBMIT_DATE)[0] == 0  # no change: allowed
    conn = sqlite3.connect(db)
    assert rules_of(conn).again == (SUBMIT_DATE,)
    assert conn.execute("select value from meta where key = 'tracked_again'").fetchone() == (
        f'["{SUBMIT_DATE}"]',)


@pytest.mark.parametrize("option", ["--track-again", "--ignore-again"])
@pytest.mark.parametrize("source", ["bogus", "P.statusModule.overallStatus"])
def test_only_an_entry_of_the_ignore_list_can_be_tracked_or_ignored_again(
    tmp_path: Path, source: str, option: str
) -> None:
    # An --ignore-again typo used to be taken quietly, leaving the entry tracked.
    code, out, err = run(str(tmp_path / "t.db"), "ignored", option, source)
    assert (code, out) == (2, "")
    assert err.startswith(f"trialdiff: error: not on the ignore list: {source} (it holds "
                          "derivedSection, P.identificationModule.nctId, ")


def test_an_entry_cannot_be_tracked_and_ignored_again_at_once(tmp_path: Path) -> None:
    code, out, err = run(str(tmp_path / "t.db"), "ignored", "--track-again", "derivedSection",
                         "--ignore-again", "derivedSection")
    assert (code, out, err) == (
        2, "", "trialdiff: error: both tracked again and ignored again: derivedSection\n")


def test_the_worker_prepares_edits_under_the_databases_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = [copy.deepcopy(record) for record in real_records() for _ in range(45)]
    for number, record in enumerate(first):
        record["protocolSection"]["identificationModule"]["nctId"] = f"NCT9{number:07d}"
    second = copy.deepcopy(first)
    for record in second:  # resubmitted, nothing else: a change only where it is tracked
        record["protocolSection"]["statusModule"]["lastUpdateSubmitDate"] = "2026-05-11"
    taken = count_takes(monkeypatch)
    runs = {}
    for workers in (0, 1):
        with trialdiff.open(str(tmp_path / f"w{workers}.db")) as tracker:
            tracker.track_again([SUBMIT_DATE])
            tracker.import_paths([str(day(first, tmp_path / f"a{workers}"))], at="2026-05-11")
            runs[workers] = tracker.import_paths([str(day(second, tmp_path / f"b{workers}"))],
                                                 at="2026-05-12", workers=workers)
    assert runs[0].changes == runs[1].changes == len(first)
    assert dict(runs[1].by_kind) == {"changed": len(first)}
    assert rows(str(tmp_path / "w0.db")) == rows(str(tmp_path / "w1.db"))
    assert sum(taken) > 20, sum(taken)  # the worker prepared edits: those taken from it
