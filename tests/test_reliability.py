"""Crashes, concurrent writers, broken input and broken storage: nothing lost, nothing invented."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import (
    FIXTURES,
    clone_study,
    real_records,
    run,
    trialdiff_env,
    trialdiff_process,
)

from trialdiff.cli import cli
from trialdiff.lock import WriteLock

RECORDS = real_records()


def test_readers_are_not_blocked_and_see_the_last_committed_state(db_path: str) -> None:
    run(db_path, "import", "--at", "2026-05-11", str(FIXTURES / "versions" / "NCT06060392" /
                                                    "2023-11-18__vh2024-06-14.json"))
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("begin immediate")
    writer.execute("delete from changes")
    writer.execute("update studies set snapshot_count = 99")
    with WriteLock(db_path, command="import"):
        started = time.monotonic()
        code, out, _ = run(db_path, "history", "NCT06060392")
        assert code == 0 and " 1  2026-05-11T00:00:00.000Z" in out
        assert run(db_path, "check")[0] == 0  # the uncommitted delete is invisible
        assert time.monotonic() - started < 5
    writer.execute("rollback")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("cut.json", b'{"protocolSection": {"identificationModule": {"nctId": "NCT0', "not valid"),
        ("notastudy.json", b'{"studies": 3}', "'studies' is not a list"),
        ("garbage.json", bytes(random.Random(1).randrange(256) for _ in range(5000)), "not"),
        ("latin1.json", '{"x": "caf\u00e9"}'.encode("latin-1"), "not UTF-8"),
        ("deep.json", b"[" * 10_000 + b"]" * 10_000, "nested too deep"),
        ("deep.ndjson", b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n", "nested too deep"),
    ],
)
def test_each_broken_file_is_named_and_the_good_ones_are_done(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / name).write_bytes(content)
    for record in RECORDS[:3]:
        nct_id = record["protocolSection"]["identificationModule"]["nctId"]
        (folder / f"{nct_id}.json").write_text(json.dumps(record))
    code, out, err = run(str(tmp_path / "db.db"), "import", str(folder))
    assert code == 1
    assert "Traceback" not in out + err
    assert f"trialdiff: {folder / name}" in err and reason in err
    assert "3 studies checked" in out


def test_one_string_of_100_mb_is_a_clean_error(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with big.open("w") as handle:
        handle.write('{"protocolSection": {"descriptionModule": {"briefSummary": "')
        chunk = "x" * (1 << 20)
        for _ in range(100):
            handle.write(chunk)
        handle.write('"}}}')
    good = tmp_path / "good.json"
    good.write_text(json.dumps(RECORDS[0]))
    code, out, err = run(str(tmp_path / "db.db"), "import", str(big), str(good))
    assert code == 1 and "Traceback" not in err
    assert f"trialdiff: {big}" in err and "1 study checked" in out


def test_an_unexpected_error_is_one_line_and_debug_shows_the_details(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trialdiff.ingest

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(trialdiff.ingest, "save_study", explode)
    code, _, err = run(db_path, "import", str(FIXTURES / "v2"))
    assert code == 1
    assert err.strip() == (
        "trialdiff: error: unexpected RuntimeError: boom (run with --debug for the details)"
    )
    result = CliRunner().invoke(cli, ["--db", db_path, "--debug", "import", str(FIXTURES / "v2")])
    assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """Mount a 300 KB tmpfs, so the disk really fills up (root only; else skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + result.stderr.decode().strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_clear_error_and_nothing_is_half_written(small_disk: Path) -> None:
    db = str(small_disk / "trialdiff.db")
    code, _, err = run(db, "import", "--summary", str(FIXTURES / "v2"),
                       str(FIXTURES / "versions"))
    assert code == 1 and "Traceback" not in err
    assert "full" in err.lower()
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    snapshots = conn.execute("select count(*) from snapshots").fetchone()[0]
    studies = conn.execute("select count(*) from studies").fetchone()[0]
    assert snapshots == studies  # every study that is there is whole
    conn.close()
    assert run(db, "check")[0] == 0


def test_a_read_only_filesystem_is_a_clear_error(small_disk: Path, tmp_path: Path) -> None:
    record = FIXTURES / "NCT05085444" / "full.json"
    db = str(small_disk / "trialdiff.db")
    assert run(db, "import", "--at", "2026-05-12", str(record))[0] == 0
    view = tmp_path / "read-only"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(small_disk), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        code, _, err = run(str(view / "trialdiff.db"), "import", str(record))
        assert code == 1 and "Traceback" not in err
        assert err.startswith("trialdiff: error:") and "read-only" in err.lower()
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


@pytest.fixture(scope="module")
def busy_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write an archive of 6 days of 150 real-record clones; from day 2 each changes daily."""
    root = tmp_path_factory.mktemp("archive")
    for day in range(1, 7):
        folder = root / f"2026-05-0{day}"
        folder.mkdir()
        for number in range(150):
            record = clone_study(RECORDS[number % len(RECORDS)], number, number % 2 == day % 2)
            record["protocolSection"]["statusModule"]["statusVerifiedDate"] = f"2026-0{day}"
            (folder / f"{number:04d}.json").write_text(json.dumps(record))
    return root


def test_readers_running_beside_a_real_import_see_one_consistent_state(
    tmp_path: Path, busy_archive: Path
) -> None:
    db = str(tmp_path / "busy.db")
    first_day = busy_archive / "2026-05-01"
    assert trialdiff_process(db, "import", "--summary", "--at", "2026-05-01",
                             str(first_day)).wait() == 0
    writer = subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", db, "import", "--summary", str(busy_archive)],
        env=trialdiff_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    states: set[str] = set()
    rounds = 0
    while writer.poll() is None or rounds < 2:
        rounds += 1
        code, out, err = run(db, "check")
        assert (code, err) == (0, ""), out  # no false problem while the writer commits
        states.add(out.split(", ")[1])  # e.g. "412 snapshots": which commit it saw
        code, out, err = run(db, "changes", "--format", "ndjson")
        assert (code, err) == (0, "")
        per_study: dict[str, set[str]] = {}
        for line in out.splitlines():
            change = json.loads(line)
            per_study.setdefault(change["nct_id"], set()).add(change["detected_at"])
        # Days commit whole, and every study changes every day: every study shows the same
        # days, or the reader saw half a commit.
        assert len({frozenset(days) for days in per_study.values()}) <= 1
        assert len(per_study) in (0, 150)
    assert writer.wait() == 0, writer.stderr.read() if writer.stderr else ""
    assert rounds >= 2 and len(states) >= 2  # the readers ran while days were committed
    assert run(db, "check")[0] == 0
