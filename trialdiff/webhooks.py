"""POST trialdiff's JSON webhook, signed and idempotent, each request bounded whole (notify's).

httpx's timeout bounds each read, so a receiver that sends its answer a byte a second held a
delivery, and the write lock with it, for minutes. Each POST runs under a `deadline.Watch` of
the alert timeout, as the registry client's requests run under `--deadline`: connect, status
line, headers and body within it, or the delivery fails (and stays pending).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager

from . import __version__
from .deadline import Sockets, Watch


def signature(secret: str, body: bytes) -> str:
    """Return the X-Trialdiff-Signature value: sha256= and the HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookClient:
    """One httpx client for a delivery pass (its TLS setup is the costly part)."""

    def __init__(self, timeout: float) -> None:
        import httpx

        self.timeout = timeout
        self._sockets = Sockets()
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        """Close its connections."""
        self._http.close()

    def post(self, url: str, body: bytes, key: str, secret: str | None) -> str | None:
        """POST a webhook body; return why it failed, or None for a 2xx."""
        import httpx

        headers = {"Content-Type": "application/json", "Idempotency-Key": key,
                   "User-Agent": f"trialdiff/{__version__}"}
        if secret:
            headers["X-Trialdiff-Signature"] = signature(secret, body)
        with Watch(self._sockets, self.timeout) as watch:
            try:
                # The status is the answer: its body is never read (a receiver that sends a
                # large or slow one after its 2xx has had the alert).
                with self._http.stream("POST", url, content=body, headers=headers,
                                       extensions={"trace": self._sockets.trace}) as answer:
                    status = answer.status_code
            except httpx.HTTPError as exc:
                if watch.expired:
                    return f"took longer than the {self.timeout:g} s alert timeout"
                return f"{type(exc).__name__}: {exc}"
        return None if 200 <= status < 300 else f"HTTP {status}"


@contextmanager
def webhook_client(timeout: float, needed: bool = True) -> Iterator[WebhookClient | None]:
    """Yield a webhook client for one delivery pass, or None when it has nothing to send."""
    if not needed:
        yield None
        return
    client = WebhookClient(timeout)
    try:
        yield client
    finally:
        client.close()
