"""Bound one whole HTTP request by a deadline: connect, status line, headers and body.

httpx has only per-operation timeouts, so a server that sends each byte just inside the read
timeout holds a request for as long as it likes, in the headers as well as the body. A check
between body pieces cannot reach the headers: the client is blocked inside httpcore until
they end. So a watchdog timer shuts the request's sockets down when the deadline passes; the
blocked read then returns end-of-file at once and httpx raises a TransportError in the
requesting thread, which `Watch.expired` lets the caller report as a missed deadline.

Why this way rather than the alternatives:
- `shutdown()`, not `close()`: on Linux closing a socket another thread is reading does not
  wake the read, and the freed descriptor number could be reused; shutdown wakes it, and the
  descriptor stays owned (and closed) by httpcore in the requesting thread.
- Sockets come from httpx's public `trace` request extension (each new connection's stream),
  not from the pool's private attributes, and a pooled keep-alive socket is remembered from
  the request that opened it. A shut-down idle socket reads as closed, so the pool drops it.
- One `threading.Timer` per request, cancelled and joined when the request ends: no thread
  outlives its request and nothing is left to close. A transport without sockets (a test's
  mock) is simply never shut down; the caller's check between body pieces still bounds it.
A connect is bounded by the connect timeout (`--timeout`); one that ends after the deadline
is shut down as soon as it is made.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from types import TracebackType
from typing import Any


class Sockets:
    """The sockets a client's connections use, for a watchdog to shut down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # the pool owns them
        self._watch: Watch | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """Remember the socket of each new connection (httpx's `trace` request extension)."""
        stream = info.get("return_value") if event.endswith(".complete") else None
        extra = getattr(stream, "get_extra_info", None)  # an httpcore network stream's
        sock = extra("socket") if callable(extra) else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._open.add(sock)
                if self._watch is not None and self._watch.expired:
                    _shut(sock)  # connected after the deadline: end the request now


class Watch:
    """A deadline for one request: `with Watch(sockets, seconds) as watch:` around it."""

    def __init__(self, sockets: Sockets, seconds: float) -> None:
        self.expired = False
        self._sockets = sockets
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True  # never keeps the interpreter alive

    def _fire(self) -> None:
        """Shut down every remembered socket, waking any read blocked on one."""
        with self._sockets._lock:
            if self._sockets._watch is not self:  # the request ended first
                return
            self.expired = True
            for sock in list(self._sockets._open):
                _shut(sock)

    def __enter__(self) -> Watch:
        """Start the timer."""
        with self._sockets._lock:
            self._sockets._watch = self
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the timer and wait for its thread, so none outlives the request."""
        with self._sockets._lock:
            self._sockets._watch = None
        self._timer.cancel()
        self._timer.join()


def _shut(sock: socket.socket) -> None:
    """Shut a socket down both ways; a socket already closed is left alone."""
    # The base method, also for an SSLSocket: its own shutdown() drops the TLS object under
    # the reading thread's feet.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
