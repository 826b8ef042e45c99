"""The web view (`serve`, Datasette, an optional extra) and `reannotate`, which feeds it."""

from __future__ import annotations

import errno

import click

from . import CliError, cli, reader, tracker
from .options import wait_option

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cli.command()
@wait_option
@click.pass_context
def reannotate(ctx: click.Context, wait: float) -> None:
    """Recompute every stored change's severity and facts by the current severity rules.

    Run it after the rules change (a new trialdiff); `trialdiff check` says when it is needed.

    \b
    Example:
      trialdiff reannotate
    """
    checked, updated = tracker(ctx, wait, create=False).reannotate()
    click.echo(f"reannotate: {checked} changes checked, {updated} updated")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback publishes the database.")
@click.option("--port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--open", "open_browser", is_flag=True, help="Open the study list in a browser.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, open_browser: bool) -> None:
    """Browse the changes in Datasette, read only: facets, canned queries, feeds, study pages.

    Needs the web extra: pip install 'trialdiff[web]'.

    \b
    Example:
      trialdiff serve --port 8001 --open
    """
    try:
        from ..web.app import listen, make_datasette, run
    except ImportError as exc:
        missing = (exc.name or "datasette").split(".")[0]
        raise CliError(f"serve needs the web extra ({missing} is missing): "
                       "pip install 'trialdiff[web]'") from exc
    reader(ctx)  # an older or foreign file is refused here, with what to do about it
    datasette = make_datasette(ctx.obj.db)
    try:  # bound before it is announced: a port in use is said once, and nothing else
        sock = listen(host, port)
    except OSError as exc:
        raise CliError(f"port {port} on {host} is in use" if exc.errno == errno.EADDRINUSE
                       else f"cannot listen on {host} port {port}: {exc.strerror or exc}"
                       ) from exc
    if host not in LOOPBACK:
        click.echo(f"trialdiff: warning: listening on {host}: anyone who can reach this "
                   "address can read the database", err=True)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"
    click.echo(f"serve: {ctx.obj.db} read only at {url} (Ctrl-C stops)", err=True)
    try:
        run(datasette, sock, url if open_browser else None)
    except KeyboardInterrupt as stop:  # how a server is stopped: not a run cut short
        from .sinks import stopped

        click.echo("serve: stopped", err=True)
        ctx.exit(stopped(stop)[1])
