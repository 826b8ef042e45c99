"""A real webhook receiver on 127.0.0.1: records each POST, answers as scripted."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # the sender died mid-request (a killed run): nothing arrived,
            self.close_connection = True  # and no one is left to acknowledge it to
            return
        receiver = self.server.receiver
        with receiver.lock:
            receiver.arrived += 1  # whole, before any delay: a test can wait for it
        time.sleep(receiver.delay)
        with receiver.lock:
            status = receiver.script.pop(0) if receiver.script else 200
            if 200 <= status < 300:  # what a receiver acknowledges is what it got
                receiver.received.append(Received(self.path, dict(self.headers), body))
            else:
                receiver.refused += 1
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class WebhookReceiver:
    """Serve on 127.0.0.1 in a thread; `script` lists the statuses of the next POSTs."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.script: list[int] = []
        self.received: list[Received] = []
        self.refused = 0
        self.arrived = 0  # POSTs whose body arrived, answered yet or not
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Return the receiver's base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def at(self, path: str) -> list[Received]:
        """Return what arrived at one path, in order."""
        with self.lock:
            return [r for r in self.received if r.path == path]
