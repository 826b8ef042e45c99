"""Check the Python API's arguments: NCT ids, one value or several, times and days (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from .errors import UsageError
from .model import utc_day, utc_timestamp
from .normalize import is_nct_id

Ids = str | Iterable[str]  # one NCT id, or several


def checked_ids(values: Ids) -> tuple[str, ...]:
    """Return NCT ids (one, or several) upper-cased; raise UsageError for a malformed one."""
    checked = []
    for value in listed(values):
        nct_id = value.strip().upper()
        if not is_nct_id(nct_id):
            raise UsageError(f"{value!r} is not an NCT id like NCT01234567")
        checked.append(nct_id)
    return tuple(checked)


def listed(values: str | Iterable[str] | None) -> list[str]:
    """Return one value or several as a list: one string is one value, not its characters."""
    return [values] if isinstance(values, str) else list(values or ())


def timestamp_of(value: str | date | None) -> str | None:
    """Return an ISO 8601 date or time (or a date, a datetime: naive is UTC) as a timestamp."""
    if value is None:
        return None
    try:
        return utc_timestamp(value.isoformat() if isinstance(value, date) else value)
    except (ValueError, OverflowError, AttributeError):
        raise UsageError(f"{value!r} is not an ISO 8601 date or time") from None


def day_of(value: str | date | None) -> date:
    """Return the UTC day of a date, a datetime or a timestamp, or today."""
    return value if type(value) is date else utc_day(timestamp_of(value))
