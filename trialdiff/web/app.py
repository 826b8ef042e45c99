"""Build the read-only Datasette that `trialdiff serve` runs, with trialdiff's plugin in it."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import webbrowser
from pathlib import Path
from typing import Any

from datasette.app import Datasette
from datasette.plugins import pm

from ..errors import TrialdiffError
from ..lock import frozen
from . import plugin
from .metadata import build_metadata, private_columns

SETTINGS = {
    "allow_download": False,  # the file holds private columns the view never shows
    "truncate_cells_html": 300,
    "default_facet_size": 15,
    "sql_time_limit_ms": 5000,
}


def register_plugin() -> None:
    """Register trialdiff's Datasette plugin once per process (no pip entry point needed)."""
    if not pm.is_registered(plugin):
        pm.register(plugin, name="trialdiff")


def make_datasette(db_path: str) -> Datasette:
    """Return a Datasette over one trialdiff database, opened read only (SQLite mode=ro)."""
    register_plugin()
    quiet_error_pages()
    name = Path(db_path).stem
    # A mutable file is opened with mode=ro, which still sees what a running sync commits;
    # immutable=1 would not read the WAL, and would misread a file that changes. On a
    # read-only filesystem, where mode=ro cannot read a WAL-mode file, nothing changes it.
    files = {"immutables" if frozen(db_path) else "files": [db_path]}
    datasette = Datasette(**files, metadata=build_metadata(name), settings=SETTINGS)
    count_public_tables(datasette.get_database(name))
    return datasette


def count_public_tables(database: Any) -> None:
    """Count a database's tables for Datasette's index pages, but the wholly private ones.

    The authorizer refuses those (plugin.py), and Datasette logs every refused query: each
    load of the index pages wrote five "not authorized" lines to the server's log.
    """
    from datasette.database import QueryInterrupted

    async def table_counts(limit: int = 10) -> dict[str, int | None]:
        counts: dict[str, int | None] = {}
        for table in await database.table_names():
            counts[table] = None  # private, or too slow to count: Datasette shows no count
            if "*" in private_columns().get(table, ()):
                continue
            with contextlib.suppress(QueryInterrupted, sqlite3.DatabaseError):
                result = await database.execute(f"select count(*) from [{table}]",
                                                 custom_time_limit=limit)
                counts[table] = result.rows[0][0]
        return counts

    database.table_counts = table_counts


def quiet_error_pages() -> None:
    """Stop Datasette printing a traceback, with the request's locals, for every error page."""
    import datasette.handle_exception as default_handler

    # Its default handler prints whenever rich is importable, and trialdiff depends on rich: a
    # 404 for a mistyped study would flood the server's log. The error page itself is kept.
    default_handler.rich = None


def listen(host: str, port: int) -> socket.socket:
    """Bind the address to serve on, so that one in use is known before anything is announced."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn binds: a restart need not wait out the old server's closing connections.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run(datasette: Datasette, sock: socket.socket, open_url: str | None) -> None:
    """Serve on a bound socket until interrupted; open a browser at `open_url` once it is up."""
    import uvicorn

    if open_url:
        threading.Timer(1.0, webbrowser.open, [open_url]).start()
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(datasette.app(), host=host, port=port,
                                           log_level="warning", lifespan="on"))
    server.run(sockets=[sock])
    if not server.started:  # uvicorn's log above says why
        raise TrialdiffError("the web server did not start")
