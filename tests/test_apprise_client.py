"""Apprise sends, bounded whole: a mail server that answers a byte at a time is given up on."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import raw_server

from trialdiff.apprise_client import APPRISE_ROUNDS, check_apprise_url, send_apprise
from trialdiff.errors import UsageError


@pytest.fixture
def dripping_smtp() -> Iterator[int]:
    """Serve SMTP on 127.0.0.1 that sends its greeting one byte every 0.1 s, and never ends it."""
    def drip(conn: socket.socket, stop: threading.Event) -> None:
        # Each byte comes well inside any read timeout: only a bound on the whole send ends it.
        while not stop.wait(0.1):
            conn.sendall(b"2")

    with raw_server(drip, listens_first=False) as port:
        yield port


def test_a_send_that_never_ends_is_given_up_after_its_rounds_of_the_timeout(
    dripping_smtp: int
) -> None:
    url = (f"mailto://user:s3cretpw@127.0.0.1:{dripping_smtp}?from=trialdiff@example.org"
           "&to=ops@example.org")
    started = time.monotonic()
    error = send_apprise(url, "title", "body", timeout=0.5)
    took = time.monotonic() - started
    assert error == ("no answer within 1.5 s (3 times the alert timeout); the message may "
                     "still arrive, and be sent again")
    assert APPRISE_ROUNDS * 0.5 <= took < APPRISE_ROUNDS * 0.5 + 2  # not the drip's forever
    assert "s3cretpw" not in error
    # The abandoned send's later log lines (they name the URL) never reach stderr.
    logger = logging.getLogger("apprise")
    assert logger.propagate is False
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_a_url_apprise_cannot_use_is_a_usage_error_naming_it_redacted() -> None:
    with pytest.raises(UsageError, match=r"^Apprise cannot use nosuchservice://"):
        check_apprise_url("nosuchservice://T0KEN/abc")
    check_apprise_url("slack://T1/B2/C3")
