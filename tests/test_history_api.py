"""The record-history adapter on the stand-in: its two listing routes, shape checks and answers."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
from conftest import (
    HISTORY_NCT,
    HISTORY_PUBLIC_DAYS,
    HISTORY_QC_DAYS,
    backfill,
    html_history,
    html_record,
    load,
    real_change_set,
    request_log,
    stored_changes,
    version_pair,
)
from standin_api import Fault, StandinAPI

from trialdiff.errors import FetchError, ShapeError, UsageError
from trialdiff.fetch import Client, Pacing
from trialdiff.history_api import HistoryAPI, Version, site_root

NCT = HISTORY_NCT
OLD, NEW = version_pair(NCT)
OTHER = "NCT06060392"
OTHER_OLD, OTHER_NEW = version_pair(OTHER)  # public on 2023-11-18 and 2025-06-13
V0_QC, V1_QC = HISTORY_QC_DAYS
V1_DAY = HISTORY_PUBLIC_DAYS[1]
LISTING = f"/api/int/studies/{NCT}"
HISTORY = html_history(NCT, HISTORY_QC_DAYS)
API_RECORDS = [NEW]


def test_the_history_endpoints_sit_at_the_site_root() -> None:
    assert site_root("https://clinicaltrials.gov/api/v2/") == "https://clinicaltrials.gov"
    with pytest.raises(UsageError):
        site_root("https://example.org/v2")


def test_route_a_only_the_way_the_site_and_published_clients_list(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history_routes("query")  # /history answers 404
    code, _, err = backfill(db_path, api)
    assert (code, err) == (0, "")
    assert [p for p, _ in request_log(api)] == [LISTING, f"{LISTING}/history/0",
                                                f"{LISTING}/history/1"]
    assert stored_changes(db_path) == real_change_set(V1_DAY)


def test_route_b_only_is_the_fallback_and_then_asked_first(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history(OTHER, [("2023-11-14", html_record(OTHER_OLD)),
                            ("2025-06-12", html_record(OTHER_NEW))])
    api.set_history_routes("path")  # ?history=true answers 404
    code, out, err = backfill(db_path, api, NCT, OTHER)
    assert (code, err) == (0, "")
    assert [p for p, _ in request_log(api)] == [
        LISTING, f"{LISTING}/history", f"{LISTING}/history/0", f"{LISTING}/history/1",
        f"/api/int/studies/{OTHER}/history", f"/api/int/studies/{OTHER}/history/0",
        f"/api/int/studies/{OTHER}/history/1",
    ]
    assert stored_changes(db_path) == sorted(real_change_set(V1_DAY) + real_change_set(
        "2025-06-13", OTHER_OLD, OTHER_NEW))
    assert "2 studies checked, 2 changed" in out


def test_route_a_without_its_history_falls_back_with_a_warning(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    body = json.dumps({"study": NEW, "history": {"changes": []}})
    api.add_fault(Fault("status", status=200, body=body, path_prefix=LISTING,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api)
    assert code == 0
    assert err == (f"trialdiff: warning: {NCT}: {LISTING}?history=true answered without the "
                   "keys history.lastUpdateVersions, history.originalData, "
                   f"history.outcomesUpdateCount; used {LISTING}/history instead\n")
    assert stored_changes(db_path) == real_change_set(V1_DAY)


def test_unknown_keys_are_named_in_one_warning_and_the_rest_is_stored(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    listing = json.loads(api.respond(LISTING, "history=true", {"history": "true"}).body)
    listing["studyCardsV2"] = {}
    for entry in listing["history"]["changes"]:
        entry["submitter"] = "x"
    api.add_fault(Fault("status", status=200, body=json.dumps(listing), path_prefix=LISTING,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api)
    assert code == 0
    assert err.splitlines() == [
        "trialdiff: warning: /api/int/studies/{id}?history=true has keys trialdiff does not "
        f"know: studyCardsV2 (first seen for {NCT}); they were ignored",
        "trialdiff: warning: a history listing entry has keys trialdiff does not know: "
        f"submitter (first seen for {NCT}); they were ignored",
    ]
    assert stored_changes(db_path) == real_change_set(V1_DAY)


def _listing(*entries: dict[str, Any]) -> dict[str, Any]:
    """Return a route-A listing with the given entries."""
    return {"study": {}, "history": {"changes": list(entries), "originalData": {},
                                     "lastUpdateVersions": {}, "outcomesUpdateCount": 0}}


def _entry(version: int, day: str, **extra: Any) -> dict[str, Any]:
    """Return one listing entry with every key the real listing has."""
    entry = {"version": version, "date": day, "status": "RECRUITING",
             "studyType": "INTERVENTIONAL", "moduleLabels": [], "lastUpdateSubmitQcDate": day}
    entry.update(extra)
    return {k: v for k, v in entry.items() if v is not ...}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (LISTING, _listing(_entry(0, V0_QC), _entry(2, V1_QC)), "not contiguous from 0"),
        (LISTING, _listing(_entry(0, V0_QC), _entry(1, V1_QC, moduleLabels=...)),
         "history entry 1 lacks the keys moduleLabels"),
        (LISTING, _listing(_entry(0, V1_QC), _entry(1, V0_QC)),
         f"version 1 is dated {V0_QC}, before version 0 ({V1_QC}): the version dates go "
         "backwards"),
        (f"{LISTING}/history/1", {"studyVersion": 0, "study": NEW}, "the body is version 0"),
        (f"{LISTING}/history/1", {"studyVersion": 1, "study": load("v2/NCT04857515.json")},
         "the body is for 'NCT04857515'"),
        (f"{LISTING}/history/1", {"studyVersion": 1}, "the body lacks the keys study"),
    ],
)
def test_a_changed_shape_stops_with_a_clear_message(
    db_path: str, api: StandinAPI, path: str, body: dict[str, Any], message: str
) -> None:
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("status", status=200, body=json.dumps(body), path_prefix=path,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api, NCT, OTHER)
    assert code == 1 and message in err and "Traceback" not in err
    assert stored_changes(db_path) == []
    assert not [p for p, _ in request_log(api) if OTHER in p]  # the run stopped
    conn = sqlite3.connect(db_path)
    status, errors = conn.execute("select status, errors from runs").fetchone()
    # A bad listing stops before the study is checked; a bad version after.
    assert status == ("failed" if path == LISTING else "partial") and message in errors


def test_both_routes_failing_for_a_study_api_v2_knows_stops_the_run(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history_routes()  # neither route answers
    code, out, err = backfill(db_path, api, NCT, OTHER)
    assert code == 1
    assert err == (f"trialdiff: error: {NCT}: API v2 knows this study but no record-history "
                   f"listing answers ({LISTING}?history=true answered 404; {LISTING}/history "
                   "answered 404); the endpoints changed shape, so nothing was stored\n")
    assert [p for p, _ in request_log(api)] == [LISTING, f"{LISTING}/history",
                                                f"/api/v2/studies/{NCT}"]
    assert out == "backfill: 0 studies checked, 0 changed, 0 changes, 1 failed\n"  # the summary


def test_a_study_the_registry_does_not_know_fails_alone(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    code, out, err = backfill(db_path, api, OTHER, NCT)  # OTHER: no history, not in API v2
    assert code == 1
    assert err == (f"trialdiff: {OTHER}: not in the registry (404 from API v2 and from both "
                   "record-history listings)\n")
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    assert "1 failed" in out.splitlines()[-1]


def test_a_history_listing_whose_headers_drip_in_meets_the_deadline(api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("drip_head", seconds=0.1, chunk=1, path_prefix=LISTING))
    client = Client(api.root_url, Pacing(delay=0, timeout=0.5, deadline=1, retries=0))
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"^{LISTING}: took longer than the 1 s deadline; "
                                         r"gave up after 1 attempt in 1 s$"):
        HistoryAPI(client).listing(NCT)
    assert time.monotonic() - started < 2.5  # the head alone would take over 6 s
    assert [v.number for v in HistoryAPI(client).listing(NCT)] == [0, 1]  # then it answers
    client.close()


def test_a_version_past_the_end_is_no_such_version_not_a_user_agent_problem(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    client = Client(api.root_url, Pacing(delay=0, retries=1))
    with pytest.raises(FetchError, match="no such version 2") as raised:
        HistoryAPI(client).version(NCT, 2)
    assert "User-Agent" not in str(raised.value)
    # The listing names a version the version endpoint does not have: one request, no retry.
    stale = _listing(_entry(0, V0_QC), _entry(1, V1_QC), _entry(2, V1_QC))
    api.add_fault(Fault("status", status=200, body=json.dumps(stale), path_prefix=LISTING,
                        headers={"Content-Type": "application/json"}))
    api.clear_requests()
    code, out, err = backfill(db_path, api)
    assert code == 1 and "no such version 2" in err and "User-Agent" not in err
    assert [p for p, _ in request_log(api)].count(f"{LISTING}/history/2") == 1
    assert stored_changes(db_path) == real_change_set(V1_DAY)  # what was there is kept and counted
    assert f"{len(real_change_set(V1_DAY))} changes" in out




def adapter(api: StandinAPI) -> HistoryAPI:
    """Return the adapter on a client of the stand-in's site root, with no delay or retry."""
    return HistoryAPI(Client(api.root_url, Pacing(delay=0, retries=0)))


def test_a_listing_gives_each_versions_number_qc_day_status_and_sections(
    api: StandinAPI,
) -> None:
    api.set_history(NCT, HISTORY)
    history = adapter(api)
    versions = history.listing(NCT)
    listed = json.loads(api.respond(LISTING, "history=true", {"history": "true"}).body)
    assert versions == [Version(e["version"], e["date"], e["status"], tuple(e["moduleLabels"]))
                        for e in listed["history"]["changes"]]
    assert [(v.number, v.qc_day) for v in versions] == [(0, V0_QC), (1, V1_QC)]
    assert "Eligibility" in versions[1].module_labels  # the real listing names what changed
    assert list(history.warnings()) == []  # the real shape: nothing unknown
    history.client.close()


def test_a_version_is_its_study_and_the_day_its_body_says_it_went_public(
    api: StandinAPI,
) -> None:
    api.set_history(NCT, HISTORY)
    history = adapter(api)
    for number, (_, served) in enumerate(HISTORY):
        study, posted = history.version(NCT, number)
        assert study == served and posted == HISTORY_PUBLIC_DAYS[number]
    # A body without a usable post date still reads; the day is left for the caller to find.
    undated = html_record(NEW)
    undated["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "July 2025"
    api.add_fault(Fault("status", status=200, path_prefix=f"{LISTING}/history/1",
                        body=json.dumps({"studyVersion": 1, "study": undated}),
                        headers={"Content-Type": "application/json"}))
    assert history.version(NCT, 1) == (undated, None)
    history.client.close()


def test_a_listing_takes_a_null_module_list_and_an_odd_status_but_not_other_labels(
    api: StandinAPI,
) -> None:
    history = adapter(api)

    def listing_of(*entries: dict[str, Any]) -> list[Version]:
        api.clear_faults()
        api.add_fault(Fault("status", status=200, body=json.dumps(_listing(*entries)),
                            path_prefix=LISTING, headers={"Content-Type": "application/json"}))
        return history.listing(NCT)

    assert listing_of(_entry(0, V0_QC, moduleLabels=None, status=7)) == [
        Version(0, V0_QC, None, ())]
    for labels in ("Eligibility", ["Eligibility", 3]):
        with pytest.raises(ShapeError, match="version 0's moduleLabels is not a list of names"):
            listing_of(_entry(0, V0_QC, moduleLabels=labels))
    with pytest.raises(ShapeError, match="history entry 0 is not an object"):
        listing_of("version 0")  # type: ignore[arg-type]
    # A probe's listings: a day no calendar has, and one to come, were stored as snapshot
    # times (the second refused every later sync as older); none at all passed for "no
    # history", and marked the study backfilled for good.
    for day in ("2025-02-30", "2025-13-45", "2999-01-01"):
        with pytest.raises(ShapeError, match="not contiguous from 0 with dates"):
            listing_of(_entry(0, V0_QC), _entry(1, day))
    with pytest.raises(FetchError, match="its record-history listing holds no version"):
        listing_of()
    history.client.close()


def test_a_version_posted_on_a_day_to_come_is_refused(api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    history = adapter(api)
    future = html_record(NEW)
    future["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2999-01-01"
    api.add_fault(Fault("status", status=200, path_prefix=f"{LISTING}/history/1",
                        body=json.dumps({"studyVersion": 1, "study": future}),
                        headers={"Content-Type": "application/json"}))
    with pytest.raises(ShapeError, match="posted on 2999-01-01, which is no day gone by"):
        history.version(NCT, 1)
    history.client.close()
