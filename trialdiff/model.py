"""The two values every stage passes along: a Snapshot of a study and a FieldChange."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from json.encoder import encode_basestring
from typing import Any, Literal

import orjson

from .errors import UsageError
from .settings import CLOCK_SKEW_DAYS, REGISTRY_LAUNCH

ChangeKind = Literal["added", "removed", "changed"]
CHANGE_KINDS: tuple[ChangeKind, ...] = ("added", "removed", "changed")


# A float after ':' ',' or '[': orjson and json write some differently (1e16 and 1e+16), so a
# text with one (or a false alarm in a string) takes the slower writer.
FLOAT_IN_JSON = re.compile(r"[:,\[]-?\d+[.eE]")
_NUMBER_START = tuple("-0123456789")
# Types json refuses, orjson must refuse too, so both writers take the same values.
_ORJSON_AS_JSON = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                   | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS)


def dump_json(value: Any, indent: int | None = None) -> str:
    """Return a value's JSON text: sorted keys, characters unescaped, compact unless indented.

    The one canonical dump: stored values and deltas, exports and reports all write with it,
    so equal values are equal text everywhere. orjson writes the same compact text 5x faster,
    but for floats (1e16 against 1e+16), so a text that may hold one is written by json.
    """
    if indent is None:
        try:
            text = orjson.dumps(value, option=_ORJSON_AS_JSON).decode("utf-8")
        except (orjson.JSONEncodeError, TypeError):  # big integers, lone surrogates, int keys
            text = None
        # orjson writes NaN as null, json as NaN (only Python's parser reads NaN in); a bare
        # number may be a float
        if (text is not None and "null" not in text and text[:1] not in _NUMBER_START
                and FLOAT_IN_JSON.search(text) is None):
            return text
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent,
                      separators=(",", ":") if indent is None else None)


def parse_json(text: str) -> Any:
    """Return a canonical JSON text's value (orjson, else json: NaN, integers past 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def dump_json_head(value: Any, limit: int) -> str:
    """Return the start of `dump_json(value)`: over `limit` characters of it, or all of it."""
    # A report shows 60 characters of a value, and a posted results section dumps to 90 KB:
    # writing it piece by piece stops early. Each piece is dump_json's own text of it.
    if isinstance(value, dict) and value and all(type(key) is str for key in value):
        pieces = ((dump_json(key) + ":", value[key]) for key in sorted(value))
        opening, closing = "{", "}"
    elif isinstance(value, list) and value:
        pieces = (("", item) for item in value)
        opening, closing = "[", "]"
    else:
        return dump_json(value)
    text = opening
    for number, (lead, child) in enumerate(pieces):
        text += ("," if number else "") + lead + dump_json_head(child, limit - len(text))
        if len(text) > limit:
            return text
    return text + closing


def fields_json(fields: Mapping[str, str]) -> str:
    """Return the canonical JSON of a {path: canonical JSON} mapping."""
    body = ",".join(encode_basestring(path) + ":" + fields[path] for path in sorted(fields))
    return "{" + body + "}"


def content_hash(fields: Mapping[str, str]) -> str:
    """Return the SHA-256 of a snapshot's tracked fields in canonical JSON."""
    return hashlib.sha256(fields_json(fields).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """The tracked fields of one study as observed at one time."""

    nct_id: str
    observed_at: str  # ISO 8601 UTC, e.g. 2026-05-12T07:21:49.285Z
    # path -> canonical JSON; absent fields are left out. Not hashed (a dict), so a snapshot
    # hashes by its other fields and equals only with the same fields.
    fields: Mapping[str, str] = field(hash=False)
    source: str = "import"  # import, sync or backfill
    source_version: int | None = None  # the registry's version number, for backfills
    markup: str = "markdown"  # the record's text markup: markdown (API v2) or html (history)

    @cached_property
    def content_hash(self) -> str:
        """Return the hash that identifies this snapshot's content."""
        return content_hash(self.fields)


@dataclass(frozen=True)
class FieldChange:
    """One field of one study that differs between two consecutive snapshots."""

    nct_id: str
    path: str
    kind: ChangeKind
    detected_at: str  # ISO 8601 UTC: when the snapshot that first showed it was observed
    old: Any = field(default=None, hash=False)  # canonical value before; None when added
    new: Any = field(default=None, hash=False)  # canonical value after; None when removed
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Return the change as the JSON object every export carries."""
        return {
            "nct_id": self.nct_id,
            "path": self.path,
            "kind": self.kind,
            "detected_at": self.detected_at,
            "old": self.old,
            "new": self.new,
            "detail": dict(self.detail),
        }


def utc_timestamp(text: str | None = None) -> str:
    """Return an ISO 8601 UTC timestamp with milliseconds, from text or from now.

    Accepts a date (`2026-05-12`, taken as midnight UTC) or a date-time with or without an
    offset (a naive one is taken as UTC). Raises ValueError for anything else.
    """
    if text is None:
        moment = datetime.now(UTC)
    else:
        moment = datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    # Not strftime: its %Y drops the zero padding of years before 1000, which then sort wrongly.
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z")


def observation_time(text: str | date, what: str = "") -> str:
    """Return an observation time as a UTC timestamp; refuse one no observation can have.

    Raises UsageError for text that is not ISO 8601, a time before the registry's launch
    (REGISTRY_LAUNCH), or one in the future beyond CLOCK_SKEW_DAYS: once stored, a future
    observation would refuse every later one of its studies as out of order. `what` names
    where the text came from, as a prefix of the message. A date or datetime (naive: UTC) is
    taken as its ISO 8601 text.
    """
    try:
        stamp = utc_timestamp(text.isoformat() if isinstance(text, date) else text)
    except (ValueError, AttributeError, TypeError):  # AttributeError: neither text nor a date
        raise UsageError(f"{what}{text!r} is not an ISO 8601 date or time") from None
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC (or after 9999)
        raise UsageError(f"{what}{text!r} is out of the calendar in UTC: no study was "
                         "observed then") from None
    if stamp < utc_timestamp(REGISTRY_LAUNCH):
        raise UsageError(f"{what}{text!r} is before ClinicalTrials.gov existed "
                         f"({REGISTRY_LAUNCH}): no study was observed then")
    latest = datetime.now(UTC) + timedelta(days=CLOCK_SKEW_DAYS)
    if stamp > utc_timestamp(latest.isoformat()):
        raise UsageError(f"{what}{text!r} is in the future (more than {CLOCK_SKEW_DAYS} day "
                         f"ahead of now, {utc_timestamp()}): it cannot have been observed yet")
    return stamp


def utc_day(text: str | None = None) -> date:
    """Return the UTC day of a timestamp or date (today when None)."""
    return date.fromisoformat(utc_timestamp(text)[:10])


# Outcomes: what a write run reports, one closed set of values (Outcome) that sinks `match` on.


@dataclass(frozen=True)
class Observation:
    """What saving one record did: whether a snapshot was stored, and its changes."""

    nct_id: str
    stored: bool
    changes: tuple[FieldChange, ...]


@dataclass(frozen=True)
class Failed:
    """One input (a file, a record, a fetched page or batch) that could not be taken in.

    `setting` names the setting (settings.py, without dashes) that could let it through,
    so a front end can point at its own spelling of it.
    """

    where: str
    error: str
    setting: str | None = None
    # (nct_id, observed_at) of an earlier observation in the same input that this failure
    # took back (a conflicting repeat, dedupe.py): its changes are not stored after all.
    undone: tuple[str, str] | None = None


@dataclass(frozen=True)
class Event:
    """Something a run noticed about a study's place in scope, not its content."""

    nct_id: str
    kind: str  # left_scope, returned or moved
    detail: dict[str, Any]


@dataclass(frozen=True)
class PageDone:
    """A page was fetched and saved: `size` studies."""

    size: int
    what: str


@dataclass(frozen=True)
class Backfilled:
    """What one study's backfill stored: its versions, and the changes now stored that were not.

    `replaced` counts changes the rewrite removed: a change sync dated when it saw it, now
    dated by the version that brought it.
    """

    nct_id: str
    versions: tuple[int, ...]
    changes: tuple[FieldChange, ...]
    replaced: int = 0


@dataclass(frozen=True)
class ShapeWarning:
    """An undocumented endpoint answered with keys trialdiff does not know (it went on)."""

    message: str


@dataclass(frozen=True)
class UpToDate:
    """Tracked studies and saved queries not fetched: already fetched under this release."""

    studies: int
    queries: int
    release: str


@dataclass(frozen=True)
class Resumed:
    """Runs a killed process left `running`, now recorded as interrupted."""

    runs: int


@dataclass(frozen=True)
class LeftOut:
    """Files beside an archive's dated folders, not study records, so not imported."""

    where: str
    names: tuple[str, ...]


Outcome = (Observation | Failed | Event | PageDone | Backfilled | ShapeWarning | UpToDate
           | Resumed | LeftOut)
