"""The `trialdiff` command: thin commands that wire readers, writers and renderers together.

Only this package prints. `read` holds the commands that only read the database, `write` those
that write it. Heavy libraries (rich, httpx, Datasette, Apprise, DeepDiff) are imported inside
the commands that need them, so a read such as `trialdiff recent` starts fast; the engine
(`tracker`, sqlite-utils), which nearly every command opens, is loaded by `main` before it runs.
"""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import sys
import traceback
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from .. import __version__
from ..errors import TrialdiffError, UsageError
from ..model import utc_day, utc_timestamp
from ..registry import DEFAULT
from ..settings import MAX_DAYS as MAX_DAYS  # the commands' --days bound
from .options import setting_option
from .sinks import keep_stops, stopped, terminate, write_utf8


@dataclass
class Options:
    """What the top-level options say, passed to every command."""

    path: str
    debug: bool
    db_is_default: bool = False  # neither --db nor TRIALDIFF_DB named it
    hooks: dict[str, Any] = field(default_factory=dict)  # API client hooks: sleep, transport
    # Why there is no default (TRIALDIFF_DB set empty, no home folder): raised where the
    # database is used, unless --db after the command names one (click parses that later).
    refusal: click.ClickException | None = None

    @property
    def db(self) -> str:
        """Return the database path the command uses."""
        if self.refusal is not None:
            raise self.refusal
        return self.path

    @db.setter
    def db(self, value: str) -> None:
        self.path, self.refusal = value, None


DB_DEFAULT_HELP: Final = (
    "snapshots/trialdiff.db inside a trialdiff checkout, else "
    "$XDG_DATA_HOME/trialdiff/trialdiff.db (~/.local/share/trialdiff/trialdiff.db)"
)


class CliError(click.ClickException):
    """An error shown as one line on stderr, with its own exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"trialdiff: error: {self.message}", err=True)


class Group(click.Group):
    """A group that turns every error into one clear line and the documented exit code.

    Every command also takes the top-level options after its name (`trialdiff sync --db X`),
    as the README promises; one given after the command wins.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Register a command, giving it --db and --debug too."""
        cmd.params += [
            click.Option(["--db"], metavar="PATH", expose_value=False, callback=_command_db,
                         help="SQLite database file (as before the command)."),
            click.Option(["--debug"], is_flag=True, expose_value=False, callback=_command_debug,
                         is_eager=True,  # before the other options' checks, which may fail
                         help="Show tracebacks of unexpected errors."),
            # Else `watch add ... --secrets F` was told "Did you mean '--secret'?", the key.
            click.Option(["--secrets"], metavar="PATH", expose_value=False,
                         callback=_command_secrets,
                         help="File of alert targets and secrets (as before the command)."),
        ]
        super().add_command(cmd, name)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """End the help with where the database is."""
        super().format_epilog(ctx, formatter)
        # --db as settled (`watch --help`), else as parsed so far (`--db X --help`: it is eager).
        options = ctx.find_object(Options)
        chosen = options.db if options and not options.db_is_default else ctx.params.get("db")
        given = os.environ.get("TRIALDIFF_DB", "").strip()
        if chosen and chosen != given:
            where, source = chosen, "from --db"
        elif "TRIALDIFF_DB" in os.environ and not given:  # as every command says, not the default
            where, source = "none: TRIALDIFF_DB is set but empty", "every command refuses it"
        else:
            path, refusal = _default_db()
            where = given or (f"none: {refusal.message}" if refusal else str(Path(path).absolute()))
            source = "from TRIALDIFF_DB" if given else "the default"
        with formatter.section("Database"):
            # The path on a line of its own: wrapping would split it at a hyphen.
            formatter.write(" " * formatter.current_indent + f"{where} ({source})\n")
            formatter.write_text(f"Default: {DB_DEFAULT_HELP}. Every command takes --db PATH, "
                                 "before or after its name.")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, click.exceptions.Abort) as stop:
            # Ctrl-C, anywhere (a delivery, a backfill, a wait for the lock): 130, as a shell
            # says it, not click's "Aborted!" and 1. A run it stopped is recorded as interrupted.
            click.echo(f"trialdiff: {stopped(stop)[0]} (what was saved stays: run again to "
                       "resume)", err=True)
            raise click.exceptions.Exit(stopped(stop)[1]) from None
        except (click.exceptions.ClickException, click.exceptions.Exit):
            raise
        except BrokenPipeError:
            # The reader (`| head`) has had enough: stop quietly, and point stdout at
            # /dev/null so the interpreter's final flush cannot fail again.
            discard_stdout()
            return None
        except TrialdiffError as exc:
            from .sinks import worded

            raise CliError(worded(str(exc), exc.setting), exc.exit_code) from exc
        except sqlite3.Error as exc:  # the CLI's own reads; the library's raise its errors
            from ..lifecycle import sqlite_error

            debug_traceback(ctx)
            error = sqlite_error(exc)
            raise CliError(str(error), error.exit_code) from exc
        except OSError as exc:
            debug_traceback(ctx)
            if not exc.filename and _cwd() is None:  # a relative path under a deleted folder
                raise CliError("the current folder no longer exists: run from another, or "
                               "give absolute paths (--db, -o)") from exc
            raise CliError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
        except Exception as exc:
            debug_traceback(ctx)
            raise CliError(
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for the details)"
            ) from exc


def discard_stdout() -> None:
    """Send what is still to be written to stdout to /dev/null (a real stdout only)."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's stream: nothing to flush
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), fileno)


def _default_db() -> tuple[str, click.ClickException | None]:
    """Return the default database for the current folder and environment, or why there is none."""
    from ..settings import default_db

    if "TRIALDIFF_DB" in os.environ:  # set but empty, which click reads as unset
        return "", click.BadParameter("is empty (an unset variable?); give the database file",
                                      param_hint="TRIALDIFF_DB")
    try:
        return str(default_db(_cwd(), os.environ)), None
    except UsageError as exc:  # no home folder to keep it in
        return "", CliError(str(exc), exc.exit_code)


def _cwd() -> Path | None:
    """Return the current folder, or None when it was deleted (a cron job's, say)."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        return None


def _checked_db(ctx: click.Context, value: str, hint: str = "'--db'") -> str:
    """Refuse an empty database path (an unset variable), which SQLite takes as a temporary,
    and one that names a folder or a device, which a writer would fail on unclearly."""
    if not value.strip():
        raise click.BadParameter(
            "is empty (an unset variable?); give the database file", ctx, param_hint=hint)
    if value.endswith(("/", os.sep)):  # SQLite would make a file named as the folder
        raise CliError(f"{value} names a folder (it ends in /), not a database file",
                       UsageError.exit_code)
    if Path(value).exists() and not Path(value).is_file():
        kind = "a folder" if Path(value).is_dir() else "a device or other special file"
        raise CliError(f"{value} is {kind}, not a database file", UsageError.exit_code)
    return value


def _default_folder(ctx: click.Context) -> None:
    """Create the default database's folder for a command that writes, or say how not to."""
    folder = Path(ctx.obj.db).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {folder} for the default database ({exc.strerror}): "
                       "give --db PATH or set TRIALDIFF_DB") from exc


def _command_db(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Settle the database: --db after the command, else before it, else the default."""
    # The default's folder is made by a command that writes (`writer`), not here.
    options = ctx.find_object(Options)
    if options is None:
        return
    if value is not None:
        options.db, options.db_is_default = _checked_db(ctx, value), False


def _command_secrets(ctx: click.Context, param: click.Parameter | None,
                     value: str | None) -> None:
    """Take --secrets, given before or after the command: targets.py reads the environment."""
    if value:
        os.environ["TRIALDIFF_SECRETS"] = value


def _command_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Turn on --debug given after the command."""
    options = ctx.find_object(Options)
    if value and options is not None:
        options.debug = True


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
        nct_id = DEFAULT.normalize_id(value)
        if nct_id is None:
            raise click.BadParameter(f"{value!r} is not an NCT id like NCT01234567", ctx, param)
        checked.append(nct_id)
    return checked[0] if single else tuple(checked)


def parse_timestamp(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Parse an ISO 8601 date or time into UTC; a bad one is a usage error."""
    if value is None:
        return None
    try:
        return utc_timestamp(value)
    except (ValueError, OverflowError):  # OverflowError: a time past year 1 or 9999 in UTC
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time", ctx, param) from None


def parse_as_of(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Parse the last day of a window; one whose window leaves the calendar is a usage error."""
    stamp = parse_timestamp(ctx, param, value)
    if stamp is None:
        return None
    try:  # a year below 1000 may come back unpadded, which is no ISO date
        day = utc_day(stamp)
    except ValueError:
        day = date.min
    if not date.min + timedelta(days=MAX_DAYS) < day < date.max:
        raise click.BadParameter(f"{value!r} is out of range", ctx, param)
    return stamp


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", metavar="PATH", envvar="TRIALDIFF_DB", is_eager=True,  # before --help
              help=f"SQLite database file [env: TRIALDIFF_DB; default: {DB_DEFAULT_HELP}]")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.option("--secrets", metavar="PATH", **setting_option("--secrets"))
@click.version_option(__version__, prog_name="trialdiff")
@click.pass_context
def cli(ctx: click.Context, db: str | None, debug: bool, secrets: str) -> None:
    """Track what changed in ClinicalTrials.gov study records.

    \b
    Example:
      trialdiff import snapshots/sample
      trialdiff recent NCT05827016 --as-of 2025-07-07
      trialdiff changes --days 7 --format md
    """
    # A caller (a test) may pass `obj={"sleep": ..., "transport": ...}` for the API clients.
    hooks = dict(ctx.obj) if isinstance(ctx.obj, dict) else {}
    if db is not None:
        from_env = ctx.get_parameter_source("db") is click.core.ParameterSource.ENVIRONMENT
        ctx.obj = Options(_checked_db(ctx, db, "TRIALDIFF_DB" if from_env else "'--db'"),
                          debug=debug, hooks=hooks)
    else:  # click reads an empty variable as unset
        path, refusal = _default_db()
        ctx.obj = Options(path, debug, db_is_default=True, hooks=hooks, refusal=refusal)
    _command_secrets(ctx, None, secrets)  # before the command, or after it: one way in


def reader(ctx: click.Context) -> sqlite3.Connection:
    """Open the database for reading; it is closed when the command ends."""
    from ..query import connect_readonly

    conn = connect_readonly(ctx.obj.db)
    ctx.call_on_close(conn.close)
    return conn


def writer(ctx: click.Context, create: bool = True, wait: float = 0.0) -> Any:
    """Open (creating or upgrading) the database for writing; closed when the command ends.

    The writer lock is held until then, as every write run holds it: another writer makes this
    command exit 75 (BusyError) before it opens, migrates or writes anything. A command that
    only changes what is there passes `create=False`: a missing database is then an error.
    """
    from ..lock import WriteLock
    from ..query import require_database
    from ..schema import open_db

    if not create:
        require_database(ctx.obj.db)
    elif ctx.obj.db_is_default:
        _default_folder(ctx)
    lock = WriteLock(ctx.obj.db, wait, ctx.command_path.partition(" ")[2])  # e.g. "watch add"
    lock.__enter__()
    ctx.call_on_close(lambda: lock.__exit__(None, None, None))  # after db.close: LIFO
    new = ctx.obj.db_is_default and not Path(ctx.obj.db).exists()
    try:
        db = open_db(ctx.obj.db, wait)
    except BaseException as exc:  # the lock is told why (it may remove the file it made)
        lock.__exit__(type(exc), exc, exc.__traceback__)
        raise
    ctx.call_on_close(db.close)
    if new:  # a default the user did not choose: say where it went
        click.echo(f"trialdiff: created the database {Path(ctx.obj.db).absolute()} "
                   "(--db or TRIALDIFF_DB to use another)", err=True)
    return db


def tracker(ctx: click.Context, wait: float = 0.0, create: bool = True) -> Any:
    """Return the Tracker of the command's database; it is closed when the command ends.

    A command that only reads, or only changes what is there, passes `create=False`: a missing
    database is then an error (the default one is not created first).
    """
    from ..lock import WriteLock
    from ..tracker import Tracker

    # Its sinks print and alert as changes come: a run keeps none (millions on a rewrite day).
    opened = Tracker(ctx.obj.db, wait=wait, hooks=ctx.obj.hooks, keep_changes=False)
    ctx.call_on_close(opened.close)
    if create and ctx.obj.db_is_default and not Path(ctx.obj.db).exists():
        _default_folder(ctx)
        with WriteLock(ctx.obj.db, wait, "open"):
            opened.writer()
        click.echo(f"trialdiff: created the database {Path(ctx.obj.db).absolute()} "
                   "(--db or TRIALDIFF_DB to use another)", err=True)
    return opened


def main() -> None:
    """Run the command line."""
    # A run parses thousands of records into objects it soon drops, while the code's own objects
    # live all run long: frozen once loaded, they are not walked again by every full garbage
    # collection, and a young generation of 20,000 objects, not 700, is collected a 12th as
    # often (heavy day 2: the collector's 46 ms went to 18 ms frozen, 6 ms with both). The engine
    # is loaded first: nearly every command opens it. Here, not in the library: it is the process's.
    from .. import tracker as _engine  # noqa: F401

    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    signal.signal(signal.SIGTERM, terminate)
    sys.unraisablehook = keep_stops
    if sys.stdout is None:  # started with stdout closed (`>&-`): every report would vanish
        click.echo("trialdiff: error: stdout is closed: give it somewhere to write "
                   "(`>/dev/null` to discard it)", err=True)
        sys.exit(1)
    write_utf8()
    try:
        cli(prog_name="trialdiff")
    except OSError as exc:  # --help or --version into a full stdout: click's own print
        click.echo(f"trialdiff: error: cannot write to stdout: {exc.strerror or exc}", err=True)
        sys.exit(1)


# The commands register themselves on `cli` when their modules load.
from . import alerts, read, web, write  # noqa: E402, F401
