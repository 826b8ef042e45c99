"""Build the read-only Datasette that `trialdiff serve` runs, with trialdiff's plugin in it."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path
from typing import Any

from datasette.app import Datasette
from datasette.plugins import pm

from . import plugin
from .metadata import build_metadata

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
    # immutable=1 would not read the WAL, and would misread a file that changes.
    return Datasette(files=[db_path], metadata=build_metadata(name), settings=SETTINGS)


def quiet_error_pages() -> None:
    """Stop Datasette printing a traceback, with the request's locals, for every error page."""
    import datasette.handle_exception as default_handler

    # Its default handler prints whenever rich is importable, and trialdiff depends on rich: a
    # 404 for a mistyped study would flood the server's log. The error page itself is kept.
    default_handler.rich = None


def run(datasette: Datasette, host: str, port: int, open_url: str | None) -> None:
    """Serve until interrupted; open a browser at `open_url` once it is up, if given."""
    import uvicorn

    if open_url:
        threading.Timer(1.0, webbrowser.open, [open_url]).start()
    config: dict[str, Any] = {"host": host, "port": port, "log_level": "warning",
                              "lifespan": "on"}
    uvicorn.run(datasette.app(), **config)
