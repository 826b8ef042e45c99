"""Commands that only read the database: never blocked by a writer, they see its last commit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..export import CHANGELOG_FORMATS, REPORT_FORMATS
from ..model import utc_day
from . import (
    MAX_DAYS,
    CliError,
    check_nct_ids,
    cli,
    fail,
    parse_as_of,
    parse_timestamp,
    reader,
    tracker,
)
from .options import TEXT, checked_url, setting_option, wait_option, window_days_option


def _beside_database(output: str, db: str) -> bool:
    """Tell whether a path names a file kept beside the database: WAL, shared memory, lock."""
    real = os.path.realpath(db)  # SQLite and the lock name their files after the real path
    return os.path.realpath(output) in {real + end for end in ("-wal", "-shm", "-journal",
                                                                ".lock")}


@cli.command()
@click.argument("nct_id", callback=check_nct_ids)
@window_days_option
@click.option("--as-of", "as_of", callback=parse_as_of, help="Last day (default: today).")
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
    text = tracker(ctx, create=False).recent_section(nct_id, days, as_of, limit)
    click.echo(text, nl=False)


def _change_filter(
    nct_ids: tuple[str, ...], since: str | None, until: str | None, days: int | None,
    as_of: str | None, paths: tuple[str, ...], kinds: tuple[str, ...],
) -> Any:
    """Return the filter the changelog options describe."""
    from ..query import ChangeFilter
    from ..render import recent_window

    start = "--since"
    if days is not None:
        if since is not None:
            fail("--days and --since both set where the window starts; give one")
        since, window_end = recent_window(utc_day(as_of), days)
        until = min(until, window_end) if until else window_end
        start = f"the start of --days {days}"  # no --since was given: name what set it
    elif as_of is not None:
        fail("--as-of goes with --days")
    if since is not None and until is not None and until <= since:
        fail(f"--until ({until}) is not after {start} ({since}): the window is empty")
    return ChangeFilter(nct_ids, since, until, paths, kinds)


def change_filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the changelog filters shared by every command that lists changes."""
    for decorator in reversed(
        (
            click.argument("nct_ids", nargs=-1, callback=check_nct_ids),
            click.option("--since", callback=parse_timestamp, help="From this time (inclusive)."),
            click.option("--until", callback=parse_timestamp, help="Before this time."),
            click.option("--days", type=click.IntRange(1, MAX_DAYS), help="The last N days."),
            click.option("--as-of", "as_of", callback=parse_as_of,
                         help="Last day of --days (default: today)."),
            click.option("--path", "paths", type=TEXT, metavar="PREFIX", multiple=True,
                         help="Only paths equal to or under PREFIX (repeatable: any of them)."),
            click.option("--kind", "kinds", multiple=True,
                         type=click.Choice(["added", "removed", "changed"]),
                         help="Only changes of this kind (repeatable: any of them)."),
        )
    ):
        command = decorator(command)
    return command


@cli.command()
@change_filter_options
@click.option("--format", "fmt", type=click.Choice(CHANGELOG_FORMATS), default="json",
              show_default=True)
@click.option("--min-severity", type=click.Choice(["info", "minor", "major"]),
              help="Only changes at least this severe (see README: severity rules).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write to FILE (atomically) instead of stdout ('-': stdout).")
@click.pass_context
def changes(ctx: click.Context, /, fmt: str, min_severity: str | None, output: str | None,
            **filters: Any) -> None:
    """Export stored changes as JSON, NDJSON, CSV, Markdown or Atom; with no filter, all.

    \b
    Example:
      trialdiff changes NCT05827016 --path status --format json
      trialdiff changes --days 7 --min-severity major --format atom -o feed.xml
    """
    from dataclasses import replace

    from ..export import feed_subject, stream_export, whole_observations
    from ..query import StudyTitles, last_observed, query_changes, unknown_studies

    conn = reader(ctx)
    where, keep = whole_observations(_change_filter(**filters))
    chunks = stream_export(fmt, lambda order: query_changes(conn, replace(where, order=order)),
                           min_severity, StudyTitles(conn),
                           last_observed(conn) if fmt == "atom" else None, keep,
                           feed_subject(filters["nct_ids"], filters["paths"], filters["kinds"],
                                        min_severity))
    if output is not None and output != "-":
        from ..site import write_atomic

        if not output.strip():  # an unset variable in a script: not stdout, not "."
            fail("-o '' names no file: give a path, or leave -o out to write to stdout")
        if Path(output).exists() and Path(output).samefile(ctx.obj.db):
            fail(f"-o {output} is the database itself: write the export to another file")
        if _beside_database(output, ctx.obj.db):
            fail(f"-o {output} is a file SQLite or trialdiff keeps beside the database "
                 "(replacing it loses committed data or the write lock): write the export "
                 "to another file")
        write_atomic(output, chunks)
    else:  # no -o, or "-" as most commands take it: stdout
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
    # A mistyped id in a cron export is not a quiet feed: the rest is written, and it is named.
    unknown = unknown_studies(conn, filters["nct_ids"])
    for nct_id in unknown:
        click.echo(f"trialdiff: {nct_id} is not in the database", err=True)
    if unknown:
        ctx.exit(1)


@cli.command()
@click.argument("nct_id", callback=check_nct_ids)
@click.pass_context
def history(ctx: click.Context, nct_id: str) -> None:
    """List a study's stored snapshots; backfilled ones with what the registry listed.

    \b
    Example:
      trialdiff history NCT05827016
    """
    from ..errors import UnknownStudy
    from ..query import listed_versions, snapshots_of
    from ..render import history_table

    conn = reader(ctx)
    rows = snapshots_of(conn, nct_id)
    if not rows:  # as recent, diff and page say of a study the database does not hold
        raise UnknownStudy(f"{nct_id} is not in the database")
    click.echo(history_table(nct_id, rows, listed_versions(conn, nct_id)), nl=False)


@cli.command()
@click.argument("nct_id", callback=check_nct_ids)
@click.option("--from", "from_ref", metavar="REF",
              help="A snapshot number, a date, `latest` or `previous` (default: the one before).")
@click.option("--to", "to_ref", metavar="REF", help="The same (default: latest).")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="text",
              show_default=True)
@click.pass_context
def diff(ctx: click.Context, nct_id: str, from_ref: str | None, to_ref: str | None,
         fmt: str) -> None:
    """Report what changed in a study between two snapshots, field by field.

    Long text shows as a word diff, lists item by item, dates as a shift in days. Colour on a
    terminal; plain [-old-]{+new+} markers under NO_COLOR or in a pipe.

    \b
    Example:
      trialdiff diff NCT05827016
      trialdiff diff NCT05827016 --from 2024-06-14 --to latest --format md
    """
    from ..export import EXPORTERS
    from ..query import snapshot_at, snapshots_of
    from ..report import build_report, resolve_pair

    conn = reader(ctx)
    rows = snapshots_of(conn, nct_id)
    if not rows:
        raise CliError(f"{nct_id} is not in the database")
    first, last = resolve_pair(from_ref, to_ref, rows)
    new = snapshot_at(conn, nct_id, last)
    assert new is not None
    report = build_report(snapshot_at(conn, nct_id, first) if first else None, new, first, last)
    if fmt == "text":
        # Printed on the live console rather than as text: colour when it is a terminal.
        from rich.console import Console

        from ..terminal import render_report

        class PipedConsole(Console):
            def on_broken_pipe(self) -> None:
                """Stop quietly as every command does when its reader left (`| head`): exit 0."""
                raise BrokenPipeError  # rich's own stop exits 1

        console = PipedConsole(file=sys.stdout, highlight=False)  # UTF-8: main()
        if console.width < 1:  # COLUMNS=0, taken as it is, printed nothing at all
            console.width = 80
        render_report(report, console)
        return
    render = EXPORTERS[fmt].report
    assert render is not None
    click.echo(render(report), nl=False)


def _checked_base(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Refuse a --canonical-base that is not an http(s) URL (exit 2): every page would carry it."""
    from ..arguments import check_base_url

    if value:
        checked_url(ctx, "--canonical-base", lambda: check_base_url(
            value, "canonical_base", "https://example.org/trials/"))
    return value.strip()  # checked stripped, so used stripped: a blank is no part of a link


@cli.command()
@click.argument("nct_id", required=False, callback=check_nct_ids)
@click.option("--all", "every", is_flag=True, help="Write every study's page to --out.")
@click.option("--changed-since", callback=parse_as_of, metavar="DATE",
              help="Write only the pages that changed since DATE to --out.")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for --all/--changed-since.")
@click.option("--as-of", "as_of", callback=parse_as_of, metavar="DATE",
              help="Last day of the Recent Field Changes window (the rest is the latest record).")
@window_days_option
@click.option("--canonical-base", metavar="URL", callback=_checked_base,
              **setting_option("--canonical-base"))
@click.option("--footer", type=TEXT, metavar="TEXT", **setting_option("--footer"))
@click.option("--ages", is_flag=True,
              help="Add Minimum Age and Maximum Age lines to Eligibility (the sample page "
                   "has none).")
@click.pass_context
def page(ctx: click.Context, nct_id: str | None, every: bool, changed_since: str | None,
         out: str | None, as_of: str | None, days: int, canonical_base: str,
         footer: str, ages: bool) -> None:
    """Render a study's trial page, with its Recent Field Changes section (Markdown).

    With --all or --changed-since, write one page per study to --out DIR/<NCT_ID>.md, each
    atomically, leaving unchanged pages untouched: the step a site's cron runs after sync.

    \b
    Example:
      trialdiff page NCT05827016 --canonical-base https://example.org/trials/
      trialdiff page NCT05827016 --ages
      trialdiff page --changed-since 2025-07-06 --out site/trials
    """
    from ..site import write_site

    site = every or changed_since is not None
    if out is not None and not out.strip():  # an unset variable in a script: not "."
        fail("--out '' names no folder: give the site's folder")
    if nct_id is not None and not site and out is not None:
        fail("--out DIR goes with --all or --changed-since; one study's page is printed "
             "(trialdiff page NCT_ID > FILE)")
    if site == (nct_id is not None) or site != (out is not None) or (
            every and changed_since is not None):
        fail("give NCT_ID, or --all or --changed-since (one of them) with --out DIR")
    day = utc_day(as_of)
    if nct_id is not None:
        text = tracker(ctx, create=False).page(nct_id, day, days, canonical_base, footer, ages)
        click.echo(text, nl=False)
        return
    assert out is not None
    written, unchanged, failures = write_site(ctx.obj.db, out, changed_since, day, days,
                                              canonical_base, footer, ages=ages)
    for failure in failures:
        click.echo(f"trialdiff: {failure}", err=True)
    click.echo(f"page: {written} pages written, {unchanged} unchanged, in {out}"
               + (f"; {len(failures)} failed" if failures else ""))
    if failures:
        ctx.exit(1)


@cli.command()
@wait_option
@click.pass_context
def check(ctx: click.Context, wait: float) -> None:
    """Verify the database: integrity, schema, every snapshot's hash, every stored change.

    Recomputes every change from the stored snapshots and compares it with what is stored,
    and checks that every row belongs to the study, snapshot and time it names. Prints each
    problem and exits 1 if there is any. A database an older trialdiff made is first upgraded
    in place (readers read only the current schema).

    \b
    Example:
      trialdiff check
    """
    from ..check import CheckTotals
    from ..schema import SCHEMA_VERSION, upgrade

    old = upgrade(ctx.obj.db, wait)  # the only write, and only of an older file
    if old is not None:
        click.echo(f"trialdiff: upgraded {ctx.obj.db} from schema version {old} to "
                   f"{SCHEMA_VERSION}", err=True)
    totals = CheckTotals()
    found = tracker(ctx, create=False).check(totals)
    problems = len(found)
    for problem in found:
        click.echo(f"problem: {problem}")
    from ..render import plural

    click.echo(
        f"check: {plural(totals.studies, 'study')}, {plural(totals.snapshots, 'snapshot')}, "
        f"{plural(totals.changes, 'change')} verified; {plural(problems, 'problem')}"
    )
    if problems:
        ctx.exit(1)
