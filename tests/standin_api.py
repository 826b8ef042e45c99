"""Serve a stand-in ClinicalTrials.gov API (v2 and the internal history API) over real HTTP.

Use ``with StandinAPI(load_records(DIR)) as api:`` in tests, or run
``python tests/standin_api.py --port 8765 DIR_OF_JSON`` by hand. It follows the official spec
(ctg-oas-v2 2.0.5) and recorded responses: text/plain errors, opaque page tokens bound to their
query, 301 for alias ids. Parameters it does not implement get a 400 instead of being ignored,
so a client test cannot pass because a filter was silently dropped. It behaves as the real API
does where that differs from the spec: an exactly full page carries a nextPageToken that leads
to an empty page; `/studies/{id}` sends an ETag and answers a matching If-None-Match with 304;
ids set with ``reject_ids`` make any request naming them a 400; and a URL longer than
``max_url`` answers 414.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http.client import responses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qsl, unquote, urlsplit

Study = dict[str, Any]
Ranges = list[tuple[str, str | None, str | None]]

API_VERSION = "2.0.5"
DEFAULT_DATA_TIMESTAMP = "2025-01-02T09:00:00"  # spec: UTC yyyy-MM-dd'T'HH:mm:ss, no zone
# The spec's nctId pattern: any-case prefix, leading zeros optional (NCT1234 is NCT00001234).
NCT_PATTERN = re.compile(r"[Nn][Cc][Tt]0*([1-9]\d{0,7})")
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
RANGE_CLAUSE = re.compile(r"AREA\[(\w+)\]\s*RANGE\[\s*([^,\]]+?)\s*,\s*([^\]]+?)\s*\]")
# Essie areas stored as statusModule.<area>Struct.date; enough for incremental syncs.
DATE_AREAS = ("LastUpdatePostDate", "StudyFirstPostDate", "ResultsFirstPostDate")
STUDIES_PARAMS = "query.term query.cond filter.ids filter.advanced filter.overallStatus pageSize"
STUDIES_PARAMS += " pageToken countTotal format markupFormat"
PAGE_FREE_PARAMS = ("pageToken", "pageSize", "countTotal")  # spec: may differ between pages
# The record-history listing's two routes: `?history=true` on the study, and `/history`.
HISTORY_ROUTES = ("query", "path")
# Labels as the website's history list names modules (from published captures); others fall
# back to the module key.
MODULE_LABELS = {
    "identificationModule": "Study Identification",
    "statusModule": "Study Status",
    "sponsorCollaboratorsModule": "Sponsor/Collaborators",
    "oversightModule": "Oversight",
    "descriptionModule": "Study Description",
    "conditionsModule": "Conditions",
    "designModule": "Study Design",
    "armsInterventionsModule": "Arms and Interventions",
    "outcomesModule": "Outcome Measures",
    "eligibilityModule": "Eligibility",
    "contactsLocationsModule": "Contacts/Locations",
    "referencesModule": "References",
    "ipdSharingStatementModule": "IPD Sharing Statement",
}
PROXY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>"
)


@dataclass
class Fault:
    """Describe a scripted misbehaviour for the next ``times`` requests under ``path_prefix``.

    Kinds: "status" (status, default 503, text body), "slow" (answer after ``seconds``),
    "truncate" (half the body, Content-Length of the cut body), "html" (proxy error page,
    default 200), "oversize" (valid JSON padded with blanks to ``size`` bytes), "drop"
    (close the connection without answering), "drip" (the body ``chunk`` bytes at a time,
    ``seconds`` apart), "drip_head" (the status line and headers ``chunk`` bytes at a time,
    ``seconds`` apart, then the body at once), "repeat_token" (a /studies page answered as
    the query's first page, so its nextPageToken comes again), "stale_page" (the first page
    again under a new token each time: a page with nothing new), "empty_page" (a /studies
    page with no studies and a new token that goes on where it stood: the spec allows it).
    """

    kind: Literal["status", "slow", "truncate", "html", "oversize", "drop", "drip",
                  "drip_head", "repeat_token", "stale_page", "empty_page"]
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | bytes | None = None  # bytes: sent as they are (an encoded body)
    seconds: float = 5.0
    size: int = 8 * 1024 * 1024
    chunk: int = 4
    path_prefix: str = ""
    times: int = 1


class LoggedRequest(NamedTuple):
    """Record one received request; unpacks as ``(method, path, query)``."""

    method: str
    path: str
    query: dict[str, str]


class Reply(NamedTuple):
    """Hold one HTTP answer before faults are applied."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Entry:
    # Only the serialised study plus what filters need: immune to the test editing its dict
    # afterwards, and cheap for the thousands of records the script may serve.
    nct_id: str
    body: bytes
    text: str  # lower-cased JSON text, for query.term
    status: str
    conditions: str  # lower-cased conditions and keywords, one per line, for query.cond
    status_module: dict[str, Any]  # for RANGE filters on its dates
    aliases: tuple[str, ...]


def normalize_nct_id(raw: str) -> str | None:
    """Return ``raw`` as ``NCT`` + 8 digits, or None if the spec's pattern rejects it."""
    match = NCT_PATTERN.fullmatch(raw.strip())
    return f"NCT{int(match.group(1)):08d}" if match else None


def load_records(directory: str | Path) -> list[Study]:
    """Load every ``*.json`` study record in ``directory``, in file-name order."""
    paths = sorted(Path(directory).glob("*.json"))
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _text(status: int, message: str | bytes, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    body = message.encode() if isinstance(message, str) else message
    return Reply(status, body, "text/plain; charset=utf-8", headers)


def _entry(study: Study) -> _Entry:
    protocol = study["protocolSection"]
    nct_id = normalize_nct_id(str(protocol["identificationModule"]["nctId"]))
    if nct_id is None:
        raise ValueError("study has a malformed identificationModule.nctId")
    body = _dumps(study)
    module = protocol.get("conditionsModule", {})
    terms = "\n".join(module.get("conditions", []) + module.get("keywords", [])).lower()
    status_module = json.loads(_dumps(protocol.get("statusModule", {})))  # a detached copy
    status = str(status_module.get("overallStatus"))
    aliases = tuple(protocol["identificationModule"].get("nctIdAliases", []))
    return _Entry(nct_id, body, body.decode().lower(), status, terms, status_module, aliases)


def _bad_params(query: Mapping[str, str], allowed: str) -> str:
    for name in query:
        if name not in allowed.split():  # the real API's wording, plus what the stand-in lacks
            return f"`{name}` is unknown parameter (stand-in implements: {allowed or 'none'})"
    if query.get("format", "json") != "json" or query.get("markupFormat", "markdown") != "markdown":
        return "the stand-in API serves only format=json and markupFormat=markdown"
    return ""


def _parse_ranges(expr: str) -> Ranges:
    """Parse ``AREA[X]RANGE[a,b] AND ...``; raise ValueError for any other Essie."""
    clauses: Ranges = []
    for part in re.split(r"\s+AND\s+", expr.strip()):
        match = RANGE_CLAUSE.fullmatch(part.strip())
        if not match or match.group(1) not in DATE_AREAS:
            raise ValueError(f"the stand-in API cannot evaluate Essie expression {part!r}")
        low, high = (None if v.upper() in ("MIN", "MAX") else v for v in match.group(2, 3))
        if not all(DATE_PATTERN.fullmatch(v) for v in (low, high) if v is not None):
            raise ValueError(f"unsupported RANGE bounds in {part!r} (use YYYY-MM-DD, MIN, MAX)")
        area = match.group(1)
        clauses.append((area[0].lower() + area[1:] + "Struct", low, high))
    return clauses


def _in_ranges(entry: _Entry, clauses: Ranges) -> bool:
    for struct, low, high in clauses:
        value = entry.status_module.get(struct, {}).get("date")
        # A study without the date never matches a range, as in Essie.
        if not isinstance(value, str) or (low and value < low) or (high and value > high):
            return False
    return True


def _fingerprint(query: Mapping[str, str]) -> str:
    kept = sorted((k, v) for k, v in query.items() if k not in PAGE_FREE_PARAMS)
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def _decode_token(token: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:  # covers binascii.Error and UnicodeDecodeError
        return None
    fingerprint, sep, rest = raw.partition(":")
    after, tilde, _ = rest.partition("~")  # an empty page's token: where it stood, made new
    valid = normalize_nct_id(after) == after or (tilde and not after)  # "": from the start
    return (fingerprint, after) if sep and valid else None


def _changed_labels(old: Study, new: Study) -> list[str]:
    labels: list[str] = []
    for section in ("protocolSection", "resultsSection", "documentSection"):
        before, after = old.get(section) or {}, new.get(section) or {}
        for module in [*after, *(k for k in before if k not in after)]:
            label = MODULE_LABELS.get(module, module)
            if before.get(module) != after.get(module) and label not in labels:
                labels.append(label)
    return labels


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: StandinAPI) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.connections: set[socket.socket] = set()  # shut down on stop to end keep-alives


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like the real API, so client pooling is exercised
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms stall
    server: _Server

    def setup(self) -> None:
        """Register the connection so that stop() can close it."""
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests capture stderr, and a request log line is not theirs."""

    def do_GET(self) -> None:
        """Log the request, apply any scripted fault, and answer."""
        api = self.server.api
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        api._log(LoggedRequest("GET", parts.path, query), self.headers.get("If-None-Match"))
        fault = api._take_fault(parts.path)
        kind = fault.kind if fault else ""
        try:
            if kind == "drop" or (fault and kind == "slow" and api._stopping.wait(fault.seconds)):
                self.close_connection = True  # no answer: the client sees the socket close
                return
            if api.max_url is not None and len(self.path) > api.max_url:
                self._send(_text(414, "URI Too Long"), None)
                return
            if fault and kind == "empty_page" and parts.path.endswith("/studies"):
                reply = api.empty_page(query)
            elif fault and kind in ("repeat_token", "stale_page"):
                query = {k: v for k, v in query.items() if k != "pageToken"}
                reply = api.respond(parts.path, "", query, stale=kind == "stale_page")
            else:
                reply = self._reply(api, fault, parts.path, parts.query, query,
                                    self.headers.get("If-None-Match"))
            self._send(reply, fault)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout or size limit)

    def _reply(
        self, api: StandinAPI, fault: Fault | None, path: str, raw_query: str,
        query: dict[str, str], if_none_match: str | None,
    ) -> Reply:
        extra = tuple(fault.headers.items()) if fault else ()
        if fault and fault.kind == "status":
            status = fault.status or 503
            return _text(status, fault.body or responses.get(status, "Error"), extra)
        if fault and fault.kind == "html":
            page = (fault.body or PROXY_PAGE).encode()
            return Reply(fault.status or 200, page, "text/html; charset=utf-8", extra)
        try:
            reply = api.respond(path, raw_query, query, if_none_match=if_none_match)
        except Exception as exc:  # a stand-in bug must fail the test, not hang the client
            api.errors.append(f"{path}?{raw_query}: {exc!r}")
            reply = _text(500, "stand-in API internal error")
        return reply._replace(headers=reply.headers + extra)

    def _send(self, reply: Reply, fault: Fault | None) -> None:
        body, padding = reply.body, 0
        if fault and fault.kind == "truncate":
            body = body[: max(1, len(body) // 2)]
        elif fault and fault.kind == "oversize":
            padding = max(0, fault.size - len(body))  # trailing blanks keep the JSON valid
        head = [("Content-Type", reply.content_type), ("Content-Length", str(len(body) + padding)),
                *reply.headers]
        if fault and fault.kind == "drip_head":  # a proxy too slow to get even the headers out
            lines = [f"HTTP/1.1 {reply.status} {responses.get(reply.status, '')}",
                     *(f"{name}: {value}" for name, value in head), "", ""]
            raw = "\r\n".join(lines).encode("latin-1")
            for start in range(0, len(raw), fault.chunk):
                self.wfile.write(raw[start : start + fault.chunk])
                self.wfile.flush()
                if self.server.api._stopping.wait(fault.seconds):
                    return
            self.wfile.write(body)
            return
        self.send_response(reply.status)
        for name, value in head:
            self.send_header(name, value)
        self.end_headers()
        if fault and fault.kind == "drip":  # every piece inside any per-read timeout
            for start in range(0, len(body), fault.chunk):
                self.wfile.write(body[start : start + fault.chunk])
                self.wfile.flush()
                if self.server.api._stopping.wait(fault.seconds):
                    break
            return
        self.wfile.write(body)
        for start in range(0, padding, 1 << 16):  # stream, so huge sizes cost no memory
            self.wfile.write(b" " * min(1 << 16, padding - start))


class StandinAPI:
    """Serve study records like clinicaltrials.gov, with state and faults scripted by tests."""

    def __init__(
        self,
        studies: Iterable[Study] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        aliases: Mapping[str, str] | None = None,
        data_timestamp: str = DEFAULT_DATA_TIMESTAMP,
    ) -> None:
        """Bind the port now (0 picks a free one) so URLs are known; start() or ``with`` serves."""
        self._lock = threading.Lock()
        self._studies: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self._histories: dict[str, tuple[list[dict[str, Any]], list[bytes]]] = {}
        self._history_routes = frozenset(HISTORY_ROUTES)
        self._faults: list[Fault] = []  # private copies whose .times counts the uses left
        self._requests: list[LoggedRequest] = []
        self._etags_sent: list[tuple[str, str]] = []
        self._data_timestamp = data_timestamp
        self._rejected: set[str] = set()
        self._stale = 0  # tokens handed out by stale_page faults, each one new
        self.max_url: int | None = None  # longer request targets answer 414, as proxies do
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # internal errors answered as 500; tests may assert empty
        self.set_studies(studies)
        self.set_aliases(aliases or {})
        self._httpd = _Server((host, port), self)
        self.port = int(self._httpd.server_address[1])
        self.root_url = f"http://{host}:{self.port}"
        self.base_url = self.root_url + "/api/v2"  # stands for https://clinicaltrials.gov/api/v2
        self.int_base_url = self.root_url + "/api/int"  # the internal (history) API

    def start(self) -> Self:
        """Serve from a daemon thread."""
        if self._thread is None:
            # A short poll interval is what lets shutdown() return quickly.
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,))
            self._thread.daemon = True
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake slow faults, close open connections, release the port."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread is not None:  # shutdown() would wait forever if never served
            self._httpd.shutdown()
        for conn in list(self._httpd.connections):
            with contextlib.suppress(OSError):  # the peer may have closed it already
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> Self:
        """Start serving."""
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop serving."""
        self.stop()

    def set_studies(self, studies: Iterable[Study]) -> None:
        """Replace every served study."""
        entries = {e.nct_id: e for e in map(_entry, studies)}
        with self._lock:
            self._studies = entries

    def put_study(self, study: Study) -> None:
        """Add or replace one study, e.g. a record edited on a new day."""
        entry = _entry(study)
        with self._lock:
            self._studies[entry.nct_id] = entry

    def remove_study(self, nct_id: str) -> None:
        """Stop serving one study; raise KeyError if it is not served."""
        with self._lock:
            del self._studies[normalize_nct_id(nct_id) or nct_id]

    def study_ids(self) -> list[str]:
        """Return the served NCT ids in order."""
        with self._lock:
            return sorted(self._studies)

    def set_aliases(self, aliases: Mapping[str, str]) -> None:
        """Replace the alias map (old id -> current id); records' nctIdAliases apply as well."""
        normalized = {normalize_nct_id(k): normalize_nct_id(v) for k, v in aliases.items()}
        clean = {k: v for k, v in normalized.items() if k and v}
        if len(clean) != len(aliases):
            raise ValueError(f"malformed NCT id in aliases {dict(aliases)!r}")
        with self._lock:
            self._aliases = clean

    def set_data_timestamp(self, timestamp: Any) -> None:
        """Set the ``dataTimestamp`` that /version reports (None: it reports none)."""
        with self._lock:
            self._data_timestamp = timestamp

    def reject_ids(self, nct_ids: Iterable[str]) -> None:
        """Answer 400 to any request naming one of these ids, as the real API does to an id
        it cannot take (in filter.ids or as /studies/{id})."""
        with self._lock:
            self._rejected = {normalize_nct_id(i) or i for i in nct_ids}

    def set_history(self, nct_id: str, versions: Sequence[tuple[str, Study]]) -> None:
        """Set a study's history as (QC day, study) pairs, version 0 first.

        The QC day is what the real listing calls a version's `date`; each study body keeps
        its own `lastUpdatePostDateStruct`, the day the version went public (1 to 4 days
        after QC on the real site).
        """
        key = normalize_nct_id(nct_id)
        if key is None or not all(DATE_PATTERN.fullmatch(day) for day, _ in versions):
            raise ValueError(f"malformed NCT id or date in history of {nct_id!r}")
        changes: list[dict[str, Any]] = []
        for number, (day, study) in enumerate(versions):
            protocol = study.get("protocolSection", {})
            changes.append({
                "version": number,
                "date": day,
                "status": protocol.get("statusModule", {}).get("overallStatus"),
                "studyType": protocol.get("designModule", {}).get("studyType"),
                # Version 0 lists no labels on the real site; later ones name changed modules.
                "moduleLabels": _changed_labels(versions[number - 1][1], study) if number else [],
                "lastUpdateSubmitQcDate": day,
            })
        with self._lock:
            self._histories[key] = (changes, [_dumps(study) for _, study in versions])

    def set_history_routes(self, *routes: str) -> None:
        """Serve the history listing on these routes only (HISTORY_ROUTES); others answer 404.

        "query" is `/api/int/studies/{id}?history=true` (the website, cthist, ctrdata);
        "path" is `/api/int/studies/{id}/history`.
        """
        if not set(routes) <= set(HISTORY_ROUTES):
            raise ValueError(f"unknown history routes {routes!r}; known: {HISTORY_ROUTES}")
        with self._lock:
            self._history_routes = frozenset(routes)

    def add_fault(self, fault: Fault) -> None:
        """Queue a fault for the next ``fault.times`` requests whose path matches its prefix."""
        with self._lock:
            self._faults.append(replace(fault))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """Return how many queued fault uses have not fired yet."""
        with self._lock:
            return sum(f.times for f in self._faults)

    @property
    def requests(self) -> list[LoggedRequest]:
        """Return a copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()
            self._etags_sent.clear()

    @property
    def etags_sent(self) -> list[tuple[str, str]]:
        """Return (path, If-None-Match) of each logged request that sent one, oldest first."""
        with self._lock:
            return list(self._etags_sent)

    def _log(self, request: LoggedRequest, if_none_match: str | None = None) -> None:
        with self._lock:
            self._requests.append(request)
            if if_none_match:
                self._etags_sent.append((request.path, if_none_match))

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def respond(self, path: str, raw_query: str, query: dict[str, str],
                if_none_match: str | None = None, stale: bool = False) -> Reply:
        """Answer one GET as the real API would, without faults."""
        path = path.rstrip("/")
        if path == "/api/v2/version":
            with self._lock:
                version = {"apiVersion": API_VERSION, "dataTimestamp": self._data_timestamp}
            if version["dataTimestamp"] is None:  # the spec requires only apiVersion
                del version["dataTimestamp"]
            return Reply(200, _dumps(version))
        if path == "/api/v2/studies":
            return self._list_studies(query, stale)
        if match := re.fullmatch(r"/api/v2/studies/([^/]+)", path):
            return self._get_study(unquote(match.group(1)), raw_query, query, if_none_match)
        if match := re.fullmatch(r"/api/int/studies/([^/]+)", path):
            return self._history_listing(unquote(match.group(1)), query)
        if match := re.fullmatch(r"/api/int/studies/([^/]+)/history(?:/([^/]+))?", path):
            return self._history(unquote(match.group(1)), match.group(2), query)
        return _text(404, "Not Found")

    def _list_studies(self, query: dict[str, str], stale: bool = False) -> Reply:
        if problem := _bad_params(query, STUDIES_PARAMS):
            return _text(400, problem)
        size, count_total = query.get("pageSize", "0"), query.get("countTotal", "false")
        if not size.isdecimal() or count_total not in ("true", "false"):
            return _text(400, "pageSize must be an integer >= 0 and countTotal true or false")
        page_size = min(int(size) or 10, 1000)  # spec: 0 means the default, above 1000 clamps
        fingerprint, after = _fingerprint(query), ""
        if "pageToken" in query:
            token = _decode_token(query["pageToken"])
            if token is None or token[0] != fingerprint:
                return _text(400, "invalid pageToken or parameters differ from the first page")
            after = token[1]  # a cursor, so edits between pages neither skip nor repeat studies
        try:
            selected = self._select(query)
        except ValueError as exc:
            return _text(400, str(exc))
        rest = [e for e in selected if e.nct_id > after]
        page = rest[:page_size]
        parts = [b'"studies":[' + b",".join(e.body for e in page) + b"]"]
        if count_total == "true" and not after:  # spec: only the first page carries it
            parts.insert(0, b'"totalCount":%d' % len(selected))
        # The real API sends a token whenever a page is full, even when nothing follows.
        if page and len(page) == page_size:
            cursor = f"{fingerprint}:{page[-1].nct_id}"
            if stale:
                with self._lock:
                    self._stale += 1
                    cursor += f":{self._stale}"
            token_text = base64.urlsafe_b64encode(cursor.encode())
            parts.append(b'"nextPageToken":"' + token_text.rstrip(b"=") + b'"')
        return Reply(200, b"{" + b",".join(parts) + b"}")

    def empty_page(self, query: dict[str, str]) -> Reply:
        """Answer a /studies page with no studies, and a new token that goes on from here."""
        token = _decode_token(query.get("pageToken", ""))
        with self._lock:
            self._stale += 1
            cursor = f"{_fingerprint(query)}:{token[1] if token else ''}~{self._stale}"
        text = base64.urlsafe_b64encode(cursor.encode()).rstrip(b"=")
        return Reply(200, b'{"studies":[],"nextPageToken":"' + text + b'"}')

    def _alias_map(self) -> dict[str, str]:
        derived = {alias: e.nct_id for e in self._studies.values() for alias in e.aliases}
        return derived | self._aliases

    def _select(self, query: dict[str, str]) -> list[_Entry]:
        with self._lock:
            entries = sorted(self._studies.values(), key=lambda e: e.nct_id)
            aliases = self._alias_map()
        if "filter.ids" in query:
            raw_ids = [r for r in re.split(r"[,|\s]+", query["filter.ids"]) if r]
            ids = [normalize_nct_id(r) for r in raw_ids]
            if not ids or None in ids:
                raise ValueError(f"filter.ids must be NCT ids separated by , or |: {raw_ids!r}")
            with self._lock:
                if rejected := sorted(self._rejected.intersection(i for i in ids if i)):
                    raise ValueError(f"filter.ids: invalid NCT id {rejected[0]}")
            wanted = {aliases.get(i, i) for i in ids if i}  # spec: ids match NCTIdAlias too
            entries = [e for e in entries if e.nct_id in wanted]
        if statuses := query.get("filter.overallStatus", "").upper():
            wanted = set(re.split(r"[,|]", statuses))
            entries = [e for e in entries if e.status in wanted]
        term = query.get("query.term", "").strip()
        # The spec's own query.term example is a RANGE expression, so accept Essie there too.
        for expr in (query.get("filter.advanced", ""), term if "AREA[" in term else ""):
            if expr.strip():
                clauses = _parse_ranges(expr)
                entries = [e for e in entries if _in_ranges(e, clauses)]
        if term and "AREA[" not in term:
            entries = [e for e in entries if term.lower() in e.text]
        if cond := query.get("query.cond", "").strip().lower():
            entries = [e for e in entries if cond in e.conditions]
        return entries

    def _get_study(
        self, raw_id: str, raw_query: str, query: dict[str, str], if_none_match: str | None
    ) -> Reply:
        nct_id = normalize_nct_id(raw_id)
        if nct_id is None or nct_id in self._rejected:
            return _text(400, f"invalid NCT number {raw_id!r}")
        if problem := _bad_params(query, "format markupFormat"):
            return _text(400, problem)
        with self._lock:
            entry, target = self._studies.get(nct_id), self._alias_map().get(nct_id)
        if entry is not None:
            etag = '"' + hashlib.sha256(entry.body).hexdigest()[:32] + '"'
            if if_none_match == etag:
                return Reply(304, b"", headers=(("ETag", etag),))
            return Reply(200, entry.body, headers=(("ETag", etag),))
        if target is not None:  # spec: an NCTIdAlias answers 301 to the actual study
            location = f"/api/v2/studies/{target}" + (f"?{raw_query}" if raw_query else "")
            return _text(301, "", (("Location", location),))
        return _text(404, f"study {nct_id} not found")

    def _history_listing(self, raw_id: str, query: dict[str, str]) -> Reply:
        """Answer `/api/int/studies/{id}?history=true`: the study and its version listing."""
        nct_id = normalize_nct_id(raw_id)
        if nct_id is None:
            return _text(400, f"invalid NCT number {raw_id!r}")
        if problem := _bad_params(query, "history"):
            return _text(400, problem)
        with self._lock:
            changes, bodies = self._histories.get(nct_id, ([], []))
            served = "query" in self._history_routes
        if not served or not changes:
            return _text(404, "Not Found")
        body = b'{"study":' + bodies[-1]
        if query.get("history") == "true":
            # trialdiff reads only `changes`; the other three keys are there, empty, so that
            # their presence is what a client checks, as on the real site.
            history = {"changes": changes, "originalData": {}, "lastUpdateVersions": {},
                       "outcomesUpdateCount": 0}
            body += b',"history":' + _dumps(history)
        return Reply(200, body + b"}")

    def _history(self, raw_id: str, version: str | None, query: dict[str, str]) -> Reply:
        nct_id = normalize_nct_id(raw_id)
        if nct_id is None or (version is not None and not version.isdecimal()):
            return _text(400, f"invalid NCT number {raw_id!r} or version {version!r}")
        if problem := _bad_params(query, ""):  # e.g. patchToVersion: not implemented
            return _text(400, problem)
        with self._lock:
            changes, bodies = self._histories.get(nct_id, ([], []))
            served = "path" in self._history_routes
        if version is None:
            listed = served and changes
            return Reply(200, _dumps({"changes": changes})) if listed else _text(404, "Not Found")
        if not bodies:
            return _text(404, "Not Found")
        if int(version) >= len(bodies):  # the real site answers 403 here, not 404
            return _text(403, "Forbidden")
        return Reply(200, b'{"studyVersion":%d,"study":%s}' % (int(version), bodies[int(version)]))


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the JSON records of a directory until interrupted."""
    parser = argparse.ArgumentParser(description="Stand-in ClinicalTrials.gov API.")
    parser.add_argument("directory", type=Path, help="directory of <NCTID>.json study records")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--data-timestamp", default=DEFAULT_DATA_TIMESTAMP)
    args = parser.parse_args(argv)
    records = load_records(args.directory)
    api = StandinAPI(records, host=args.host, port=args.port, data_timestamp=args.data_timestamp)
    with api:
        print(f"serving {len(records)} studies at {api.base_url}", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
