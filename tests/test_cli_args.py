"""Arguments and the database's place, through the real CLI: stdout, stderr and exit codes apart.

The database is named by --db before or after the command, or TRIALDIFF_DB; an empty name is
refused; without one it is snapshots/trialdiff.db in a checkout and the user's data folder
elsewhere; another application's SQLite file is refused untouched; numbers out of range are
usage errors.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT, SAMPLE, trialdiff_env

from trialdiff import __version__
from trialdiff.cli import cli
from trialdiff.schema_version import SCHEMA_VERSION
from trialdiff.settings import CHECKOUT_DB

IMPORTED = "import: 6 studies checked, 2 changed, 528 changes (235 added, 62 changed, " \
    "231 removed), 0 failed\n"
CHECKED = "check: 3 studies, 5 snapshots, 528 changes verified; 0 problems\n"


def invoke(*args: str, **env: str | None) -> tuple[int, str, str]:
    """Run trialdiff (TRIALDIFF_DB unset unless given) and return (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, list(args), env={"TRIALDIFF_DB": None, **env})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work from an empty folder outside any checkout, with its own data folder."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("TRIALDIFF_DB", raising=False)
    return folder


def test_version_is_the_packages_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert __version__ == project["version"]
    assert invoke("--version") == (0, f"trialdiff, version {__version__}\n", "")
    # 0.S.P, S the schema version: every release was 0.1.0, so `pip install -U` of a newer
    # wheel kept the old code, which then refused the database the newer one wrote (a probe).
    assert __version__.split(".")[:2] == ["0", str(SCHEMA_VERSION)]


def test_every_subpackage_is_shipped() -> None:
    setuptools = pytest.importorskip("setuptools")
    found = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = found["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(setuptools.find_packages(where=str(ROOT), include=include))
    packages = {".".join(p.parent.relative_to(ROOT).parts)
                for p in (ROOT / "trialdiff").rglob("__init__.py")}
    assert "trialdiff.cli" in packages and packages <= shipped
    assert not {p for p in shipped if not p.startswith("trialdiff")}  # no tests, no benchmarks


@pytest.mark.parametrize("args", [
    ("--db", "", "import", str(SAMPLE)),
    ("import", "--db", "", str(SAMPLE)),
    ("--db", "  ", "check"),
    ("recent", "NCT05827016", "--db", ""),
])
def test_an_empty_db_is_refused_and_nothing_is_written(elsewhere: Path, args: tuple[str]) -> None:
    code, out, err = invoke(*args)
    assert (code, out) == (2, "")
    assert "Error: Invalid value for '--db': is empty (an unset variable?); give the database " \
        "file\n" in err
    assert "Traceback" not in err
    assert not list(elsewhere.iterdir()) and not (elsewhere.parent / "data").exists()


def test_an_empty_trialdiff_db_variable_is_refused(elsewhere: Path) -> None:
    code, out, err = invoke("import", str(SAMPLE), TRIALDIFF_DB="")
    assert (code, out) == (2, "")
    assert "Error: Invalid value for TRIALDIFF_DB: is empty (an unset variable?)" in err
    assert not list(elsewhere.iterdir()) and not (elsewhere.parent / "data").exists()
    # --db after the command wins, as over a set variable; blanks name the variable too.
    db = str(elsewhere / "t.db")
    assert invoke("import", "--db", db, "--summary", str(SAMPLE), TRIALDIFF_DB="") == (
        0, IMPORTED, "")
    code, _, err = invoke("check", TRIALDIFF_DB="   ")
    assert code == 2 and "Invalid value for TRIALDIFF_DB: is empty" in err
    code, out, _ = invoke("--help", TRIALDIFF_DB="")  # it said "(the default)"
    assert code == 0 and "none: TRIALDIFF_DB is set but empty (every command refuses it)" in out


def test_an_at_out_of_the_calendar_in_utc_is_a_usage_error(tmp_path: Path) -> None:
    for at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        code, out, err = invoke("--db", str(tmp_path / "t.db"), "import", "--at", at,
                                str(SAMPLE))
        assert (code, out) == (2, "") and "out of the calendar in UTC" in err, at
        assert "unexpected" not in err


def test_db_goes_before_or_after_the_command(tmp_path: Path) -> None:
    db, other = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    assert invoke("import", "--db", db, "--summary", str(SAMPLE)) == (0, IMPORTED, "")
    assert invoke("check", "--db", db) == (0, CHECKED, "")
    code, out, err = invoke("recent", "NCT05827016", "--as-of", "2025-07-07", "--db", db)
    assert (code, err) == (0, "")
    assert out.startswith("## Recent Field Changes (last 30 days)\n\n- `status.")
    # After the command wins over before it, and over the environment.
    assert invoke("--db", other, "check", "--db", db, TRIALDIFF_DB=other) == (0, CHECKED, "")
    assert not Path(other).exists()
    code, out, err = invoke("history", "NCT05827016", "--debug", "--db", db)
    assert (code, err) == (0, "") and "2025-07-07" in out


@pytest.mark.usefixtures("secrets_file")  # watch add keeps its target there
def test_watch_subcommands_take_db_and_debug_after_their_name(tmp_path: Path) -> None:
    db, other = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    assert invoke("import", "--db", db, "--summary", str(SAMPLE)) == (0, IMPORTED, "")
    assert invoke("watch", "add", "w", "--to", "http://127.0.0.1:9/hook", "--db", db,
                  "--debug") == (0, "watch add: w \u2192 1 target\n", "")
    code, out, err = invoke("--db", other, "watch", "list", "--debug", "--db", db)
    assert (code, err) == (0, "") and out.startswith("w  every study")
    assert invoke("watch", "--db", db, "remove", "w") == (0, "watch remove: w\n", "")
    assert not Path(other).exists()


def _leaves(group: click.Group) -> list[click.Command]:
    """Return every command under a group, subcommands of its subgroups included."""
    found: list[click.Command] = []
    for command in group.commands.values():
        found += _leaves(command) if isinstance(command, click.Group) else [command]
    return found


def test_every_command_takes_db_and_debug() -> None:
    for command in _leaves(cli):
        assert {"db", "debug"} <= {p.name for p in command.params}, command.name


def file_digest(db: str) -> str:
    """Return a digest of a database's files: its WAL holds writes not yet in the file."""
    digest = hashlib.sha256()
    for path in (Path(db), Path(db + "-wal")):
        digest.update(path.read_bytes() if path.exists() else b"-")
    return digest.hexdigest()


@pytest.mark.parametrize("args", [
    ("changes", "--days", "99999999"),
    ("changes", "--days", "0"),
    ("recent", "NCT05827016", "--days", "99999999"),
    ("page", "NCT05827016", "--days", "99999999"),
    ("changes", "--days", "30", "--as-of", "9999-12-31"),
    ("recent", "NCT05827016", "--as-of", "0001-01-01"),
    ("watch", "show", "x", "--days", "99999999"),
    ("watch", "show", "x", "--as-of", "0001-01-01"),
    ("watch", "show", "x", "--as-of", "9999-12-31"),
    ("page", "--out", "site", "--changed-since", "9999-12-31"),
    ("page", "--out", "site", "--changed-since", "0001-01-01"),
    ("changes", "--since", "0001-01-01T00:00:00+01:00"),
    ("sync", "--delay", "nan"),
    ("sync", "--timeout", "0"),
    ("sync", "--deadline", "0"),
    ("sync", "--retries", "-1"),
    ("sync", "--retry-budget", "inf"),
    ("sync", "--page-size", "5000"),
    ("sync", "--max-response-mb", "1e400"),
    ("import", "--wait", "nan", str(SAMPLE)),
    ("notify", "--wait", "nan"),
    ("notify", "--wait", "-5"),
    ("reannotate", "--wait", "nan"),
    ("reannotate", "--wait", "inf"),
])
def test_numbers_out_of_range_are_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    db = str(tmp_path / "t.db")
    invoke("--db", db, "import", "--summary", str(SAMPLE))
    before = file_digest(db)
    code, out, err = invoke("--db", db, *args)
    assert (code, out) == (2, "")
    option = [a for a in args if a.startswith("--")][-1]
    assert f"Error: Invalid value for '{option}': " in err
    assert "unexpected" not in err and "Traceback" not in err
    assert file_digest(db) == before


@pytest.mark.parametrize(("command", "variable", "value", "option"), [
    ("sync", "TRIALDIFF_PAGE_SIZE", "5000", "--page-size"),
    ("sync", "TRIALDIFF_DELAY", "nan", "--delay"),
    ("notify", "TRIALDIFF_ALERT_TIMEOUT", "x", "--alert-timeout"),
])
def test_a_bad_setting_from_the_environment_names_the_variable(
    tmp_path: Path, command: str, variable: str, value: str, option: str
) -> None:
    db = str(tmp_path / "t.db")
    code, out, err = invoke("--db", db, command, **{variable: value})
    assert (code, out) == (2, "")  # cron set it, not a flag: the message names where it is
    assert f"Error: Invalid value for {variable} (the setting of '{option}'): " in err
    assert list(tmp_path.iterdir()) == []
    code, _, err = invoke("--db", db, command, option, value)  # given as a flag: named so
    assert code == 2 and f"Error: Invalid value for '{option}': " in err


@pytest.mark.parametrize("args", [
    ("track", "--query", "foo=bar"),
    ("track", "--query", ""),
    # An unset variable: a watch of every study, or of no path at all.
    ("watch", "add", "w", "--query", "", "--to", "https://hooks.example.org/x"),
    ("watch", "add", "w", "--path", "", "--to", "https://hooks.example.org/x"),
    ("untrack", "--query", "foo=bar"),
    ("ignored", "--track-again", "bogus"),
    ("ignored", "--track-again", "derivedSection", "--ignore-again", "derivedSection"),
])
def test_a_usage_error_creates_no_database(tmp_path: Path, args: tuple[str, ...]) -> None:
    db = tmp_path / "new.db"
    code, out, err = invoke("--db", str(db), *args)
    assert (code, out) == (2, "") and err.startswith("trialdiff: error: ")
    assert list(tmp_path.iterdir()) == []  # no file, no lock file beside it


def test_the_help_shows_the_range_the_check_holds() -> None:
    code, out, err = invoke("sync", "--help")
    assert (code, err) == (0, "")
    assert "0<x<=86400]" in out and "0<x<=1000000000.0]" in out  # --timeout, --deadline
    assert "0<=x<=1000000000.0" not in out


def test_an_empty_path_prefix_is_a_usage_error_not_an_empty_export(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    invoke("--db", db, "import", "--summary", str(SAMPLE))
    for prefix in ("", " ", "."):
        assert invoke("--db", db, "changes", "--path", "status", "--path", prefix) == (
            2, "", "trialdiff: error: an empty path prefix matches no path: give one, such as "
                   "status\n")


def test_a_reversed_window_is_a_usage_error(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    invoke("--db", db, "import", "--summary", str(SAMPLE))
    code, out, err = invoke("--db", db, "changes", "--since", "2025-07-08", "--until", "2025-07-01")
    assert (code, out) == (2, "")
    assert err == ("trialdiff: error: --until (2025-07-01T00:00:00.000Z) is not after --since "
                   "(2025-07-08T00:00:00.000Z): the window is empty\n")
    code, out, err = invoke("--db", db, "changes", "--days", "7", "--as-of", "2025-07-08",
                            "--until", "2025-07-01")
    assert (code, out) == (2, "")
    assert err == ("trialdiff: error: --until (2025-07-01T00:00:00.000Z) is not after the start "
                   "of --days 7 (2025-07-02T00:00:00.000Z): the window is empty\n")


def test_default_database_outside_a_checkout_is_the_users_data_folder(elsewhere: Path) -> None:
    data = elsewhere.parent / "data" / "trialdiff"
    code, out, err = invoke("import", "--summary", str(SAMPLE))
    assert (code, out) == (0, IMPORTED)
    assert err == (f"trialdiff: created the database {data / 'trialdiff.db'} "
                   "(--db or TRIALDIFF_DB to use another)\n")
    assert (data / "trialdiff.db").is_file() and not list(elsewhere.iterdir())
    assert invoke("check") == (0, CHECKED, "")  # found again, and said only once
    code, out, err = invoke("--help")
    assert code == 0 and err == ""
    assert f"\nDatabase:\n  {data / 'trialdiff.db'} (the default)\n  Default: " in out
    chosen = str(elsewhere / "chosen.db")  # --db before --help, or before a group's --help
    for args in (("--db", chosen, "--help"), ("--db", chosen, "watch", "--help")):
        code, out, err = invoke(*args)
        assert (code, err) == (0, "") and f"\nDatabase:\n  {chosen} (from --db)\n" in out


def test_default_database_inside_a_checkout_stays_in_snapshots(elsewhere: Path) -> None:
    (elsewhere / "pyproject.toml").write_text('[project]\nname = "trialdiff"\n', encoding="utf-8")
    (elsewhere / "snapshots").mkdir()
    code, out, err = invoke("import", "--summary", str(SAMPLE))
    assert (code, out) == (0, IMPORTED)
    assert err.startswith(f"trialdiff: created the database {elsewhere / CHECKOUT_DB} ")
    assert (elsewhere / CHECKOUT_DB).is_file() and not (elsewhere.parent / "data").exists()


def test_default_database_where_one_already_is_stays_in_use(elsewhere: Path) -> None:
    (elsewhere / "snapshots").mkdir()
    assert invoke("--db", str(elsewhere / CHECKOUT_DB), "import", "--summary",
                  str(SAMPLE)) == (0, IMPORTED, "")
    assert invoke("check") == (0, CHECKED, "")
    assert not (elsewhere.parent / "data").exists()


def _foreign(path: Path) -> str:
    """Make another application's SQLite file; return the hash of its bytes."""
    conn = sqlite3.connect(path)
    conn.execute("create table notes (id integer primary key, body text)")
    conn.execute("create table meta (key text primary key, value text)")
    conn.execute("insert into notes (body) values ('keep me')")
    conn.commit()
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_applications_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    digest = _foreign(path)
    for args in (("import", str(SAMPLE)), ("track", "NCT05827016"), ("compact",),
                 ("notify",)):
        code, out, err = invoke("--db", str(path), *args)
        assert (code, out) == (2, "")
        assert err == (f"trialdiff: error: {path} is not a trialdiff database (it holds notes); "
                       "refusing to add trialdiff's tables to it: give --db a new file or a "
                       "trialdiff database\n")
        # Nothing beside it either: a writer's lock file was left behind.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"], args
    code, out, err = invoke("--db", str(path), "recent", "NCT05827016")
    assert (code, out) == (2, "")
    assert err == (f"trialdiff: error: {path} is not a trialdiff database (it has no schema "
                   "version)\n")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # not even WAL mode
    tables = sqlite3.connect(path).execute(
        "select name from sqlite_master where type = 'table' order by 1").fetchall()
    assert tables == [("meta",), ("notes",)]


@pytest.mark.parametrize(("tables", "named"), [
    # Another application's key-value table, the most common name there is.
    (["create table meta (key text primary key, value text)",
      "insert into meta values ('app_version', '3')"], "meta"),
    # A table of one of trialdiff's names, with columns trialdiff's lacks.
    (["create table studies (id integer primary key, title text)",
      "insert into studies (title) values ('keep me')"], "studies"),
])
def test_a_file_that_only_shares_trialdiffs_table_names_is_refused_untouched(
    tmp_path: Path, tables: list[str], named: str
) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    for sql in tables:
        conn.execute(sql)
    conn.commit()
    conn.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    code, out, err = invoke("--db", str(path), "import", str(SAMPLE))
    assert (code, out) == (2, "")  # it was adopted: 30 tables added, the file put in WAL mode
    assert err.startswith(f"trialdiff: error: {path} is not a trialdiff database (it holds "
                          f"{named}); refusing to add trialdiff's tables to it")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_an_empty_file_or_a_half_made_trialdiff_database_is_taken(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    # A reader finds nothing in it yet, as in a missing file (not "another application's").
    for args in (("recent", "NCT05827016"), ("changes",), ("check",), ("untrack", "NCT05827016")):
        assert invoke("--db", str(empty), *args) == (
            1, "", f"trialdiff: error: the database {empty} is empty: run `trialdiff import` or "
                   "`trialdiff sync`\n")
    assert empty.stat().st_size == 0
    assert invoke("--db", str(empty), "import", "--summary", str(SAMPLE)) == (0, IMPORTED, "")
    # A first migration killed before it wrote the version: trialdiff's own tables, no version.
    half = tmp_path / "half.db"
    assert invoke("--db", str(half), "track", "NCT05827016")[0] == 0
    conn = sqlite3.connect(half)
    conn.execute("delete from meta")
    conn.commit()
    conn.close()
    assert invoke("--db", str(half), "import", "--summary", str(SAMPLE)) == (0, IMPORTED, "")
    assert invoke("--db", str(half), "check") == (0, CHECKED, "")


def test_a_deleted_current_folder_gets_a_clear_line_not_a_traceback(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    env = {**trialdiff_env(), "XDG_DATA_HOME": str(tmp_path / "data")}
    for args, code, said in (
        ("--help", 0, ""),  # a traceback from the default database's folder
        ("--db d.db import x.json", 1, "trialdiff: error: the current folder no longer exists: "
                                       "run from another, or give absolute paths (--db, -o)\n"),
    ):
        result = subprocess.run(
            ["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "$0" -m trialdiff {args}',
             sys.executable],
            env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        gone.mkdir()
        assert (result.returncode, result.stderr) == (code, said), result.stderr
    assert not (tmp_path / "data").exists()  # --help and a failed command create nothing


def test_a_data_folder_that_cannot_be_made_is_said_and_a_reader_makes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # as an unwritable HOME is to its user
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(blocked / "data"))
    monkeypatch.delenv("TRIALDIFF_DB", raising=False)
    code, out, err = invoke("import", str(SAMPLE))
    assert (code, out) == (1, "")
    assert err == (f"trialdiff: error: cannot create {blocked / 'data' / 'trialdiff'} for the "
                   "default database (Not a directory): give --db PATH or set TRIALDIFF_DB\n")
    code, out, err = invoke("recent", "NCT06060392")
    assert (code, out) == (1, "") and err.startswith("trialdiff: error: no database at ")
    for special in (str(tmp_path), "/dev/null"):  # a writer said "unable to open", "I/O error"
        code, out, err = invoke("--db", special, "import", str(SAMPLE))
        assert (code, out) == (2, "")
        assert err.startswith(f"trialdiff: error: {special} is a ") and err.endswith(
            ", not a database file\n")
    missing = f"{tmp_path}/nonexist/"  # SQLite made a file named nonexist
    code, out, err = invoke("--db", missing, "import", str(SAMPLE))
    assert (code, out) == (2, "") and err == (
        f"trialdiff: error: {missing} names a folder (it ends in /), not a database file\n")
    assert not (tmp_path / "nonexist").exists()


def test_a_file_that_is_not_sqlite_or_a_folder_as_the_database_is_a_usage_error(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text('{"not": "a database"}', encoding="utf-8")
    for command in (("import", str(SAMPLE)), ("check",), ("changes",)):
        code, out, err = invoke("--db", str(notes), *command)
        assert (code, out) == (2, "")
        assert err == (f"trialdiff: error: {notes} is not a trialdiff database "
                       "(not an SQLite file)\n")
    assert notes.read_text(encoding="utf-8") == '{"not": "a database"}'
    code, out, err = invoke("--db", str(tmp_path), "changes")
    assert (code, out, err) == (2, "", f"trialdiff: error: {tmp_path} is a folder, not a database "
                                       "file\n")


@pytest.mark.parametrize(("base", "problem"), [
    ("example.org/trials/", "it does not start with http:// or https://"),
    ("https://example.org/my trials/", "a base URL has no query, fragment or blanks"),
    ("https:///trials/", "it has no valid host name"),
])
def test_a_canonical_base_that_is_no_url_is_a_usage_error(
    tmp_path: Path, base: str, problem: str
) -> None:
    db = str(tmp_path / "t.db")
    assert CliRunner().invoke(cli, ["--db", db, "import", str(SAMPLE)]).exit_code == 0
    site = tmp_path / "site"
    for args, env in ((["--canonical-base", base], {}), ([], {"TRIALDIFF_CANONICAL_BASE": base})):
        result = CliRunner(env=env).invoke(
            cli, ["--db", db, "page", "--all", "--out", str(site), *args])
        assert (result.exit_code, result.stdout) == (2, "")
        named = "TRIALDIFF_CANONICAL_BASE (the setting of --canonical-base)" if env else (
            "--canonical-base")
        assert result.stderr == (f"trialdiff: error: {named} {base!r} is not a URL like "
                                 f"https://example.org/trials/ ({problem})\n")
        assert not site.exists()  # no page was written with it
    result = CliRunner().invoke(cli, ["--db", db, "page", "NCT05827016",
                                      "--canonical-base", "https://example.org/trials"])
    assert result.exit_code == 0
    assert "*Canonical: https://example.org/trials/NCT05827016.md*" in result.stdout
    result = CliRunner(env={"TRIALDIFF_CANONICAL_BASE": " https://example.org/trials "}).invoke(
        cli, ["--db", db, "page", "NCT05827016"])  # checked stripped, so used stripped
    assert result.exit_code == 0
    assert "*Canonical: https://example.org/trials/NCT05827016.md*" in result.stdout


@pytest.mark.parametrize("args", [
    ("compact",), ("check",), ("notify",), ("reannotate",), ("untrack", "NCT04280705"),
    ("watch", "remove", "slips"), ("recent", "NCT04280705"), ("changes",),
])
def test_commands_that_create_no_database_leave_the_default_uncreated(
    elsewhere: Path, args: tuple[str, ...]
) -> None:
    # `compact` created the default database (cron's line without --db "compacted" an empty
    # file, exit 0), where README promises `no database at PATH` and exit 1.
    data = elsewhere.parent / "data" / "trialdiff"
    code, out, err = invoke(*args)
    assert (code, out) == (1, "")
    assert err.startswith(f"trialdiff: error: no database at {data / 'trialdiff.db'}"), err
    assert not list(elsewhere.iterdir()) and not (elsewhere.parent / "data").exists()


def test_a_bad_url_from_cron_s_environment_names_the_variable(tmp_path: Path) -> None:
    # `TRIALDIFF_API=notaurl` was blamed on `--api 'notaurl'`, an option the crontab never gave;
    # a number's error names its variable already.
    db = str(tmp_path / "t.db")
    code, out, err = invoke("--db", db, "sync", TRIALDIFF_API="notaurl")
    assert (code, out) == (2, "")
    assert err == ("trialdiff: error: TRIALDIFF_API (the setting of --api) 'notaurl' is not a URL "
                   "like https://clinicaltrials.gov/api/v2 (it does not start with http:// or "
                   "https://)\n")
    assert invoke("--db", db, "sync", "--api", "notaurl")[2].startswith(
        "trialdiff: error: --api 'notaurl' is not a URL")
    code, _, err = invoke("--db", db, "page", "NCT05827016", TRIALDIFF_CANONICAL_BASE="ftp://x")
    assert code == 2 and err.startswith(
        "trialdiff: error: TRIALDIFF_CANONICAL_BASE (the setting of --canonical-base) 'ftp://x'")


def test_secrets_after_the_command_is_taken_as_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `watch add ... --secrets F` was told "Did you mean '--secret'?": the signing key, which
    # takes any 16 characters, a path included.
    # Set first, so the command's own setting of it is undone after the test.
    monkeypatch.setenv("TRIALDIFF_SECRETS", str(tmp_path / "unused.json"))
    db, kept = str(tmp_path / "t.db"), tmp_path / "mine.json"
    code, out, err = invoke("--db", db, "watch", "add", "w", "--to", "https://h.example.org/y",
                            "--secrets", str(kept))
    assert (code, out, err) == (0, "watch add: w \u2192 1 target\n", "")
    assert "https://h.example.org/y" in kept.read_text()
    assert not (tmp_path / "unused.json").exists()
    (tmp_path / "a-file").write_text("")
    code, _, err = invoke("--db", db, "watch", "add", "v", "--to", "https://h.example.org/v",
                          "--secrets", str(tmp_path / "a-file" / "s.json"))
    assert code == 2 and err.endswith("; keep it elsewhere, or give the value as env:NAME "
                                      "(--secrets PATH or TRIALDIFF_SECRETS)\n")
