"""The CLI's sinks for a write run: the printer of outcomes, and alert delivery after commit."""

from __future__ import annotations

import codecs
import io
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..model import (
    Backfilled,
    Event,
    Failed,
    FieldChange,
    LeftOut,
    Observation,
    Outcome,
    PageDone,
    Resumed,
    ShapeWarning,
    UpToDate,
)
from ..render import plural, visible

if TYPE_CHECKING:  # the engine loads when a command runs, so `trialdiff recent` starts fast
    from ..lifecycle import Run

# How the CLI names the setting an error is about (the library's messages name no flag):
# (text before the message, text after it).
SETTING_WORDS: dict[str, tuple[str, str]] = {
    "api": ("--api ", ""),
    "canonical_base": ("--canonical-base ", ""),
    "wait": ("", " (use --wait SECONDS to wait)"),
    "db": ("", ": give --db a new file or a trialdiff database"),
    "at": ("", ": leave out --at"),
    "max_response_mb": ("", " (raise --max-response-mb to accept it)"),
    "page_size": ("", ""),
    "timeout": ("", ""),
    "alert_timeout": ("--alert-timeout: ", ""),
    "alert_backoff": ("--alert-backoff: ", ""),
    "alert_max_age": ("--alert-max-age: ", ""),
    "secrets": ("", " (--secrets PATH or TRIALDIFF_SECRETS)"),
}


def worded(message: str, setting: str | None) -> str:
    """Return an error message with the CLI's words for the setting it is about."""
    before, after = SETTING_WORDS.get(setting or "", ("", ""))
    return before + message + after


def say(text: str) -> OSError | None:
    """Print a line of a write run's report; a stdout that fails does not stop the run.

    Return the error of a stdout that cannot be written (a full disk), after which nothing
    more goes to it; a reader that left (`| head`) is no error.
    """
    try:
        click.echo(text)
    except OSError as exc:  # the report is lost, but the run's work is not done
        from . import discard_stdout

        discard_stdout()
        return None if isinstance(exc, BrokenPipeError) else exc
    return None


def print_error(where: str, error: str) -> None:
    """Name a failed input on stderr, with its reason."""
    click.echo(f"trialdiff: {where}: {error}", err=True)


def summary_line(command: str, run: Run) -> str:
    """Return a run's summary: studies checked, changed, changes by kind, failures."""
    kinds = ", ".join(f"{run.by_kind[k]} {k}" for k in sorted(run.by_kind))
    return (
        f"{command}: {plural(run.checked, 'study', 'studies')} checked, "
        f"{run.changed} changed, {plural(run.changes, 'change')}"
        + (f" ({kinds})" if kinds else "") + f", {run.failed} failed"
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM (cron's `timeout`, systemd), taken as Ctrl-C is: a run under way is recorded."""


def terminate(signum: int, frame: Any) -> NoReturn:
    """Stop the command as Ctrl-C would, as Terminated (a SIGTERM handler)."""
    raise Terminated


# Stops Python could not raise (see keep_stops), raised again at the next outcome shown.
_SWALLOWED: list[KeyboardInterrupt] = []


def keep_stops(unraisable: Any) -> None:
    """Keep a stop Python swallowed, to raise it again (the process's sys.unraisablehook).

    A signal's handler raises wherever the process is: inside a weakref callback or a
    `__del__`, Python prints "Exception ignored" and goes on, and a probe's SIGTERM'd sync ran
    to its end, recorded ok. Anything else unraisable is printed as Python prints it.
    """
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _SWALLOWED.append(unraisable.exc_value)
    else:
        sys.__unraisablehook__(unraisable)


def stopped(stop: BaseException) -> tuple[str, int]:
    """Return how a stop is worded, and its exit code: 128 and the signal, as a shell says."""
    return ("terminated", 143) if isinstance(stop, Terminated) else ("interrupted", 130)


def write_utf8() -> None:
    """Write stdout and stderr as UTF-8, whatever encoding the locale gives them."""
    # JSON, CSV, Atom and Markdown are UTF-8 wherever they go, and a change line's dash must
    # not stop a cron run under a Latin-1 locale (LANG=en_US.ISO-8859-1); git writes UTF-8 too.
    for stream in (sys.stdout, sys.stderr):
        if (isinstance(stream, io.TextIOWrapper)
                and codecs.lookup(stream.encoding).name != "utf-8"):
            stream.reconfigure(encoding="utf-8")


def change_lines(changes: Iterable[FieldChange], dated: bool = False) -> list[str]:
    """Return one report line per change: study, (day,) path, kind, old and new."""
    from ..present import short_pair

    return [
        f"{c.nct_id}  " + (f"{c.detected_at[:10]}  " if dated else "")
        + f"{visible(c.path)} \u2014 {c.kind}: " + " \u2192 ".join(short_pair(c.old, c.new, 50))
        for c in changes
    ]


class OutcomePrinter:
    """Print what a write run did: changes on stdout, failures on stderr, a summary last.

    With `quiet`, a run where nothing changed prints nothing (failures still go to stderr), so
    cron mails only news: every line but the summary is news. With `progress_total`, a rich
    progress bar runs on stderr when it is a terminal. `news_only` (sync) prints the summary
    of a quiet run only when something changed, moved or failed.
    """

    def __init__(self, command: str, quiet: bool = False, summary: bool = False,
                 progress_total: int | None = None, log_pages: bool = False,
                 news_only: bool = False) -> None:
        self.command = command
        self.quiet = quiet
        self.summary = summary
        self.log_pages = log_pages and not quiet
        self.news_only = news_only
        self.events = 0
        self.lost: OSError | None = None  # why stdout took no more of the report
        self.progress: Any = None
        if progress_total is not None and sys.stderr.isatty() and not quiet:
            from rich.console import Console
            from rich.progress import Progress

            self.progress = Progress(transient=True, console=Console(stderr=True))
            self.progress.start()
            self.task = self.progress.add_task(command, total=progress_total or None)

    def show(self, outcome: Outcome) -> None:
        """Print or keep one outcome."""
        if _SWALLOWED:  # after the batch it ends committed: as a stop between two batches
            raise _SWALLOWED.pop()
        match outcome:
            case Failed(where=where, error=error, setting=setting):
                print_error(where, worded(error, setting))
            case Observation(changes=changes):
                if changes and not self.summary:
                    self._emit(change_lines(changes))
            case Event(nct_id=nct_id, kind=kind, detail=detail):
                self.events += 1
                moved = f" → {detail['moved_to']}" if kind == "moved" else ""
                self._emit([f"{nct_id}  ({kind.replace('_', ' ')}{moved})"])
            case Backfilled(nct_id=nct_id, changes=changes, replaced=replaced):
                if changes and not self.summary:
                    self._emit(change_lines(changes, dated=True))
                if replaced:
                    self._emit([f"{nct_id}  ({plural(replaced, 'stored change')} "
                                "replaced: the registry's versions date them)"])
            case ShapeWarning(message=message):
                click.echo(f"trialdiff: warning: {message}", err=True)
            case PageDone(size=size, what=what):
                if self.progress is not None:
                    self.progress.advance(self.task, size)
                elif self.log_pages:
                    click.echo(f"{self.command}: saved a page of {size} ({what})", err=True)
            case UpToDate(studies=studies, queries=queries, release=release):
                if not self.quiet:  # not news: --quiet hides it
                    self._up_to_date(studies, queries, release)
            case Resumed(runs=runs):
                if self.command == "sync" and not self.quiet:
                    click.echo(f"sync: resuming after {plural(runs, 'interrupted run')}",
                               err=True)
            case LeftOut(where=where, names=names):
                click.echo(f"import: {where}: left out, not study records: {', '.join(names)}",
                           err=True)

    def _up_to_date(self, studies: int, queries: int, release: str) -> None:
        """Say what was not fetched again under the current data release."""
        if self.progress is not None:
            total = self.progress.tasks[0].total or 0
            self.progress.update(self.task, total=max(total - studies, 0) or None)
        if not studies and not queries:
            return
        skipped = [plural(studies, "tracked study", "tracked studies") if studies else "",
                   plural(queries, "saved query", "saved queries") if queries else ""]
        self._emit([f"{self.command}: no new data release since {release}: "
                    f"{' and '.join(s for s in skipped if s)} not fetched again "
                    "(--force fetches them)"])

    def _emit(self, lines: list[str]) -> None:
        """Print report lines (each one is news, so --quiet prints them too)."""
        self.lost = self.lost or say("\n".join(lines))

    def close(self) -> None:
        """Stop the progress bar, if one runs."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, run: Run) -> None:
        """Print the summary, unless --quiet and nothing happened."""
        self.close()
        news = bool(run.changes or self.events or run.failed) if self.news_only else True
        if news or not self.quiet:
            self._emit([summary_line(self.command, run)])


class AlertDelivery:
    """Deliver the alerts a run raised, once it is committed, and print what happened."""

    def __init__(self, db: Any, quiet: bool, alert_timeout: float, alert_backoff: float,
                 alert_max_age: float) -> None:
        from ..notify import check_settings  # before the run: it delivers only after

        check_settings(alert_timeout, alert_backoff, alert_max_age)
        self.db = db
        self.quiet = quiet
        self.settings = (alert_timeout, alert_backoff, alert_max_age)
        self.failed = False

    def show(self, outcome: Outcome) -> None:
        """Take no notice of outcomes: the outbox was written in each save's transaction."""

    def finish(self, run: Run) -> None:
        """Deliver what is due."""
        from ..notify import deliver_pending

        timeout, backoff, max_age = self.settings
        totals = deliver_pending(self.db(), timeout=timeout, backoff=backoff,
                                 max_age_hours=max_age)
        self.failed = show_delivery(totals, self.quiet)

    def close(self) -> None:
        """Hold nothing: each delivery pass closes its own HTTP client."""


def show_delivery(totals: Any, quiet: bool) -> bool:
    """Print what a delivery pass did; return True when an attempt failed."""
    for error in totals.errors:
        click.echo(f"trialdiff: alert: {error}", err=True)
    attempted = totals.delivered + totals.failed_now
    if attempted or (totals.pending and not quiet):
        say(f"alerts: {totals.delivered} delivered, {totals.pending} pending, "
            f"{totals.given_up} given up")
    return bool(totals.failed_now)
