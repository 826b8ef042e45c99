"""The record-history endpoints behind the registry's website: the only code that knows them.

They are undocumented, so this adapter checks every answer's shape and raises ShapeError
rather than let something wrong be stored. It reads them as the published clients do: cthist
(R/clinicaltrials_gov_dates.R, R/clinicaltrials_gov_version.R) and ctrdata
(R/ctrLoadQueryIntoDbCtgov2.R) list versions with `/api/int/studies/{id}?history=true`
(`history.changes`) and read each with `/api/int/studies/{id}/history/{v}` (`studyVersion`,
`study`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from .errors import FetchError, ForbiddenError, ShapeError, UsageError
from .fetch import Client
from .model import ShapeWarning
from .registry import DEFAULT, text_at

DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The listing's two routes: the one the website, cthist and ctrdata use first, then the other.
ROUTES = ("?history=true", "/history")
_TOP_KEYS = {"?history=true": frozenset({"study", "history"}), "/history": frozenset({"changes"})}
HISTORY_KEYS = frozenset({"changes", "originalData", "lastUpdateVersions", "outcomesUpdateCount"})
ENTRY_KEYS = frozenset({"version", "date", "status", "studyType", "moduleLabels",
                        "lastUpdateSubmitQcDate"})
VERSION_KEYS = frozenset({"studyVersion", "study"})


@dataclass(frozen=True)
class Version:
    """One entry of a study's version listing."""

    number: int
    qc_day: str  # the listing's `date`: when the registry QC'd it, YYYY-MM-DD
    status: str | None
    module_labels: tuple[str, ...]


class _RouteFailed(Exception):
    """A listing route did not answer with a listing; the other route is tried."""


def site_root(api_base: str) -> str:
    """Return the registry's root: the API v2 base without its trailing `/api/v2`."""
    base = api_base.rstrip("/")
    if not base.endswith("/api/v2"):
        raise UsageError(f"{api_base!r} does not end in /api/v2, so there is no /api/int",
                         setting="api")
    return base[: -len("/api/v2")]


@dataclass
class HistoryAPI:
    """The record-history endpoints, through a client based at the registry's root."""

    client: Client
    routes: list[str] = field(default_factory=lambda: list(ROUTES))
    _warned: set[str] = field(default_factory=set)
    _pending: list[str] = field(default_factory=list)

    def warnings(self) -> Iterator[ShapeWarning]:
        """Yield the shape warnings raised since last asked, each once per run."""
        while self._pending:
            yield ShapeWarning(self._pending.pop(0))

    def _unknown(self, where: str, keys: set[str] | frozenset[str], nct_id: str) -> None:
        """Warn, once per place, about keys an answer has that trialdiff does not know."""
        if keys and where not in self._warned:
            self._warned.add(where)
            self._pending.append(f"{where} has keys trialdiff does not know: "
                                 f"{', '.join(sorted(keys))} (first seen for {nct_id}); "
                                 "they were ignored")

    def listing(self, nct_id: str) -> list[Version]:
        """Return a study's versions, trying each listing route, the last one that worked first.

        Raises ShapeError when neither route gives a listing for a study API v2 knows, and
        FetchError when API v2 does not know the study either.
        """
        problems: list[str] = []
        statuses: list[int] = []
        for route in list(self.routes):
            query = route.startswith("?")
            path = f"/api/int/studies/{nct_id}" + ("" if query else route)
            status, body, _ = self.client.get_json(path, {"history": "true"} if query else {})
            statuses.append(status)
            try:
                if status != 200:
                    raise _RouteFailed(f"answered {status}")
                entries = self._entries(nct_id, route, body)
            except _RouteFailed as exc:
                problems.append(f"{path}{route if query else ''} {exc}")
                continue
            if route != self.routes[0]:  # remember it: the next study asks this one first
                self.routes.remove(route)
                self.routes.insert(0, route)
                if 200 in statuses[:-1]:  # the other route answered, but not with a listing
                    used = path + (route if query else "")
                    self._pending.append(f"{nct_id}: {problems[-1]}; used {used} instead")
            return self._versions(nct_id, entries)
        known = ""
        if all(s == 404 for s in statuses):
            self._require_known(nct_id)
            known = "API v2 knows this study but "
        raise ShapeError(f"{nct_id}: {known}no record-history listing answers "
                         f"({'; '.join(problems)}); the endpoints changed shape, so nothing "
                         "was stored")

    def _require_known(self, nct_id: str) -> None:
        """Raise FetchError if API v2 does not know a study (so it has no history either)."""
        status, _, headers = self.client.get_json(f"/api/v2/studies/{nct_id}")
        if status == 404:
            raise FetchError("not in the registry (404 from API v2 and from both "
                             "record-history listings)")
        if status in (301, 302, 307, 308):
            moved = headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1].split("?")[0]
            raise FetchError(f"the registry now answers it as {moved}; backfill that")

    def _entries(self, nct_id: str, route: str, body: Any) -> list[Any]:
        """Return a listing's entries, or raise _RouteFailed if the answer is not a listing."""
        if not isinstance(body, dict):
            raise _RouteFailed("answered with something other than a JSON object")
        where = "/api/int/studies/{id}" + route
        if missing := _TOP_KEYS[route] - body.keys():
            raise _RouteFailed(f"answered without the keys {', '.join(sorted(missing))}")
        if route.startswith("?"):
            history = body["history"]
            if not isinstance(history, dict):
                raise _RouteFailed("answered with a `history` that is not an object")
            if missing := HISTORY_KEYS - history.keys():
                raise _RouteFailed("answered without the keys "
                                   + ", ".join("history." + k for k in sorted(missing)))
            self._unknown(where, body.keys() - _TOP_KEYS[route], nct_id)
            self._unknown(where + " `history`", history.keys() - HISTORY_KEYS, nct_id)
        else:
            history = body  # the same object, at the top level
            self._unknown(where, body.keys() - HISTORY_KEYS, nct_id)
        if not isinstance(history["changes"], list):
            raise _RouteFailed("answered with `changes` that is not a list")
        return history["changes"]

    def _versions(self, nct_id: str, entries: list[Any]) -> list[Version]:
        """Check a listing's entries: contiguous from 0, dated, dates never going back."""
        if not entries:  # a failed answer, not a study without history: it is asked again
            raise FetchError(f"{nct_id}: its record-history listing holds no version (every "
                             "study has version 0); nothing was stored: run backfill again")
        versions: list[Version] = []
        for expected, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ShapeError(f"{nct_id}: history entry {expected} is not an object; "
                                 "nothing was stored")
            if missing := ENTRY_KEYS - entry.keys():
                raise ShapeError(f"{nct_id}: history entry {expected} lacks the keys "
                                 f"{', '.join(sorted(missing))}; nothing was stored")
            self._unknown("a history listing entry", entry.keys() - ENTRY_KEYS, nct_id)
            day, labels, status = entry["date"], entry["moduleLabels"], entry["status"]
            if entry["version"] != expected or not is_day_gone_by(day):
                raise ShapeError(f"{nct_id}: history versions are not contiguous from 0 with "
                                 f"dates (entry {expected}: {entry!r:.80}); nothing was stored")
            if versions and day < versions[-1].qc_day:
                raise ShapeError(f"{nct_id}: version {expected} is dated {day}, before version "
                                 f"{expected - 1} ({versions[-1].qc_day}): the version dates go "
                                 "backwards; nothing was stored")
            if not isinstance(labels, list | None) or not all(isinstance(x, str)
                                                             for x in labels or ()):
                raise ShapeError(f"{nct_id}: version {expected}'s moduleLabels is not a list "
                                 "of names; nothing was stored")
            versions.append(Version(expected, day, status if isinstance(status, str) else None,
                                    tuple(labels or ())))
        return versions

    def version(self, nct_id: str, number: int) -> tuple[dict[str, Any], str | None]:
        """Return one version's study object and the day it went public, if the body says."""
        path = f"/api/int/studies/{nct_id}/history/{number}"
        try:
            status, body, _ = self.client.get_json(path)
        except ForbiddenError as exc:
            # The listing just answered this client, so this 403 is not its User-Agent: it
            # is how the registry says a version number is past the last one.
            raise FetchError(f"no such version {number} (the registry answers 403 "
                             "past a study's last version); its listing changed, so run "
                             "backfill again") from exc
        if status != 200:  # this study's: the others may still answer (the run goes on)
            raise FetchError(f"{nct_id} version {number}: unexpected answer {status}; run "
                             "backfill again")
        if not isinstance(body, dict):
            raise ShapeError(f"{nct_id} version {number}: the body is not an object")
        if missing := VERSION_KEYS - body.keys():
            raise ShapeError(f"{nct_id} version {number}: the body lacks the keys "
                             f"{', '.join(sorted(missing))}; nothing more was stored")
        self._unknown("/api/int/studies/{id}/history/{v}", body.keys() - VERSION_KEYS, nct_id)
        if body["studyVersion"] != number:
            raise ShapeError(f"{nct_id} version {number}: the body is version "
                             f"{body['studyVersion']!r}; nothing more was stored")
        study = body["study"]
        own = DEFAULT.study_id(study)
        if own != nct_id:
            raise ShapeError(f"{nct_id} version {number}: the body is for {own!r}; "
                             "nothing more was stored")
        posted = text_at(study, "protocolSection", "statusModule", "lastUpdatePostDateStruct",
                         "date")
        if posted and DAY.fullmatch(posted) and not is_day_gone_by(posted):
            # Stored, it would date a snapshot after every later sync, which would be refused.
            raise ShapeError(f"{nct_id} version {number}: posted on {posted}, which is no day "
                             "gone by; nothing more was stored")
        return study, posted if posted and DAY.fullmatch(posted) else None


def is_day_gone_by(day: object) -> bool:
    """Tell whether a value is a calendar day (YYYY-MM-DD) up to today (UTC)."""
    if not isinstance(day, str) or not DAY.fullmatch(day):
        return False
    try:
        date.fromisoformat(day)
    except ValueError:  # 2025-02-30
        return False
    return day <= datetime.now(UTC).date().isoformat()
