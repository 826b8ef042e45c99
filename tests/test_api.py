"""The package as a library: the README's examples, `__all__`, flagless messages, killed runs."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import typing
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, run
from standin_api import StandinAPI

import trialdiff


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """Run with `folder` as the working directory."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def readme_examples() -> list[str]:
    """Return the ```python blocks of the README's Python API section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readmes_python_examples_run(tmp_path: Path, api: StandinAPI) -> None:
    shutil.copytree(SAMPLE, tmp_path / "snapshots" / "sample")
    examples = readme_examples()
    assert len(examples) == 2
    printed = io.StringIO()
    with inside(tmp_path), contextlib.redirect_stdout(printed):
        for code in examples:
            exec(compile(code, "README.md", "exec"), {"URL": api.base_url})
    out = printed.getvalue()
    assert "## Recent Field Changes (last 400 days)" in out
    assert out.rstrip().endswith("NCT09999999 is not in the database")
    try:
        import pandas  # type: ignore[import-untyped]
    except ImportError:
        return
    with trialdiff.open(str(tmp_path / "analysis.db")) as tracker:
        frame = pandas.DataFrame(c.to_dict() for c in tracker.changes())
    assert len(frame) > 0


def test_every_public_name_exists_and_is_documented() -> None:
    assert trialdiff.__all__ == sorted(set(trialdiff.__all__))
    assert {"open", "Tracker", "Run", "Change", "TrialdiffError"} <= set(trialdiff.__all__)
    for name in trialdiff.__all__:
        value = getattr(trialdiff, name)
        assert value is not None, name
        doc = getattr(value, "__doc__", None)
        assert doc and doc.strip(), f"{name} has no docstring"
    with pytest.raises(AttributeError):
        trialdiff.nothing_such  # noqa: B018
    assert set(trialdiff.__all__) <= set(dir(trialdiff))
    # Every error the tree in errors.py documents can be caught by its public name.
    documented = {name for name, value in vars(import_module("trialdiff.errors")).items()
                  if isinstance(value, type) and issubclass(value, Exception)
                  and value.__module__ == "trialdiff.errors"}
    assert len(documented) == 14
    assert documented <= set(trialdiff.__all__)
    # A Sink's show() gets an Outcome: every kind of it is public, to match on.
    assert set(typing.get_args(trialdiff.Outcome)) == {
        getattr(trialdiff, name) for name in trialdiff.__all__
        if isinstance(getattr(trialdiff, name), type) and getattr(trialdiff, name).__module__
        == "trialdiff.model"}


def test_no_library_message_names_a_command_line_flag() -> None:
    flag = re.compile(r"""(?:["']|f["'])[^"'\n]*\s--[a-z]""")
    for path in (ROOT / "trialdiff").rglob("*.py"):
        if "cli" in path.parts or path.name == "settings.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"raise \w+\(|Error\(|Failed\(", code):
                assert not re.search(r"--[a-z]", code), f"{path.name}:{number}: {line.strip()}"
        assert flag  # the pattern compiles; messages span lines, so each raise line is checked


KILLED_MID_RUN = """
import os, signal, sys
import trialdiff

class Kill:
    def show(self, outcome):
        os.kill(os.getpid(), signal.SIGKILL)  # a real kill, mid-run, after the run row exists
    def finish(self, run):
        pass
    def close(self):
        pass

with trialdiff.open(sys.argv[1]) as tracker:
    tracker.import_paths([sys.argv[2]], sinks=[Kill()])
"""


def test_a_killed_run_of_any_kind_is_marked_interrupted_by_the_next_writer(
    db_path: str, tmp_path: Path
) -> None:
    import signal
    import sqlite3
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(KILLED_MID_RUN, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script), db_path, str(SAMPLE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL
    conn = sqlite3.connect(db_path)
    assert conn.execute("select command, status from runs").fetchall() == [("import", "running")]
    code, out, err = run(db_path, "reannotate")  # not a sync: any writer marks it
    assert (code, err) == (0, "") and out.startswith("reannotate: ")
    assert conn.execute("select command, status from runs order by id").fetchall() == [
        ("import", "interrupted"), ("reannotate", "ok")]
