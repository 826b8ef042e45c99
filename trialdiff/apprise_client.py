"""Send one message through Apprise (the optional `trialdiff[notify]` extra), bounded whole.

Every alert target that is not an http(s) webhook (mail, chat) goes through Apprise. Its log
lines hold the target's URL, secrets and all, so they are collected, never printed, and a
failure says why from them. Apprise bounds each connect and read, not a whole send; a send is
given APPRISE_ROUNDS alert timeouts before it is given up on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import UsageError
from .shield import shielded_send
from .targets import redact

# Apprise logs why a send failed at DEBUG (a mail server's `550 no such user`, an API's
# answer) and only that it failed at WARNING.
_DETAILS = ("Socket Exception", "Response Details")


class _Collect(logging.Handler):
    """Keep Apprise's warnings and failure details, so a failure can say why, unprinted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []  # warnings and worse
        self.details: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.messages.append(message)
        elif message.startswith(_DETAILS):
            self.details.append(" ".join(message.split())[:300])

    def reason(self) -> str:
        """Return why the send failed, as Apprise logged it."""
        return "; ".join([*self.messages[-2:], *self.details[-1:]]) or "Apprise reported a failure"


@contextmanager
def _apprise_logs() -> Iterator[_Collect]:
    """Collect Apprise's log lines instead of letting them reach stderr (they hold URLs)."""
    logger = logging.getLogger("apprise")
    handler, propagate, level = _Collect(), logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


def apprise_available() -> bool:
    """Tell whether the optional Apprise library is installed."""
    try:
        import apprise  # noqa: F401
    except ImportError:
        return False
    return True


def check_apprise_url(url: str) -> None:
    """Raise UsageError unless Apprise is installed and can use a (non-webhook) target URL."""
    if not apprise_available():
        raise UsageError(f"{redact(url)} needs Apprise: pip install 'trialdiff[notify]' "
                         "(only http:// and https:// webhooks work without it)")
    import apprise

    with _apprise_logs():
        usable = apprise.Apprise().add(url)
    if not usable:
        raise UsageError(f"Apprise cannot use {redact(url)}: check the URL against its docs")


MAIL_SCHEMES = ("mailto", "mailtos")  # Apprise's mail targets: sent as HTML and text
_MONOSPACE = '<span style="font-family: monospace">'

# A whole Apprise send may take this many alert timeouts: a mail is several round trips
# (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA), each bounded by one timeout.
APPRISE_ROUNDS = 3


def send_apprise(url: str, title: str, body: str, timeout: float) -> str | None:
    """Send one message through Apprise; return why it failed, or None.

    A stop while the message is under way waits for its outcome (within the same bound), and
    is raised after it as SendStopped.
    """
    if not apprise_available():
        return "Apprise is not installed: pip install 'trialdiff[notify]'"
    import apprise

    abandoned: list[bool] = []
    try:
        with _apprise_logs() as logs:
            sender = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
            if not sender.add(url):
                return "Apprise cannot use this URL"
            told = "overflow" in {key.lower() for key in parse_qs(urlsplit(url).query)}
            for service in sender:
                service.socket_connect_timeout = service.socket_read_timeout = timeout
                if not told:
                    # Apprise sends a message whole unless told otherwise, and Discord (2,000
                    # characters) or Telegram (4,096) refuse a longer one, on every retry: a
                    # digest, or one study's site changes, would never arrive.
                    service.overflow_mode = apprise.OverflowMode.SPLIT
            text, markup = _as_sent(url, body, apprise)

            def deliver() -> str | None:
                sent = sender.notify(title=title, body=text, body_format=markup)
                return None if sent else logs.reason()

            # Apprise bounds each connect and read, not a whole send: a server that answers a
            # byte at a time would hold notify, and the write lock, for as long as it likes.
            # So the send is given up on after APPRISE_ROUNDS timeouts (its thread dies with
            # the process).
            bound = APPRISE_ROUNDS * timeout
            return shielded_send(deliver, bound, f"no answer within {bound:g} s "
                                 f"({APPRISE_ROUNDS} times the alert timeout); the message may "
                                 "still arrive, and be sent again", "trialdiff-apprise",
                                 gave_up=lambda: abandoned.append(True))
    finally:
        if abandoned:  # once the capture has put the logger back: its later lines hold the URL
            _silence_apprise()


def _as_sent(url: str, body: str, apprise: Any) -> tuple[str, Any]:
    """Return a Markdown body as a target takes it best: a mail's as HTML, code as monospace."""
    if urlsplit(url).scheme.lower() not in MAIL_SCHEMES:
        return body, apprise.NotifyFormat.MARKDOWN
    from apprise import conversion

    # A mail's text/plain part is Apprise's own text of its HTML, which starts a line at every
    # <code>, as at a paragraph: a change would read one word a line. Code as a monospace span
    # keeps each change one line there, and looks the same in the HTML part.
    convert: Any = conversion.convert_between  # untyped in some Apprise releases
    html = convert(apprise.NotifyFormat.MARKDOWN, apprise.NotifyFormat.HTML, body)
    html = html.replace("<code>", _MONOSPACE).replace("</code>", "</span>")
    return html, apprise.NotifyFormat.HTML


def _silence_apprise() -> None:
    """Keep Apprise's log lines from stderr for the rest of the process (they hold URLs)."""
    logger = logging.getLogger("apprise")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
