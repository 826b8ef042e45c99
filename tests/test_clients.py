"""The API clients a run builds: its settings checked by the library's own bounds."""

from __future__ import annotations

import inspect

import pytest

from trialdiff.clients import DEFAULT_API, client_for, history_client
from trialdiff.errors import UsageError
from trialdiff.settings import SETTINGS


@pytest.mark.parametrize(("setting", "value"), [
    ("page_size", 0), ("page_size", 1001), ("timeout", 0), ("deadline", -1),
    # Once taken by the library (the CLI refused them), or ending in a ValueError, or for an
    # infinite deadline in tracebacks from the deadline's thread:
    ("delay", float("nan")), ("delay", -1.0), ("retries", -1), ("retry_budget", -5.0),
    ("timeout", float("nan")), ("max_response_mb", float("nan")), ("deadline", float("inf")),
])
def test_client_settings_out_of_range_are_refused_naming_the_setting(
    setting: str, value: float
) -> None:
    # The CLI checks its numbers first, by the same bounds; a script reaches these directly.
    with pytest.raises(UsageError) as caught:
        client_for("https://clinicaltrials.gov/api/v2", **{setting: value})
    assert caught.value.setting == setting and "--" not in str(caught.value)
    assert str(caught.value).startswith(f"the {setting.replace('_', ' ')} must be ")


def test_the_clients_are_based_where_the_settings_say() -> None:
    client = client_for("http://127.0.0.1:9/api/v2", delay=0)
    try:
        assert str(client.base_url).rstrip("/") == "http://127.0.0.1:9/api/v2"
    finally:
        client.close()
    history = history_client("http://127.0.0.1:9/api/v2", delay=0)  # the site's root
    try:
        assert str(history.client.base_url).rstrip("/") == "http://127.0.0.1:9"
    finally:
        history.client.close()
    table = {entry.option: entry.default for entry in SETTINGS}
    assert table["--api"] == DEFAULT_API
    assert set(inspect.signature(client_for).parameters) >= {"page_size", "delay", "retries"}
