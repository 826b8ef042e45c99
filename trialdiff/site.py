"""Write a site's trial pages: pick the pages that changed, render each, write it atomically."""

from __future__ import annotations

import contextlib
import filecmp
import multiprocessing
import os
import signal
import stat
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from .errors import DatabaseError, UsageError
from .page import render_page
from .query import ChangeFilter, connect_readonly, latest_record, query_changes
from .render import recent_section, recent_window


def write_atomic(path: str | Path, text: str | Iterable[str]) -> bool:
    """Write a file through a temporary file and a rename; skip it if unchanged.

    Return whether it was written. A reader never sees half a file, and an unchanged file keeps
    its modification time, so a site's rsync or cache sees only real changes. Text may come in
    pieces (an export streamed from the database), which are written as they come. A symlink
    stays a symlink and a file keeps its permissions: the file it names is what is replaced.
    A device or a pipe (`/dev/stdout`, a FIFO) is written into, as the shell's `>` would.
    """
    named = Path(path)
    try:
        mode = os.stat(named).st_mode  # it follows links: /dev/stdout is the pipe itself
    except OSError:
        mode = stat.S_IFREG  # not there (yet): a new file
    if not stat.S_ISREG(mode):
        # Replacing it would leave a regular file where a device or a FIFO was (as root, in
        # place of /dev/null), and the FIFO's reader waiting for ever.
        _write_text(named, text)
        return True
    # A feed published as a symlink into a web root must update the file the server reads.
    target = Path(os.path.realpath(named))
    if isinstance(text, str):
        try:
            if target.read_bytes() == text.encode("utf-8"):
                return False
        except FileNotFoundError:
            pass
    if not target.parent.is_dir():  # else the error would name the temporary file below
        raise UsageError(f"cannot write {named}: there is no folder {target.parent}")
    # One writer holds the database's write lock, but pages may be written by several readers:
    # the pid keeps their temporary files apart.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            _write_text(temporary, text)
        except OSError as exc:  # named after the file asked for, not the temporary one
            raise OSError(exc.errno, f"{exc.strerror} (writing a temporary file beside it, "
                          "to replace it whole)", str(named)) from exc
        if not isinstance(text, str) and target.is_file() and filecmp.cmp(
                temporary, target, shallow=False):
            temporary.unlink()
            return False
        with contextlib.suppress(FileNotFoundError):  # a feed a web server reads stays readable
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return True


def _write_text(path: Path, text: str | Iterable[str]) -> None:
    """Write text, whole or in pieces as they come, to a file as UTF-8."""
    with path.open("w", encoding="utf-8", newline="") as out:
        for piece in [text] if isinstance(text, str) else text:
            out.write(piece)


def render_study_page(
    conn: Any, nct_id: str, as_of: date, days: int, canonical_base: str, footer: str,
    ages: bool = False,
) -> str | None:
    """Return a study's page as of a day, or None when the study is not stored."""
    row = conn.execute("select last_seen_at from sightings where nct_id = ?", [nct_id]).fetchone()
    record = latest_record(conn, nct_id)
    if row is None or record is None:
        return None
    since, until = recent_window(as_of, days)
    changes = list(query_changes(conn, ChangeFilter((nct_id,), since, until)))
    return render_page(record, row[0], recent_section(changes, days), canonical_base, footer,
                       ages)


def changed_studies(conn: Any, since: str, as_of: date, days: int) -> Iterator[str]:
    """Yield, sorted, the studies whose pages may differ from their pages at `since`.

    A page moves when its study is observed again (its record, or its last_seen_at), and when a
    change slides out of the Recent Field Changes window.
    """
    window_then, _ = recent_window(date.fromisoformat(since[:10]), days)
    window_now, _ = recent_window(as_of, days)
    rows = conn.execute(
        "select nct_id from sightings where last_seen_at >= ? "
        "union select nct_id from changes where detected_at >= ? and detected_at < ? "
        "order by 1",
        [since, window_then, window_now],
    )
    for (nct_id,) in rows:
        yield nct_id


def write_site(
    db_path: str, out: str, since: str | None, as_of: date, days: int, canonical_base: str,
    footer: str, jobs: int | None = None, ages: bool = False,
) -> tuple[int, int, list[str]]:
    """Write DIR/<NCT_ID>.md for every study, or those changed since a time.

    Return how many pages were written and unchanged, and the studies whose data could not
    be read (each `NCT: why`): a damaged study costs its own page, not the rest of the site.
    Pages render in `jobs` processes (default: one per core), each with its own read-only
    connection: rendering is pure work per study, and a site has many.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    conn = connect_readonly(db_path)
    if since is None:
        nct_ids = [r[0] for r in conn.execute("select nct_id from studies order by nct_id")]
    else:
        nct_ids = list(changed_studies(conn, since, as_of, days))
    conn.close()
    task = (db_path, str(folder), as_of, days, canonical_base, footer, ages)
    jobs = jobs or os.cpu_count() or 1
    chunks = [nct_ids[start : start + 250] for start in range(0, len(nct_ids), 250)]
    if jobs == 1 or len(chunks) < 2:
        counts = [_write_pages(task, chunk) for chunk in chunks]
    else:
        # fork: workers start at once and inherit the imported modules; each opens its own
        # connection, never the parent's.
        with multiprocessing.get_context("fork").Pool(jobs, _worker_signals) as pool:
            counts = pool.starmap(_write_pages, [(task, chunk) for chunk in chunks])
    return (sum(c[0] for c in counts), sum(c[1] for c in counts),
            [failure for c in counts for failure in c[2]])


def _worker_signals() -> None:
    """Leave Ctrl-C to the parent, and end as an exit when it stops the pool (SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # else each worker printed its traceback
    signal.signal(signal.SIGTERM, _exit)  # so write_atomic removes its temporary file


def _exit(signum: int, frame: Any) -> None:
    """Exit at a signal, unwinding (cleanups run), silently."""
    raise SystemExit(128 + signum)


def _write_pages(task: tuple[Any, ...], nct_ids: list[str]) -> tuple[int, int, list[str]]:
    """Render and write one chunk of pages; return (written, unchanged, failures)."""
    db_path, folder, as_of, days, canonical_base, footer, ages = task
    conn = connect_readonly(db_path)
    written = unchanged = 0
    failures: list[str] = []
    try:
        for nct_id in nct_ids:
            try:
                text = render_study_page(conn, nct_id, as_of, days, canonical_base, footer,
                                         ages)
            except DatabaseError as exc:  # a damaged blob: this page, not the site's others
                failures.append(f"{nct_id}: its page cannot be written: {exc}")
                continue
            if text is None:
                continue
            if write_atomic(Path(folder) / f"{nct_id}.md", text):
                written += 1
            else:
                unchanged += 1
    finally:
        conn.close()
    return written, unchanged, failures
