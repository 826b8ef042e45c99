"""Export changes in every format: the one table of formats, and the streams that feed it.

`EXPORTERS` names each format once: its media type, its file suffix, its changelog renderer
(`changes --format`) and its diff-report renderer (`diff --format`). The renderers live one
family to a module (terminal, markdown, atom, jsoncsv), each a thin layer over present.py.

Every format carries the same changes, each with its `facts` and `severity` (see meaning.py).
JSON, NDJSON and CSV list them oldest first (then by study, then in rule 7's order); Markdown
and Atom group them by UTC day, newest first, then by study. Nothing reads the clock: the
Atom feed's `updated` is the newest change's `detected_at` unless the caller passes one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from typing import TYPE_CHECKING, Any, Final

from .fields import LOCATION_PREFIX, is_under, order_key
from .meaning import Annotated, annotate, keep_severity
from .model import FieldChange

if TYPE_CHECKING:
    from .report import DiffReport

# The renderers are imported when used: the CLI reads this table (its --format choices) on
# every start, and most commands render nothing.
Groups = Iterable[list[Annotated]]


def ordered(changes: Iterable[FieldChange]) -> list[FieldChange]:
    """Return changes oldest first, then by study, then in rule 7's order."""
    return sorted(changes, key=lambda c: (c.detected_at, c.nct_id, order_key(c.path)))


def annotated_stream(
    changes: Iterable[FieldChange], minimum: str | None = None, by_day: bool = False,
    keep: Callable[[FieldChange], bool] | None = None,
) -> Iterator[list[Annotated]]:
    """Yield annotated changes one study-observation (or study-day) at a time, kept in order.

    The input must come grouped: oldest first then by study (query_changes' order), or with
    `by_day`, by UTC day then study (its `day-newest` order). Each observation is annotated
    whole (a site's facts count all its observation's sites), then narrowed to `keep` and
    `minimum` severity, and put in rule 7's order: memory holds one group at a time.
    """
    def key(change: FieldChange) -> tuple[str, str]:
        return (change.detected_at[:10] if by_day else change.detected_at, change.nct_id)

    for _, group in groupby(changes, key=key):
        out: list[Annotated] = []
        for _, seen in groupby(group, key=lambda c: c.detected_at):
            items = annotate(sorted(seen, key=lambda c: order_key(c.path)))
            if keep is not None:
                items = [item for item in items if keep(item.change)]
            out += keep_severity(items, minimum) if minimum is not None else items
        if out:
            yield sorted(out, key=lambda a: (order_key(a.change.path), a.change.detected_at))


def whole_observations(where: Any) -> tuple[Any, Callable[[FieldChange], bool] | None]:
    """Return a query filter (query.ChangeFilter) that reads every site of each observation
    its rows come from, and the test that narrows the rows back (None: nothing to narrow).

    A site change's `sites` fact counts its whole observation's sites, as the stored facts do:
    a filter by kind, or by a path inside the sites, is applied after annotating.
    """
    prefixes = where.path_prefixes
    sites = {p for p in prefixes if p.rstrip(".").startswith(LOCATION_PREFIX)}
    if not where.kinds and not sites:
        return where, None
    kinds = set(where.kinds)

    def keep(change: FieldChange) -> bool:
        return ((not kinds or change.kind in kinds)
                and (not sites or any(is_under(change.path, p) for p in prefixes)))

    read = [p for p in prefixes if p not in sites] + ([LOCATION_PREFIX.rstrip(".")] if sites
                                                      else [])
    return replace(where, kinds=(), path_prefixes=tuple(read)), keep


def groups(changes: Iterable[FieldChange], by_day: bool = False) -> Iterator[list[Annotated]]:
    """Return annotate(ordered(changes)) in groups, whatever order the changes come in."""
    if by_day:
        ranked = sorted(changes, key=lambda c: (c.nct_id, c.detected_at))
        ranked.sort(key=lambda c: c.detected_at[:10], reverse=True)
        return annotated_stream(ranked, by_day=True)
    return annotated_stream(ordered(changes))


def records(changes: Iterable[FieldChange]) -> list[dict[str, Any]]:
    """Return the changes as JSON objects, in export order."""
    from .present import record

    return [record(item) for group in groups(changes) for item in group]


def to_json(changes: Iterable[FieldChange]) -> str:
    """Return the changes as a JSON array."""
    from .jsoncsv import iter_json

    return "".join(iter_json(groups(changes)))


def to_ndjson(changes: Iterable[FieldChange]) -> str:
    """Return the changes as newline-delimited JSON, one change a line."""
    from .jsoncsv import iter_ndjson

    return "".join(iter_ndjson(groups(changes)))


def to_csv(changes: Iterable[FieldChange]) -> str:
    """Return the changes as CSV: a header, then one row per change, JSON in old/new/facts."""
    from .jsoncsv import iter_csv

    return "".join(iter_csv(groups(changes)))


def to_markdown(
    changes: Iterable[FieldChange],
    title: str = "trialdiff changelog",
    titles: Mapping[str, str] | None = None,
) -> str:
    """Return a Markdown changelog: by day (newest first), then study; a line per change."""
    from .markdown import iter_markdown

    return "".join(iter_markdown(groups(changes, by_day=True), title, titles))


def to_atom(
    changes: Iterable[FieldChange],
    *,
    feed_id: str | None = None,
    title: str = "trialdiff: ClinicalTrials.gov field changes",
    updated: str | None = None,
    tag_authority: str | None = None,
    self_href: str | None = None,
    titles: Mapping[str, str] | None = None,
    entry_subject: str = "",
) -> str:
    """Return an Atom feed: `updated` defaults to the newest change, or FEED_EPOCH if none.

    `entry_subject` names what a filtered feed's entries hold (atom.iter_atom).
    """
    from .atom import DEFAULT_TAG_AUTHORITY, FEED_EPOCH, iter_atom

    changes = list(changes)
    newest = max((c.detected_at for c in changes), default=None)
    return "".join(iter_atom(groups(changes, by_day=True), updated or newest or FEED_EPOCH,
                             feed_id=feed_id, title=title,
                             tag_authority=tag_authority or DEFAULT_TAG_AUTHORITY,
                             self_href=self_href, titles=titles,
                             entry_subject=entry_subject))


@dataclass(frozen=True)
class Feed:
    """What a changelog renderer may use besides the changes: study titles, the feed's date."""

    titles: Mapping[str, str] | None = None
    updated: str | None = None  # the newest change's time (None: no change, no observation)
    subject: tuple[str, str] = ("", "")  # what a filtered feed keeps, for its ids and its
    # entries' (feed_subject); "": every change


ChangelogRenderer = Callable[[Groups, Feed], Iterator[str]]


def _json(groups: Groups, _: Feed) -> Iterator[str]:
    from .jsoncsv import iter_json

    return iter_json(groups)


def _ndjson(groups: Groups, _: Feed) -> Iterator[str]:
    from .jsoncsv import iter_ndjson

    return iter_ndjson(groups)


def _csv(groups: Groups, _: Feed) -> Iterator[str]:
    from .jsoncsv import iter_csv

    return iter_csv(groups)


def _markdown(groups: Groups, feed: Feed) -> Iterator[str]:
    from .markdown import iter_markdown

    return iter_markdown(groups, titles=feed.titles)


def _atom(groups: Groups, feed: Feed) -> Iterator[str]:
    from .atom import FEED_EPOCH, iter_atom

    return iter_atom(groups, feed.updated or FEED_EPOCH, titles=feed.titles,
                     subject=feed.subject[0], entry_subject=feed.subject[1])


def _report_text(report: DiffReport) -> str:
    from .terminal import report_text

    return report_text(report)


def _report_json(report: DiffReport) -> str:
    from .jsoncsv import report_json

    return report_json(report)


def _report_markdown(report: DiffReport) -> str:
    from .markdown import report_markdown

    return report_markdown(report)


@dataclass(frozen=True)
class Exporter:
    """One output format: how it is served and what renders it."""

    media_type: str
    suffix: str
    changelog: ChangelogRenderer | None = None  # `changes --format`, streamed from groups
    report: Callable[[DiffReport], str] | None = None  # `diff --format`
    by_day: bool = False  # the changelog wants study-day groups, newest day first
    dated: bool = False  # the changelog carries its newest change's time (Feed.updated)


EXPORTERS: Final[dict[str, Exporter]] = {
    "text": Exporter("text/plain", ".txt", report=_report_text),
    "json": Exporter("application/json", ".json", _json, _report_json),
    "ndjson": Exporter("application/x-ndjson", ".ndjson", _ndjson),
    "csv": Exporter("text/csv", ".csv", _csv),
    "md": Exporter("text/markdown", ".md", _markdown, _report_markdown, by_day=True),
    "atom": Exporter("application/atom+xml", ".atom", _atom, by_day=True, dated=True),
}
CHANGELOG_FORMATS: Final = tuple(name for name, e in EXPORTERS.items() if e.changelog)
REPORT_FORMATS: Final = tuple(name for name, e in EXPORTERS.items() if e.report)


def stream_export(
    fmt: str,
    fetch: Callable[[str], Iterable[FieldChange]],
    minimum: str | None = None,
    titles: Mapping[str, str] | None = None,
    last_seen: str | None = None,
    keep: Callable[[FieldChange], bool] | None = None,
    subject: tuple[str, str] = ("", ""),
) -> Iterator[str]:
    """Yield one format's text piece by piece from changes `fetch(order)` reads as they come.

    `fetch` takes a CHANGE_ORDERS key of query.py. Memory holds one study-observation (or
    study-day) at a time. An empty feed is dated `last_seen` (the database's last
    observation), else FEED_EPOCH.
    """
    exporter = EXPORTERS[fmt]
    if exporter.changelog is None:
        raise ValueError(f"{fmt} is not a changelog format; use one of "
                         f"{', '.join(CHANGELOG_FORMATS)}")
    stream = annotated_stream(fetch("day-newest" if exporter.by_day else "oldest"), minimum,
                              by_day=exporter.by_day, keep=keep)
    updated = None
    if exporter.dated:
        # The feed is as new as its newest change: the first kept group, newest first.
        newest = next(annotated_stream(fetch("newest"), minimum, keep=keep), None)
        updated = max(a.change.detected_at for a in newest) if newest else last_seen
    return exporter.changelog(stream, Feed(titles, updated, subject))


def feed_subject(nct_ids: Sequence[str] = (), paths: Sequence[str] = (),
                 kinds: Sequence[str] = (), minimum: str | None = None) -> tuple[str, str]:
    """Return what a filtered feed keeps, for its id and for its entries' ("": everything).

    Each is a stable query string. An entry's leaves the ids out, which choose entries but
    not what one holds; both leave the time window out, so a feed of the last 7 days is one
    feed from day to day.
    """
    # Each value once, and `status.` as `status` (the same changes): the same feed, one id.
    held = [("kind", ",".join(sorted(set(kinds)))), ("min_severity", minimum or ""),
            ("path", ",".join(sorted({path.rstrip(".") for path in paths})))]
    pairs = [*held, ("nct_id", ",".join(sorted(set(nct_ids))))]
    return (query_subject((key, value) for key, value in sorted(pairs) if value),
            query_subject((key, value) for key, value in held if value))


def query_subject(pairs: Iterable[tuple[str, str]]) -> str:
    """Return pairs as a stable query string, or its SHA-256 when it is long."""
    from urllib.parse import urlencode

    # Past 200 characters (many ids, a query's SQL): 16 hex digits, so that an id stays short.
    text = urlencode(list(pairs), safe=",")
    if len(text) > 200:
        return "filter=sha256-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return text
