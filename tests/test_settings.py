"""The settings table: what the CLI and the Python API read from it, and the default database."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT, SAMPLE

from trialdiff import clients, tracker
from trialdiff.cli import cli
from trialdiff.errors import UsageError
from trialdiff.settings import CHECKOUT_DB, SETTINGS, default_db, setting


def cli_options() -> dict[str, list[click.Option]]:
    """Return every option of the CLI (top level and each command) by its flag."""
    found: dict[str, list[click.Option]] = {}
    for command in (cli, *cli.commands.values()):  # type: ignore[attr-defined]
        for param in command.params:
            if isinstance(param, click.Option):
                for flag in param.opts:
                    found.setdefault(flag, []).append(param)
    return found


def test_each_setting_is_an_option_read_from_its_variable_with_the_tables_default() -> None:
    options = cli_options()
    for entry in SETTINGS:
        assert setting(entry.option) is entry
        assert entry.envvar == "TRIALDIFF_" + entry.option[2:].upper().replace("-", "_")
        reading = [o for o in options[entry.option] if o.envvar == entry.envvar]
        assert reading, f"no command reads {entry.envvar}"
        if entry.option != "--db":  # the database's default depends on the folder
            assert {str(o.default) for o in reading} == {entry.default}, entry.option
    # ... and no option reads a variable the table does not list.
    variables = {o.envvar for found in options.values() for o in found if o.envvar}
    assert variables == {entry.envvar for entry in SETTINGS}


def test_the_python_apis_defaults_are_the_tables() -> None:
    # The API's keyword arguments are the settings in snake case; a default that drifted
    # would make a script behave unlike the command line.
    table = {entry.option[2:].replace("-", "_"): entry.default for entry in SETTINGS}
    client = inspect.signature(clients.client_for).parameters
    for name in ("page_size", "delay", "timeout", "deadline", "retries", "retry_budget",
                 "max_response_mb"):
        assert float(client[name].default) == float(table[name]), name
    notify = inspect.signature(tracker.Tracker.notify).parameters
    assert (notify["timeout"].default, notify["backoff"].default,
            notify["max_age_hours"].default) == (
        float(table["alert_timeout"]), float(table["alert_backoff"]),
        float(table["alert_max_age"]))
    assert inspect.signature(tracker.Tracker.sync).parameters["api"].default == table["api"]


def test_default_db_follows_xdg(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert default_db(tmp_path, {"HOME": str(home)}) == \
        home / ".local/share/trialdiff/trialdiff.db"
    assert default_db(tmp_path, {"HOME": str(home), "XDG_DATA_HOME": "rel"}) == \
        home / ".local/share/trialdiff/trialdiff.db"  # the spec: a relative one is ignored
    assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == Path("/x/trialdiff/trialdiff.db")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n', encoding="utf-8")
    assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == Path("/x/trialdiff/trialdiff.db")
    assert default_db(ROOT, {"XDG_DATA_HOME": "/x"}) == CHECKOUT_DB


def test_an_empty_or_relative_home_is_the_accounts_and_a_deleted_folder_no_checkout(
    tmp_path: Path,
) -> None:
    import pwd

    account = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local/share/trialdiff/trialdiff.db"
    # `env HOME= ...` put the database under the root folder, a relative HOME under the cwd.
    for home in ({"HOME": ""}, {"HOME": "relhome"}, {}):
        assert default_db(tmp_path, home) == account
    assert default_db(None, {"XDG_DATA_HOME": "/x"}) == Path("/x/trialdiff/trialdiff.db")


def test_default_db_keeps_an_existing_database_and_is_not_fooled_by_a_broken_pyproject(
    tmp_path: Path,
) -> None:
    elsewhere = Path("/x/trialdiff/trialdiff.db")
    # A broken or odd pyproject.toml is not a checkout: it must not raise, nor claim the folder.
    for text in ("[project\nname =", '[project]\nname = "trialdiff', 'project = "trialdiff"\n',
                 '[tool.trialdiff]\nname = "trialdiff"\n'):
        (tmp_path / "pyproject.toml").write_text(text, encoding="utf-8")
        assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == elsewhere, text
    (tmp_path / "pyproject.toml").write_bytes(b'[project]\nname = "caf\xe9"\n')  # not UTF-8
    assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == elsewhere
    # A folder that already holds snapshots/trialdiff.db (the only default once) keeps it.
    (tmp_path / "snapshots").mkdir()
    assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == elsewhere  # a folder alone is not
    (tmp_path / CHECKOUT_DB).write_bytes(b"")
    assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == CHECKOUT_DB


def test_a_user_with_no_home_is_told_so_and_help_still_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe: a container's uid with no account, under `env -i`: `--help` printed a
    # traceback ("Could not determine home directory"), and commands "unexpected RuntimeError".
    import pwd

    def no_account(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_account)
    monkeypatch.delenv("HOME", raising=False)
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "TRIALDIFF_DB", "TRIALDIFF_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    no_home = (f"no home folder for trialdiff's files: HOME is unset and user {os.getuid()} "
               "has no account; set HOME, or give each file's path (TRIALDIFF_DB, "
               "TRIALDIFF_SECRETS)")
    with pytest.raises(UsageError, match="no home folder"):
        default_db(tmp_path, {})
    runner = CliRunner()
    for args in (["--help"], ["watch", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0 and f"none: {no_home}" in " ".join(result.stdout.split())
    result = runner.invoke(cli, ["recent", "NCT05827016"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", f"trialdiff: error: {no_home}\n")
    db = str(tmp_path / "given.db")  # a database named is all a reader needs
    assert runner.invoke(cli, ["--db", db, "import", str(SAMPLE)]).exit_code == 0
    result = runner.invoke(cli, ["--db", db, "watch", "add", "w", "--to", "https://h.test/x"])
    assert (result.exit_code, result.stderr) == (2, f"trialdiff: error: {no_home}\n")


def test_a_snapshots_folder_this_user_may_not_look_into_is_no_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe: a mode-000 snapshots/ in the current folder made `--help` say "cannot write to
    # stdout: Permission denied".
    real_is_file = Path.is_file

    def refusing(path: Path) -> bool:
        if path.parent.name == "snapshots":
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", refusing)
    (tmp_path / "snapshots").mkdir()
    assert default_db(tmp_path, {"XDG_DATA_HOME": "/x"}) == Path("/x/trialdiff/trialdiff.db")
