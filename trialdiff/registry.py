"""What is specific to one trial registry, behind one small protocol.

Everything else in trialdiff works on field paths, snapshots and changes. What ties it to
ClinicalTrials.gov is gathered here: the study id's form and place in a record, the parts of a
record that change without the sponsor changing the study (the gate ignores them), the field
table, the study's summary columns, its public URL, and the API client with its
record-history adapter. `CTGOV` is the one implementation and `DEFAULT` the registry callers
use unless given another; a second registry is a second object of this protocol, not edits
across the tree.

The module is a table: importing it does no I/O and loads no HTTP library, so the pure stages
(normalize, diff) may use it. Only `client()` and `history()` reach up, to `fetch` and
`history_api`, when called.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote

from .fields import FIELDS, IGNORED_SOURCES, Field

if TYPE_CHECKING:
    from .fetch import Client, Pacing
    from .history_api import HistoryAPI


class Registry(Protocol):
    """One registry: its ids, its records' volatile parts, fields, summary, URLs and client."""

    @property
    def name(self) -> str:
        """Return the registry's name, as users know it."""
        ...

    @property
    def id_pattern(self) -> re.Pattern[str]:
        """Return the pattern a well-formed study id matches in full."""
        ...

    @property
    def volatile(self) -> tuple[str, ...]:
        """Return the top-level record keys the gate ignores (re-stamped by every release)."""
        ...

    @property
    def fields(self) -> tuple[Field, ...]:
        """Return the field table: each public path and its source in a record."""
        ...

    @property
    def ignored(self) -> tuple[str, ...]:
        """Return the record sources that are bookkeeping, never a change."""
        ...

    @property
    def api_url(self) -> str:
        """Return the API's default base URL."""
        ...

    def is_id(self, text: str) -> bool:
        """Tell whether a string is a well-formed study id."""
        ...

    def normalize_id(self, text: str) -> str | None:
        """Return a study id as stored (trimmed, upper-cased), or None when malformed."""
        ...

    def study_id(self, record: Any) -> str | None:
        """Return a record's study id, or None when it is not a study record."""
        ...

    def peek_id(self, raw: bytes) -> str | None:
        """Return the study id a record's bytes hold, without parsing them; None if unsure."""
        ...

    def summary_columns(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return the study columns that make a changelog readable without the record."""
        ...

    def study_url(self, study_id: str) -> str:
        """Return the study's public page on the registry's website."""
        ...

    def client(self, base_url: str | None = None, pacing: Pacing | None = None,
               **options: Any) -> Client:
        """Return an API client (`options` go to it: transport, sleep, clock)."""
        ...

    def history(self, client: Client) -> HistoryAPI:
        """Return the record-history adapter over a client based at the registry's site root."""
        ...


def text_at(record: Any, *keys: str) -> str | None:
    """Return the string at a key path of a record, or None if anything on the way is not."""
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record if isinstance(record, str) else None


_NCT_OPENING = re.compile(rb'\{"protocolSection":\{"identificationModule":\{"nctId":"(NCT\d{8})"')


@dataclass(frozen=True)
class ClinicalTrialsGov:
    """ClinicalTrials.gov, through its API v2."""

    name: str = "ClinicalTrials.gov"
    id_pattern: re.Pattern[str] = re.compile(r"NCT[0-9]{8}")
    volatile: tuple[str, ...] = ("derivedSection",)
    fields: tuple[Field, ...] = FIELDS
    ignored: tuple[str, ...] = IGNORED_SOURCES
    api_url: str = "https://clinicaltrials.gov/api/v2"
    site_url: str = "https://clinicaltrials.gov/study/"

    def is_id(self, text: str) -> bool:
        """Tell whether a string is a well-formed NCT id."""
        return self.id_pattern.fullmatch(text) is not None

    def normalize_id(self, text: str) -> str | None:
        """Return an NCT id trimmed and upper-cased, or None when it is not one."""
        study_id = text.strip().upper()
        return study_id if self.is_id(study_id) else None

    def study_id(self, record: Any) -> str | None:
        """Return a record's NCT id, or None when it is not a study object."""
        if not isinstance(record, dict):
            return None
        try:
            nct_id = record["protocolSection"]["identificationModule"]["nctId"]
        except (KeyError, TypeError):
            return None
        if isinstance(nct_id, str) and self.is_id(nct_id):
            return nct_id
        return None

    def peek_id(self, raw: bytes) -> str | None:
        """Return the NCT id a compact record opens with, as the API writes every record.

        The bytes must begin `{"protocolSection":{"identificationModule":{"nctId":"NCT…"`:
        that is the id a parse would find (bar a repeated key, which only a hostile record
        has); anything else gives None, and the record is parsed to know.
        """
        found = _NCT_OPENING.match(raw)
        return found.group(1).decode("ascii") if found else None

    def summary_columns(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return the title, overall status and last update post date of a record."""
        p = "protocolSection"
        return {
            "brief_title": text_at(record, p, "identificationModule", "briefTitle"),
            "overall_status": text_at(record, p, "statusModule", "overallStatus"),
            "last_update_post_date": text_at(record, p, "statusModule",
                                             "lastUpdatePostDateStruct", "date"),
        }

    def study_url(self, study_id: str) -> str:
        """Return the study's page on clinicaltrials.gov."""
        return self.site_url + quote(study_id, safe="")

    def client(self, base_url: str | None = None, pacing: Pacing | None = None,
               **options: Any) -> Client:
        """Return an API v2 client at a base URL (default: the public API)."""
        from .fetch import Client, Pacing  # here: the tables above load no HTTP library

        return Client(base_url or self.api_url, pacing or Pacing(), **options)

    def history(self, client: Client) -> HistoryAPI:
        """Return the adapter of the website's record-history endpoints (history_api)."""
        from .history_api import HistoryAPI  # here, as in client()

        return HistoryAPI(client)


CTGOV: Final = ClinicalTrialsGov()
DEFAULT: Final[Registry] = CTGOV
