"""The webhook POST: signed, and bounded whole by the alert timeout against a real socket."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import socket
import threading
import time
from collections.abc import Iterable, Iterator

import pytest
from conftest import raw_server
from webhook_receiver import WebhookReceiver

from trialdiff.webhooks import signature, webhook_client


def test_the_signature_is_githubs_hmac_sha256_of_the_body() -> None:
    body = b'{"watch":"stops"}'
    expected = hmac.new(b"whsec", body, hashlib.sha256).hexdigest()
    assert signature("whsec", body) == f"sha256={expected}"


def _slowly(data: Iterable[int], conn: socket.socket, stop: threading.Event) -> None:
    """Send bytes one every 0.2 s until they end or the server stops."""
    for byte in data:
        if stop.is_set():
            return
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


@pytest.fixture
def dripping() -> Iterator[str]:
    """Serve an answer whose status line and headers come a byte every 0.2 s."""
    with raw_server(lambda conn, stop: _slowly(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", conn, stop)) as port:
        yield f"http://127.0.0.1:{port}/hook"


def test_a_receiver_that_drips_its_answer_is_cut_at_the_alert_timeout(dripping: str) -> None:
    # Each byte comes well inside the read timeout, so only a deadline on the whole request
    # ends it: 38 bytes at 0.2 s would hold the delivery (and the write lock) for 7.6 s.
    with webhook_client(1.0) as client:
        assert client is not None
        started = time.monotonic()
        error = client.post(dripping, b"{}", "key-1", None)
        spent = time.monotonic() - started
    assert error == "took longer than the 1 s alert timeout"
    assert spent < 3.0


def test_a_2xx_is_delivered_and_anything_else_is_named(receiver: WebhookReceiver) -> None:
    receiver.script = [500]
    with webhook_client(5.0) as client:
        assert client is not None
        assert client.post(f"{receiver.url}/a", b"{}", "key-1", "whsec") == "HTTP 500"
        assert client.post(f"{receiver.url}/a", b"{}", "key-1", "whsec") is None
    (arrived,) = receiver.at("/a")
    assert arrived.headers["Idempotency-Key"] == "key-1"
    assert arrived.headers["X-Trialdiff-Signature"] == signature("whsec", b"{}")


def test_a_pass_with_nothing_to_send_makes_no_client() -> None:
    with webhook_client(1.0, needed=False) as client:
        assert client is None



@pytest.fixture
def big_answer() -> Iterator[str]:
    """Serve a 200 that goes on with a 2 GB body, a byte every 0.2 s."""
    def answer(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000000\r\n\r\n")
        _slowly(itertools.repeat(ord("x"), 2_000_000_000), conn, stop)

    with raw_server(answer) as port:
        yield f"http://127.0.0.1:{port}/hook"


def test_a_2xx_is_the_answer_whatever_body_comes_after_it(big_answer: str) -> None:
    # The body was read whole: a receiver's slow or huge body after its 2xx failed the
    # delivery at the timeout (so it was sent again every pass) and held 2 GB of memory.
    with webhook_client(1.0) as client:
        assert client is not None
        started = time.monotonic()
        assert client.post(big_answer, b"{}", "key-1", None) is None
        assert time.monotonic() - started < 1.0
