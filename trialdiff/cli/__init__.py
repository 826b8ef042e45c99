"""The `trialdiff` command: thin commands that wire readers, writers and renderers together.

Only this package prints. `read` holds the commands that only read the database, `write` those
that write it. Heavy libraries are imported inside the commands that need them, so a read such
as `trialdiff recent` starts fast.
"""

from __future__ import annotations

import sqlite3
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from .. import __version__
from ..errors import TrialdiffError
from ..model import utc_timestamp
from ..normalize import is_nct_id
from ..settings import setting


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
            debug_traceback(ctx)
            raise CliError(f"database error: {exc}") from exc
        except OSError as exc:
            debug_traceback(ctx)
            raise CliError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
        except Exception as exc:
            debug_traceback(ctx)
            raise CliError(
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for the details)"
            ) from exc


def debug_traceback(ctx: click.Context) -> None:
    """Print the traceback when --debug was given."""
    if isinstance(ctx.obj, Options) and ctx.obj.debug:
        traceback.print_exc()


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop with a usage error that names what was wrong."""
    raise CliError(message, code)


def check_nct_ids(ctx: click.Context, param: click.Parameter, values: Any) -> Any:
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


def parse_timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Parse an ISO 8601 date or time into UTC; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return utc_timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time", ctx, param) from None


def setting_option(option: str) -> dict[str, Any]:
    """Return click keyword arguments that bind an option to its setting."""
    entry = setting(option)
    return {"envvar": entry.envvar, "default": entry.default, "show_default": True,
            "help": f"{entry.help} [env: {entry.envvar}]"}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH", **setting_option("--db"))
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.version_option(__version__, prog_name="trialdiff")
@click.pass_context
def cli(ctx: click.Context, db: str, debug: bool) -> None:
    """Track what changed in ClinicalTrials.gov study records."""
    ctx.obj = Options(db=db, debug=debug)


def reader(ctx: click.Context) -> sqlite3.Connection:
    """Open the database for reading; it is closed when the command ends."""
    from ..query import connect_readonly

    conn = connect_readonly(ctx.obj.db)
    ctx.call_on_close(conn.close)
    return conn


def writer(ctx: click.Context) -> Any:
    """Open (creating or upgrading) the database for writing; closed when the command ends."""
    from ..schema import open_db

    db = open_db(ctx.obj.db)
    ctx.call_on_close(db.close)
    return db


def main() -> None:
    """Run the command line."""
    cli(prog_name="trialdiff")


# The commands register themselves on `cli` when their modules load.
from . import read, web, write  # noqa: E402, F401
