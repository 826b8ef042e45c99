"""The schema version: one number for the writer's migrations and the readers, who refuse others."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, run

from trialdiff import migrations, schema
from trialdiff.errors import DatabaseError
from trialdiff.query import connect_readonly
from trialdiff.schema_version import SCHEMA_VERSION, version_problem


def set_version(db: str, version: int) -> None:
    """Write another schema version into a trialdiff database's meta table."""
    conn = sqlite3.connect(db)
    conn.execute("update meta set value = ? where key = 'schema_version'", [str(version)])
    conn.commit()
    conn.close()


def test_version_problem_says_what_to_do_about_an_older_or_a_newer_database() -> None:
    assert version_problem("t.db", SCHEMA_VERSION) is None
    assert version_problem("t.db", SCHEMA_VERSION - 1) == (
        f"t.db: database schema version {SCHEMA_VERSION - 1} is older than this trialdiff's "
        f"({SCHEMA_VERSION}); run `trialdiff check` (or any writing command, or "
        "`trialdiff.open()` in Python) once to upgrade it in place")
    assert version_problem("t.db", SCHEMA_VERSION + 1) == (
        f"t.db: database schema version {SCHEMA_VERSION + 1} is newer than this trialdiff knows "
        f"({SCHEMA_VERSION}); upgrade trialdiff")


def test_the_writer_migrates_every_older_version_up_to_this_one() -> None:
    # The readers' number is the writer's: an older one would be refused with advice to run
    # a writer, so a writer must have a step from each older version to the next.
    assert schema.SCHEMA_VERSION is SCHEMA_VERSION
    assert sorted(migrations.MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_readers_and_the_writer_refuse_a_newer_database_in_the_same_words(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    schema.open_db(db_path).close()
    connect_readonly(db_path).close()  # the version it wrote is one readers read
    set_version(db_path, SCHEMA_VERSION + 1)
    # The path as the user gave it (the writer said it absolute, from SQLite).
    monkeypatch.chdir(Path(db_path).parent)
    db_path = Path(db_path).name
    problem = version_problem(db_path, SCHEMA_VERSION + 1)
    with pytest.raises(DatabaseError) as read:
        connect_readonly(db_path)
    assert str(read.value) == problem
    with pytest.raises(DatabaseError) as write:
        schema.open_db(db_path)
    assert str(write.value) == problem


def test_a_reader_checks_the_version_without_loading_sqlite_utils(db_path: str) -> None:
    # Why schema_version is a module of its own: the fast read commands must not pay for
    # sqlite-utils, which the writer's schema imports.
    schema.open_db(db_path).close()
    code = ("import sys; from trialdiff.query import connect_readonly; "
            f"connect_readonly({db_path!r}).close(); print('sqlite_utils' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert result.stdout == "False\n"


@pytest.mark.parametrize("value", ["abc", "-1", "0", ""])
@pytest.mark.parametrize("command", ["recent", "check", "import"])
def test_a_schema_version_trialdiff_never_wrote_is_a_usage_error(
    db_path: str, value: str, command: str
) -> None:
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    conn = sqlite3.connect(db_path)
    conn.execute("update meta set value = ? where key = 'schema_version'", [value])
    conn.commit()
    conn.close()
    args = {"recent": ["NCT00000410"], "check": [], "import": [str(FIXTURES / "v2")]}[command]
    code, out, err = run(db_path, command, *args)
    assert (code, out) == (2, "")
    assert err.startswith(f"trialdiff: error: {db_path} is not a trialdiff database (its schema "
                          f"version is {value!r})")


def test_a_database_whose_creation_was_cut_short_is_said_to_be_so_and_a_writer_completes_it(
    db_path: str,
) -> None:
    # A probe killed a first import in its first 30 ms: trialdiff's tables, no version yet.
    # Readers called it "not a trialdiff database", the words for another application's file.
    schema.open_db(db_path).close()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("delete from meta")
    code, out, err = run(db_path, "recent", "NCT00000410")
    assert (code, out, err) == (1, "", f"trialdiff: error: {db_path}: its creation did not "
                                "finish; run any writing command (`trialdiff import`, `sync`) "
                                "once to complete it\n")
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    assert run(db_path, "check")[0] == 0
