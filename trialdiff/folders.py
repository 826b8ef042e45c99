"""Find the files an input names: a file, a folder searched recursively, dated folders.

`read_studies` walks each path given and reads every study file under it (sources.py reads
one), yielding one `SourceItem` per record or per input that fails: a folder that cannot be
read, a FIFO among the files, an empty folder. `dated_folders` tells an archive of one folder
per observation day from a plain folder.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .errors import UsageError
from .model import LeftOut, observation_time, utc_timestamp
from .sources import SUFFIXES, SourceItem, is_apple_double, read_file, shown_path

# What Path.exists() reads as "not there": the file, or a folder on its path, is missing.
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})
_DATED_DIR = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+Z?)?")


def _walk(folder: Path) -> Iterator[Path | SourceItem]:
    """Yield a folder's study files, searched recursively, or the folders it cannot read.

    Linked folders are searched too (each once: a link back up is no loop); a folder that
    cannot be read is an error, not skipped in silence.
    """
    walked: set[tuple[int, int]] = set()
    unreadable: list[OSError] = []
    for root, dirs, files in os.walk(folder, followlinks=True, onerror=unreadable.append):
        yield from _unreadable(unreadable)
        where = os.stat(root)
        if (where.st_dev, where.st_ino) in walked:
            dirs.clear()
            continue
        walked.add((where.st_dev, where.st_ino))
        dirs[:] = sorted(d for d in dirs if d != "__MACOSX")
        yield from (Path(root) / name for name in sorted(files)
                    if name.lower().endswith(SUFFIXES) and not is_apple_double(name))
    yield from _unreadable(unreadable)


def _unreadable(errors: list[OSError]) -> Iterator[SourceItem]:
    """Yield the folders a walk could not read, as failed inputs, and forget them."""
    while errors:
        error = errors.pop(0)
        yield SourceItem(shown_path(error.filename or "?"),
                         error=f"cannot read this folder: {error.strerror or error}")


def _is_dir(path: Path) -> bool:
    """Tell whether a path is a folder; False for one that cannot be looked at."""
    # Path.is_dir raises for a name too long: read as a file, such a path fails alone.
    try:
        return path.is_dir()
    except OSError:
        return False


def read_studies(paths: Iterable[str], parse: bool = True) -> Iterator[SourceItem]:
    """Yield every record (or input error) found under the given paths (see `read_file`)."""
    for raw in paths:
        found, named = False, Path(raw)
        folder = _is_dir(named)
        for path in _walk(named) if folder else [named]:
            found = True
            if isinstance(path, SourceItem):
                yield path
                continue
            try:  # one stat says both whether it is there and whether it is a regular file
                mode = path.stat().st_mode
            except OSError as exc:  # gone, or a name too long: that input fails, not the run
                yield SourceItem(shown_path(path), error="no such file or directory"
                                 if exc.errno in _ABSENT else f"cannot read: {exc.strerror}")
                continue
            if folder and not stat.S_ISREG(mode):  # a FIFO would wait for a writer for ever
                yield SourceItem(shown_path(path), error=(
                    "not a regular file (a FIFO or device in a folder is not read: give it as "
                    "a path of its own)"))
                continue
            yield from read_file(path, parse)
        if not found:  # an empty folder is most often a wrong path: say so, not "0 checked"
            yield SourceItem(shown_path(raw), error="no study files here (.json, .ndjson, .jsonl, "
                                                    "one of them .gz, or .zip)")


@dataclass(frozen=True)
class Archive:
    """A folder of dated folders: (observation time, folder) oldest first, and files left out."""

    days: list[tuple[str, Path]]
    ignored: list[str]  # names of files beside the dated folders that are not study inputs


def dated_folders(path: str) -> Archive | None:
    """Return the archive a folder of dated folders is, or None for a plain folder.

    An archive such as `snapshots/sample/` holds one folder per observation day
    (`2024-06-14/`, `2025-07-07/`), so replaying it rebuilds history day by day. Files that
    are not study inputs (a README) are left out; anything that would have to be imported
    undated (a study file or another folder beside the dated ones) is refused with
    UsageError, as is a dated name that is no real date: importing either as a plain
    folder would date the whole history today.
    """
    root = Path(path)
    if not _is_dir(root):
        return None
    try:
        children = sorted(child for child in root.iterdir() if not child.name.startswith("."))
    except OSError:  # a folder this user cannot list: read as a plain one, it fails alone
        return None
    dated = [c for c in children if _is_dir(c) and _DATED_DIR.fullmatch(c.name)]
    if not dated:
        return None
    undated = [c.name for c in children if c not in dated
               and (_is_dir(c) or c.name.lower().endswith(SUFFIXES))]
    if undated:
        raise UsageError(
            f"{path} is an archive of dated folders, but {', '.join(undated[:3])} beside them "
            "has no date: move it into a dated folder, or import it on its own"
        )
    days = [(observation_time(c.name, f"{path}: archive folder "), c) for c in dated]
    return Archive(sorted(days), [c.name for c in children if c not in dated])


def import_batches(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   at: str | date | None) -> tuple[list[tuple[str, list[str]]], list[LeftOut]]:
    """Return an import's inputs as (observation time, paths) batches, and what it leaves out.

    Each archive of dated folders is a batch per day, observed on its date; the other paths are
    one batch, observed `at` (now if None).
    """
    # One path is not its characters: "/" would have been imported, the whole disk.
    given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if isinstance(paths, bytes) or not all(isinstance(p, str | os.PathLike) for p in given):
        raise UsageError(f"{paths!r} is neither a path nor a list of paths (str or Path)")
    if not given:
        raise UsageError("no path given: give a file, a folder or a zip")
    if any(not os.fspath(path).strip() for path in given):  # "" is "."
        raise UsageError("an empty path names no input: give a file, a folder or a zip")
    observed = observation_time(at) if at is not None else None
    batches: list[tuple[str, list[str]]] = []
    plain: list[str] = []
    notes: list[LeftOut] = []
    for path in (os.fspath(p) for p in given):
        archive = dated_folders(path)
        if archive is None:
            plain.append(path)
            continue
        if observed is not None:  # one time for every day would re-date the whole history
            raise UsageError(f"{path} is an archive of dated folders, observed on their "
                             "dates", setting="at")
        if archive.ignored:
            notes.append(LeftOut(path, tuple(archive.ignored)))
        batches.extend((day, [str(folder)]) for day, folder in archive.days)
    if plain:
        batches.append((observed or utc_timestamp(), plain))
    # Days of several archives interleave: each day in its place, oldest first, whatever the
    # order the archives were given in (given newest first, a probe's import refused the rest).
    batches.sort(key=lambda batch: batch[0])
    return batches, notes
