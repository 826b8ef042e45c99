"""Site pages: the same files whether written by one process or several, written atomically."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest
from conftest import SAMPLE, clones, run, save_records, trialdiff_env

from trialdiff.query import connect_readonly
from trialdiff.site import changed_studies, write_atomic, write_site


def test_one_process_or_several_write_the_same_pages(db_path: str, tmp_path: Path) -> None:
    assert run(db_path, "import", "--summary", str(SAMPLE))[0] == 0
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    day = date(2025, 7, 7)
    assert write_site(db_path, str(serial), None, day, 30, "https://x.org/", "note", jobs=1) == (
        3, 0, [])
    assert write_site(db_path, str(parallel), None, day, 30, "https://x.org/", "note",
                      jobs=2) == (3, 0, [])
    for page in serial.iterdir():
        assert (parallel / page.name).read_bytes() == page.read_bytes()
    assert write_site(db_path, str(parallel), None, day, 30, "https://x.org/", "note",
                      jobs=2) == (0, 3, [])


def test_a_damaged_study_costs_its_own_page_not_the_sites(db_path: str, tmp_path: Path) -> None:
    # One flipped byte in a record's blob stopped `page --all` part way, naming no study.
    assert run(db_path, "import", "--summary", str(SAMPLE))[0] == 0
    conn = sqlite3.connect(db_path)
    (blob,) = conn.execute("select record from records where nct_id = 'NCT05827016'").fetchone()
    damaged = blob[:40] + bytes([blob[40] ^ 0xFF]) + blob[41:]
    conn.execute("update records set record = ? where nct_id = 'NCT05827016'", [damaged])
    conn.commit()
    conn.close()
    code, out, err = run(db_path, "page", "--all", "--as-of", "2025-07-07", "--out",
                         str(tmp_path / "site"))
    site = tmp_path / "site"
    assert code == 1 and out == f"page: 2 pages written, 0 unchanged, in {site}; 1 failed\n"
    assert err.startswith("trialdiff: NCT05827016: its page cannot be written: ")
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == [
        "NCT04642755.md", "NCT06060392.md"]


def test_changed_studies_are_those_seen_since_or_sliding_out(db_path: str) -> None:
    assert run(db_path, "import", "--summary", str(SAMPLE))[0] == 0
    conn = connect_readonly(db_path)
    seen = ["NCT04642755", "NCT05827016", "NCT06060392"]
    assert list(changed_studies(conn, "2025-07-07T00:00:00.000Z", date(2025, 7, 8), 30)) == seen
    assert list(changed_studies(conn, "2025-07-08T00:00:00.000Z", date(2025, 7, 9), 30)) == []
    sliding = list(changed_studies(conn, "2025-07-20T00:00:00.000Z", date(2025, 8, 10), 30))
    assert sliding == ["NCT05827016", "NCT06060392"]  # their changes left the window


def test_changes_into_a_missing_folder_names_the_folder_not_a_temporary_file(
    tmp_path: Path,
) -> None:
    db_path = str(tmp_path / "t.db")
    assert run(db_path, "import", "--summary", str(SAMPLE))[0] == 0
    target = tmp_path / "missing" / "feed.xml"
    code, out, err = run(db_path, "changes", "--format", "atom", "-o", str(target))
    assert (code, out) == (2, "")
    assert err == f"trialdiff: error: cannot write {target}: there is no folder {target.parent}\n"
    assert not (tmp_path / "missing").exists()



def test_a_file_in_a_folder_that_takes_no_new_file_is_named_in_the_error(tmp_path: Path) -> None:
    # /proc/version is a regular file in a folder where no file can be made: the error names
    # the file asked for, and why a temporary file was made, not the temporary file's name.
    if not Path("/proc/version").is_file():
        pytest.skip("needs Linux's /proc")
    with pytest.raises(OSError) as caught:
        write_atomic("/proc/version", "x")
    assert caught.value.filename == "/proc/version"
    assert "writing a temporary file beside it" in str(caught.value)


def test_write_atomic_skips_an_unchanged_file(tmp_path: Path) -> None:
    target = tmp_path / "page.md"
    assert write_atomic(target, "one\n") is True
    assert write_atomic(target, "one\n") is False
    assert write_atomic(target, "two\n") is True and target.read_text() == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]


def test_write_atomic_replaces_the_file_a_symlink_names_and_keeps_its_mode(tmp_path: Path) -> None:
    served = tmp_path / "www" / "feed.xml"
    served.parent.mkdir()
    served.write_text("old\n")
    served.chmod(0o640)
    link = tmp_path / "feed.xml"
    link.symlink_to(served)
    assert write_atomic(link, iter(["new", "\n"])) is True
    assert link.is_symlink() and os.readlink(link) == str(served)
    assert served.read_text() == "new\n" and stat.S_IMODE(served.stat().st_mode) == 0o640
    assert sorted(p.name for p in served.parent.iterdir()) == ["feed.xml"]


def test_write_atomic_writes_into_a_fifo_and_leaves_it_a_fifo(tmp_path: Path) -> None:
    # A device or a pipe (`-o /dev/stdout`, a named pipe a feed reader waits on) was replaced
    # by a regular file: as root, `-o /dev/null` would have put a file in place of the device.
    fifo = tmp_path / "feed.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert write_atomic(fifo, iter(["new", "\n"])) is True
    reader.join(timeout=30)
    assert received == [b"new\n"] and stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.fifo"]  # no temporary left


def test_ctrl_c_while_pages_render_in_workers_prints_one_line(
    db_path: str, tmp_path: Path
) -> None:
    # Each forked worker took the terminal's Ctrl-C too and printed its own traceback.
    save_records(db_path, clones(1500), "2025-07-07T00:00:00.000Z")
    out = tmp_path / "site"
    process = subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", db_path, "page", "--all", "--out", str(out),
         "--as-of", "2025-07-07"], env=trialdiff_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out.is_dir() and any(out.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the workers write: Ctrl-C then reaches every process
    os.killpg(process.pid, signal.SIGINT)  # as a terminal sends it, to the whole group
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (
        130, "trialdiff: interrupted (what was saved stays: run again to resume)\n")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_an_empty_output_is_refused_not_taken_as_here_or_stdout(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `--out "$SITE"` with SITE unset wrote the pages into the current folder, and `-o ""` the
    # feed to stdout (cron's mail).
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    monkeypatch.chdir(tmp_path)
    assert run(db_path, "page", "--all", "--out", "") == (
        2, "", "trialdiff: error: --out '' names no folder: give the site's folder\n")
    assert run(db_path, "changes", "-o", "") == (
        2, "", "trialdiff: error: -o '' names no file: give a path, or leave -o out to write "
               "to stdout\n")
    assert run(db_path, "page", "--all", "--changed-since", "2025-07-06", "--out", "s") == (
        2, "", "trialdiff: error: give NCT_ID, or --all or --changed-since (one of them) with "
               "--out DIR\n")
    assert not list(tmp_path.glob("NCT*.md")) and not (tmp_path / "s").exists()
