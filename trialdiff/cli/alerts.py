"""Commands for alerts: watch rules (`watch ...`), delivering the outbox (`notify`), `alerts`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..model import utc_day, utc_timestamp
from ..render import plural
from ..settings import ALERT_BOUNDS
from . import Group, check_nct_ids, cli, fail, parse_as_of, reader, tracker, writer
from .options import TEXT, finite, setting_option, wait_option, window_days_option
from .sinks import show_delivery

MIN_SECRET = 16  # characters of a --secret given as itself (GitHub asks for high entropy)


def alert_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the delivery settings to a command that delivers alerts."""
    for option in reversed(("--alert-timeout", "--alert-backoff", "--alert-max-age")):
        # The library's bounds: a bad value from a variable is named as that variable.
        bounds = ALERT_BOUNDS[option.removeprefix("--").replace("-", "_")]
        command = click.option(option, type=finite(float, *bounds), metavar="FLOAT",
                               **setting_option(option))(command)
    return command


@cli.group(cls=Group)
def watch() -> None:
    """Watch rules: who hears about which changes (see README: Alerts).

    \b
    Example:
      trialdiff watch add stops --fact stopped --to https://hooks.example.org/trials
    """


@watch.command("add")
@click.argument("name", type=TEXT)
@click.option("--study", "studies", multiple=True, callback=check_nct_ids, metavar="NCT_ID",
              help="A study to watch (repeatable); untracked ones get tracked.")
@click.option("--query", type=TEXT, metavar="EXPR",
              help="Watch a saved query's studies (saved if new).")
@click.option("--path", "paths", type=TEXT, multiple=True, metavar="PREFIX",
              help="Only paths equal to or under PREFIX (repeatable).")
@click.option("--kind", "kinds", multiple=True,
              type=click.Choice(["added", "removed", "changed"]))
@click.option("--min-severity", type=click.Choice(["info", "minor", "major"]))
@click.option("--fact", "facts", type=TEXT, multiple=True, metavar="FACT",
              help="stopped, results_posted, actualized, date_slip>=DAYS, "
                   "enrollment_change>=PCT, site_added[:COUNTRY] (one must hold).")
@click.option("--digest", is_flag=True, help="One message per run instead of one per study.")
@click.option("--to", "targets", type=TEXT, multiple=True, required=True, metavar="URL",
              help="http(s) webhook, an Apprise URL, or env:NAME (repeatable).")
@click.option("--secret", type=TEXT, metavar="S",
              help="Sign webhooks with HMAC-SHA256 (or env:NAME).")
@wait_option
@click.pass_context
def watch_add(ctx: click.Context, /, name: str, studies: tuple[str, ...], query: str | None,
              paths: tuple[str, ...], kinds: tuple[str, ...], min_severity: str | None,
              facts: tuple[str, ...], digest: bool, targets: tuple[str, ...],
              secret: str | None, wait: float) -> None:
    """Add a watch rule; its targets and secret go to the secrets file, not the database.

    \b
    Example:
      trialdiff watch add slips --study NCT06060392 --fact 'date_slip>=90' --to env:SLIP_HOOK
    """
    from ..notify import check_target
    from ..query import transaction
    from ..targets import ENV_PREFIX, given_target, keep_all
    from ..watch import Watch, add_watch, parse_fact, validate
    from ..watchlist import parse_query, track

    if secret is not None and not secret.strip():  # an unset variable: not "unsigned"
        fail("--secret '' is no secret: give one, or leave --secret out for unsigned alerts")
    if secret and not secret.startswith(ENV_PREFIX) and len(secret) < MIN_SECRET:
        # A short key is guessable, and errors blank it out wherever it appears ("C…nect").
        fail(f"--secret is {len(secret)} characters: give at least {MIN_SECRET} (random, "
             "as from `openssl rand -hex 32`)")
    expr = parse_query(query) if query is not None else None  # '' is no query: refused
    # One given twice would get every alert twice.
    targets = tuple(dict.fromkeys(given_target(target) for target in targets))
    rule = Watch(name, targets, tuple(studies) or None, expr, paths, kinds, min_severity,
                 tuple(parse_fact(f) for f in facts), digest, None, utc_timestamp())
    validate(rule)
    for target in targets:
        if not target.startswith(ENV_PREFIX):
            check_target(target)
    db = writer(ctx, wait=wait)
    if db.execute("select 1 from watches where name = ?", [name]).fetchone():
        fail(f"a watch named {name!r} exists; remove it first")
    # Kept first: a target or secret refused (env: with no name, an unreadable secrets
    # file) leaves nothing behind, no study tracked and no other value kept.
    refs = keep_all([*targets, *([secret] if secret else [])], owner=ctx.obj.db)
    track(db, studies, [expr] if expr else [], rule.created_at)
    from dataclasses import replace

    with transaction(db):
        add_watch(db, replace(rule, targets=tuple(refs[:len(targets)]),
                              secret=refs[-1] if secret else None))
    click.echo(f"watch add: {name} \u2192 {plural(len(targets), 'target')}")


@watch.command("list")
@click.pass_context
def watch_list(ctx: click.Context) -> None:
    """List the watch rules, targets redacted to scheme, host and port.

    \b
    Example:
      trialdiff watch list
    """
    from ..targets import shown
    from ..watch import load_watches

    for rule in load_watches(reader(ctx)):
        scope = ("studies " + ",".join(rule.studies) if rule.studies is not None
                 else f"query {rule.query}" if rule.query else "every study")
        filters = [*(f"path {p}" for p in rule.paths), *(f"kind {k}" for k in rule.kinds),
                   *([f"severity>={rule.min_severity}"] if rule.min_severity else []),
                   *(f"fact {f}" for f in rule.facts), *(["digest"] if rule.digest else []),
                   *(["signed"] if rule.secret else [])]
        click.echo(f"{rule.name}  {scope}" + (f"  [{'; '.join(filters)}]" if filters else "")
                   + "  \u2192 " + ", ".join(shown(t) for t in rule.targets))


@watch.command("remove")
@click.argument("name", type=TEXT)
@wait_option
@click.pass_context
def watch_remove(ctx: click.Context, name: str, wait: float) -> None:
    """Remove a watch rule and its stored targets; alerts already raised stay.

    \b
    Example:
      trialdiff watch remove slips
    """
    from ..query import transaction
    from ..targets import forget
    from ..watch import remove_watch

    db = writer(ctx, create=False, wait=wait)
    forget([])  # the secrets file read first: a rule whose targets cannot be dropped stays
    with transaction(db):
        rule = remove_watch(db, name)
    kept = forget([*rule.targets, *([rule.secret] if rule.secret else [])], owner=ctx.obj.db)
    click.echo(f"watch remove: {name}")
    if kept:  # a copy of the database that added them: the original still sends with them
        click.echo(f"trialdiff: watch remove: {', '.join(kept)} stay in the secrets file: "
                   "another database file added them (this one is a copy of it, or was "
                   "moved): `database:ID` there names it", err=True)


def _window(days: int, as_of: str | None) -> tuple[str, str]:
    """Return the [since, until) of the last `days` days up to as_of (default today)."""
    from ..render import recent_window

    return recent_window(utc_day(as_of), days)


@watch.command("show")
@click.argument("name", type=TEXT)
@window_days_option
@click.option("--as-of", "as_of", callback=parse_as_of, help="Last day (default: today).")
@click.pass_context
def watch_show(ctx: click.Context, name: str, days: int, as_of: str | None) -> None:
    """Print the messages a watch would have sent for the last N days' stored changes.

    \b
    Example:
      trialdiff watch show slips --days 30
    """
    from ..notify import message_title
    from ..watch import get_watch, would_match

    conn = reader(ctx)
    rule = get_watch(conn, name)
    groups = would_match(conn, rule, *_window(days, as_of))
    for scope, changes in groups:
        click.echo(f"{message_title(rule.name, scope, changes)}")
        for item in changes:
            click.echo(f"  {item['nct_id']}  {item['detected_at'][:10]}  {item['path']} "
                       f"\u2014 {item['kind']} ({item['severity']})")
    click.echo(f"watch show: {plural(len(groups), 'message')}, "
               f"{plural(sum(len(c) for _, c in groups), 'change')} in {plural(days, 'day')}")


@watch.command("test")
@click.argument("name", type=TEXT)
@alert_options
@click.pass_context
def watch_test(ctx: click.Context, name: str, alert_timeout: float, alert_backoff: float,
               alert_max_age: float) -> None:
    """Send a watch's latest matching message (or a test note) to each target now.

    \b
    Example:
      trialdiff watch test slips
    """
    from ..notify import check_settings, test_alert
    from ..watch import get_watch, would_match

    check_settings(alert_timeout, alert_backoff, alert_max_age)  # as every delivering command
    conn = reader(ctx)
    rule = get_watch(conn, name)
    results = test_alert(rule, would_match(conn, rule, *_window(30, None)), alert_timeout)
    failed = 0
    for shown, error in results:
        if error:
            failed += 1
            click.echo(f"trialdiff: watch test: {shown}: {error}", err=True)
        else:
            click.echo(f"watch test: {shown}: delivered")
    if failed:
        ctx.exit(1)


@cli.command()
@click.option("--quiet", is_flag=True, help="Print only when something was sent or failed.")
@wait_option
@alert_options
@click.pass_context
def notify(ctx: click.Context, /, quiet: bool, wait: float, **settings: Any) -> None:
    """Deliver pending alerts whose retry is due (for a cron line of its own).

    \b
    Example:
      trialdiff notify --quiet
    """
    totals = tracker(ctx, wait, create=False).notify(timeout=settings["alert_timeout"],
                                                     backoff=settings["alert_backoff"],
                                                     max_age_hours=settings["alert_max_age"])
    if show_delivery(totals, quiet):
        ctx.exit(1)


@cli.command()
@click.option("--pending", is_flag=True, help="Only alerts not delivered yet.")
@click.option("--failed", is_flag=True, help="Only alerts given up (with --pending: both).")
@click.pass_context
def alerts(ctx: click.Context, pending: bool, failed: bool) -> None:
    """List raised alerts, one line per target: state, attempts, last error (redacted).

    \b
    Example:
      trialdiff alerts --pending
    """
    from ..notify import list_alerts
    from ..targets import shown

    states = [state for state, asked in (("pending", pending), ("failed", failed)) if asked]
    for row in list_alerts(reader(ctx), states):
        # When it went; when it is due again; or, given up, when it was last tried.
        when = (row["delivered_at"] if row["state"] == "delivered" else row["next_attempt_at"]
                if row["state"] == "pending" else row["last_attempt_at"]) or ""
        note = f"  {row['last_error']}" if row["last_error"] and row["state"] != "delivered" else ""
        click.echo(f"{row['id']}  {row['watch']}  {row['scope']}  "
                   f"{plural(row['changes'], 'change')}  "
                   f"run {row['run_id']}  {shown(row['target'])}  {row['state']}  "
                   f"attempts {row['attempts']}" + (f"  {when}" if when else "") + note)
