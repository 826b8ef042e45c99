"""Commands that write the database: import, sync and the watchlist. One writer at a time."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from ..model import FieldChange, utc_timestamp
from . import (
    check_nct_ids,
    cli,
    fail,
    finite,
    parse_timestamp,
    reader,
    setting_option,
    writer,
)
from .alerts import alert_options, deliver


def _print_error(where: str, error: str | None) -> None:
    """Name a failed input on stderr, with its reason."""
    click.echo(f"trialdiff: {where}: {error}", err=True)


def _summary_line(command: str, totals: Any) -> str:
    """Return a run's summary: studies checked, changed, changes by kind, failures."""
    from ..render import plural

    kinds = ", ".join(f"{totals.by_kind[k]} {k}" for k in sorted(totals.by_kind))
    return (
        f"{command}: {plural(totals.checked, 'study', 'studies')} checked, "
        f"{totals.changed} changed, {plural(totals.changes, 'change')}"
        + (f" ({kinds})" if kinds else "") + f", {totals.failed} failed"
    )


def _change_lines(changes: Iterable[FieldChange], dated: bool = False) -> list[str]:
    """Return one report line per change: study, (day,) path, kind, old and new."""
    from ..present import short

    return [
        f"{c.nct_id}  " + (f"{c.detected_at[:10]}  " if dated else "")
        + f"{c.path} \u2014 {c.kind}: {short(c.old, 50)} \u2192 {short(c.new, 50)}"
        for c in changes
    ]


class OutcomePrinter:
    """Print what a write run did: changes on stdout, failures on stderr, a summary last.

    With `quiet`, a run where nothing changed prints nothing (failures still go to stderr), so
    cron mails only news: every line but the summary is news. With `progress_total`, a rich
    progress bar runs on stderr when it is a terminal.
    """

    def __init__(self, command: str, quiet: bool = False, summary: bool = False,
                 progress_total: int | None = None, log_pages: bool = False) -> None:
        self.command = command
        self.quiet = quiet
        self.summary = summary
        self.log_pages = log_pages and not quiet
        self.progress: Any = None
        if progress_total is not None and sys.stderr.isatty() and not quiet:
            from rich.progress import Progress

            self.progress = Progress(transient=True, console=_stderr_console())
            self.progress.start()
            self.task = self.progress.add_task(command, total=progress_total or None)

    def show(self, outcome: Any) -> None:
        """Print or keep one outcome."""
        from ..model import Backfilled, Event, PageDone, ShapeWarning
        from ..render import plural
        from ..sources import SourceItem
        from ..store import Observation
        from ..sync import UpToDate

        if isinstance(outcome, SourceItem):
            _print_error(outcome.label, outcome.error)
        elif isinstance(outcome, Observation):
            if outcome.changes and not self.summary:
                self._emit(_change_lines(outcome.changes))
        elif isinstance(outcome, Event):
            detail = f" → {outcome.detail['moved_to']}" if outcome.kind == "moved" else ""
            self._emit([f"{outcome.nct_id}  ({outcome.kind.replace('_', ' ')}{detail})"])
        elif isinstance(outcome, Backfilled):
            if outcome.changes and not self.summary:
                self._emit(_change_lines(outcome.changes, dated=True))
            if outcome.replaced:
                self._emit([f"{outcome.nct_id}  ({plural(outcome.replaced, 'stored change')} "
                            "replaced: the registry's versions date them)"])
        elif isinstance(outcome, ShapeWarning):
            click.echo(f"trialdiff: warning: {outcome.message}", err=True)
        elif isinstance(outcome, PageDone):
            if self.progress is not None:
                self.progress.advance(self.task, outcome.size)
            elif self.log_pages:
                click.echo(f"{self.command}: saved a page of {outcome.size} ({outcome.what})",
                           err=True)
        elif isinstance(outcome, UpToDate) and not self.quiet:  # not news: --quiet hides it
            if self.progress is not None:
                total = self.progress.tasks[0].total or 0
                self.progress.update(self.task, total=max(total - outcome.studies, 0) or None)
            click.echo(
                f"{self.command}: no new data release since {outcome.release}: "
                f"{plural(outcome.studies, 'tracked study', 'tracked studies')} and "
                f"{plural(outcome.queries, 'saved query', 'saved queries')} not fetched again "
                "(--force fetches them)"
            )

    def _emit(self, lines: list[str]) -> None:
        """Print report lines (each one is news, so --quiet prints them too)."""
        click.echo("\n".join(lines))

    def close(self) -> None:
        """Stop the progress bar, if one runs."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, totals: Any, news: bool) -> None:
        """Print the summary, unless --quiet and nothing happened."""
        self.close()
        if news or not self.quiet:
            click.echo(_summary_line(self.command, totals))


def _stderr_console() -> Any:
    """Return a rich console on stderr."""
    from rich.console import Console

    return Console(stderr=True)


def _observed_at(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check --at: an ISO 8601 time from the registry's launch to now (else exit 2)."""
    from ..errors import UsageError
    from ..model import observation_time

    try:
        return observation_time(value) if value is not None else None
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _wait_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --wait to a command that writes."""
    return click.option(
        "--wait", type=finite(float, 0, 7 * 86_400), default=0.0, metavar="SECONDS",
        help="Wait this long for another writer instead of exiting 75.",
    )(command)


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--at", callback=_observed_at,
              help="Observation time, ISO 8601 (default: now); not in the future.")
@_wait_option
@click.option("--summary", is_flag=True, help="Print only the summary line, not each change.")
@alert_options
@click.pass_context
def import_command(
    ctx: click.Context, /, paths: tuple[str, ...], at: str | None, wait: float, summary: bool,
    **alert_settings: float,
) -> None:
    """Snapshot study records from files: JSON, API pages, lists, NDJSON, zip dumps, folders.

    A folder whose subfolders are all named by date (2024-06-14/, 2025-07-07/) is an archive:
    each subfolder is imported as observed on its date, oldest first (other files such as a
    README are left out). A study given twice with different content is a conflict: neither
    copy is stored.

    \b
    Example:
      trialdiff import snapshots/sample
      trialdiff import --at 2026-05-12T07:00:00Z ctg-studies.json.zip
    """
    from ..lock import WriteLock
    from ..sources import dated_folders, read_studies
    from ..store import RunTotals, finish_run, save_studies, start_run

    # Every path that is not an archive is one input observed at one time: a study it gives
    # twice is one observation, or a conflict (see dedupe).
    batches: list[tuple[str, list[str]]] = []
    plain: list[str] = []
    for path in paths:
        archive = dated_folders(path)
        if archive is None:
            plain.append(path)
            continue
        if at is not None:  # one time for every day would re-date the whole history
            fail(f"{path} is an archive of dated folders, observed on their dates: leave out --at")
        if archive.ignored:
            click.echo(f"import: {path}: left out, not study records: "
                       f"{', '.join(archive.ignored)}", err=True)
        batches.extend((day, [str(folder)]) for day, folder in archive.days)
    if plain:
        batches.append((at or utc_timestamp(), plain))
    totals = RunTotals()
    printer = OutcomePrinter("import", summary=summary)
    with WriteLock(ctx.obj.db, wait, "import"):
        db = writer(ctx)
        run_id = start_run(db, "import", utc_timestamp())
        stopped = False
        try:
            for observed_at, batch in batches:
                for outcome in save_studies(db, read_studies(batch), observed_at, totals,
                                            run_id=run_id):
                    printer.show(outcome)
        except KeyboardInterrupt:
            stopped = True
        except Exception as exc:  # the run ends here: record it failed, not running forever
            totals.fail("import", str(exc))
            with contextlib.suppress(Exception):  # best effort: the disk may be what failed
                finish_run(db, run_id, totals, utc_timestamp())
            raise
        finish_run(db, run_id, totals, utc_timestamp(), interrupted=stopped)
        alert_failed = False
        if not stopped:
            printer.finish(totals, news=True)
            alert_failed = deliver(db, False, **alert_settings)
    if stopped:
        _say_interrupted(ctx, printer, run_id)
    if totals.failed or alert_failed:
        ctx.exit(1)


def _say_interrupted(ctx: click.Context, printer: Any, run_id: int) -> None:
    """Say that Ctrl-C stopped a run, recorded as `interrupted`, and exit 130."""
    printer.close()
    click.echo(f"trialdiff: interrupted; run {run_id} recorded as interrupted "
               "(what was saved stays: run again to resume)", err=True)
    ctx.exit(130)


def _client(api: str, page_size: int, delay: float, timeout: float, deadline: float,
            retries: int, retry_budget: float, max_response_mb: float) -> Any:
    """Return an API client built from the command-line settings."""
    from ..fetch import Pacing
    from ..registry import DEFAULT

    if not 1 <= page_size <= 1000:
        fail("--page-size must be 1 to 1000 (the API's limit)")
    if timeout <= 0 or deadline <= 0:
        fail("--timeout and --deadline must be more than 0 seconds")
    pacing = Pacing(delay=delay, timeout=timeout, deadline=deadline, retries=retries,
                    retry_budget=retry_budget, max_bytes=int(max_response_mb * 1024 * 1024),
                    page_size=page_size)
    return DEFAULT.client(api, pacing)


# What each API setting may be: a bad number is a usage error (exit 2), never a run that
# loops, waits for ever or overflows. The page size is the API's own limit.
_API_BOUNDS: dict[str, tuple[float, float]] = {
    "--page-size": (1, 1000), "--delay": (0, 3600), "--timeout": (0, 86_400),
    "--retries": (0, 100), "--retry-budget": (0, 86_400), "--max-response-mb": (0, 1_000_000),
}


def _api_type(option: str, kind: type) -> Any:
    """Return the click type of an API setting: its kind, a number within its bounds."""
    if kind is str:
        return str
    low, high = _API_BOUNDS.get(option, (0, 1e9))
    return finite(kind, low, high, low_open=option in ("--timeout", "--max-response-mb"))


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the API client's settings to a command that fetches."""
    for option, kind in reversed((("--api", str), ("--page-size", int), ("--delay", float),
                                  ("--timeout", float), ("--deadline", float),
                                  ("--retries", int), ("--retry-budget", float),
                                  ("--max-response-mb", float))):
        command = click.option(option, type=_api_type(option, kind),
                               metavar=kind.__name__.upper(), **setting_option(option))(command)
    return command


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=check_nct_ids)
@click.option("--source", type=click.Path(exists=True),
              help="Sync from a bulk dump (ctg-studies.json.zip, a folder, NDJSON) instead.")
@click.option("--at", callback=_observed_at,
              help="Observation time, ISO 8601 (default: now); not in the future.")
@click.option("--quiet", is_flag=True, help="Print only when something changed (for cron).")
@click.option("--force", is_flag=True,
              help="Fetch everything, even what was fetched under the current data release.")
@click.option("--backfill-new", is_flag=True,
              help="Also take in the registry history of newly tracked studies.")
@_wait_option
@api_options
@alert_options
@click.pass_context
def sync(ctx: click.Context, /, nct_ids: tuple[str, ...], source: str | None, at: str | None,
         quiet: bool, force: bool, backfill_new: bool, wait: float, alert_timeout: float,
         alert_backoff: float, alert_max_age: float, **api: Any) -> None:
    """Fetch the tracked studies and saved queries (plus any ids given) and save changes.

    What was already fetched under the registry's current data release (GET /version) is not
    fetched again, unless --force.

    \b
    Example:
      trialdiff sync --quiet
      trialdiff sync NCT05827016 --api http://127.0.0.1:8765/api/v2
    """
    from ..lock import WriteLock
    from ..model import Event
    from ..render import plural
    from ..store import RunTotals, finish_run, start_run
    from ..sync import mark_interrupted_runs, sync_api, sync_source, tracked_ids

    observed_at = at or utc_timestamp()
    totals = RunTotals()
    client = None if source else _client(**api)  # a malformed --api is a usage error at once
    with WriteLock(ctx.obj.db, wait, "sync"):
        db = writer(ctx)
        interrupted = mark_interrupted_runs(db)
        if interrupted and not quiet:
            click.echo(f"sync: resuming after {plural(interrupted, 'interrupted run')}",
                       err=True)
        run_id = start_run(db, "sync", utc_timestamp())
        wanted = len(set(tracked_ids(db.conn)) | set(nct_ids))
        printer = OutcomePrinter("sync", quiet=quiet, progress_total=wanted, log_pages=True)
        data_timestamp = None
        events = 0
        stopped = False
        try:
            if client is None:
                outcomes = sync_source(db, str(source), nct_ids, observed_at, run_id, totals)
            else:
                data_timestamp = client.version().get("dataTimestamp")
                outcomes = sync_api(db, client, nct_ids, observed_at, run_id, totals,
                                    release=data_timestamp, force=force)
            for outcome in outcomes:
                events += isinstance(outcome, Event)
                printer.show(outcome)
            if backfill_new:
                from ..history import backfill_new as backfill_pending

                for saved in backfill_pending(db, _history_api(api), run_id, totals):
                    printer.show(saved)
        except KeyboardInterrupt:
            stopped = True
        except Exception as exc:  # the run ends here: record it failed, not ok
            totals.fail("sync", str(exc))
            raise
        finally:
            finish_run(db, run_id, totals, utc_timestamp(), data_timestamp, interrupted=stopped)
            printer.close()
        alert_failed = False
        if not stopped:
            printer.finish(totals, news=bool(totals.changes or events or totals.failed))
            alert_failed = deliver(db, quiet, alert_timeout, alert_backoff, alert_max_age)
    if stopped:
        _say_interrupted(ctx, printer, run_id)
    if totals.failed or alert_failed:
        ctx.exit(1)


def _history_api(api: dict[str, Any]) -> Any:
    """Return the record-history endpoints, through a client based at the registry's root."""
    from ..history_api import site_root
    from ..registry import DEFAULT

    return DEFAULT.history(_client(**{**api, "api": site_root(api["api"])}))


@cli.command()
@click.argument("nct_ids", nargs=-1, required=True, callback=check_nct_ids)
@click.option("--since", callback=parse_timestamp, metavar="DATE",
              help="Only versions that went public on or after DATE.")
@click.option("--alert", is_flag=True, help="Let the history's changes raise alerts (watch).")
@_wait_option
@api_options
@alert_options
@click.pass_context
def backfill(ctx: click.Context, /, nct_ids: tuple[str, ...], since: str | None, alert: bool,
             wait: float, alert_timeout: float, alert_backoff: float, alert_max_age: float,
             **api: Any) -> None:
    """Take in studies' whole registry history, so their changes exist from day one.

    Each version is stored as observed on the day it went public, in its place among the
    synced snapshots. Versions already stored are not fetched again. Backfilled changes
    raise no alerts unless --alert is given.

    \b
    Example:
      trialdiff backfill NCT05827016 --api http://127.0.0.1:8765/api/v2
    """
    from ..errors import FetchError, ShapeError
    from ..history import backfill_study
    from ..lock import WriteLock
    from ..store import RunTotals, finish_run, start_run
    from ..watch import AlertWriter

    totals = RunTotals()
    printer = OutcomePrinter("backfill")
    history_api = _history_api(api)
    with WriteLock(ctx.obj.db, wait, "backfill"):
        db = writer(ctx)
        run_id = start_run(db, "backfill", utc_timestamp())
        alerts = AlertWriter(db, run_id) if alert else None
        try:
            for nct_id in nct_ids:
                try:
                    for outcome in backfill_study(db, history_api, nct_id, since, totals,
                                                  run_id, alerts):
                        printer.show(outcome)
                except ShapeError as exc:
                    totals.fail(nct_id, str(exc))
                    raise  # the endpoints changed shape: stop rather than store wrongly
                except FetchError as exc:
                    totals.fail(nct_id, str(exc))
                    _print_error(nct_id, str(exc))
        finally:
            finish_run(db, run_id, totals, utc_timestamp())
        printer.finish(totals, news=True)
        alert_failed = alert and deliver(db, False, alert_timeout, alert_backoff, alert_max_age)
    if totals.failed or alert_failed:
        ctx.exit(1)


def _queries(values: tuple[str, ...]) -> list[str]:
    """Return saved queries in canonical form."""
    from ..sync import parse_query

    return [parse_query(v) for v in values]


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=check_nct_ids)
@click.option("--query", "queries", multiple=True, metavar="EXPR",
              help="A saved query of API parameters, e.g. 'query.cond=asthma'.")
@click.pass_context
def track(ctx: click.Context, nct_ids: tuple[str, ...], queries: tuple[str, ...]) -> None:
    """Add studies or saved queries to what `sync` fetches.

    \b
    Example:
      trialdiff track NCT05827016 NCT06060392 --query 'query.cond=myeloma'
    """
    from ..sync import track as add

    if not nct_ids and not queries:
        fail("give NCT ids or --query EXPR")
    from ..render import plural

    new_ids, new_queries = add(writer(ctx), nct_ids, _queries(queries), utc_timestamp())
    click.echo(f"track: {plural(new_ids, 'new study', 'new studies')}, "
               f"{plural(new_queries, 'new query', 'new queries')}")


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=check_nct_ids)
@click.option("--query", "queries", multiple=True, metavar="EXPR")
@click.pass_context
def untrack(ctx: click.Context, nct_ids: tuple[str, ...], queries: tuple[str, ...]) -> None:
    """Remove studies or saved queries from what `sync` fetches (their history stays).

    \b
    Example:
      trialdiff untrack NCT06060392
    """
    from ..sync import untrack as remove

    if not nct_ids and not queries:
        fail("give NCT ids or --query EXPR")
    removed = remove(writer(ctx), nct_ids, _queries(queries))
    click.echo(f"untrack: {removed} removed")


@cli.command()
@click.pass_context
def tracked(ctx: click.Context) -> None:
    """List the tracked studies and saved queries.

    \b
    Example:
      trialdiff tracked
    """
    conn = reader(ctx)
    for nct_id, state, moved_to, added_at in conn.execute(
        "select nct_id, state, moved_to, added_at from watchlist order by nct_id"
    ):
        note = f" → {moved_to}" if moved_to else ""
        click.echo(f"{nct_id}  {state}{note}  since {added_at}")
    for expr, last in conn.execute("select expr, last_synced_at from queries order by id"):
        click.echo(f"query  {expr}  last synced {last or 'never'}")
