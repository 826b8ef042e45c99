"""Take each study of one input once: a repeat is dropped, differing copies are a conflict.

One input (the paths of one import at one observation time, a dump, an API page) observes each
study once. The same study given twice with the same tracked content is one observation. Given
with different content, storing both would invent a change between two snapshots of the same
time, and keeping one would be a guess: neither is stored, and the error names every copy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .model import content_hash
from .normalize import extract_fields
from .sources import SourceItem
from .store import gate_hash

_BATCH = 5000


def repeated_studies(items: Iterable[SourceItem]) -> dict[str, bool]:
    """Return {nct_id: whether its copies differ} for the studies an input gives twice or more.

    The first pass keeps one (id, gate) row per record in a temporary SQLite file, not in
    memory, so a dump of the whole registry costs disk pages, not RAM.
    """
    scratch = sqlite3.connect("")  # a private temporary file, deleted when closed
    try:
        scratch.execute("create table seen (nct_id text, gate text)")
        rows: list[tuple[str, str]] = []
        for item in items:
            if item.study is not None and item.nct_id is not None:
                rows.append((item.nct_id, gate_hash(item.study, item.raw)))
            if len(rows) >= _BATCH:
                scratch.executemany("insert into seen values (?, ?)", rows)
                rows.clear()
        scratch.executemany("insert into seen values (?, ?)", rows)
        found = scratch.execute(
            "select nct_id, count(distinct gate) > 1 from seen group by nct_id having count(*) > 1"
        )
        return {nct_id: bool(differ) for nct_id, differ in found}
    finally:
        scratch.close()


@dataclass
class _Copies:
    """The copies of one study whose bytes differ: the first, and each one's label and hash."""

    first: SourceItem
    hashes: dict[str, str] = field(default_factory=dict)  # label -> content hash


def distinct_studies(read: Callable[[], Iterable[SourceItem]]) -> Iterator[SourceItem]:
    """Yield each study of an input once, and one error per study given with differing content.

    `read` is called twice (it must give the same items each time): once to find the studies
    given more than once, then to yield. Copies whose bytes differ are compared by their
    tracked content after the input ends: equal, the first is yielded; else a conflict.
    """
    repeated = repeated_studies(read())
    if not repeated:
        yield from read()
        return
    yielded: set[str] = set()
    differing: dict[str, _Copies] = {}
    for item in read():
        if item.study is None or item.nct_id not in repeated:
            yield item
        elif not repeated[item.nct_id]:  # byte-equal repeats: the first one stands for all
            if item.nct_id not in yielded:
                yielded.add(item.nct_id)
                yield item
        else:
            copies = differing.setdefault(item.nct_id, _Copies(item))
            copies.hashes[item.label] = content_hash(extract_fields(item.study))
    for nct_id, copies in sorted(differing.items()):
        if len(set(copies.hashes.values())) == 1:
            yield copies.first
            continue
        labels = list(copies.hashes)
        yield SourceItem(labels[0], error=(
            f"{nct_id} is given {len(labels)} times in this input with different content "
            f"(also {', '.join(labels[1:4])}{', ...' if len(labels) > 4 else ''}): "
            "a conflict, so no version of it was stored"
        ))
