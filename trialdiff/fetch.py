"""Fetch study records from the ClinicalTrials.gov API v2, politely and with bounded retries.

`Client.get_json` is the one place a request is made: it paces requests, retries faults with
exponential backoff and jitter (honouring Retry-After) within a count and a time budget, caps
the response size, and parses the body. The `fetch_*` generators page through results and yield
whole, validated pages, so a caller never stores part of a page.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from . import __version__
from .errors import FetchError, ForbiddenError, InvalidResponse, ResponseTooLarge, UsageError

USER_AGENT = f"trialdiff/{__version__} python-httpx/{httpx.__version__}"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class Pacing:
    """How politely to ask: the wait between requests and the bounds on retrying."""

    delay: float = 1.0  # seconds between the start of one request and the next
    timeout: float = 60.0
    retries: int = 5
    retry_budget: float = 300.0  # seconds one request may spend waiting to retry
    max_bytes: int = 64 * 1024 * 1024
    backoff: float = 2.0  # first backoff in seconds; doubles per retry, with jitter
    page_size: int = 1000  # studies per request: the API's largest page


@dataclass
class Client:
    """A ClinicalTrials.gov API v2 client; pass `transport` to talk to something else."""

    base_url: str
    pacing: Pacing = field(default_factory=Pacing)
    transport: httpx.BaseTransport | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random
    requests_made: int = 0
    _last_request: float | None = None
    _http: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._http = httpx.Client(
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=self.pacing.timeout,
            transport=self.transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            self._http.close()

    def _pace(self) -> None:
        """Wait until `delay` has passed since the previous request started."""
        if self._last_request is not None:
            wait = self._last_request + self.pacing.delay - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last_request = self.clock()

    def _retry_wait(self, attempt: int, response: httpx.Response | None) -> float:
        """Return how long to wait before retry `attempt` (1-based)."""
        wait = self.pacing.backoff * 2 ** (attempt - 1) * (0.5 + self.jitter())
        header = response.headers.get("Retry-After") if response is not None else None
        if header:
            wait = max(wait, _retry_after_seconds(header))
        return float(wait)

    def _read(self, path: str, params: Mapping[str, str]) -> tuple[httpx.Response, bytes]:
        """Make one request and read its body within the size cap."""
        assert self._http is not None
        self._pace()
        self.requests_made += 1
        request = self._http.build_request("GET", self.base_url + path, params=dict(params))
        response = self._http.send(request, stream=True)
        try:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > self.pacing.max_bytes:
                raise ResponseTooLarge(self._too_large(path))
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.pacing.max_bytes:
                    raise ResponseTooLarge(self._too_large(path))
                chunks.append(chunk)
        finally:
            response.close()
        return response, b"".join(chunks)

    def _too_large(self, path: str) -> str:
        """Say that a response passed the cap."""
        cap = self.pacing.max_bytes / 1024 / 1024
        return f"{path}: response larger than {cap:g} MB (raise --max-response-mb to accept it)"

    def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        check: Callable[[Any], str | None] | None = None,
    ) -> tuple[int, Any, httpx.Headers]:
        """GET a path; return (status, parsed body, headers), retrying faults within bounds.

        `check` validates a 200 body and returns a reason when it is not what the endpoint
        returns; such a body counts as a fault and is retried. 301, 400 and 404 are returned
        to the caller, since they are answers, not faults.
        """
        params = params or {}
        started = self.clock()
        attempt = 0
        while True:
            response: httpx.Response | None = None
            problem: str | None
            try:
                response, body = self._read(path, params)
                status = response.status_code
                if status == 403:
                    raise ForbiddenError(
                        f"{path}: 403 Forbidden from the registry's edge; it refuses clients "
                        f"whose User-Agent lacks python-httpx (sent: {USER_AGENT})"
                    )
                if status in (301, 302, 307, 308, 400, 404):
                    return status, _parse(body), response.headers
                if status in _RETRY_STATUS:
                    problem = f"{status} {response.reason_phrase}"
                elif status != 200:
                    raise FetchError(f"{path}: unexpected {status} {response.reason_phrase}")
                else:
                    parsed = _parse(body)
                    problem = "not JSON" if parsed is _INVALID else None
                    if problem is None and check is not None:
                        problem = check(parsed)
                    if problem is None:
                        return status, parsed, response.headers
                    problem = f"200 with an invalid body ({problem})"
            except httpx.TimeoutException:
                problem = f"timed out after {self.pacing.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__}: {exc})"
            assert problem is not None
            attempt += 1
            wait = self._retry_wait(attempt, response)
            spent = self.clock() - started
            if attempt > self.pacing.retries or spent + wait > self.pacing.retry_budget:
                kind = InvalidResponse if problem.startswith("200") else FetchError
                raise kind(f"{path}: {problem}; gave up after {attempt} attempts in {spent:.0f} s")
            self.sleep(wait)

    def version(self) -> dict[str, Any]:
        """Return GET /version: the API version and the data release timestamp."""
        _, body, _ = self.get_json("/version", check=_check_version)
        return dict(body)


_INVALID = object()


def _retry_after_seconds(header: str) -> float:
    """Return the seconds a Retry-After header asks for (a number or an HTTP date)."""
    try:
        return float(header)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(header).timestamp() - time.time()
    except (TypeError, ValueError):
        return 0.0


def _parse(body: bytes) -> Any:
    """Parse a JSON body, or return a marker when it is not JSON (a proxy's HTML page)."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return _INVALID


def _check_version(body: Any) -> str | None:
    """Say what is wrong with a /version body, if anything."""
    if not isinstance(body, dict) or "dataTimestamp" not in body:
        return "no dataTimestamp"
    return None


def check_page(body: Any) -> str | None:
    """Say what is wrong with a /studies page, if anything."""
    if not isinstance(body, dict) or not isinstance(body.get("studies"), list):
        return "not a page of studies"
    if not all(isinstance(study, dict) for study in body["studies"]):
        return "a study is not an object"
    token = body.get("nextPageToken")
    if token is not None and not isinstance(token, str):
        return "nextPageToken is not a string"
    return None


def fetch_pages(client: Client, params: Mapping[str, str]) -> Iterator[list[dict[str, Any]]]:
    """Yield each page of /studies for a query, following nextPageToken.

    Every page repeats every parameter of the first, as the API requires.
    """
    token: str | None = None
    while True:
        page_params = dict(params)
        if token:
            page_params["pageToken"] = token
        status, body, _ = client.get_json("/studies", page_params, check=check_page)
        if status != 200:
            message = body.get("message") if isinstance(body, dict) else body
            raise UsageError(f"the API refused the query ({status}): {message or params}")
        yield body["studies"]
        token = body.get("nextPageToken")
        if not token:
            return


def id_batches(nct_ids: Iterable[str], size: int) -> Iterator[list[str]]:
    """Yield sorted, distinct ids in batches of at most `size`."""
    ids = sorted(set(nct_ids))
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def fetch_batch(client: Client, batch: list[str]) -> Iterator[list[dict[str, Any]]]:
    """Yield the pages of one batch of studies: `filter.ids=A,B,...`, one request per page."""
    params = {"filter.ids": ",".join(batch), "pageSize": str(min(len(batch), 1000))}
    yield from fetch_pages(client, params)


def fetch_ids(
    client: Client, nct_ids: Iterable[str], batch: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield pages of the given studies, fetched `batch` ids per request (default: page size)."""
    for ids in id_batches(nct_ids, batch or client.pacing.page_size):
        yield from fetch_batch(client, ids)


def fetch_study(client: Client, nct_id: str) -> tuple[str, dict[str, Any] | None]:
    """Return (id, study) for one study, following an alias redirect; study None if 404."""
    status, body, headers = client.get_json(f"/studies/{nct_id}")
    if status in (301, 302, 307, 308):
        target = headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        if not target or target == nct_id:
            raise FetchError(f"/studies/{nct_id}: redirect without a new id")
        status, body, _ = client.get_json(f"/studies/{target}")
        nct_id = target
    if status == 404:
        return nct_id, None
    if status != 200 or not isinstance(body, dict):
        raise FetchError(f"/studies/{nct_id}: unexpected answer {status}")
    return nct_id, body


def incremental(params: Mapping[str, str], since_day: str) -> dict[str, str]:
    """Return query params narrowed to studies updated on or after a day."""
    window = f"AREA[LastUpdatePostDate]RANGE[{since_day},MAX]"
    narrowed = dict(params)
    existing = narrowed.get("filter.advanced")
    narrowed["filter.advanced"] = f"({existing}) AND {window}" if existing else window
    return narrowed
