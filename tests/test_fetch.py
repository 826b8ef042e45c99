"""The API client against the stand-in API over real HTTP: paging, batching, faults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import real_records
from standin_api import Fault, StandinAPI

from trialdiff.errors import FetchError, ForbiddenError, InvalidResponse, ResponseTooLarge
from trialdiff.fetch import (
    USER_AGENT,
    Client,
    Pacing,
    fetch_ids,
    fetch_pages,
    fetch_study,
    incremental,
)

RECORDS = real_records()
IDS = sorted(r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS)


@pytest.fixture
def api() -> Iterator[StandinAPI]:
    with StandinAPI(RECORDS) as server:
        yield server


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
    assert fetch_study(client, "NCT99999999") == ("NCT99999999", None)
    status, _, _ = client.get_json("/studies/NCT12")
    assert status in (400, 404)
    status, _, _ = client.get_json("/studies/XYZ")
    assert status == 400


def test_alias_redirect_is_followed(api: StandinAPI) -> None:
    api.set_aliases({"NCT00000001": IDS[0]})
    client, _ = client_for(api)
    found_id, study = fetch_study(client, "NCT00000001")
    assert found_id == IDS[0] and study is not None


def test_polite_delay_between_requests(api: StandinAPI) -> None:
    client, waits = client_for(api, delay=1.0)
    list(fetch_ids(client, IDS, batch=10))
    assert len(waits) == 2 and all(0.5 < w <= 1.0 for w in waits)
