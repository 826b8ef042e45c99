"""The Python API: the README's examples run, `__all__` is complete, runs are recorded."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, run
from standin_api import StandinAPI

import trialdiff
from trialdiff.model import Observation, Outcome


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
    with trialdiff.open(str(tmp_path / "snapshots" / "trialdiff.db")) as tracker:
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


def test_change_to_dict_is_what_changes_format_json_prints(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    code, out, err = run(db_path, "changes", "--format", "json")
    assert (code, err) == (0, "")
    with trialdiff.open(db_path) as tracker:
        assert [c.to_dict() for c in tracker.changes()] == json.loads(out)
        code, out, _ = run(db_path, "changes", "NCT06060392", "--path", "status",
                           "--min-severity", "major", "--format", "json")
        chosen = tracker.changes(["nct06060392"], path="status", min_severity="major")
        assert [c.to_dict() for c in chosen] == json.loads(out) != []


def test_recent_and_page_are_what_the_commands_print(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    with trialdiff.open(db_path) as tracker:
        recent = tracker.recent_section("NCT06060392", days=400, as_of="2025-07-07")
        page = tracker.page("NCT06060392", as_of="2025-07-07", footer="Fed by trialdiff.")
    assert run(db_path, "recent", "NCT06060392", "--days", "400",
               "--as-of", "2025-07-07")[1] == recent
    assert run(db_path, "page", "NCT06060392", "--as-of", "2025-07-07",
               "--footer", "Fed by trialdiff.")[1] == page


class Kept:
    """A sink that keeps what it sees."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []
        self.finished: list[trialdiff.Run] = []
        self.closed = 0

    def show(self, outcome: Outcome) -> None:
        """Keep an outcome."""
        self.seen.append(outcome)

    def finish(self, run: trialdiff.Run) -> None:
        """Keep the finished run."""
        self.finished.append(run)

    def close(self) -> None:
        """Count closings."""
        self.closed += 1


def test_a_run_feeds_its_sinks_and_records_its_row(db_path: str) -> None:
    kept = Kept()
    with trialdiff.open(db_path) as tracker:
        done = tracker.import_paths([str(SAMPLE)], sinks=[kept])
        assert tracker.watches() == []
    observations = [o for o in kept.seen if isinstance(o, Observation)]
    assert len(observations) == done.checked == 6 and kept.closed == 1
    assert len(kept.finished) == 1 and kept.finished[0].id == done.id == 1
    assert done.changes == len(done.stored_changes) == sum(len(o.changes) for o in observations)
    import sqlite3

    row = sqlite3.connect(db_path).execute("select status, checked, changes from runs").fetchone()
    assert row == ("ok", done.checked, done.changes)


def test_a_crashing_import_is_recorded_as_ended_and_its_sinks_closed(
    db_path: str, tmp_path: Path
) -> None:
    class Crash(Kept):
        def show(self, outcome: Outcome) -> None:
            raise RuntimeError("the disk went away")

    crash = Crash()
    with trialdiff.open(db_path) as tracker:
        with pytest.raises(RuntimeError):
            tracker.import_paths([str(SAMPLE)], sinks=[crash])
        assert tracker.last_run is not None and tracker.last_run.status == "partial"
    import sqlite3

    # Not left `running`: one study was saved before the crash, so the run is partial.
    assert sqlite3.connect(db_path).execute("select status, errors from runs").fetchone() == (
        "partial", '[{"input": "import", "error": "the disk went away"}]')
    assert crash.closed == 1


def test_sync_and_backfill_close_their_clients_and_a_bad_setting_names_no_flag(
    db_path: str, api: StandinAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trialdiff.fetch import Client

    closed: list[str] = []
    close = Client.close

    def counted(client: Client) -> None:
        closed.append(client.base_url)
        close(client)

    monkeypatch.setattr(Client, "close", counted)
    with trialdiff.open(db_path) as tracker:
        with pytest.raises(trialdiff.UsageError) as caught:
            tracker.sync(api="ftp://example.org")
        assert "--" not in str(caught.value) and caught.value.setting == "api"
        with pytest.raises(trialdiff.UsageError, match="'NCT1' is not an NCT id"):
            tracker.backfill(["NCT1"], api=api.base_url)
        assert closed == [] and tracker.last_run is None  # refused before any run began
        done = tracker.sync(["NCT00000410"], api=api.base_url, delay=0)
        assert closed == [api.base_url]
        with pytest.raises(trialdiff.FetchError):  # the stand-in has no history for it
            tracker.backfill(["NCT00000410"], api=api.base_url, delay=0)
        assert closed == [api.base_url, api.base_url.removesuffix("/api/v2")]
        assert tracker.last_run is not None and tracker.last_run.status == "failed"
    assert (done.status, done.checked) == ("ok", 1)


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


def test_a_tracker_that_keeps_no_changes_still_feeds_its_sinks(db_path: str) -> None:
    kept = Kept()
    with trialdiff.open(db_path, keep_changes=False) as tracker:
        done = tracker.import_paths([str(SAMPLE)], sinks=[kept])
        # The run holds none of what it stored (a registry-wide rewrite stores millions) ...
        assert done.stored is None and done.changes > 500
        with pytest.raises(trialdiff.UsageError, match="keep_changes=False"):
            done.stored_changes  # noqa: B018
        # ... while its sinks saw every change, and the database has them all.
        seen = sum(len(o.changes) for o in kept.seen if isinstance(o, Observation))
        assert seen == done.changes == len(list(tracker.changes()))
