"""Every setting trialdiff reads, in one table: option, environment variable, default."""

from __future__ import annotations

from typing import Final, NamedTuple


class Setting(NamedTuple):
    """One setting: the CLI option that sets it, its environment variable, its default."""

    option: str
    envvar: str
    default: str
    help: str


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("--db", "TRIALDIFF_DB", "snapshots/trialdiff.db", "SQLite database file"),
    Setting("--api", "TRIALDIFF_API", "https://clinicaltrials.gov/api/v2",
            "ClinicalTrials.gov API v2 base URL"),
    Setting("--page-size", "TRIALDIFF_PAGE_SIZE", "1000",
            "studies per API request (tracked ids per batch; page size of queries)"),
    Setting("--delay", "TRIALDIFF_DELAY", "1.0", "seconds to wait between API requests"),
    Setting("--timeout", "TRIALDIFF_TIMEOUT", "60", "seconds before one API request times out"),
    Setting("--retries", "TRIALDIFF_RETRIES", "5", "retries of one API request after a fault"),
    Setting("--retry-budget", "TRIALDIFF_RETRY_BUDGET", "300",
            "seconds one API request may spend on retries in all"),
    Setting("--max-response-mb", "TRIALDIFF_MAX_RESPONSE_MB", "64",
            "largest API response accepted, in MB"),
    Setting("--canonical-base", "TRIALDIFF_CANONICAL_BASE", "",
            "base URL of a site's trial pages (trialdiff page)"),
    Setting("--footer", "TRIALDIFF_FOOTER", "", "footer note of a site's trial pages"),
    Setting("--secrets", "TRIALDIFF_SECRETS", "",
            "file of alert targets and secrets, mode 0600 (empty: "
            "$XDG_CONFIG_HOME/trialdiff/secrets.json)"),
    Setting("--alert-timeout", "TRIALDIFF_ALERT_TIMEOUT", "10",
            "seconds before one alert delivery times out"),
    Setting("--alert-backoff", "TRIALDIFF_ALERT_BACKOFF", "300",
            "seconds before a failed alert delivery is retried, doubling each time up to 6 hours"),
    Setting("--alert-max-age", "TRIALDIFF_ALERT_MAX_AGE", "72",
            "hours after which an undelivered alert is given up (failed)"),
)

BY_OPTION: Final[dict[str, Setting]] = {s.option: s for s in SETTINGS}


def setting(option: str) -> Setting:
    """Return the setting a CLI option names."""
    return BY_OPTION[option]
