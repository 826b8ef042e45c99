"""The API client against the stand-in API over real HTTP: paging, batching, faults."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from conftest import real_records
from standin_api import Fault, StandinAPI

from trialdiff.errors import (
    FetchError,
    ForbiddenError,
    InvalidResponse,
    PagingError,
    RejectedRequest,
    ResponseTooLarge,
    UsageError,
)
from trialdiff.fetch import (
    EMPTY_PAGES,
    USER_AGENT,
    Client,
    Pacing,
    StudyAnswer,
    fetch_batch,
    fetch_ids,
    fetch_pages,
    fetch_study,
)
from trialdiff.registry import DEFAULT
from trialdiff.render import plural
from trialdiff.watchlist import incremental

RECORDS = real_records()
IDS = sorted(r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS)




def client_for(api: StandinAPI, **pacing: float) -> tuple[Client, list[float]]:
    """Return a client that records its waits instead of sleeping them."""
    waits: list[float] = []
    settings = {"delay": 0.0, "backoff": 1.0, "timeout": 5.0, **pacing}
    return Client(api.base_url, Pacing(**settings), sleep=waits.append), waits  # type: ignore[arg-type]


def test_user_agent_keeps_python_httpx(api: StandinAPI) -> None:
    assert USER_AGENT.startswith("trialdiff/") and " python-httpx/" in USER_AGENT
    client, _ = client_for(api)
    assert client.version()["dataTimestamp"]


def test_ids_are_fetched_in_batches_not_one_request_per_study(api: StandinAPI) -> None:
    client, _ = client_for(api)
    pages = list(fetch_ids(client, IDS, batch=10))
    assert sorted(s["protocolSection"]["identificationModule"]["nctId"]
                  for page in pages for s in page) == IDS
    assert client.requests_made == 3  # 28 ids in batches of 10
    asked = [r.query["filter.ids"].split(",") for r in api.requests]
    assert sorted(i for batch in asked for i in batch) == IDS


def test_paging_repeats_every_parameter_of_the_first_page(api: StandinAPI) -> None:
    client, _ = client_for(api)
    params = {"query.term": "a", "pageSize": "5", "filter.overallStatus": "COMPLETED"}
    pages = list(fetch_pages(client, params))
    assert len(pages) >= 2
    first, *rest = api.requests
    for request in rest:
        assert {k: v for k, v in request.query.items() if k != "pageToken"} == first.query
        assert request.query["pageToken"]


def test_incremental_window_on_last_update_post_date(api: StandinAPI) -> None:
    client, _ = client_for(api)
    params = incremental({"pageSize": "1000"}, "2024-01-01")
    assert params["filter.advanced"] == "AREA[LastUpdatePostDate]RANGE[2024-01-01,MAX]"
    found = [s for page in fetch_pages(client, params) for s in page]
    dates = [s["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"]
             for s in found]
    assert found and all(d >= "2024-01-01" for d in dates)
    assert len(found) < len(RECORDS)
    both = incremental({"filter.advanced": "AREA[Phase]PHASE2"}, "2024-01-01")
    assert both["filter.advanced"] == (
        "(AREA[Phase]PHASE2) AND AREA[LastUpdatePostDate]RANGE[2024-01-01,MAX]"
    )


def test_429_with_retry_after_then_503_are_retried(api: StandinAPI) -> None:
    api.add_fault(Fault("status", status=429, headers={"Retry-After": "7"}))
    api.add_fault(Fault("status", status=503))
    client, waits = client_for(api)
    assert list(fetch_ids(client, IDS[:3]))
    assert client.requests_made == 3
    assert waits[0] >= 7  # Retry-After honoured
    assert 1.0 <= waits[1] <= 3.0  # second backoff: 2 s with jitter in [0.5, 1.5)


def test_slow_answers_time_out_and_are_retried(api: StandinAPI) -> None:
    api.add_fault(Fault("slow", seconds=2.0))
    client, _ = client_for(api, timeout=0.3)
    assert list(fetch_ids(client, IDS[:2]))
    assert client.requests_made == 2


def test_cut_short_body_and_html_page_are_retried_then_reported(api: StandinAPI) -> None:
    api.add_fault(Fault("truncate", times=2))
    api.add_fault(Fault("html", times=2))
    client, _ = client_for(api, retries=3)
    with pytest.raises(InvalidResponse, match="200 with an invalid body"):
        list(fetch_ids(client, IDS[:2]))
    assert client.requests_made == 4


def test_a_body_in_an_encoding_not_asked_for_is_not_decoded(api: StandinAPI) -> None:
    # A probe's 32 KB zstd body decoded to 1 GB in one piece, past --max-response-mb, before
    # the cap was checked (2.1 GB of memory). Only gzip and deflate are asked for now.
    import zstandard

    page = json.dumps({"studies": []}).encode() + b" " * 10_000_000
    api.add_fault(Fault("status", status=200, body=zstandard.compress(page), times=2,
                        headers={"Content-Encoding": "zstd", "Content-Type": "application/json"}))
    client, _ = client_for(api, retries=1, max_bytes=1_000_000)
    with pytest.raises(FetchError, match=r"does not decode as its Content-Encoding says "
                                         r"\(an encoding not asked for\); gave up"):
        client.get_json("/studies")
    assert client._http is not None and client._http.headers["Accept-Encoding"] == "gzip, deflate"


def test_retries_are_bounded_by_count_and_by_time(api: StandinAPI) -> None:
    api.add_fault(Fault("status", status=503, times=100))
    client, waits = client_for(api, retries=2)
    with pytest.raises(FetchError, match="gave up after 3 attempts"):
        client.version()
    assert len(waits) == 2
    api.clear_faults()
    api.add_fault(Fault("status", status=429, headers={"Retry-After": "600"}))
    client, waits = client_for(api, retry_budget=60)
    with pytest.raises(FetchError, match="429"):
        client.version()
    assert waits == []  # waiting 600 s would pass the 60 s budget: give up at once


def test_403_is_a_clear_error_about_the_user_agent(api: StandinAPI) -> None:
    api.add_fault(Fault("status", status=403))
    client, _ = client_for(api)
    with pytest.raises(ForbiddenError, match="python-httpx"):
        client.version()


def test_oversized_response_is_refused(api: StandinAPI) -> None:
    api.add_fault(Fault("oversize", size=3 * 1024 * 1024))
    client, _ = client_for(api, max_bytes=1024 * 1024)
    with pytest.raises(ResponseTooLarge, match="larger than 1 MB"):
        list(fetch_ids(client, IDS[:2]))


def test_unknown_and_malformed_ids(api: StandinAPI) -> None:
    client, _ = client_for(api)
    assert fetch_study(client, "NCT99999999") == StudyAnswer("NCT99999999", None)
    status, _, _ = client.get_json("/studies/NCT12")
    assert status in (400, 404)
    status, _, _ = client.get_json("/studies/XYZ")
    assert status == 400


def test_alias_redirect_is_followed(api: StandinAPI) -> None:
    api.set_aliases({"NCT00000001": IDS[0]})
    client, _ = client_for(api)
    answer = fetch_study(client, "NCT00000001")
    assert answer.nct_id == IDS[0] and answer.study is not None


@pytest.mark.parametrize(("status", "location"), [
    (302, "https://sso.example.org/login"),  # a proxy's sign-in page (a probe)
    (307, "/api/v2/studies/NCT00000002"),  # temporary: the API moves an id for good, with 301
    (301, "/api/v2/studies/login"),
    (301, ""),
    (301, "https://sso.example.org/login?next=/api/v2/studies/NCT00000002"),  # a review
    (301, "https://other.example.org/NCT00000002"),
])
def test_a_redirect_that_is_no_move_of_an_id_fails_the_study(
    api: StandinAPI, status: int, location: str
) -> None:
    # Taken as a move, it marked a tracked study as moved, then as missing.
    api.add_fault(Fault("status", status=status, headers={"Location": location}, body="",
                        path_prefix=f"/api/v2/studies/{IDS[0]}"))
    client, _ = client_for(api)
    with pytest.raises(FetchError, match=(
            rf"^/studies/{IDS[0]}: a {status} redirect to .*, which is not the API's move of an "
            r"id \(a 301 to another /studies/NCT\.\.\.\): is a proxy in the way\?$")):
        fetch_study(client, IDS[0])
    assert [r.path for r in api.requests] == [f"/api/v2/studies/{IDS[0]}"]  # nothing followed


def test_a_permanent_redirect_to_another_study_is_its_move(api: StandinAPI) -> None:
    api.add_fault(Fault("status", status=308, headers={"Location": f"/api/v2/studies/{IDS[1]}"},
                        body="", path_prefix=f"/api/v2/studies/{IDS[0]}"))
    client, _ = client_for(api)
    answer = fetch_study(client, IDS[0])
    assert answer.nct_id == IDS[1] and answer.study is not None


def test_a_refusal_s_text_is_one_line_with_its_controls_escaped(api: StandinAPI) -> None:
    page = "<html>\n<head><title>400 Bad Request</title></head>\n<body>\x1b]0;pwned\x07</body>"
    api.add_fault(Fault("status", status=400, body=page, path_prefix="/api/v2/studies"))
    client, _ = client_for(api)
    with pytest.raises(RejectedRequest) as refused:
        fetch_study(client, IDS[0])
    assert str(refused.value) == (
        f"/studies/{IDS[0]}: the API refused the request (400): <html> <head><title>400 Bad "
        "Request</title></head> <body>\\x1b]0;pwned\\x07</body>")


def test_polite_delay_between_requests(api: StandinAPI) -> None:
    client, waits = client_for(api, delay=1.0)
    list(fetch_ids(client, IDS, batch=10))
    assert len(waits) == 2 and all(0.5 < w <= 1.0 for w in waits)


def studies_asked(api: StandinAPI) -> list[dict[str, str]]:
    """Return the query of each /studies request the stand-in received."""
    return [r.query for r in api.requests if r.path == "/api/v2/studies"]


def test_an_exactly_full_batch_asks_for_no_empty_page(api: StandinAPI) -> None:
    client, _ = client_for(api)
    pages = list(fetch_batch(client, IDS[:10]))
    assert [len(p) for p in pages] == [10]
    # The stand-in, like the API, put a nextPageToken on that full page: it was not followed.
    assert len(studies_asked(api)) == 1 and "pageToken" not in studies_asked(api)[0]


def test_query_paging_ends_at_the_empty_page_after_a_full_one(api: StandinAPI) -> None:
    client, _ = client_for(api)
    pages = list(fetch_pages(client, {"pageSize": "7"}))  # 28 studies: 4 full pages
    assert [len(p) for p in pages] == [7, 7, 7, 7]
    asked = studies_asked(api)
    assert len(asked) == 5 and all("pageToken" in q for q in asked[1:])  # 5th: the empty page


@pytest.mark.parametrize("first", [True, False])
def test_an_empty_page_with_a_token_is_not_the_end(api: StandinAPI, first: bool) -> None:
    # The spec: "A page may have empty studies array"; only the last page has no token. An
    # empty page was taken as the end, and the studies after it were never asked for.
    client, _ = client_for(api)
    if not first:
        list(fetch_pages(client, {"pageSize": "7"}, done=lambda page: True))  # one page
    api.add_fault(Fault("empty_page", path_prefix="/api/v2/studies"))
    pages = list(fetch_pages(client, {"pageSize": "7"}))
    assert [len(p) for p in pages] == [7, 7, 7, 7]
    assert len({DEFAULT.study_id(s) for p in pages for s in p}) == 28


def test_empty_pages_without_end_stop_paging(api: StandinAPI) -> None:
    # A probe's server sent an empty page with a new token for ever: sync asked once a second,
    # holding the writer's lock, until it was killed.
    api.add_fault(Fault("empty_page", path_prefix="/api/v2/studies", times=1000))
    client, _ = client_for(api)
    with pytest.raises(PagingError, match=(
            rf"^/studies: {EMPTY_PAGES} empty pages in a row, each with a new nextPageToken; "
            r"stopped paging \(query.cond=x\)$")):
        list(fetch_pages(client, {"pageSize": "7", "query.cond": "x"}))
    assert len(studies_asked(api)) == EMPTY_PAGES
    api.clear_faults()  # fewer in a row are pages the spec allows: paging goes on past them
    api.add_fault(Fault("empty_page", path_prefix="/api/v2/studies", times=EMPTY_PAGES - 1))
    assert sum(len(p) for p in fetch_pages(client, {"pageSize": "7"})) == 28


def test_a_repeated_page_token_stops_paging(api: StandinAPI) -> None:
    api.add_fault(Fault("repeat_token", path_prefix="/api/v2/studies", times=100))
    client, _ = client_for(api)
    pages = []
    with pytest.raises(PagingError, match=r"sent nextPageToken .* again"):
        for page in fetch_pages(client, {"pageSize": "5"}):
            pages.append(page)
    assert [len(p) for p in pages] == [5] and len(studies_asked(api)) == 2


def test_a_page_token_no_url_can_carry_fails_the_query_not_the_command(api: StandinAPI) -> None:
    # A probe's server sent a 100 KB nextPageToken: httpx's "URL component 'query' too long"
    # was taken for a bad --api, a usage error (exit 2) that ended the whole sync.
    first = {"studies": [real_records()[0]], "nextPageToken": "t" * 100_000}
    api.add_fault(Fault("status", status=200, body=json.dumps(first), times=1,
                        path_prefix="/api/v2/studies",
                        headers={"Content-Type": "application/json"}))
    client, _ = client_for(api)
    pages = []
    with pytest.raises(FetchError, match=r"^/studies: no URL can carry this request \(.*too long"):
        for page in fetch_pages(client, {"pageSize": "5"}):
            pages.append(page)
    assert [len(p) for p in pages] == [1]


def test_a_page_with_nothing_new_stops_paging(api: StandinAPI) -> None:
    api.add_fault(Fault("stale_page", path_prefix="/api/v2/studies", times=100))
    client, _ = client_for(api)
    with pytest.raises(PagingError, match="only studies of earlier pages"):
        list(fetch_pages(client, {"pageSize": "5"}))
    asked = studies_asked(api)
    assert len(asked) == 2 and asked[1]["pageToken"] != ""


def test_a_batch_the_api_refuses_is_a_rejected_request(api: StandinAPI) -> None:
    api.reject_ids([IDS[4]])
    client, waits = client_for(api)
    with pytest.raises(RejectedRequest, match=rf"\(400\): filter.ids: invalid NCT id {IDS[4]}"):
        list(fetch_batch(client, IDS[:8]))
    assert next(fetch_batch(client, IDS[:4]))  # the others are fine
    assert waits == [] and len(studies_asked(api)) == 2  # an answer, not retried
    api.max_url = 200
    with pytest.raises(RejectedRequest, match=r"\(414\)"):
        list(fetch_batch(client, IDS[8:20]))


def test_single_study_etag_and_304(api: StandinAPI) -> None:
    client, _ = client_for(api)
    first = fetch_study(client, IDS[0])
    assert first.study is not None and first.etag and not first.unchanged
    again = fetch_study(client, IDS[0], first.etag)
    assert again == StudyAnswer(IDS[0], None, first.etag, unchanged=True)
    assert api.etags_sent == [(f"/api/v2/studies/{IDS[0]}", first.etag)]
    edited = real_records()[0]
    edited["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    api.put_study(edited)
    changed = fetch_study(client, IDS[0], first.etag)
    assert changed.study == edited and changed.etag != first.etag
    # A 304 to a request that sent no ETag answers nothing (a probe saw it reported as 404).
    api.add_fault(Fault("status", status=304, times=1, path_prefix=f"/api/v2/studies/{IDS[0]}"))
    with pytest.raises(FetchError, match=rf"^/studies/{IDS[0]}: unexpected answer 304"):
        fetch_study(client, IDS[0])


def test_a_body_sent_a_few_bytes_at_a_time_meets_the_overall_deadline(api: StandinAPI) -> None:
    # /version is about 56 bytes: 4 bytes every 0.05 s is 0.7 s, each read well inside 0.3 s.
    api.add_fault(Fault("drip", seconds=0.05, chunk=4))
    client, _ = client_for(api, timeout=0.3, deadline=30)
    started = time.monotonic()
    assert client.version()["dataTimestamp"]  # the per-read timeout alone never trips
    assert time.monotonic() - started >= 0.6
    api.add_fault(Fault("drip", seconds=0.05, chunk=4, times=3))
    client, waits = client_for(api, timeout=0.3, deadline=0.25, retries=2)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"longer than the 0\.25 s deadline; gave up after 3"):
        client.version()
    assert time.monotonic() - started < 2.0 and len(waits) == 2


def test_headers_sent_a_byte_at_a_time_meet_the_overall_deadline(api: StandinAPI) -> None:
    # The status line and headers are over 60 bytes: at one byte per 0.1 s the head alone takes
    # over 6 s, each read well inside the 0.5 s timeout. The deadline ends each attempt at 1 s.
    client, waits = client_for(api, timeout=0.5, deadline=1, retries=1)
    assert client.version()["dataTimestamp"]  # a pooled keep-alive connection: it is reused
    threads = threading.active_count()
    api.add_fault(Fault("drip_head", seconds=0.1, chunk=1, times=2))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^/version: took longer than the 1 s deadline; "
                                         r"gave up after 2 attempts in \d+ s$"):
        client.version()
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 3.5 and len(waits) == 1  # two attempts of 1 s; the wait not slept
    assert threading.active_count() == threads  # each watchdog ended with its request
    assert client.version()["dataTimestamp"]  # the shut-down sockets left the pool
    assert [r.path for r in api.requests] == ["/api/v2/version"] * 4
    client.close()


@pytest.mark.parametrize("url", ["clinicaltrials.gov/api/v2", "htp://x/api/v2", "http://",
                                 "http://[::1/api", "http://host:99999/api/v2",
                                 "http://exa mple.com/api/v2", ""])
def test_a_malformed_base_url_is_a_usage_error_at_once(url: str) -> None:
    with pytest.raises(UsageError, match=r"is not a URL like https://clinicaltrials\.gov"):
        Client(url)


def test_plural() -> None:
    assert [plural(n, "study", "studies") for n in (0, 1, 2)] == ["0 studies", "1 study",
                                                                  "2 studies"]
    assert plural(1, "attempt") == "1 attempt"


def test_a_password_in_the_api_url_is_left_out_of_every_message(api: StandinAPI) -> None:
    api.add_fault(Fault("status", status=404, path_prefix="/api/v2/version"))
    base = api.base_url.replace("http://", "http://user:hunter2@")
    client = Client(base)
    assert client.shown_url == api.base_url.replace("http://", "http://\u2026@")
    with pytest.raises(FetchError) as refused:
        client.version()
    assert "hunter2" not in str(refused.value) and "user" not in str(refused.value)
    assert f"{client.shown_url}/version" in str(refused.value)
    assert Client(api.base_url).shown_url == api.base_url


def test_a_backoff_past_the_budget_is_not_said_to_be_the_servers() -> None:
    # No server answered (nothing listens on the port): the wait was trialdiff's own backoff.
    with socket.socket() as probe:  # a port that was free a moment ago, and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}/api/v2", Pacing(delay=0, retry_budget=0.5),
                    sleep=lambda seconds: None)
    with pytest.raises(FetchError) as refused:
        client.version()
    assert "connection failed" in str(refused.value)
    assert "the server asked" not in str(refused.value)
