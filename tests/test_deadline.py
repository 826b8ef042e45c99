"""The deadline watchdog (deadline): a request's real sockets shut down when its time is up."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from trialdiff.deadline import Sockets, Watch


class Stream:
    """A connection's network stream as httpcore's trace hands it over: it names its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> socket.socket | None:
        """Return the stream's socket."""
        return self.sock if name == "socket" else None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Return two connected sockets: the client's end and the server's."""
    client, server = socket.socketpair()
    yield client, server
    client.close()
    server.close()


def connected(sockets: Sockets, sock: socket.socket) -> None:
    """Tell the watchdog of a new connection, as httpx's `trace` extension does."""
    sockets.trace("connection.connect_tcp.started", {})  # no stream yet: nothing to keep
    sockets.trace("connection.connect_tcp.complete", {"return_value": Stream(sock)})


def test_a_read_blocked_past_the_deadline_is_woken_and_the_watch_expires(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = pair
    sockets = Sockets()
    connected(sockets, client)
    started = time.monotonic()
    with Watch(sockets, 0.2) as watch:
        assert client.recv(1) == b""  # the server never sends: the shutdown ends the read
    assert watch.expired
    assert 0.2 <= time.monotonic() - started < 5


def test_a_request_done_in_time_shuts_nothing_and_leaves_no_thread(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    sockets = Sockets()
    connected(sockets, client)
    threads = threading.active_count()
    with Watch(sockets, 0.3) as watch:
        server.sendall(b"a")
        assert client.recv(1) == b"a"
    assert not watch.expired and threading.active_count() == threads
    time.sleep(0.5)  # past the deadline: the cancelled timer does nothing
    server.sendall(b"b")  # the kept-alive socket still works for the next request
    assert client.recv(1) == b"b" and not watch.expired


def test_a_connection_made_after_the_deadline_is_shut_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _ = pair
    sockets = Sockets()
    with Watch(sockets, 0.05) as watch:
        time.sleep(0.3)  # a connect that took longer than the whole deadline
        assert watch.expired
        connected(sockets, client)
        client.settimeout(5)
        assert client.recv(1) == b""


def test_an_http_server_that_never_answers_is_cut_off_at_the_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    holder = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    holder.start()
    sockets = Sockets()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/api/v2/version"
    started = time.monotonic()
    try:
        with (httpx.Client(timeout=30) as client, Watch(sockets, 0.3) as watch,
              pytest.raises(httpx.TransportError)):  # not the 30 s read timeout
            client.get(url, extensions={"trace": sockets.trace})
        assert watch.expired and time.monotonic() - started < 5
    finally:
        holder.join(5)
        for sock in (*accepted, listener):
            sock.close()
