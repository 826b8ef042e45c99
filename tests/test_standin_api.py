"""Check the stand-in ClinicalTrials.gov API over real HTTP, the way trialdiff's client sees it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standin_api import Fault, StandinAPI, load_records, normalize_nct_id

RECORDS = Path(__file__).parent / "fixtures" / "records"
# Sorted ids of the fixture records, with their lastUpdatePostDate.
DATES = {
    "NCT00888511": "2020-11-27",
    "NCT01359631": "2012-05-15",
    "NCT03103880": "2024-07-30",  # carries nctIdAliases ["NCT05712863"]
    "NCT05991206": "2023-12-27",
    "NCT06060392": "2025-06-13",
    "NCT06715774": "2024-12-04",
}
ALL_IDS = sorted(DATES)


API_RECORDS = lambda: load_records(RECORDS)  # noqa: E731
API_STRICT = True


@pytest.fixture
def client(api: StandinAPI) -> Iterator[httpx.Client]:
    """Talk to the stand-in's v2 base URL."""
    # Plain HTTP: verify=False only skips building a TLS context, which costs ~50 ms per client.
    with httpx.Client(base_url=api.base_url, timeout=5, verify=False) as http:
        yield http


def ids(page: dict[str, Any]) -> list[str]:
    """Return the NCT ids of a /studies page."""
    return [s["protocolSection"]["identificationModule"]["nctId"] for s in page["studies"]]


def record(nct_id: str) -> dict[str, Any]:
    """Load one fixture record."""
    data: dict[str, Any] = json.loads((RECORDS / f"{nct_id}.json").read_text(encoding="utf-8"))
    return data


def test_fixture_records_are_the_expected_real_files() -> None:
    assert sorted(p.stem for p in RECORDS.glob("*.json")) == ALL_IDS
    for nct_id, day in DATES.items():
        status = record(nct_id)["protocolSection"]["statusModule"]
        assert status["lastUpdatePostDateStruct"]["date"] == day


def test_pages_through_three_full_pages_then_an_empty_one(
    api: StandinAPI, client: httpx.Client
) -> None:
    params = {"pageSize": "2", "query.term": "study", "countTotal": "true"}
    seen: list[str] = []
    token = None
    for number in range(3):
        extra: dict[str, str] = {"pageToken": token} if token else {}
        response = client.get("/studies", params={**params, **extra})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        page = response.json()
        assert len(page["studies"]) == 2
        assert ("totalCount" in page) == (number == 0)  # spec: first page only
        seen += ids(page)
        token = page.get("nextPageToken")
    # As the real API does, an exactly full last page still carries a token, to an empty page.
    assert token is not None
    after = client.get("/studies", params={**params, "pageToken": token}).json()
    assert after == {"studies": []}
    assert seen == ALL_IDS
    logged = api.requests
    assert [r.path for r in logged] == ["/api/v2/studies"] * 4
    assert "pageToken" not in logged[0].query
    for later in logged[1:]:
        assert {k: v for k, v in later.query.items() if k != "pageToken"} == logged[0].query


def test_page_token_is_bound_to_the_query(client: httpx.Client) -> None:
    first = client.get("/studies", params={"pageSize": "2", "query.cond": "cancer"}).json()
    assert first == {"studies": [], **first}  # no match: empty page, no token
    first = client.get("/studies", params={"pageSize": "2", "query.term": "a"}).json()
    token = first["nextPageToken"]
    changed = client.get("/studies", params={"query.term": "b", "pageToken": token})
    assert changed.status_code == 400
    assert changed.headers["content-type"].startswith("text/plain")
    # The spec allows pageSize and countTotal to differ between pages.
    resized = client.get(
        "/studies", params={"pageSize": "10", "query.term": "a", "pageToken": token}
    )
    assert ids(resized.json()) == ALL_IDS[2:]
    garbage = client.get("/studies", params={"query.term": "a", "pageToken": "not-a-token"})
    assert garbage.status_code == 400


def test_cursor_survives_edits_between_pages(api: StandinAPI, client: httpx.Client) -> None:
    first = client.get("/studies", params={"pageSize": "3"}).json()
    api.remove_study("NCT01359631")  # already served on page 1
    rest = client.get("/studies", params={"pageSize": "3", "pageToken": first["nextPageToken"]})
    assert ids(first) + ids(rest.json()) == ALL_IDS


@pytest.mark.parametrize(
    ("size", "status", "count"),
    [("0", 200, 6), ("5000", 200, 6), ("1", 200, 1), ("-1", 400, 0), ("ten", 400, 0)],
)
def test_page_size_validation(client: httpx.Client, size: str, status: int, count: int) -> None:
    response = client.get("/studies", params={"pageSize": size})
    assert response.status_code == status
    if status == 200:
        assert len(response.json()["studies"]) == count


def test_unknown_and_unimplemented_parameters_are_rejected(client: httpx.Client) -> None:
    for params in ({"query.recrs": "x"}, {"fields": "NCTId"}, {"format": "csv"}):
        response = client.get("/studies", params=params)
        assert response.status_code == 400, params
        assert response.headers["content-type"].startswith("text/plain")
    assert "`query.recrs` is unknown parameter" in client.get("/studies?query.recrs=x").text


def test_filter_ids_skips_unknown_and_resolves_aliases(client: httpx.Client) -> None:
    wanted = "NCT06715774,NCT99999999|NCT00888511"
    assert ids(client.get("/studies", params={"filter.ids": wanted}).json()) == [
        "NCT00888511",
        "NCT06715774",
    ]
    alias = client.get("/studies", params={"filter.ids": "NCT05712863"}).json()
    assert ids(alias) == ["NCT03103880"]
    assert client.get("/studies", params={"filter.ids": "NCTX,NCT1"}).status_code == 400


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("AREA[LastUpdatePostDate]RANGE[2024-01-01,MAX]", ALL_IDS[2:3] + ALL_IDS[4:]),
        ("AREA[LastUpdatePostDate]RANGE[MIN,2020-11-27]", ["NCT00888511", "NCT01359631"]),
        ("AREA[LastUpdatePostDate]RANGE[2023-12-27, 2024-07-30]", ["NCT03103880", "NCT05991206"]),
        (
            "AREA[LastUpdatePostDate]RANGE[2020-01-01,MAX] AND "
            "AREA[StudyFirstPostDate]RANGE[2023-01-01,MAX]",
            ["NCT05991206", "NCT06060392", "NCT06715774"],
        ),
    ],
)
def test_filter_advanced_date_ranges(client: httpx.Client, expr: str, expected: list[str]) -> None:
    assert ids(client.get("/studies", params={"filter.advanced": expr}).json()) == expected
    # The spec's own example puts the same expression in query.term.
    assert ids(client.get("/studies", params={"query.term": expr}).json()) == expected


def test_unsupported_essie_is_rejected(client: httpx.Client) -> None:
    for expr in ("AREA[Phase]PHASE2", "AREA[LastUpdatePostDate]RANGE[01/01/2024,MAX]"):
        assert client.get("/studies", params={"filter.advanced": expr}).status_code == 400


def test_query_term_cond_and_status(client: httpx.Client) -> None:
    assert ids(client.get("/studies", params={"query.term": "SEMAGLUTIDE"}).json()) == [
        "NCT06060392"
    ]
    assert ids(client.get("/studies", params={"query.cond": "nsclc"}).json()) == ["NCT05991206"]
    recruiting = client.get("/studies", params={"filter.overallStatus": "RECRUITING"}).json()
    assert ids(recruiting) == ["NCT05991206", "NCT06060392"]


def test_single_study_found_missing_malformed(client: httpx.Client) -> None:
    found = client.get("/studies/NCT05991206")
    assert found.status_code == 200
    assert found.json() == record("NCT05991206")
    assert client.get("/studies/nct5991206").json() == record("NCT05991206")  # spec pattern
    missing = client.get("/studies/NCT99999999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/plain")
    assert client.get("/studies/NCT123456789").status_code == 400
    assert client.get("/studies/XYZ").status_code == 400


def test_alias_redirects(api: StandinAPI, client: httpx.Client) -> None:
    moved = client.get("/studies/NCT05712863")  # from the record's own nctIdAliases
    assert moved.status_code == 301
    assert moved.headers["location"] == "/api/v2/studies/NCT03103880"
    api.set_aliases({"NCT00000001": "NCT06715774"})
    moved = client.get("/studies/NCT00000001", params={"format": "json"})
    assert moved.headers["location"] == "/api/v2/studies/NCT06715774?format=json"
    followed = client.get("/studies/NCT00000001", follow_redirects=True)
    assert followed.json() == record("NCT06715774")


def test_version_and_data_timestamp(api: StandinAPI, client: httpx.Client) -> None:
    assert client.get("/version").json() == {
        "apiVersion": "2.0.5",
        "dataTimestamp": "2025-01-02T09:00:00",
    }
    api.set_data_timestamp("2025-07-07T09:00:04")
    assert client.get("/version").json()["dataTimestamp"] == "2025-07-07T09:00:04"


def test_state_changes_between_syncs(api: StandinAPI, client: httpx.Client) -> None:
    edited = record("NCT01359631")
    edited["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2025-08-01"
    api.put_study(edited)
    edited["protocolSection"]["statusModule"]["overallStatus"] = "MUTATED"  # server keeps a copy
    api.remove_study("NCT06060392")
    since = {"filter.advanced": "AREA[LastUpdatePostDate]RANGE[2025-01-01,MAX]"}
    assert ids(client.get("/studies", params=since).json()) == ["NCT01359631"]
    status = client.get("/studies/NCT01359631").json()["protocolSection"]["statusModule"]
    assert status["overallStatus"] == "COMPLETED"
    assert client.get("/studies/NCT06060392").status_code == 404
    api.set_studies([record("NCT00888511")])
    assert api.study_ids() == ["NCT00888511"]
    with pytest.raises(KeyError):
        api.remove_study("NCT06060392")


def test_history_endpoints(api: StandinAPI) -> None:
    current = record("NCT06060392")
    first = copy.deepcopy(current)
    first.pop("derivedSection")  # history versions carry no derivedSection
    first["protocolSection"]["statusModule"]["overallStatus"] = "NOT_YET_RECRUITING"
    second = copy.deepcopy(first)
    second["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    second["protocolSection"]["eligibilityModule"]["minimumAge"] = "21 Years"
    api.set_history("NCT06060392", [("2023-09-29", first), ("2023-11-18", second)])
    with httpx.Client(base_url=api.int_base_url, timeout=5, verify=False) as http:
        changes = http.get("/studies/NCT06060392/history").json()["changes"]
        assert [(c["version"], c["date"], c["status"]) for c in changes] == [
            (0, "2023-09-29", "NOT_YET_RECRUITING"),
            (1, "2023-11-18", "RECRUITING"),
        ]
        assert changes[0]["moduleLabels"] == []
        assert changes[1]["moduleLabels"] == ["Study Status", "Eligibility"]
        assert http.get("/studies/NCT06060392/history/1").json() == {
            "studyVersion": 1,
            "study": second,
        }
        assert http.get("/studies/NCT06060392/history/2").status_code == 403  # past the end
        assert http.get("/studies/NCT00888511/history").status_code == 404
        assert http.get("/studies/NCT06060392/history/x").status_code == 400
        # Route A, as the website and cthist/ctrdata list versions: the same entries, nested.
        listed = http.get("/studies/NCT06060392", params={"history": "true"}).json()
        assert listed == {"study": second, "history": {
            "changes": changes, "originalData": {}, "lastUpdateVersions": {},
            "outcomesUpdateCount": 0}}
        assert http.get("/studies/NCT06060392").json() == {"study": second}
        api.set_history_routes("query")
        assert http.get("/studies/NCT06060392/history").status_code == 404
        assert http.get("/studies/NCT06060392/history/1").status_code == 200
        api.set_history_routes("path")
        assert http.get("/studies/NCT06060392", params={"history": "true"}).status_code == 404
        assert http.get("/studies/NCT06060392/history").status_code == 200
        with pytest.raises(ValueError, match="unknown history routes"):
            api.set_history_routes("html")


def test_status_faults_are_consumed_in_order(api: StandinAPI, client: httpx.Client) -> None:
    api.add_fault(Fault("status", status=429, headers={"Retry-After": "1"}))
    api.add_fault(Fault("status", times=2))
    limited = client.get("/version")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert [client.get("/version").status_code for _ in range(3)] == [503, 503, 200]
    assert api.pending_faults == 0


def test_fault_path_prefix(api: StandinAPI, client: httpx.Client) -> None:
    api.add_fault(Fault("status", status=500, path_prefix="/api/int"))
    assert client.get("/version").status_code == 200
    assert api.pending_faults == 1
    assert client.get(api.int_base_url + "/studies/NCT00888511/history").status_code == 500


def test_slow_fault_times_out_client_and_stops_fast() -> None:
    server = StandinAPI(load_records(RECORDS)).start()
    server.add_fault(Fault("slow", seconds=30))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.base_url + "/version", timeout=0.3, verify=False)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0


def test_slow_fault_answers_after_delay(api: StandinAPI, client: httpx.Client) -> None:
    api.add_fault(Fault("slow", seconds=0.3))
    started = time.monotonic()
    assert client.get("/version").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_truncate_fault(api: StandinAPI, client: httpx.Client) -> None:
    api.add_fault(Fault("truncate"))
    response = client.get("/studies/NCT06060392")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content) > 0
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_html_fault(api: StandinAPI, client: httpx.Client) -> None:
    api.add_fault(Fault("html"))
    response = client.get("/studies", params={"pageSize": "2"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text


def test_oversize_fault_is_valid_json_of_the_requested_size(
    api: StandinAPI, client: httpx.Client
) -> None:
    api.add_fault(Fault("oversize", size=3_000_000))
    response = client.get("/studies/NCT01359631")
    assert len(response.content) == int(response.headers["content-length"]) == 3_000_000
    assert response.json() == record("NCT01359631")


def test_drop_fault(api: StandinAPI, client: httpx.Client) -> None:
    api.add_fault(Fault("drop"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/version")
    assert client.get("/version").status_code == 200


def test_request_log(api: StandinAPI, client: httpx.Client) -> None:
    client.get("/studies", params={"filter.ids": "NCT00888511", "pageSize": "5"})
    client.get("/studies/NCT00888511")
    method, path, query = api.requests[0]
    assert (method, path, query) == (
        "GET",
        "/api/v2/studies",
        {"filter.ids": "NCT00888511", "pageSize": "5"},
    )
    assert [r.path for r in api.requests] == ["/api/v2/studies", "/api/v2/studies/NCT00888511"]
    api.clear_requests()
    assert api.requests == []


def test_keep_alive_connection_does_not_delay_stop() -> None:
    server = StandinAPI().start()
    with httpx.Client(verify=False) as http:
        assert http.get(server.base_url + "/studies").json() == {"studies": []}
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(httpx.TransportError):
            http.get(server.base_url + "/version")


def test_normalize_nct_id() -> None:
    assert normalize_nct_id("nct1234") == "NCT00001234"
    assert normalize_nct_id("NCT00000000") is None
    assert normalize_nct_id("NCT123456789") is None


def test_runs_as_a_script() -> None:
    script = Path(__file__).parent / "standin_api.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", str(RECORDS)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert banner.startswith("serving 6 studies at http://127.0.0.1:")
        base_url = banner.split(" at ")[1].strip()
        assert httpx.get(base_url + "/studies/NCT00888511", verify=False).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_single_study_sends_an_etag_and_answers_304_to_it(
    api: StandinAPI, client: httpx.Client
) -> None:
    first = client.get("/studies/NCT05991206")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = client.get("/studies/NCT05991206", headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert client.get("/studies/NCT05991206", headers={"If-None-Match": '"x"'}).status_code == 200
    edited = record("NCT05991206")
    edited["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    api.put_study(edited)
    changed = client.get("/studies/NCT05991206", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert api.etags_sent == [("/api/v2/studies/NCT05991206", etag),
                              ("/api/v2/studies/NCT05991206", '"x"'),
                              ("/api/v2/studies/NCT05991206", etag)]


def test_rejected_ids_and_url_length(api: StandinAPI, client: httpx.Client) -> None:
    api.reject_ids(["NCT05991206"])
    refused = client.get("/studies", params={"filter.ids": "NCT00888511,NCT05991206"})
    assert refused.status_code == 400
    assert refused.text == "filter.ids: invalid NCT id NCT05991206"
    assert client.get("/studies/NCT05991206").status_code == 400
    assert ids(client.get("/studies", params={"filter.ids": "NCT00888511"}).json()) == [
        "NCT00888511"
    ]
    api.max_url = 60
    assert client.get("/studies", params={"filter.ids": ",".join(ALL_IDS)}).status_code == 414
    assert client.get("/version").status_code == 200


def test_paging_loop_faults(api: StandinAPI, client: httpx.Client) -> None:
    first = client.get("/studies", params={"pageSize": "2"}).json()
    api.add_fault(Fault("repeat_token", times=1))
    again = client.get("/studies", params={"pageSize": "2", "pageToken": first["nextPageToken"]})
    assert again.json() == first  # the first page, its token again
    api.add_fault(Fault("stale_page", times=2))
    stale = [client.get("/studies", params={"pageSize": "2", "pageToken": "x"}).json()
             for _ in range(2)]
    assert ids(stale[0]) == ids(stale[1]) == ids(first)
    assert len({first["nextPageToken"], stale[0]["nextPageToken"],
                stale[1]["nextPageToken"]}) == 3


def test_drip_fault_sends_the_body_a_few_bytes_at_a_time(
    api: StandinAPI, client: httpx.Client
) -> None:
    api.add_fault(Fault("drip", seconds=0.02, chunk=8))
    pieces = []
    started = time.monotonic()
    with client.stream("GET", "/version") as response:
        pieces = list(response.iter_raw())
    assert b"".join(pieces) == b'{"apiVersion":"2.0.5","dataTimestamp":"2025-01-02T09:00:00"}'
    assert len(pieces) >= 4 and time.monotonic() - started >= 0.1


def test_drip_head_fault_sends_the_status_line_and_headers_a_byte_at_a_time(
    api: StandinAPI, client: httpx.Client
) -> None:
    api.add_fault(Fault("drip_head", seconds=0.002, chunk=1))
    started = time.monotonic()
    response = client.get("/version")
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.reason_phrase == "OK"
    assert response.json() == {"apiVersion": "2.0.5", "dataTimestamp": "2025-01-02T09:00:00"}
    assert response.headers["Content-Type"] == "application/json"
    assert elapsed >= 60 * 0.002  # the head is over 60 bytes, each sent on its own
