"""Commands that write the database: import, sync and the watchlist. One writer at a time."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from ..model import FieldChange, utc_timestamp
from . import check_nct_ids, cli, fail, parse_timestamp, reader, setting_option, writer
from .alerts import alert_options, deliver


def _print_error(where: str, error: str | None) -> None:
    """Name a failed input on stderr, with its reason."""
    click.echo(f"trialdiff: {where}: {error}", err=True)


def _summary_line(command: str, totals: Any) -> str:
    """Return a run's summary: studies checked, changed, changes by kind, failures."""
    kinds = ", ".join(f"{totals.by_kind[k]} {k}" for k in sorted(totals.by_kind))
    return (
        f"{command}: {totals.checked} studies checked, {totals.changed} changed, "
        f"{totals.changes} changes" + (f" ({kinds})" if kinds else "") + f", {totals.failed} failed"
    )


def _change_lines(changes: Iterable[FieldChange], dated: bool = False) -> list[str]:
    """Return one report line per change: study, (day,) path, kind, old and new."""
    from ..report import short

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
        from ..model import Event, PageDone, VersionSaved
        from ..sources import SourceItem
        from ..store import Observation

        if isinstance(outcome, SourceItem):
            _print_error(outcome.label, outcome.error)
        elif isinstance(outcome, Observation):
            if outcome.changes and not self.summary:
                self._emit(_change_lines(outcome.changes))
        elif isinstance(outcome, Event):
            detail = f" → {outcome.detail['moved_to']}" if outcome.kind == "moved" else ""
            self._emit([f"{outcome.nct_id}  ({outcome.kind.replace('_', ' ')}{detail})"])
        elif isinstance(outcome, VersionSaved):
            if outcome.changes and not self.summary:
                self._emit(_change_lines(outcome.changes, dated=True))
        elif isinstance(outcome, PageDone):
            if self.progress is not None:
                self.progress.advance(self.task, outcome.size)
            elif self.log_pages:
                click.echo(f"{self.command}: saved a page of {outcome.size} ({outcome.what})",
                           err=True)

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


def _wait_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --wait to a command that writes."""
    return click.option(
        "--wait", type=float, default=0.0, metavar="SECONDS",
        help="Wait this long for another writer instead of exiting 75.",
    )(command)


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--at", callback=parse_timestamp, help="Observation time, ISO 8601 (default: now).")
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
    each subfolder is imported as observed on its date, oldest first.

    \b
    Example:
      trialdiff import snapshots/sample
      trialdiff import --at 2026-05-12T07:00:00Z ctg-studies.json.zip
    """
    from ..lock import WriteLock
    from ..sources import dated_folders, read_studies
    from ..store import RunTotals, finish_run, save_studies, start_run

    batches: list[tuple[str, list[str]]] = []
    for path in paths:
        archive = dated_folders(path)
        if archive and at is None:
            batches.extend((utc_timestamp(day), [str(folder)]) for day, folder in archive)
        else:
            batches.append((at or utc_timestamp(), [path]))
    totals = RunTotals()
    printer = OutcomePrinter("import", summary=summary)
    with WriteLock(ctx.obj.db, wait, "import"):
        db = writer(ctx)
        run_id = start_run(db, "import", utc_timestamp())
        for observed_at, batch in batches:
            for outcome in save_studies(db, read_studies(batch), observed_at, totals,
                                        run_id=run_id):
                printer.show(outcome)
        finish_run(db, run_id, totals, utc_timestamp())
        printer.finish(totals, news=True)
        alert_failed = deliver(db, False, **alert_settings)
    if totals.failed or alert_failed:
        ctx.exit(1)


def _client(api: str, page_size: int, delay: float, timeout: float, retries: int,
            retry_budget: float, max_response_mb: float) -> Any:
    """Return an API client built from the command-line settings."""
    from ..fetch import Client, Pacing

    if not 1 <= page_size <= 1000:
        fail("--page-size must be 1 to 1000 (the API's limit)")
    pacing = Pacing(delay=delay, timeout=timeout, retries=retries, retry_budget=retry_budget,
                    max_bytes=int(max_response_mb * 1024 * 1024), page_size=page_size)
    return Client(api, pacing)


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the API client's settings to a command that fetches."""
    for option, kind in reversed((("--api", str), ("--page-size", int), ("--delay", float),
                                  ("--timeout", float),
                                  ("--retries", int), ("--retry-budget", float),
                                  ("--max-response-mb", float))):
        command = click.option(option, type=kind, metavar=kind.__name__.upper(),
                               **setting_option(option))(command)
    return command


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=check_nct_ids)
@click.option("--source", type=click.Path(exists=True),
              help="Sync from a bulk dump (ctg-studies.json.zip, a folder, NDJSON) instead.")
@click.option("--at", callback=parse_timestamp, help="Observation time, ISO 8601 (default: now).")
@click.option("--quiet", is_flag=True, help="Print only when something changed (for cron).")
@click.option("--backfill-new", is_flag=True,
              help="Also take in the registry history of newly tracked studies.")
@_wait_option
@api_options
@alert_options
@click.pass_context
def sync(ctx: click.Context, /, nct_ids: tuple[str, ...], source: str | None, at: str | None,
         quiet: bool, backfill_new: bool, wait: float, alert_timeout: float,
         alert_backoff: float, alert_max_age: float, **api: Any) -> None:
    """Fetch the tracked studies and saved queries (plus any ids given) and save changes.

    \b
    Example:
      trialdiff sync --quiet
      trialdiff sync NCT05827016 --api http://127.0.0.1:8765/api/v2
    """
    from ..lock import WriteLock
    from ..model import Event
    from ..store import RunTotals, finish_run, start_run
    from ..sync import mark_interrupted_runs, sync_api, sync_source, tracked_ids

    observed_at = at or utc_timestamp()
    totals = RunTotals()
    with WriteLock(ctx.obj.db, wait, "sync"):
        db = writer(ctx)
        interrupted = mark_interrupted_runs(db)
        if interrupted and not quiet:
            click.echo(f"sync: resuming after {interrupted} interrupted run(s)", err=True)
        run_id = start_run(db, "sync", utc_timestamp())
        wanted = len(set(tracked_ids(db.conn)) | set(nct_ids))
        printer = OutcomePrinter("sync", quiet=quiet, progress_total=wanted, log_pages=True)
        data_timestamp = None
        try:
            if source:
                outcomes = sync_source(db, source, nct_ids, observed_at, run_id, totals)
            else:
                client = _client(**api)
                data_timestamp = client.version().get("dataTimestamp")
                outcomes = sync_api(db, client, nct_ids, observed_at, run_id, totals)
            events = 0
            for outcome in outcomes:
                events += isinstance(outcome, Event)
                printer.show(outcome)
            if backfill_new:
                from ..history import backfill_new as backfill_pending

                history_client = _client(**_history_api(api))
                for saved in backfill_pending(db, history_client, run_id, totals):
                    printer.show(saved)
        finally:
            finish_run(db, run_id, totals, utc_timestamp(), data_timestamp)
            printer.close()
        printer.finish(totals, news=bool(totals.changes or events or totals.failed))
        alert_failed = deliver(db, quiet, alert_timeout, alert_backoff, alert_max_age)
    if totals.failed or alert_failed:
        ctx.exit(1)


def _history_api(api: dict[str, Any]) -> dict[str, Any]:
    """Return the client settings with the base moved to the record-history endpoints."""
    from ..history import int_base

    return {**api, "api": int_base(api["api"])}


@cli.command()
@click.argument("nct_ids", nargs=-1, required=True, callback=check_nct_ids)
@click.option("--since", callback=parse_timestamp, metavar="DATE",
              help="Only versions dated on or after DATE.")
@click.option("--alert", is_flag=True, help="Let the history's changes raise alerts (watch).")
@_wait_option
@api_options
@alert_options
@click.pass_context
def backfill(ctx: click.Context, /, nct_ids: tuple[str, ...], since: str | None, alert: bool,
             wait: float, alert_timeout: float, alert_backoff: float, alert_max_age: float,
             **api: Any) -> None:
    """Take in studies' whole registry history, so their changes exist from day one.

    Each version is stored as observed on its date, slotted in before the first synced
    snapshot. Versions already stored are not fetched again. Backfilled changes raise no
    alerts unless --alert is given.

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
    client = _client(**_history_api(api))
    with WriteLock(ctx.obj.db, wait, "backfill"):
        db = writer(ctx)
        run_id = start_run(db, "backfill", utc_timestamp())
        alerts = AlertWriter(db, run_id) if alert else None
        try:
            for nct_id in nct_ids:
                try:
                    for outcome in backfill_study(db, client, nct_id, since, totals, run_id,
                                                  alerts):
                        printer.show(outcome)
                except ShapeError:
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
    new_ids, new_queries = add(writer(ctx), nct_ids, _queries(queries), utc_timestamp())
    click.echo(f"track: {new_ids} new studies, {new_queries} new queries")


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
