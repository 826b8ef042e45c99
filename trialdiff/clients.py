"""Build the registry's API clients from a run's settings (as settings.py names them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import UsageError
from .registry import DEFAULT

DEFAULT_API = "https://clinicaltrials.gov/api/v2"
HOOKS = frozenset({"sleep", "transport", "clock", "jitter"})  # what an API client takes


def checked_hooks(hooks: Mapping[str, Any]) -> dict[str, Any]:
    """Return the API clients' hooks; raise UsageError for one no client takes (a typo)."""
    if unknown := sorted(set(hooks) - HOOKS):
        raise UsageError(f"hooks takes {', '.join(sorted(HOOKS))}, not {', '.join(unknown)}")
    return dict(hooks)


def client_for(api: str, *, page_size: int = 500, delay: float = 1.0, timeout: float = 60.0,
               deadline: float = 120.0, retries: int = 5, retry_budget: float = 300.0,
               max_response_mb: float = 64.0, **hooks: Any) -> Any:
    """Return an API client from settings (as settings.py names them); hooks: sleep, transport."""
    from .fetch import Pacing
    from .settings import check_number_setting

    for name, value in (("page_size", page_size), ("delay", delay), ("timeout", timeout),
                        ("deadline", deadline), ("retries", retries),
                        ("retry_budget", retry_budget), ("max_response_mb", max_response_mb)):
        check_number_setting(name, value)
    pacing = Pacing(delay=delay, timeout=timeout, deadline=deadline, retries=retries,
                    retry_budget=retry_budget, max_bytes=int(max_response_mb * 1024 * 1024),
                    page_size=page_size)
    return DEFAULT.client(api, pacing, **hooks)


def history_client(api: str, **settings: Any) -> Any:
    """Return the record-history endpoints, through a client based at the registry's root."""
    from .history_api import site_root

    return DEFAULT.history(client_for(site_root(api), **settings))
