"""Commands that write the database: import, sync and the watchlist. One writer at a time."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from ..render import plural
from ..settings import CLIENT_BOUNDS
from . import check_nct_ids, cli, fail, parse_timestamp, reader, tracker
from .alerts import alert_options
from .options import TEXT, checked_url, finite, setting_option, wait_option
from .sinks import AlertDelivery, OutcomePrinter, stopped


def _observed_at(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check --at: an ISO 8601 time from the registry's launch to now (else exit 2)."""
    from ..errors import UsageError
    from ..model import observation_time

    try:
        return observation_time(value) if value is not None else None
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(readable=False))
@click.option("--at", callback=_observed_at,
              help="Observation time, ISO 8601 (default: now); not in the future.")
@wait_option
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
    from ..ahead import default_workers

    printer = OutcomePrinter("import", summary=summary)
    opened = tracker(ctx, wait)
    delivery = AlertDelivery(opened.writer, False, **alert_settings)
    try:
        run = opened.import_paths(paths, at, sinks=[printer, delivery],
                                  workers=default_workers())
    except KeyboardInterrupt as stop:
        _say_interrupted(ctx, printer, opened, stop)
    _exit_run(ctx, run, printer, delivery)


def _exit_run(ctx: click.Context, run: Any, printer: OutcomePrinter,
              delivery: AlertDelivery) -> None:
    """Exit 1 when an input or an alert failed, or the report could not all be written."""
    if printer.lost is not None:  # a cron job's full disk: the report, not the run, was lost
        click.echo(f"trialdiff: the report could not all be written to stdout "
                   f"({printer.lost.strerror or printer.lost}); the run stored "
                   f"{plural(run.changes, 'change')}: `trialdiff changes` lists them", err=True)
    if run.failed or delivery.failed or printer.lost is not None:
        ctx.exit(1)


@cli.command()
@wait_option
@click.pass_context
def compact(ctx: click.Context, wait: float) -> None:
    """Make the database smaller: compress everything it stores again, harder, pack, VACUUM.

    Runs compress for speed; this spends about 9 ms a study once (on every core), as `git gc
    --aggressive` does, and packs the records into full pages: fewer bytes (7-11%
    in the README's measurements). What reads back does not change. Killed, it leaves a sound
    database, and running it again resumes.

    \b
    Example:
      trialdiff compact
    """
    done = tracker(ctx, wait, create=False).compact()
    before, after = done.bytes_before / 1e6, done.bytes_after / 1e6
    click.echo(f"compact: {plural(done.records, 'record')}, "
               f"{plural(done.change_values, 'change value')} and "
               f"{plural(done.snapshot_deltas, 'snapshot delta')} recompressed; "
               f"{before:.2f} MB -> {after:.2f} MB")


def _say_interrupted(ctx: click.Context, printer: OutcomePrinter, opened: Any,
                     stop: BaseException) -> NoReturn:
    """Say that Ctrl-C (or SIGTERM) stopped a run, or its alerts after it; exit 130 (143)."""
    printer.close()
    run = opened.last_run
    if run is None:  # stopped before its run began (waiting for the lock): said as any stop
        raise stop
    word, code = stopped(stop)
    if run.status == "interrupted":
        # The stop may have cut the lines of a batch already stored: the next run will not
        # print them again, so the count says where to look.
        stored = (f"; it stored {plural(run.changes, 'change')}, which `trialdiff changes` "
                  "lists (the lines above may stop short)") if run.changes else ""
        click.echo(f"trialdiff: {word}; run {run.id} recorded as interrupted "
                   f"(what was saved stays: run again to resume){stored}", err=True)
    else:  # stopped while its alerts went out, after the run itself had finished
        click.echo(f"trialdiff: {word} while delivering alerts; run {run.id} had finished "
                   f"({run.status}): the alerts not sent yet stay pending (`trialdiff notify` "
                   "sends them)", err=True)
    ctx.exit(code)


def _api_settings(api: str, **settings: Any) -> dict[str, Any]:
    """Check the API URL at once (a usage error before any lock); return the settings."""
    from ..arguments import check_base_url

    # The numbers were checked by their option types (CLIENT_BOUNDS).
    checked_url(click.get_current_context(), "--api", lambda: check_base_url(api))
    return {"api": api, **settings}


def _api_type(option: str, kind: type) -> Any:
    """Return the click type of an API setting: its kind, a number within its bounds."""
    if kind is str:
        return str
    # The library's own bounds, so the option and a script's call refuse alike.
    low, high, low_open = CLIENT_BOUNDS[option.removeprefix("--").replace("-", "_")]
    return finite(kind, low, high, low_open=low_open)


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
@click.option("--quiet", is_flag=True, help="Print only when something changed, failed, left "
              "scope or moved (for cron).")
@click.option("--force", is_flag=True,
              help="Fetch everything, even what was fetched under the current data release.")
@click.option("--backfill-new", is_flag=True,
              help="Also take in the registry history of newly tracked studies.")
@wait_option
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
    from ..watchlist import tracks_nothing

    # A malformed --api is exit 2 at once. A dump needs no API, but its --backfill-new takes
    # the histories from --api all the same, with these settings.
    settings = _api_settings(**api) if backfill_new or not source else {}
    opened = tracker(ctx, wait)
    printer = OutcomePrinter("sync", quiet=quiet, log_pages=True, news_only=True,
                             progress_total=_wanted(opened, nct_ids))
    delivery = AlertDelivery(opened.writer, quiet, alert_timeout, alert_backoff, alert_max_age)
    try:
        run = opened.sync(nct_ids, source=source, at=at, force=force, backfill_new=backfill_new,
                          sinks=[printer, delivery], **settings)
    except KeyboardInterrupt as stop:
        _say_interrupted(ctx, printer, opened, stop)
    if not (nct_ids or source or run.checked or run.failed) and tracks_nothing(opened.reader()):
        # Said even with --quiet: a cron job that fetches nothing would be silent for good.
        click.echo("trialdiff: sync: nothing is tracked, so nothing was fetched: run "
                   "`trialdiff track NCT...` (or `track --query EXPR`) first", err=True)
    _exit_run(ctx, run, printer, delivery)


def _wanted(opened: Any, nct_ids: tuple[str, ...]) -> int | None:
    """Return how many studies a sync fetches, for its progress bar (None: no terminal)."""
    if not sys.stderr.isatty():
        return None
    import sqlite3

    from ..errors import TrialdiffError
    from ..watchlist import tracked_ids

    try:
        return len(set(tracked_ids(opened.reader())) | set(nct_ids))
    except (TrialdiffError, sqlite3.Error):  # no database yet, or one to migrate first
        return len(set(nct_ids))


@cli.command()
@click.argument("nct_ids", nargs=-1, required=True, callback=check_nct_ids)
@click.option("--since", callback=parse_timestamp, metavar="DATE",
              help="Only versions that went public on or after DATE.")
@click.option("--alert", is_flag=True, help="Let the history's changes raise alerts (watch).")
@wait_option
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
    settings = _api_settings(**api)
    printer = OutcomePrinter("backfill")
    opened = tracker(ctx, wait)
    delivery = AlertDelivery(opened.writer, False, alert_timeout, alert_backoff, alert_max_age)
    run = opened.backfill(nct_ids, since=since, alert=alert,
                          sinks=[printer, delivery] if alert else [printer], **settings)
    _exit_run(ctx, run, printer, delivery)


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=check_nct_ids)
@click.option("--query", "queries", type=TEXT, multiple=True, metavar="EXPR",
              help="A saved query of API parameters, e.g. 'query.cond=asthma'.")
@wait_option
@click.pass_context
def track(ctx: click.Context, nct_ids: tuple[str, ...], queries: tuple[str, ...],
          wait: float) -> None:
    """Add studies or saved queries to what `sync` fetches.

    \b
    Example:
      trialdiff track NCT05827016 NCT06060392 --query 'query.cond=myeloma'
    """
    from ..render import plural

    if not nct_ids and not queries:
        fail("give NCT ids or --query EXPR")
    new_ids, new_queries = tracker(ctx, wait).track(nct_ids, queries)
    click.echo(f"track: {plural(new_ids, 'new study', 'new studies')}, "
               f"{plural(new_queries, 'new query', 'new queries')}")


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=check_nct_ids)
@click.option("--query", "queries", type=TEXT, multiple=True, metavar="EXPR",
              help="A saved query to stop fetching, in any order of its parameters.")
@wait_option
@click.pass_context
def untrack(ctx: click.Context, nct_ids: tuple[str, ...], queries: tuple[str, ...],
            wait: float) -> None:
    """Remove studies or saved queries from what `sync` fetches (their history stays).

    \b
    Example:
      trialdiff untrack NCT06060392
    """
    if not nct_ids and not queries:
        fail("give NCT ids or --query EXPR")
    removed = tracker(ctx, wait, create=False).untrack(nct_ids, queries)
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


@cli.command()
@click.option("--track-again", "again", multiple=True, metavar="SOURCE",
              help="An entry of the ignore list to track again (repeatable).")
@click.option("--ignore-again", "ignore", multiple=True, metavar="SOURCE",
              help="An entry tracked again to ignore again (repeatable).")
@wait_option
@click.pass_context
def ignored(ctx: click.Context, again: tuple[str, ...], ignore: tuple[str, ...],
            wait: float) -> None:
    """List what the field-path spec ignores; track some of it again, before the first snapshot.

    Derived or bookkeeping data (derivedSection, the submission dates, each site's geoPoint)
    never produces a change by default. A database may track entries again, under rule 6's
    fallback paths, as long as it holds no snapshot yet.

    \b
    Example:
      trialdiff --db dates.db ignored --track-again P.statusModule.lastUpdateSubmitDate
    """
    from ..fields import IGNORE_LIST
    from ..normalize import tracked_again_path

    if again or ignore:
        now = tracker(ctx, wait).track_again(again, ignore=ignore)
    else:
        now = tracker(ctx, create=False).tracked_again()
    for source in IGNORE_LIST:
        if source in now:
            click.echo(f"tracked again  {source}  as {tracked_again_path(source)}")
        else:
            click.echo(f"ignored        {source}")
