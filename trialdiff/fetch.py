"""Fetch study records from the ClinicalTrials.gov API v2, politely and with bounded retries.

`Client.get_json` is the one place a request is made: it paces requests, retries faults with
exponential backoff and jitter (honouring Retry-After) within a count and a time budget, caps the
response size, and parses the body. The `fetch_*` generators page through results and yield whole,
validated pages, so a caller never stores part of a page, and stop rather than go round in circles:
a repeated nextPageToken, a page with nothing new, empty pages without end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from . import __version__
from .arguments import check_base_url
from .deadline import Sockets, Watch
from .errors import (
    FetchError,
    ForbiddenError,
    InvalidResponse,
    PagingError,
    RejectedRequest,
    ResponseTooLarge,
    UsageError,
)
from .registry import DEFAULT
from .render import one_line, plural

USER_AGENT = f"trialdiff/{__version__} python-httpx/{httpx.__version__}"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_ANSWER_STATUS = frozenset({301, 302, 304, 307, 308, 400, 404, 414})  # answers: not retried
# Asked for (and none): not zstd, as httpx asks, one chunk of which may expand to gigabytes.
_DECODED = frozenset({"gzip", "deflate", "identity"})


@dataclass
class Pacing:
    """How politely to ask: the wait between requests and the bounds on retrying."""

    delay: float = 1.0  # seconds between the start of one request and the next
    timeout: float = 60.0  # per read: how long one read of the socket may wait
    deadline: float = 120.0  # per request: how long one whole answer may take to arrive
    retries: int = 5
    retry_budget: float = 300.0  # seconds one request may spend waiting to retry
    max_bytes: int = 64 * 1024 * 1024
    backoff: float = 2.0  # first backoff in seconds; doubles per retry, with jitter
    page_size: int = 500  # ids per filter.ids batch (peers stay at 500: URL length)


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
    _sockets: Sockets = field(default_factory=Sockets)

    def __post_init__(self) -> None:
        self.base_url = check_base_url(self.base_url)
        self._http = httpx.Client(
            headers={"User-Agent": USER_AGENT, "Accept": "application/json",
                     "Accept-Encoding": "gzip, deflate"},
            timeout=self.pacing.timeout,
            transport=self.transport,
            follow_redirects=False,
        )

    @property
    def shown_url(self) -> str:
        """Return the base URL as messages show it: a password in it (user:pw@) left out."""
        parts = urlsplit(self.base_url)
        hidden = parts._replace(netloc="\u2026@" + parts.netloc.rpartition("@")[2]).geturl()
        return hidden if "@" in parts.netloc else self.base_url

    def close(self) -> None:
        """Close the connection pool."""
        if self._http is not None:
            self._http.close()

    def _pace(self) -> None:
        """Wait until `delay` has passed since the previous request started."""
        last = self._last_request
        if last is not None and (wait := last + self.pacing.delay - self.clock()) > 0:
            self.sleep(wait)
        self._last_request = self.clock()

    def _retry_wait(self, attempt: int, response: httpx.Response | None) -> float:
        """Return how long to wait before retry `attempt` (1-based)."""
        wait = self.pacing.backoff * 2 ** (attempt - 1) * (0.5 + self.jitter())
        header = response.headers.get("Retry-After") if response is not None else None
        return float(max(wait, _retry_after_seconds(header)) if header else wait)

    def _read(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[httpx.Response, bytes]:
        """Make one request and read its answer within the size cap and the overall deadline.

        `timeout` bounds each read, so a server that sends a few bytes a second would never
        trip it: the deadline bounds the whole request, headers included (see deadline.py),
        and is checked again as each body piece arrives, for transports without sockets.
        """
        assert self._http is not None
        self._pace()
        self.requests_made += 1
        deadline = self.clock() + self.pacing.deadline
        request = self._http.build_request("GET", self.base_url + path, params=dict(params),
                                           headers=dict(headers),
                                           extensions={"trace": self._sockets.trace})
        with Watch(self._sockets, self.pacing.deadline) as watch:
            try:
                response = self._http.send(request, stream=True)
                try:
                    if response.headers.get("Content-Encoding", "identity").lower() not in _DECODED:
                        raise httpx.DecodingError("an encoding not asked for")
                    declared = int(response.headers.get("Content-Length") or 0)
                    if declared > self.pacing.max_bytes:
                        raise ResponseTooLarge(self._too_large(path), setting="max_response_mb")
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.pacing.max_bytes:
                            raise ResponseTooLarge(self._too_large(path), setting="max_response_mb")
                        if watch.expired or self.clock() > deadline:
                            raise _DeadlinePassed
                        chunks.append(chunk)
                finally:
                    response.close()
            except httpx.TransportError as exc:
                if watch.expired:  # the watchdog shut the socket: not the server's doing
                    raise _DeadlinePassed from exc
                raise
        return response, b"".join(chunks)

    def _too_large(self, path: str) -> str:
        """Say that a response passed the cap."""
        cap = self.pacing.max_bytes / 1024 / 1024
        return f"{path}: response larger than {cap:g} MB"

    def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        check: Callable[[Any], str | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, httpx.Headers]:
        """GET a path; return (status, parsed body, headers), retrying faults within bounds.

        `check` validates a 200 body and returns a reason when it is not what the endpoint
        returns; such a body counts as a fault and is retried. Redirects, 304, 400, 404 and
        414 are returned to the caller, since they are answers, not faults.
        """
        params = params or {}
        started = self.clock()
        attempt = 0
        while True:
            response: httpx.Response | None = None
            problem: str | None
            try:
                response, body = self._read(path, params, headers or {})
                status = response.status_code
                if status == 403:
                    raise ForbiddenError(
                        f"{path}: 403 Forbidden from the registry's edge, to the User-Agent "
                        f"{USER_AGENT} (it has refused agents without python-httpx; with it, "
                        "the refusal is of this address or by a new rule: try again later)"
                    )
                if status in _ANSWER_STATUS:  # the API's error bodies are plain text
                    parsed = _parse(body)
                    if parsed is _INVALID:
                        parsed = body.decode("utf-8", "replace").strip()
                    return status, parsed, response.headers
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
            except _DeadlinePassed:
                problem = f"took longer than the {self.pacing.deadline:g} s deadline"
            except httpx.UnsupportedProtocol as exc:
                raise UsageError(f"{self.shown_url!r}: {exc}", setting="api") from exc
            except httpx.InvalidURL as exc:  # --api was checked: a value the API sent (a token)
                raise FetchError(f"{path}: no URL can carry this request ({exc})") from exc
            except httpx.TransportError as exc:
                problem = f"connection failed ({type(exc).__name__}: {exc})"
            except httpx.DecodingError as exc:  # a proxy's glitch, say: gzip over a plain body
                problem = f"a body that does not decode as its Content-Encoding says ({exc})"
            assert problem is not None
            attempt += 1
            wait = self._retry_wait(attempt, response)
            spent = self.clock() - started
            if attempt > self.pacing.retries or spent + wait > self.pacing.retry_budget:
                kind = InvalidResponse if problem.startswith("200") else FetchError
                asked = (f" (the server asked to wait "
                         f"{_retry_after_seconds(response.headers['Retry-After']):.0f} s; the "
                         f"next retry, {wait:.0f} s on, would pass the retry budget of "
                         f"{self.pacing.retry_budget:g} s)" if attempt <= self.pacing.retries
                         and response is not None and "Retry-After" in response.headers
                         else "")
                raise kind(f"{path}: {problem}; gave up after {plural(attempt, 'attempt')} "
                           f"in {spent:.0f} s{asked}")
            self.sleep(wait)

    def version(self) -> dict[str, Any]:
        """Return GET /version: the API version and the data release timestamp."""
        status, body, _ = self.get_json("/version", check=_check_version)
        if status != 200:  # e.g. a 404 from a base URL that is not the API's
            raise refused(f"{self.shown_url}/version", status, body)
        return dict(body)


_INVALID = object()


class _DeadlinePassed(Exception):
    """A whole answer took longer than the overall deadline."""


def _retry_after_seconds(header: str) -> float:
    """Return the seconds a Retry-After header asks for (a number or an HTTP date)."""
    try:  # a date gone by, or a negative number, asks for no wait
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
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
    # The spec requires only apiVersion: without a dataTimestamp, sync has no release to skip by.
    return None if isinstance(body, dict) else "not a JSON object"


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


def refused(path: str, status: int, body: Any) -> FetchError:
    """Return the error for a non-200 answer (no usage error): 400 and 414 are refusals."""
    message = body.get("message") if isinstance(body, dict) else body
    reason = f": {one_line(str(message))}" if message else ""
    if status in (400, 414):
        return RejectedRequest(f"{path}: the API refused the request ({status}){reason}")
    return FetchError(f"{path}: unexpected answer {status}{reason}")


def answered_ids(study: Mapping[str, Any]) -> set[str]:
    """Return the ids a study answers to: its own and its old aliases."""
    ident = study.get("protocolSection", {}).get("identificationModule", {})
    aliases = ident.get("nctIdAliases") if isinstance(ident, dict) else None
    own = DEFAULT.study_id(dict(study))
    return {a for a in [own, *(aliases or [])] if isinstance(a, str)}


EMPTY_PAGES = 10  # in a row, they end paging: the spec allows one, not an endless run


def fetch_pages(
    client: Client, params: Mapping[str, str],
    done: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each page of /studies for a query, following nextPageToken.

    Every page repeats every parameter of the first, as the API requires. The page without
    a nextPageToken is the last; an empty one is not (the spec: "A page may have empty
    studies array"). `done` is asked after each page whether to stop early. A token that
    comes again, a page whose studies were all on earlier pages, or EMPTY_PAGES empty pages in
    a row raise PagingError: the loop would never end.
    """
    token: str | None = None
    tokens: set[str] = set()
    seen: set[str] = set()
    empty = 0
    while True:
        page_params = dict(params)
        if token:
            page_params["pageToken"] = token
        status, body, _ = client.get_json("/studies", page_params, check=check_page)
        if status != 200:
            raise refused("/studies", status, body)
        studies: list[dict[str, Any]] = body["studies"]
        following = body.get("nextPageToken")
        if following and following in tokens:
            raise PagingError(f"/studies: the API sent nextPageToken {following[:40]!r} again; "
                              f"stopped paging ({_describe(params)})")
        ids = {DEFAULT.study_id(study) or "" for study in studies}
        if token and studies and ids <= seen:
            raise PagingError(f"/studies: page {len(tokens) + 1} held only studies of earlier "
                              f"pages; stopped paging ({_describe(params)})")
        seen |= ids
        empty = 0 if studies else empty + 1
        if empty >= EMPTY_PAGES and following:
            raise PagingError(f"/studies: {empty} empty pages in a row, each with a new "
                              f"nextPageToken; stopped paging ({_describe(params)})")
        if studies:
            yield studies
        if not following or (done is not None and studies and done(studies)):
            return
        token = following
        tokens.add(token)


def _describe(params: Mapping[str, str]) -> str:
    """Name a query briefly in an error message."""
    text = ", ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "pageSize")
    return text if len(text) <= 120 else text[:117] + "..."


def id_batches(nct_ids: Iterable[str], size: int) -> Iterator[list[str]]:
    """Yield sorted, distinct ids in batches of at most `size`."""
    ids = sorted(set(nct_ids))
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def fetch_batch(client: Client, batch: list[str]) -> Iterator[list[dict[str, Any]]]:
    """Yield the pages of one batch of studies: `filter.ids=A,B,...`, one request per page.

    It stops once every id asked for has been answered, so an exactly full page costs no
    request for the empty page the API's token leads to.
    """
    params = {"filter.ids": ",".join(batch), "pageSize": str(min(len(batch), 1000))}
    pending = set(batch)

    def answered(page: list[dict[str, Any]]) -> bool:
        for study in page:
            pending.difference_update(answered_ids(study))
        return not pending

    yield from fetch_pages(client, params, done=answered)


def fetch_ids(
    client: Client, nct_ids: Iterable[str], batch: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield pages of the given studies, fetched `batch` ids per request (default: page size)."""
    for ids in id_batches(nct_ids, batch or client.pacing.page_size):
        yield from fetch_batch(client, ids)


@dataclass(frozen=True)
class StudyAnswer:
    """What `/studies/{id}` said: the study (None if 404 or unchanged), its ETag, if unchanged."""

    nct_id: str  # the id that answered: a new one when the asked id moved (301)
    study: dict[str, Any] | None
    etag: str | None = None
    unchanged: bool = False  # 304: the ETag sent still matches


def fetch_study(client: Client, nct_id: str, etag: str | None = None) -> StudyAnswer:
    """Fetch one study, following an alias redirect; send `etag` as If-None-Match."""
    conditional = {"If-None-Match": etag} if etag else {}
    path = f"/studies/{nct_id}"
    status, body, headers = client.get_json(path, headers=conditional, check=_answers(nct_id))
    if status in (301, 302, 307, 308):
        location = headers.get("Location", "")
        parent, _, target = urlsplit(location).path.rstrip("/").rpartition("/")
        moved = status in (301, 308) and parent.endswith("/studies") and DEFAULT.is_id(target)
        if not moved or target == nct_id:  # a proxy's sign-in page is no new id of the study
            raise FetchError(f"{path}: a {status} redirect to {one_line(location) or 'nowhere'}"
                             ", which is not the API's move of an id (a 301 to another "
                             "/studies/NCT...): is a proxy in the way?")
        nct_id, path = target, f"/studies/{target}"
        status, body, headers = client.get_json(path, check=_answers(nct_id))
    if status == 304 and etag:  # else no answer to what was asked: refused below
        return StudyAnswer(nct_id, None, etag, unchanged=True)
    if status == 404:
        return StudyAnswer(nct_id, None)
    if status != 200 or not isinstance(body, dict):
        raise refused(path, status, body)
    # An old id the study still lists as an alias, answered with its record: it moved.
    return StudyAnswer(DEFAULT.study_id(body) or nct_id, body, headers.get("ETag"))


def _answers(nct_id: str) -> Callable[[Any], str | None]:
    """Return a check that a `/studies/{id}` body is the record of that study (or its alias)."""
    def check(body: Any) -> str | None:
        own = DEFAULT.study_id(body) if isinstance(body, dict) else None
        if own is None:
            return "not a study record"
        if nct_id not in answered_ids(body):  # another study's record is no answer for this
            return f"the record of {own}, which does not answer to {nct_id}"
        return None

    return check
