"""Every setting trialdiff reads, in one table: option, environment variable, default."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple

from .errors import UsageError
from .registry import DEFAULT


class Setting(NamedTuple):
    """One setting: the CLI option that sets it, its environment variable, its default."""

    option: str
    envvar: str
    default: str
    help: str


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("--db", "TRIALDIFF_DB",
            "snapshots/trialdiff.db or ~/.local/share/trialdiff/trialdiff.db",
            "SQLite database file: snapshots/trialdiff.db inside a trialdiff checkout, else "
            "$XDG_DATA_HOME/trialdiff/trialdiff.db (see Where the database lives)"),
    Setting("--api", "TRIALDIFF_API", DEFAULT.api_url,
            "ClinicalTrials.gov API v2 base URL"),
    Setting("--page-size", "TRIALDIFF_PAGE_SIZE", "500",
            "studies per API request (tracked ids per batch; page size of queries)"),
    Setting("--delay", "TRIALDIFF_DELAY", "1.0", "seconds to wait between API requests"),
    Setting("--timeout", "TRIALDIFF_TIMEOUT", "60",
            "seconds one read of an API answer may wait for data"),
    Setting("--deadline", "TRIALDIFF_DEADLINE", "120",
            "seconds one whole API request may take: connect, headers and body, however "
            "they trickle"),
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
            "seconds a webhook's whole request (Apprise: each connect and read, and 3 of "
            "them a whole send) may take"),
    Setting("--alert-backoff", "TRIALDIFF_ALERT_BACKOFF", "300",
            "seconds before a failed alert delivery is retried, doubling each time up to 6 hours"),
    Setting("--alert-max-age", "TRIALDIFF_ALERT_MAX_AGE", "72",
            "hours after which an undelivered alert is given up (failed)"),
)

# An observation time (`--at`, an archive folder's date) must fall between these: nothing was
# observed before the registry's launch, and a clock may run ahead of UTC by at most the skew.
REGISTRY_LAUNCH: Final[str] = "2000-02-29"  # ClinicalTrials.gov went public
CLOCK_SKEW_DAYS: Final[int] = 1
# A window of days (`--days`) spans at most a century: longer than the registry has existed,
# and far from date arithmetic's end.
MAX_DAYS: Final[int] = 36_525

BY_OPTION: Final[dict[str, Setting]] = {s.option: s for s in SETTINGS}

# What each API client setting may be, (low, high, whether low itself is refused): a bad number
# is a UsageError (the CLI's exit 2), never a run that loops, waits for ever or overflows. The
# page size is the API's own limit.
CLIENT_BOUNDS: Final[dict[str, tuple[float, float, bool]]] = {
    "page_size": (1, 1000, False), "delay": (0, 3600, False), "timeout": (0, 86_400, True),
    "deadline": (0, 1e9, True), "retries": (0, 100, False), "retry_budget": (0, 86_400, False),
    "max_response_mb": (0, 1_000_000, True),
}
# And each alert delivery setting, in seconds (the max age in hours): a timeout past ~1e10 s
# overflowed the thread timer, and an alert given up after ten years would be no date.
ALERT_BOUNDS: Final[dict[str, tuple[float, float, bool]]] = {
    "alert_timeout": (0, 86_400, True), "alert_backoff": (0, 87_600 * 3600, False),
    "alert_max_age": (0, 87_600, True),
}


def check_number_setting(name: str, value: float) -> None:
    """Raise UsageError unless an API client or alert setting is a number within its bounds."""
    low, high, low_open = {**CLIENT_BOUNDS, **ALERT_BOUNDS}[name]
    if isinstance(value, bool) or not isinstance(value, int | float):  # "0" from a script
        raise UsageError(f"the {name.replace('_', ' ')} must be a number, not {value!r}",
                         setting=name)
    if not ((low < value) if low_open else (low <= value)) or not value <= high:  # NaN fails
        above = f"more than {low:g}" if low_open else f"{low:g} or more"
        raise UsageError(f"the {name.replace('_', ' ')} must be {above}, at most {high:g}, "
                         f"not {value!r}", setting=name)


def setting(option: str) -> Setting:
    """Return the setting a CLI option names."""
    return BY_OPTION[option]


CHECKOUT_DB: Final = Path("snapshots") / "trialdiff.db"


def default_db(cwd: Path | None, environ: Mapping[str, str]) -> Path:
    """Return the database used when neither --db nor TRIALDIFF_DB names one.

    Inside a trialdiff checkout (a folder holding trialdiff's pyproject.toml), or a folder
    that already has snapshots/trialdiff.db (the only default before), it is that file, so
    existing databases stay in use. Anywhere else it is the user's data folder, per the XDG
    base directory spec: $XDG_DATA_HOME (when absolute) or ~/.local/share, then trialdiff/.
    `cwd` is None when the current folder is gone (deleted under a cron job): no checkout.
    """
    try:
        if cwd is not None and ((cwd / CHECKOUT_DB).is_file() or _is_checkout(cwd)):
            return CHECKOUT_DB
    except OSError:  # a snapshots/ folder this user may not look into: not its checkout
        pass
    return xdg_folder(environ, "XDG_DATA_HOME", ".local/share") / "trialdiff" / "trialdiff.db"


def xdg_folder(environ: Mapping[str, str], variable: str, below_home: str) -> Path:
    """Return an XDG base folder: the variable when absolute, else `below_home` under home."""
    value = environ.get(variable, "")  # the spec: a relative value is ignored
    return Path(value) if Path(value).is_absolute() else (
        _home(environ.get("HOME", "")) / below_home)


def _home(home: str) -> Path:
    """Return $HOME, or the account's home when it is unset, empty or relative.

    An empty HOME (`env HOME= ...`) made ~ the root folder, and a relative one the current
    folder: neither is where a user's data goes.
    """
    if Path(home).is_absolute():
        return Path(home)
    try:
        import pwd

        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except (ImportError, KeyError):  # no password database (Windows, a container's uid)
        try:
            return Path.home()
        except RuntimeError:  # HOME unset under a uid with no account: `env -i` in a container
            raise UsageError(f"no home folder for trialdiff's files: HOME is unset and user "
                             f"{os.getuid()} has no account; set HOME, or give each file's path "
                             "(TRIALDIFF_DB, TRIALDIFF_SECRETS)") from None


def _is_checkout(folder: Path) -> bool:
    """Tell whether a folder is a trialdiff source checkout (its pyproject names trialdiff)."""
    try:
        with (folder / "pyproject.toml").open("rb") as handle:
            project = tomllib.load(handle).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):  # someone else's file
        return False
    return isinstance(project, dict) and project.get("name") == "trialdiff"
