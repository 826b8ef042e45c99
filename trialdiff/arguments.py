"""Check the Python API's arguments: NCT ids, one value or several, times, days, URLs (pure)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import date
from urllib.parse import urlsplit

from .errors import UsageError
from .model import utc_day, utc_timestamp
from .normalize import is_nct_id

Ids = str | Iterable[str]  # one NCT id, or several
_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


def checked_ids(values: Ids) -> tuple[str, ...]:
    """Return NCT ids (one, or several) upper-cased, each once; UsageError for a malformed one."""
    checked: dict[str, None] = {}  # an id given twice is one study: backfill fetched it twice
    for value in listed(values):
        nct_id = value.strip().upper()
        if not is_nct_id(nct_id):
            raise UsageError(f"{value!r} is not an NCT id like NCT01234567")
        checked[nct_id] = None
    return tuple(checked)


def listed(values: str | Iterable[str] | None) -> list[str]:
    """Return one value or several as a list: one string is one value, not its characters.

    Anything but strings is refused as such: bytes, a number or None in a list read as their
    characters or failed deep inside with AttributeError.
    """
    if isinstance(values, str):
        return [values]
    if isinstance(values, bytes | bytearray) or not isinstance(values, Iterable | None):
        raise UsageError(f"{values!r} is neither a string nor a list of strings")
    items = list(values or ())
    for item in items:
        if not isinstance(item, str):
            raise UsageError(f"{item!r} in {values!r} is not a string")
    return items


def timestamp_of(value: str | date | None, past: bool = False) -> str | None:
    """Return an ISO 8601 date or time (or a date, a datetime: naive is UTC) as a timestamp.

    `past`: a time after now is refused (a backfill's --since: nothing went public then).
    """
    if value is None:
        return None
    try:
        stamp = utc_timestamp(value.isoformat() if isinstance(value, date) else value)
    except (ValueError, OverflowError, AttributeError):
        raise UsageError(f"{value!r} is not an ISO 8601 date or time") from None
    if past and stamp > utc_timestamp():
        raise UsageError(f"{value!r} is in the future: no version has gone public since")
    return stamp


def checked_wait(wait: float) -> None:
    """Refuse a wait for the write lock that is not a finite number of seconds, 0 or more."""
    # NaN fails every comparison; the API passes anything (a script's "2").
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < math.inf:
        raise UsageError(f"the wait must be a finite number of seconds, 0 or more: {wait!r}")


def checked_limit(limit: int | None) -> None:
    """Refuse a limit of lines that is not a whole number, 1 or more (None: no limit)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"a limit of lines must be 1 or more, not {limit!r}")


def day_of(value: str | date | None) -> date:
    """Return the UTC day of a date, a datetime or a timestamp, or today."""
    return value if type(value) is date else utc_day(timestamp_of(value))


# Outside RFC 3986's characters; a site's base also refuses `(`, `)` and `'`, valid in a URL
# but the end of a Markdown link or of a quoted attribute in the page it goes into.
_URL_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_LINK_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&*+,;=%]")


def check_base_url(url: str, setting: str = "api",
                   example: str = "https://clinicaltrials.gov/api/v2") -> str:
    """Return a base URL without its trailing slash; raise UsageError if it is malformed.

    A malformed API URL fails the same way on every retry, so it is refused at once (exit 2);
    so is a site's base URL (`setting` names which), before a page is written with it.
    """
    text, problem = url.strip(), ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError when the port is out of range)
    except ValueError as exc:
        problem = str(exc)
    else:
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https"):
            problem = "it does not start with http:// or https://"
        elif not (_HOST.fullmatch(host) or ":" in host):  # ":" only in a bracketed IPv6
            problem = "it has no valid host name"
        elif parts.query or parts.fragment or any(c.isspace() for c in text):
            problem = "a base URL has no query, fragment or blanks"
        elif (_URL_UNSAFE if setting == "api" else _LINK_UNSAFE).search(text):
            problem = "a character a URL must percent-encode"
    if problem:
        raise UsageError(f"{url!r} is not a URL like {example} ({problem})", setting=setting)
    return text.rstrip("/")
