"""The `trialdiff` command: thin commands that wire readers, writers and renderers together.

Only this module prints. Heavy libraries are imported inside the commands that need them, so
a read such as `trialdiff recent` starts fast.
"""

from __future__ import annotations

import sqlite3
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from . import __version__
from .errors import TrialdiffError
from .model import FieldChange, utc_day, utc_timestamp
from .normalize import is_nct_id
from .settings import setting

EXIT_BUSY = 75


@dataclass
class Options:
    """What the top-level options say, passed to every command."""

    db: str
    debug: bool


class CliError(click.ClickException):
    """An error shown as one line on stderr, with its own exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"trialdiff: error: {self.message}", err=True)


class Group(click.Group):
    """A group that turns every error into one clear line and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except TrialdiffError as exc:
            raise CliError(str(exc), exc.exit_code) from exc
        except sqlite3.Error as exc:
            _debug_traceback(ctx)
            raise CliError(f"database error: {exc}") from exc
        except OSError as exc:
            _debug_traceback(ctx)
            raise CliError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
        except Exception as exc:
            _debug_traceback(ctx)
            raise CliError(
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for the details)"
            ) from exc


def _debug_traceback(ctx: click.Context) -> None:
    """Print the traceback when --debug was given."""
    if isinstance(ctx.obj, Options) and ctx.obj.debug:
        traceback.print_exc()


def _fail(message: str, code: int = 2) -> NoReturn:
    """Stop with a usage error that names what was wrong."""
    raise CliError(message, code)


def _nct_ids(ctx: click.Context, param: click.Parameter, values: Any) -> Any:
    """Check NCT ids, upper-casing them; a malformed one is a usage error (exit 2)."""
    if values is None:
        return values
    single = isinstance(values, str)
    checked = []
    for value in [values] if single else values:
        nct_id = value.strip().upper()
        if not is_nct_id(nct_id):
            raise click.BadParameter(f"{value!r} is not an NCT id like NCT01234567", ctx, param)
        checked.append(nct_id)
    return checked[0] if single else tuple(checked)


def _timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Parse an ISO 8601 date or time into UTC; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return utc_timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time", ctx, param) from None


def _envvar(option: str) -> dict[str, Any]:
    """Return click keyword arguments that bind an option to its setting."""
    entry = setting(option)
    return {"envvar": entry.envvar, "default": entry.default, "show_default": True,
            "help": f"{entry.help} [env: {entry.envvar}]"}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH", **_envvar("--db"))
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option(__version__, prog_name="trialdiff")
@click.pass_context
def cli(ctx: click.Context, db: str, debug: bool) -> None:
    """Track what changed in ClinicalTrials.gov study records."""
    ctx.obj = Options(db=db, debug=debug)


def _reader(ctx: click.Context) -> sqlite3.Connection:
    """Open the database for reading; it is closed when the command ends."""
    from .query import connect_readonly

    conn = connect_readonly(ctx.obj.db)
    ctx.call_on_close(conn.close)
    return conn


def _writer(ctx: click.Context) -> Any:
    """Open (creating or upgrading) the database for writing; closed when the command ends."""
    from .schema import open_db

    db = open_db(ctx.obj.db)
    ctx.call_on_close(db.close)
    return db


def _print_errors(items: Iterable[Any]) -> None:
    """Name each failed input on stderr."""
    for item in items:
        click.echo(f"trialdiff: {item['input']}: {item['error']}", err=True)


def _summary_line(command: str, totals: Any) -> str:
    """Return a run's summary: studies checked, changed, changes by kind, failures."""
    kinds = ", ".join(f"{totals.by_kind[k]} {k}" for k in sorted(totals.by_kind))
    return (
        f"{command}: {totals.checked} studies checked, {totals.changed} changed, "
        f"{totals.changes} changes" + (f" ({kinds})" if kinds else "") + f", {totals.failed} failed"
    )


def _change_lines(changes: Iterable[FieldChange]) -> list[str]:
    """Return one report line per change: study, path, kind, old and new."""
    from .render import short_value

    return [
        f"{c.nct_id}  {c.path} \u2014 {c.kind}: {short_value(c.old, 50)} \u2192 "
        f"{short_value(c.new, 50)}"
        for c in changes
    ]


class OutcomePrinter:
    """Print what a write run did: changes on stdout, failures on stderr, a summary last.

    With `quiet`, nothing is printed unless something changed (failures still go to stderr),
    so cron mails only news. With `progress`, a rich progress bar runs on stderr.
    """

    def __init__(self, command: str, quiet: bool = False, summary: bool = False,
                 progress_total: int | None = None, log_pages: bool = False) -> None:
        self.command = command
        self.quiet = quiet
        self.summary = summary
        self.log_pages = log_pages and not quiet
        self.lines: list[str] = []
        self.progress: Any = None
        if progress_total is not None and sys.stderr.isatty() and not quiet:
            from rich.progress import Progress

            self.progress = Progress(transient=True, console=_stderr_console())
            self.progress.start()
            self.task = self.progress.add_task(command, total=progress_total or None)

    def show(self, outcome: Any) -> None:
        """Print or keep one outcome."""
        from .sources import SourceItem
        from .store import Observation
        from .sync import Event, PageDone

        if isinstance(outcome, SourceItem):
            _print_errors([{"input": outcome.label, "error": outcome.error}])
        elif isinstance(outcome, Observation):
            if outcome.changes and not self.summary:
                self._emit(_change_lines(outcome.changes))
        elif isinstance(outcome, Event):
            detail = f" → {outcome.detail['moved_to']}" if outcome.kind == "moved" else ""
            self._emit([f"{outcome.nct_id}  ({outcome.kind.replace('_', ' ')}{detail})"])
        elif isinstance(outcome, PageDone):
            if self.progress is not None:
                self.progress.advance(self.task, outcome.size)
            elif self.log_pages:
                click.echo(f"{self.command}: saved a page of {outcome.size} ({outcome.what})",
                           err=True)

    def _emit(self, lines: list[str]) -> None:
        """Print lines now, or keep them until we know whether anything changed."""
        if self.quiet:
            self.lines.extend(lines)
        else:
            click.echo("\n".join(lines))

    def finish(self, totals: Any, news: bool) -> None:
        """Print the summary (and, under --quiet, the kept lines if there is news)."""
        if self.progress is not None:
            self.progress.stop()
        if self.quiet and not news:
            return
        if self.lines:
            click.echo("\n".join(self.lines))
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
@click.option("--at", callback=_timestamp, help="Observation time, ISO 8601 (default: now).")
@_wait_option
@click.option("--summary", is_flag=True, help="Print only the summary line, not each change.")
@click.pass_context
def import_command(
    ctx: click.Context, paths: tuple[str, ...], at: str | None, wait: float, summary: bool
) -> None:
    """Snapshot study records from files: JSON, API pages, lists, NDJSON, zip dumps, folders.

    A folder whose subfolders are all named by date (2024-06-14/, 2025-07-07/) is an archive:
    each subfolder is imported as observed on its date, oldest first.

    \b
    Example:
      trialdiff import snapshots/sample
      trialdiff import --at 2026-05-12T07:00:00Z ctg-studies.json.zip
    """
    from .lock import WriteLock
    from .sources import dated_folders, read_studies
    from .store import RunTotals, finish_run, save_studies, start_run

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
        db = _writer(ctx)
        run_id = start_run(db, "import", utc_timestamp())
        for observed_at, batch in batches:
            for outcome in save_studies(db, read_studies(batch), observed_at, totals,
                                        run_id=run_id):
                printer.show(outcome)
        finish_run(db, run_id, totals, utc_timestamp())
    printer.finish(totals, news=True)
    if totals.failed:
        ctx.exit(1)


def _client(api: str, page_size: int, delay: float, timeout: float, retries: int,
            retry_budget: float, max_response_mb: float) -> Any:
    """Return an API client built from the command-line settings."""
    from .fetch import Client, Pacing

    if not 1 <= page_size <= 1000:
        _fail("--page-size must be 1 to 1000 (the API's limit)")
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
                               **_envvar(option))(command)
    return command


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=_nct_ids)
@click.option("--source", type=click.Path(exists=True),
              help="Sync from a bulk dump (ctg-studies.json.zip, a folder, NDJSON) instead.")
@click.option("--at", callback=_timestamp, help="Observation time, ISO 8601 (default: now).")
@click.option("--quiet", is_flag=True, help="Print only when something changed (for cron).")
@_wait_option
@api_options
@click.pass_context
def sync(ctx: click.Context, /, nct_ids: tuple[str, ...], source: str | None, at: str | None,
         quiet: bool, wait: float, **api: Any) -> None:
    """Fetch the tracked studies and saved queries (plus any ids given) and save changes.

    \b
    Example:
      trialdiff sync --quiet
      trialdiff sync NCT05827016 --api http://127.0.0.1:8765/api/v2
    """
    from .lock import WriteLock
    from .store import RunTotals, finish_run, start_run
    from .sync import mark_interrupted_runs, sync_api, sync_source, tracked_ids

    observed_at = at or utc_timestamp()
    totals = RunTotals()
    with WriteLock(ctx.obj.db, wait, "sync"):
        db = _writer(ctx)
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
                events += type(outcome).__name__ == "Event"
                printer.show(outcome)
        finally:
            finish_run(db, run_id, totals, utc_timestamp(), data_timestamp)
            if printer.progress is not None:
                printer.progress.stop()
    printer.finish(totals, news=bool(totals.changes or events or totals.failed))
    if totals.failed:
        ctx.exit(1)


def _queries(values: tuple[str, ...]) -> list[str]:
    """Return saved queries in canonical form."""
    from .sync import parse_query

    return [parse_query(v) for v in values]


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=_nct_ids)
@click.option("--query", "queries", multiple=True, metavar="EXPR",
              help="A saved query of API parameters, e.g. 'query.cond=asthma'.")
@click.pass_context
def track(ctx: click.Context, nct_ids: tuple[str, ...], queries: tuple[str, ...]) -> None:
    """Add studies or saved queries to what `sync` fetches.

    \b
    Example:
      trialdiff track NCT05827016 NCT06060392 --query 'query.cond=myeloma'
    """
    from .sync import track as add

    if not nct_ids and not queries:
        _fail("give NCT ids or --query EXPR")
    new_ids, new_queries = add(_writer(ctx), nct_ids, _queries(queries), utc_timestamp())
    click.echo(f"track: {new_ids} new studies, {new_queries} new queries")


@cli.command()
@click.argument("nct_ids", nargs=-1, callback=_nct_ids)
@click.option("--query", "queries", multiple=True, metavar="EXPR")
@click.pass_context
def untrack(ctx: click.Context, nct_ids: tuple[str, ...], queries: tuple[str, ...]) -> None:
    """Remove studies or saved queries from what `sync` fetches (their history stays).

    \b
    Example:
      trialdiff untrack NCT06060392
    """
    from .sync import untrack as remove

    if not nct_ids and not queries:
        _fail("give NCT ids or --query EXPR")
    removed = remove(_writer(ctx), nct_ids, _queries(queries))
    click.echo(f"untrack: {removed} removed")


@cli.command()
@click.pass_context
def tracked(ctx: click.Context) -> None:
    """List the tracked studies and saved queries.

    \b
    Example:
      trialdiff tracked
    """
    conn = _reader(ctx)
    for nct_id, state, moved_to, added_at in conn.execute(
        "select nct_id, state, moved_to, added_at from watchlist order by nct_id"
    ):
        note = f" → {moved_to}" if moved_to else ""
        click.echo(f"{nct_id}  {state}{note}  since {added_at}")
    for expr, last in conn.execute("select expr, last_synced_at from queries order by id"):
        click.echo(f"query  {expr}  last synced {last or 'never'}")


@cli.command()
@click.argument("nct_id", callback=_nct_ids)
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--as-of", "as_of", callback=_timestamp, help="Last day (default: today).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many lines.")
@click.pass_context
def recent(
    ctx: click.Context, nct_id: str, days: int, as_of: str | None, limit: int | None
) -> None:
    """Print a study's Recent Field Changes section, as a trial page shows it.

    \b
    Example:
      trialdiff recent NCT05827016 --days 30 --as-of 2025-07-07
    """
    from .query import ChangeFilter, query_changes
    from .render import recent_section, recent_window

    since, until = recent_window(utc_day(as_of), days)
    changes = list(query_changes(_reader(ctx), ChangeFilter((nct_id,), since, until)))
    click.echo(recent_section(changes, days, limit), nl=False)


def _change_filter(
    nct_ids: tuple[str, ...], since: str | None, until: str | None, days: int | None,
    as_of: str | None, path: str | None, kinds: tuple[str, ...],
) -> Any:
    """Return the filter the changelog options describe."""
    from .query import ChangeFilter
    from .render import recent_window

    if days is not None:
        if since is not None:
            _fail("--days and --since both set where the window starts; give one")
        since, window_end = recent_window(utc_day(as_of), days)
        until = min(until, window_end) if until else window_end
    elif as_of is not None:
        _fail("--as-of goes with --days")
    return ChangeFilter(nct_ids, since, until, path, kinds)


def change_filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the changelog filters shared by every command that lists changes."""
    for decorator in reversed(
        (
            click.argument("nct_ids", nargs=-1, callback=_nct_ids),
            click.option("--since", callback=_timestamp, help="From this time on (inclusive)."),
            click.option("--until", callback=_timestamp, help="Before this time (exclusive)."),
            click.option("--days", type=click.IntRange(min=1), help="The last N days."),
            click.option("--as-of", "as_of", callback=_timestamp,
                         help="Last day of --days (default: today)."),
            click.option("--path", metavar="PREFIX", help="Only paths equal to or under PREFIX."),
            click.option("--kind", "kinds", multiple=True,
                         type=click.Choice(["added", "removed", "changed"])),
        )
    ):
        command = decorator(command)
    return command


@cli.command()
@change_filter_options
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True)
@click.pass_context
def changes(ctx: click.Context, /, fmt: str, **filters: Any) -> None:
    """List stored changes, oldest first; with no filter, every change.

    \b
    Example:
      trialdiff changes NCT05827016 --path status --format json
    """
    from .query import query_changes
    from .render import changes_json

    where = _change_filter(**filters)
    click.echo(changes_json(query_changes(_reader(ctx), where)), nl=False)


@cli.command()
@click.argument("nct_id", callback=_nct_ids)
@click.pass_context
def history(ctx: click.Context, nct_id: str) -> None:
    """List a study's stored snapshots.

    \b
    Example:
      trialdiff history NCT05827016
    """
    from .query import snapshots_of
    from .render import history_table

    click.echo(history_table(nct_id, snapshots_of(_reader(ctx), nct_id)), nl=False)


@cli.command()
@click.argument("nct_id", callback=_nct_ids)
@click.pass_context
def diff(ctx: click.Context, nct_id: str) -> None:
    """Print what changed between a study's last two snapshots.

    \b
    Example:
      trialdiff diff NCT05827016
    """
    from .diff import diff_snapshots
    from .query import snapshot_at, study_row
    from .render import plain_diff

    conn = _reader(ctx)
    row = study_row(conn, nct_id)
    if row is None:
        raise CliError(f"{nct_id} is not in the database")
    count = row["snapshot_count"]
    new = snapshot_at(conn, nct_id, count)
    old = snapshot_at(conn, nct_id, count - 1) if count > 1 else None
    assert new is not None
    header = (
        f"{nct_id}: snapshot {count - 1} ({old.observed_at}) \u2192 {count} ({new.observed_at})"
        if old else f"{nct_id}: one snapshot ({new.observed_at}), the silent baseline"
    )
    click.echo(plain_diff(nct_id, diff_snapshots(old, new), header), nl=False)


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Verify the database: integrity, schema, every snapshot's hash, every stored change.

    Recomputes every change from the stored snapshots and compares it with what is stored.
    Prints each problem and exits 1 if there is any.

    \b
    Example:
      trialdiff check
    """
    from .check import CheckTotals, check_database

    totals = CheckTotals()
    problems = 0
    for problem in check_database(_reader(ctx), totals):
        problems += 1
        click.echo(f"problem: {problem}")
    click.echo(
        f"check: {totals.studies} studies, {totals.snapshots} snapshots, {totals.changes} "
        f"changes verified; {problems} problems"
    )
    if problems:
        ctx.exit(1)


def main() -> None:
    """Run the command line."""
    cli(prog_name="trialdiff")


if __name__ == "__main__":
    main()
