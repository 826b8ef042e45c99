"""A send that a stop waits for: its outcome is known, and carried, before the stop is raised."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from trialdiff.shield import SendStopped, shielded_send


def _interrupt_after(seconds: float) -> threading.Timer:
    """Send this process SIGINT (Ctrl-C) after a while, from another thread."""
    timer = threading.Timer(seconds, os.kill, [os.getpid(), signal.SIGINT])
    timer.start()
    return timer


def test_a_send_returns_its_outcome_and_its_error_is_raised_as_it_is() -> None:
    assert shielded_send(lambda: None, 5, "no answer", "t") is None
    assert shielded_send(lambda: "HTTP 500", 5, "no answer", "t") == "HTTP 500"

    def broken() -> str | None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        shielded_send(broken, 5, "no answer", "t")


def test_a_send_past_its_bound_is_given_up_on() -> None:
    gave_up: list[bool] = []
    started = time.monotonic()
    assert shielded_send(lambda: time.sleep(3) or None, 0.2, "no answer", "t",
                         gave_up=lambda: gave_up.append(True)) == "no answer"
    assert time.monotonic() - started < 2 and gave_up == [True]


def test_a_stop_waits_for_the_send_and_carries_its_outcome() -> None:
    answered: list[str] = []

    def slow() -> str | None:
        time.sleep(0.5)
        answered.append("yes")
        return None

    timer = _interrupt_after(0.1)
    with pytest.raises(SendStopped) as stopped:
        shielded_send(slow, 10, "no answer", "t")
    timer.join()
    assert answered == ["yes"] and stopped.value.error is None
    assert isinstance(stopped.value.stop, KeyboardInterrupt)


def test_a_second_stop_gives_up_on_the_answer() -> None:
    timers = [_interrupt_after(0.1), _interrupt_after(0.3)]
    started = time.monotonic()
    with pytest.raises(SendStopped) as stopped:
        shielded_send(lambda: time.sleep(5) or None, 10, "no answer", "t")
    for timer in timers:
        timer.join()
    assert time.monotonic() - started < 3
    assert (stopped.value.error or "").startswith("stopped twice before the server answered")
