"""The `trialdiff` command: thin commands that wire readers, writers and renderers together.

Only this module prints. Heavy libraries are imported inside the commands that need them, so
a read such as `trialdiff recent` starts fast.
"""

from __future__ import annotations

import sqlite3
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
    """Open the database for reading."""
    from .query import connect_readonly

    return connect_readonly(ctx.obj.db)


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


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--at", callback=_timestamp, help="Observation time, ISO 8601 (default: now).")
@click.option("--wait", type=float, default=0.0, metavar="SECONDS",
              help="Wait this long for another writer instead of exiting 75.")
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
    from .schema import open_db
    from .sources import SourceItem, dated_folders, read_studies
    from .store import RunTotals, finish_run, save_studies, start_run

    batches: list[tuple[str, list[str]]] = []
    for path in paths:
        archive = dated_folders(path)
        if archive and at is None:
            batches.extend((utc_timestamp(day), [str(folder)]) for day, folder in archive)
        else:
            batches.append((at or utc_timestamp(), [path]))
    totals = RunTotals()
    with WriteLock(ctx.obj.db, wait, "import"):
        db = open_db(ctx.obj.db)
        run_id = start_run(db, "import", utc_timestamp())
        for observed_at, batch in batches:
            for outcome in save_studies(db, read_studies(batch), observed_at, totals,
                                        run_id=run_id):
                if isinstance(outcome, SourceItem):
                    _print_errors([{"input": outcome.label, "error": outcome.error}])
                elif outcome.changes and not summary:
                    click.echo("\n".join(_change_lines(outcome.changes)))
        finish_run(db, run_id, totals, utc_timestamp())
    click.echo(_summary_line("import", totals))
    if totals.failed:
        ctx.exit(1)


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


def main() -> None:
    """Run the command line."""
    cli(prog_name="trialdiff")


if __name__ == "__main__":
    main()
