"""Write a site's trial pages: pick the pages that changed, render each, write it atomically."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from .page import render_page
from .query import ChangeFilter, latest_record, query_changes
from .render import recent_section, recent_window


def write_atomic(path: str | Path, text: str) -> bool:
    """Write a file through a temporary file and a rename; skip it if unchanged.

    Return whether it was written. A reader never sees half a file, and an unchanged file keeps
    its modification time, so a site's rsync or cache sees only real changes.
    """
    target = Path(path)
    data = text.encode("utf-8")
    try:
        if target.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    # One writer holds the database's write lock, but pages may be written by several readers:
    # the pid keeps their temporary files apart.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return True


def render_study_page(
    conn: Any, nct_id: str, as_of: date, days: int, canonical_base: str, footer: str
) -> str | None:
    """Return a study's page as of a day, or None when the study is not stored."""
    row = conn.execute("select last_seen_at from studies where nct_id = ?", [nct_id]).fetchone()
    record = latest_record(conn, nct_id)
    if row is None or record is None:
        return None
    since, until = recent_window(as_of, days)
    changes = list(query_changes(conn, ChangeFilter((nct_id,), since, until)))
    return render_page(record, row[0], recent_section(changes, days), canonical_base, footer)


def changed_studies(conn: Any, since: str, as_of: date, days: int) -> Iterator[str]:
    """Yield, sorted, the studies whose pages may differ from their pages at `since`.

    A page moves when its study is observed again (its record, or its last_seen_at), and when a
    change slides out of the Recent Field Changes window.
    """
    window_then, _ = recent_window(date.fromisoformat(since[:10]), days)
    window_now, _ = recent_window(as_of, days)
    rows = conn.execute(
        "select nct_id from studies where last_seen_at >= ? "
        "union select nct_id from changes where detected_at >= ? and detected_at < ? "
        "order by 1",
        [since, window_then, window_now],
    )
    for (nct_id,) in rows:
        yield nct_id


def write_site(
    conn: Any, out: str, since: str | None, as_of: date, days: int, canonical_base: str,
    footer: str,
) -> tuple[int, int]:
    """Write DIR/<NCT_ID>.md for every study, or those changed since a time; return counts."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if since is None:
        nct_ids: Iterator[str] = (r[0] for r in conn.execute(
            "select nct_id from studies order by nct_id").fetchall())
    else:
        nct_ids = changed_studies(conn, since, as_of, days)
    written = unchanged = 0
    for nct_id in list(nct_ids):
        text = render_study_page(conn, nct_id, as_of, days, canonical_base, footer)
        if text is None:
            continue
        if write_atomic(folder / f"{nct_id}.md", text):
            written += 1
        else:
            unchanged += 1
    return written, unchanged
