"""Send one message so that a stop (Ctrl-C, SIGTERM) waits for its answer, then stops.

A message that went out must be recorded before the process ends, or the next pass sends it
again: a mail server holding the message, or a webhook receiver that has the POST, may answer
a moment after the stop. So the send runs in a thread that no stop reaches, and the caller's
thread waits for it within a bound; a stop that comes meanwhile is kept, and raised once the
send's outcome is known, as SendStopped carrying it. A second stop gives up on the answer.

Not Thread.join for the wait: Python 3.11's join, cut short by a signal, marks a running
thread as ended. The thread is a daemon, given up on when the bound passes.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable


class SendStopped(KeyboardInterrupt):
    """A stop (Ctrl-C, SIGTERM) that came while a message was under way, and how the send went.

    The caller records the send (`error`: why it failed, or None) and then raises `stop`, so a
    message that went out is not sent again by the next pass.
    """

    def __init__(self, stop: KeyboardInterrupt, error: str | None) -> None:
        super().__init__()
        self.stop, self.error = stop, error


def shielded_send(send: Callable[[], str | None], bound: float, no_answer: str,
                  name: str, gave_up: Callable[[], object] = lambda: None) -> str | None:
    """Run `send` (it returns why it failed, or None) where no stop reaches it; return that.

    No answer within `bound` seconds returns `no_answer`, after calling `gave_up`. An
    exception `send` raises is raised here, unless a stop came: then it is the stop's error.
    """
    outcome: list[str | Exception | None] = []
    done = threading.Event()

    def run() -> None:
        if hasattr(signal, "pthread_sigmask"):  # stops reach the waiting thread, at once
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            outcome.append(send())
        except Exception as exc:  # raised in the caller's thread below
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name=name).start()
    stop = None
    deadline = time.monotonic() + bound
    while True:
        try:
            if done.is_set() or (left := deadline - time.monotonic()) <= 0:
                break
            done.wait(left)
        except KeyboardInterrupt as exc:  # the server may have the message already
            if stop is not None:  # a second stop: the user will not wait for the answer
                raise SendStopped(exc, "stopped twice before the server answered: the "
                                       "message may still arrive, and be sent again") from None
            stop = exc
    if not outcome:
        gave_up()
    result = outcome[0] if outcome else no_answer
    if isinstance(result, Exception):
        if stop is None:
            raise result
        result = f"{type(result).__name__}: {result}"
    if stop is not None:
        raise SendStopped(stop, result)
    return result
