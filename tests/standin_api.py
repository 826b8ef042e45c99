"""Serve a stand-in ClinicalTrials.gov API (v2 plus the internal history API) over real HTTP.

Tests use it as ``with StandinAPI(load_records(DIR)) as api: httpx.get(api.base_url + "/studies")``;
manual use is ``python tests/standin_api.py --port 8765 DIR_OF_JSON``.

Behaviour follows the official OpenAPI spec (ctg-oas-v2 2.0.5) and recorded real responses:
errors are ``text/plain``, page tokens are opaque and only valid for the query that produced them,
alias ids answer 301. Parameters the stand-in does not implement are rejected with 400 rather than
ignored, so a client test can never pass because a filter was silently dropped.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import socket
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qsl, unquote, urlsplit

Study = dict[str, Any]
FaultKind = Literal["status", "slow", "truncate", "html", "oversize", "drop"]

API_VERSION = "2.0.5"
DEFAULT_DATA_TIMESTAMP = "2025-01-02T09:00:00"  # spec: UTC, yyyy-MM-dd'T'HH:mm:ss, no zone
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 10, 1000
# The spec's nctId pattern: prefix in any case, leading zeros optional (NCT1234 == NCT00001234).
NCT_PATTERN = re.compile(r"[Nn][Cc][Tt]0*([1-9]\d{0,7})")
DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
RANGE_CLAUSE = re.compile(r"AREA\[(\w+)\]\s*RANGE\[\s*([^,\]]+?)\s*,\s*([^\]]+?)\s*\]")
# Essie date areas the stand-in can evaluate, as key paths inside protocolSection.statusModule.
DATE_AREAS = {
    "LastUpdatePostDate": ("lastUpdatePostDateStruct", "date"),
    "StudyFirstPostDate": ("studyFirstPostDateStruct", "date"),
    "ResultsFirstPostDate": ("resultsFirstPostDateStruct", "date"),
    "LastUpdateSubmitDate": ("lastUpdateSubmitDate",),
    "StudyFirstSubmitDate": ("studyFirstSubmitDate",),
}
STUDIES_PARAMS = frozenset(
    ["query.term", "query.cond", "filter.ids", "filter.advanced", "filter.overallStatus", "pageSize", "pageToken", "countTotal", "format", "markupFormat"]
)
# Real /studies parameters from the spec that the stand-in cannot honour: rejected, not ignored.
STUDIES_SPEC_ONLY = frozenset(
    ["query.locn", "query.titles", "query.intr", "query.outc", "query.spons", "query.lead", "query.id", "query.patient", "filter.geo", "filter.synonyms", "postFilter.overallStatus", "postFilter.geo", "postFilter.ids", "postFilter.advanced", "postFilter.synonyms", "aggFilters", "geoDecay", "fields", "sort"]
)
# The spec lets these differ between pages, so the page token does not cover them.
PAGE_FREE_PARAMS = frozenset({"pageToken", "pageSize", "countTotal"})
# History-list labels as the website shows them (approximation: taken from published captures).
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
    "participantFlowModule": "Participant Flow",
    "baselineCharacteristicsModule": "Baseline Characteristics",
    "outcomeMeasuresModule": "Outcome Measures",
    "adverseEventsModule": "Adverse Events",
    "moreInfoModule": "More Information",
    "largeDocumentModule": "Documents",
}
PROXY_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    "</center><hr><center>nginx</center></body></html>"
)


@dataclass
class Fault:
    """Describe one scripted misbehaviour, applied to the next matching request(s)."""

    kind: FaultKind
    status: int | None = None  # "status": default 503; "html": default 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # "status"/"html": replaces the default body
    seconds: float = 5.0  # "slow": delay before answering normally
    size: int = 8 * 1024 * 1024  # "oversize": total body bytes (valid JSON + trailing blanks)
    path_prefix: str = ""  # only requests whose path starts with this match
    times: int = 1

    def __post_init__(self) -> None:
        """Reject typos in ``kind`` early; a misspelt fault would otherwise never fire."""
        if self.kind not in {"status", "slow", "truncate", "html", "oversize", "drop"}:
            raise ValueError(f"unknown fault kind {self.kind!r}")


class LoggedRequest(NamedTuple):
    """Record one received request; unpacks as ``(method, path, query)``."""

    method: str
    path: str
    query: dict[str, str]


class Reply(NamedTuple):
    """Hold one HTTP answer before faults are applied to it."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Entry:
    nct_id: str
    study: Study
    body: bytes  # serialised once, so pages are cheap to assemble
    text: str  # lower-cased JSON text for query.term


def normalize_nct_id(raw: str) -> str | None:
    """Return the canonical ``NCT`` + 8 digits form of ``raw``, or None if it is malformed."""
    match = NCT_PATTERN.fullmatch(raw.strip())
    return f"NCT{int(match.group(1)):08d}" if match else None


def load_records(directory: str | Path) -> list[Study]:
    """Load every ``*.json`` study record in ``directory``, sorted by file name."""
    return [
        json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(directory).glob("*.json"))
    ]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _text(status: int, message: str) -> Reply:
    return Reply(status, message.encode(), "text/plain; charset=utf-8")


def _entry(study: Study) -> _Entry:
    copy = json.loads(_dumps(study))  # detach from the caller's dict and prove it is JSON
    nct_id = normalize_nct_id(str(copy["protocolSection"]["identificationModule"]["nctId"]))
    if nct_id is None:
        raise ValueError("study has a malformed protocolSection.identificationModule.nctId")
    return _Entry(nct_id, copy, _dumps(copy), json.dumps(copy, ensure_ascii=False).lower())


def _check_params(
    query: Mapping[str, str], allowed: Iterable[str], spec_only: Iterable[str]
) -> str:
    for name in query:
        if name in spec_only:
            return f"`{name}` is not implemented by the stand-in API"
        if name not in allowed:
            return f"`{name}` is unknown parameter"  # wording of the real API's 400
    if query.get("format", "json") != "json":
        return "the stand-in API serves format=json only"
    if query.get("markupFormat", "markdown") != "markdown":
        return "the stand-in API serves markupFormat=markdown only"
    return ""


def _parse_ranges(expr: str) -> list[tuple[tuple[str, ...], str | None, str | None]]:
    """Parse ``AREA[X]RANGE[a,b] AND ...``; raise ValueError for anything else."""
    clauses: list[tuple[tuple[str, ...], str | None, str | None]] = []
    for part in re.split(r"\s+AND\s+", expr.strip()):
        match = RANGE_CLAUSE.fullmatch(part.strip())
        if not match or match.group(1) not in DATE_AREAS:
            raise ValueError(f"the stand-in API cannot evaluate Essie expression {part!r}")
        bounds: list[str | None] = []
        for value in (match.group(2), match.group(3)):
            if value.upper() in {"MIN", "MAX"}:
                bounds.append(None)
            elif DATE_PATTERN.fullmatch(value):
                bounds.append(value)
            else:
                raise ValueError(f"unsupported RANGE bound {value!r} (use YYYY-MM-DD, MIN, MAX)")
        clauses.append((DATE_AREAS[match.group(1)], bounds[0], bounds[1]))
    return clauses


def _in_ranges(study: Study, clauses: list[tuple[tuple[str, ...], str | None, str | None]]) -> bool:
    for path, low, high in clauses:
        value: Any = study.get("protocolSection", {}).get("statusModule", {})
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        # Studies missing the field never match a range, as in Essie.
        if not isinstance(value, str) or (low and value < low) or (high and value > high):
            return False
    return True


def _fingerprint(query: Mapping[str, str]) -> str:
    kept = sorted((k, v) for k, v in query.items() if k not in PAGE_FREE_PARAMS)
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:16]


def _encode_token(fingerprint: str, after: str) -> str:
    return base64.urlsafe_b64encode(f"{fingerprint}:{after}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        return None
    fingerprint, sep, after = raw.partition(":")
    return (fingerprint, after) if sep and normalize_nct_id(after) == after else None


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
        self.connections: set[socket.socket] = set()  # closed on stop so keep-alives end at once
        self.connections_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API, so client pooling is exercised
    server: _Server

    def setup(self) -> None:
        """Register the connection so shutdown can close it."""
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        """Unregister the connection."""
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet in tests; print access lines only when serving manually."""
        if self.server.api.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        """Log the request, apply any scripted fault, then answer it."""
        api = self.server.api
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        api._log(LoggedRequest("GET", parts.path, query))
        fault = api._take_fault(parts.path)
        try:
            if fault and (
                fault.kind == "drop" or (fault.kind == "slow" and api._stopping.wait(fault.seconds))
            ):
                self.close_connection = True  # no answer at all; the client sees a dead socket
                return
            self._send(self._reply(api, fault, parts.path, parts.query, query), fault)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout or size limit): fine

    def _reply(
        self, api: StandinAPI, fault: Fault | None, path: str, raw_query: str, query: dict[str, str]
    ) -> Reply:
        extra = tuple(fault.headers.items()) if fault else ()
        if fault and fault.kind == "status":
            status = fault.status or 503
            return _text(status, fault.body or HTTPStatus(status).phrase)._replace(headers=extra)
        if fault and fault.kind == "html":
            page = (fault.body or PROXY_PAGE).encode()
            return Reply(fault.status or 200, page, "text/html; charset=utf-8", extra)
        try:
            reply = api.respond(path, raw_query, query)
        except Exception as exc:  # a stand-in bug must surface in the test, not hang the client
            api.errors.append(f"{path}?{raw_query}: {exc!r}")
            reply = _text(500, "stand-in API internal error")
        return reply._replace(headers=reply.headers + extra)

    def _send(self, reply: Reply, fault: Fault | None) -> None:
        body, padding = reply.body, 0
        if fault and fault.kind == "truncate":
            body = body[: max(1, len(body) // 2)]
        elif fault and fault.kind == "oversize":
            padding = max(0, fault.size - len(body))  # trailing blanks keep the JSON valid
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body) + padding))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        chunk = b" " * 65536
        while padding > 0:
            self.wfile.write(chunk[:padding])
            padding -= len(chunk)


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
        verbose: bool = False,
    ) -> None:
        """Prepare the server; ``start()`` or ``with`` binds the socket (port 0 = ephemeral)."""
        self._address = (host, port)
        self._lock = threading.Lock()
        self._studies: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self._histories: dict[str, tuple[list[dict[str, Any]], list[bytes]]] = {}
        self._faults: list[Fault] = []  # private copies; .times counts the uses left
        self._requests: list[LoggedRequest] = []
        self._data_timestamp = data_timestamp
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.errors: list[str] = []  # internal errors turned into 500s; tests may assert empty
        self.verbose = verbose
        self.set_studies(studies)
        self.set_aliases(aliases or {})

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind the socket and serve from a daemon thread."""
        if self._httpd is None:
            self._stopping = threading.Event()
            self._httpd = _Server(self._address, self)
            # A short poll interval is what makes shutdown() return quickly.
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wake slow faults, close live connections, release the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with httpd.connections_lock:
            for conn in list(httpd.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the peer
        httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        """Start serving."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self.stop()

    @property
    def port(self) -> int:
        """Return the bound port."""
        if self._httpd is None:
            raise RuntimeError("StandinAPI is not running; use start() or a with-block")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """Return ``http://127.0.0.1:PORT``."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """Return the public API base, like ``https://clinicaltrials.gov/api/v2``."""
        return f"{self.root_url}/api/v2"

    @property
    def int_base_url(self) -> str:
        """Return the internal (history) API base, like ``https://clinicaltrials.gov/api/int``."""
        return f"{self.root_url}/api/int"

    # -- state a test changes between syncs --------------------------------------------------
    def set_studies(self, studies: Iterable[Study]) -> None:
        """Replace every served study."""
        entries = {e.nct_id: e for e in map(_entry, studies)}
        with self._lock:
            self._studies = entries

    def put_study(self, study: Study) -> None:
        """Add or replace one study (e.g. an edited record on a new day)."""
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
        """Replace the explicit alias map (old id -> current id); records' nctIdAliases also apply."""
        normalized: dict[str, str] = {}
        for old, new in aliases.items():
            old_id, new_id = normalize_nct_id(old), normalize_nct_id(new)
            if old_id is None or new_id is None:
                raise ValueError(f"malformed NCT id in alias {old!r} -> {new!r}")
            normalized[old_id] = new_id
        with self._lock:
            self._aliases = normalized

    def set_data_timestamp(self, timestamp: str) -> None:
        """Set the ``dataTimestamp`` reported by /version."""
        with self._lock:
            self._data_timestamp = timestamp

    def set_history(self, nct_id: str, versions: Sequence[tuple[str, Study]]) -> None:
        """Set a study's history as (YYYY-MM-DD, study) pairs, version 0 first."""
        key = normalize_nct_id(nct_id)
        if key is None:
            raise ValueError(f"malformed NCT id {nct_id!r}")
        changes: list[dict[str, Any]] = []
        bodies: list[bytes] = []
        previous: Study | None = None
        for number, (day, study) in enumerate(versions):
            if not DATE_PATTERN.fullmatch(day):
                raise ValueError(f"history date {day!r} is not YYYY-MM-DD")
            protocol = study.get("protocolSection", {})
            change: dict[str, Any] = {"version": number, "date": day}
            change["status"] = protocol.get("statusModule", {}).get("overallStatus")
            change["studyType"] = protocol.get("designModule", {}).get("studyType")
            change["moduleLabels"] = [] if previous is None else _changed_labels(previous, study)
            change["lastUpdateSubmitQcDate"] = day
            changes.append({k: v for k, v in change.items() if v is not None})
            bodies.append(_dumps(study))
            previous = study
        with self._lock:
            self._histories[key] = (changes, bodies)

    # -- faults and request log --------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        """Queue a fault; it fires on the next ``fault.times`` requests matching its prefix."""
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

    def _log(self, request: LoggedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- endpoints ---------------------------------------------------------------------------
    def respond(self, path: str, raw_query: str, query: dict[str, str]) -> Reply:
        """Answer one GET without faults (the routing table)."""
        path = path.rstrip("/")
        if path == "/api/v2/version":
            problem = _check_params(query, (), ())
            with self._lock:
                version = {"apiVersion": API_VERSION, "dataTimestamp": self._data_timestamp}
            return _text(400, problem) if problem else Reply(200, _dumps(version))
        if path == "/api/v2/studies":
            return self._list_studies(query)
        if match := re.fullmatch(r"/api/v2/studies/([^/]+)", path):
            return self._get_study(unquote(match.group(1)), raw_query, query)
        if match := re.fullmatch(r"/api/int/studies/([^/]+)/history(?:/([^/]+))?", path):
            return self._history(unquote(match.group(1)), match.group(2), query)
        return _text(404, "Not Found")

    def _list_studies(self, query: dict[str, str]) -> Reply:
        if problem := _check_params(query, STUDIES_PARAMS, STUDIES_SPEC_ONLY):
            return _text(400, problem)
        raw_size = query.get("pageSize", "0")
        if not raw_size.isdigit():
            return _text(400, f"invalid pageSize {raw_size!r}: must be an integer >= 0")
        size = min(int(raw_size) or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)  # spec: 0 = default, clamp
        count_total = query.get("countTotal", "false").lower()
        if count_total not in {"true", "false"}:
            return _text(400, f"invalid countTotal {query['countTotal']!r}: must be true or false")
        fingerprint, after = _fingerprint(query), ""
        if "pageToken" in query:
            token = _decode_token(query["pageToken"])
            if token is None:
                return _text(400, "invalid pageToken")
            if token[0] != fingerprint:
                return _text(400, "pageToken does not match the parameters of the first page")
            after = token[1]  # a cursor, so edits between pages neither skip nor repeat studies
        try:
            selected = self._select(query)
        except ValueError as exc:
            return _text(400, str(exc))
        rest = [e for e in selected if e.nct_id > after]
        page = rest[:size]
        parts = [b'"studies":[' + b",".join(e.body for e in page) + b"]"]
        if count_total == "true" and "pageToken" not in query:  # spec: first page only
            parts.insert(0, b'"totalCount":%d' % len(selected))
        if len(rest) > size:
            parts.append(b'"nextPageToken":' + _dumps(_encode_token(fingerprint, page[-1].nct_id)))
        return Reply(200, b"{" + b",".join(parts) + b"}")

    def _alias_map(self) -> dict[str, str]:
        derived = {
            alias: e.nct_id
            for e in self._studies.values()
            for alias in e.study["protocolSection"]["identificationModule"].get("nctIdAliases", [])
        }
        return derived | self._aliases

    def _select(self, query: dict[str, str]) -> list[_Entry]:
        with self._lock:
            entries = sorted(self._studies.values(), key=lambda e: e.nct_id)
            aliases = self._alias_map()
        if "filter.ids" in query:
            wanted: set[str] = set()
            for raw in filter(None, re.split(r"[,|\s]+", query["filter.ids"])):
                nct_id = normalize_nct_id(raw)
                if nct_id is None:
                    raise ValueError(f"invalid NCT ID {raw!r} in filter.ids")
                wanted.add(aliases.get(nct_id, nct_id))  # spec: ids also match NCTIdAlias
            if not wanted:
                raise ValueError("filter.ids is empty")
            entries = [e for e in entries if e.nct_id in wanted]
        if statuses := query.get("filter.overallStatus"):
            wanted_statuses = set(re.split(r"[,|]", statuses.upper()))
            entries = [e for e in entries if self._status(e) in wanted_statuses]
        if expr := query.get("filter.advanced", "").strip():
            clauses = _parse_ranges(expr)
            entries = [e for e in entries if _in_ranges(e.study, clauses)]
        if term := query.get("query.term", "").strip():
            if "AREA[" in term:  # the spec's own example puts a RANGE expression in query.term
                clauses = _parse_ranges(term)
                entries = [e for e in entries if _in_ranges(e.study, clauses)]
            else:
                entries = [e for e in entries if term.lower() in e.text]
        if cond := query.get("query.cond", "").strip().lower():
            entries = [e for e in entries if any(cond in c.lower() for c in self._conditions(e))]
        return entries

    @staticmethod
    def _status(entry: _Entry) -> str:
        return str(entry.study["protocolSection"].get("statusModule", {}).get("overallStatus"))

    @staticmethod
    def _conditions(entry: _Entry) -> list[str]:
        module = entry.study["protocolSection"].get("conditionsModule", {})
        return [str(c) for c in module.get("conditions", []) + module.get("keywords", [])]

    def _get_study(self, raw_id: str, raw_query: str, query: dict[str, str]) -> Reply:
        nct_id = normalize_nct_id(raw_id)
        if nct_id is None:
            return _text(400, f"invalid NCT ID {raw_id!r}: must match NCT followed by digits")
        if problem := _check_params(query, {"format", "markupFormat"}, {"fields"}):
            return _text(400, problem)
        with self._lock:
            entry = self._studies.get(nct_id)
            target = self._alias_map().get(nct_id)
        if entry is not None:
            return Reply(200, entry.body)
        if target is not None:  # spec: alias ids answer 301 to the actual study
            location = f"/api/v2/studies/{target}" + (f"?{raw_query}" if raw_query else "")
            return Reply(301, b"", "text/plain; charset=utf-8", (("Location", location),))
        return _text(404, f"study {nct_id} not found")

    def _history(self, raw_id: str, version: str | None, query: dict[str, str]) -> Reply:
        nct_id = normalize_nct_id(raw_id)
        if nct_id is None:
            return _text(400, f"invalid NCT ID {raw_id!r}")
        if problem := _check_params(query, (), {"patchToVersion"}):
            return _text(400, problem)
        with self._lock:
            history = self._histories.get(nct_id)
        if history is None:
            return _text(404, f"no history for study {nct_id}")
        changes, bodies = history
        if version is None:
            return Reply(200, _dumps({"changes": changes}))
        if not version.isdigit():
            return _text(400, f"invalid version {version!r}")
        if int(version) >= len(bodies):
            return _text(404, f"study {nct_id} has no version {version}")
        return Reply(200, b'{"studyVersion":%d,"study":%s}' % (int(version), bodies[int(version)]))


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the JSON records of a directory until interrupted."""
    parser = argparse.ArgumentParser(
        description="Stand-in ClinicalTrials.gov API for manual tests."
    )
    parser.add_argument("directory", type=Path, help="directory of <NCTID>.json study records")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--data-timestamp", default=DEFAULT_DATA_TIMESTAMP)
    args = parser.parse_args(argv)
    api = StandinAPI(
        load_records(args.directory),
        host=args.host,
        port=args.port,
        data_timestamp=args.data_timestamp,
        verbose=True,
    )
    with api:
        print(
            f"serving {len(api.study_ids())} studies at {api.base_url}", file=sys.stderr, flush=True
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
