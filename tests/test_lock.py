"""The write lock: one writer at a time, a dead holder's lock taken over, --wait waits."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import FIXTURES, run, trialdiff_env


@contextmanager
def lock_holder(db: str) -> Iterator[subprocess.Popen[bytes]]:
    """Hold the write lock from another process, an `import`; kill it when the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from trialdiff.lock import WriteLock\n"
         f"with WriteLock({db!r}, command='import'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        env=trialdiff_env(), stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(db_path: str) -> None:
    with lock_holder(db_path) as holder:
        code, _, err = run(db_path, "import", str(FIXTURES / "v2"))
        assert code == 75 and f"pid {holder.pid} (import)" in err
    code, out, _ = run(db_path, "import", "--summary", str(FIXTURES / "v2"))
    assert code == 0 and "28 studies checked" in out


def test_wait_waits_for_the_other_writer(db_path: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from trialdiff.lock import WriteLock\n"
         f"with WriteLock({db_path!r}):\n    print('locked', flush=True); time.sleep(1)"],
        env=trialdiff_env(), stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    code, _, _ = run(db_path, "import", "--wait", "20", "--summary", str(FIXTURES / "v2"))
    assert code == 0
    holder.wait()
