"""A study's page in the web view: its timeline, its changes, and its trial page.

Nothing here renders a change or a page a second way: the trial page is `trialdiff page`'s
Markdown (site.render_study_page) turned into HTML by markdown-it-py with raw HTML off, and
each change is atom.entry_html, the word diffs and item lists of the Atom feed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from itertools import groupby
from typing import Any, Final
from urllib.parse import urlencode

from datasette.utils.asgi import NotFound, Response
from markdown_it import MarkdownIt
from markupsafe import Markup

from ..atom import entry_html
from ..errors import UsageError
from ..meaning import annotate
from ..model import FieldChange, utc_day
from ..query import ChangeFilter, query_changes, snapshots_of, study_fields, study_row
from ..registry import DEFAULT
from ..render import plural, recent_order, visible
from ..site import render_study_page
from .timeline import SEVERITY_COLOURS, Mark, State, timeline_svg

RECENT_DAYS: Final = 30
# CommonMark with raw HTML off: a record's `<script>` shows as text. Links keep markdown-it's
# check, which refuses javascript:, vbscript:, file: and data: URLs. No images: a record's
# `![](http://…)` would have every reader's browser fetch what the record names.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).disable("image")

TEMPLATE: Final = """{% extends "base.html" %}
{% block title %}{{ nct_id }}: {{ title }}{% endblock %}
{% block extra_head %}<style>{{ style }}</style>{% endblock %}
{% block crumbs %}<p class="crumbs"><a href="{{ urls.instance() }}">home</a> /
<a href="{{ urls.database(database) }}">{{ database }}</a> / study</p>{% endblock %}
{% block content %}{{ body }}{% endblock %}
"""

STYLE: Final = """
.study-links a { margin-right: 1.2em; }
.timeline { width: 100%; max-width: 960px; height: auto; background: #fbfbfc;
  border: 1px solid #e2e4e8; border-radius: 6px; }
.timeline text { font: 12px system-ui, sans-serif; fill: #333; }
.timeline .lane { font-weight: 600; }
.timeline .band-label { fill: #1b1f24; font-size: 11px; font-weight: 600; }
.timeline .status-band { stroke: #fff; stroke-width: 1; }
.timeline .tick, .timeline .value, .timeline .empty { fill: #555; font-size: 11px; }
.timeline .grid { stroke: #e2e4e8; } .timeline .axis { stroke: #888; }
.timeline .step { stroke-width: 2.5; }
.timeline .primary-completion { stroke: #6a4fb3; fill: #6a4fb3; }
.timeline .enrollment { stroke: #1f7a8c; fill: #1f7a8c; } .timeline path.step { fill: none; }
.timeline .change-mark { stroke-width: 3; stroke-opacity: .8; }
.changes h3 { margin: 1.2em 0 .3em; }
.changes ul, .trial-page ul { list-style: disc; padding-left: 1.5em; margin-top: .3em; }
.changes li { margin: .3em 0; line-height: 1.45; overflow-wrap: anywhere; }
del { background: #fbe3e4; color: #8a1f11; }
ins { background: #e6f6e6; color: #1c6b1c; text-decoration: none; }
.changes code, .trial-page code { background: #f4f4f6; padding: 0 .2em; border-radius: 3px;
  word-break: break-word; }
.trial-page { border-top: 2px solid #e2e4e8; margin-top: 2em; }
.trial-page pre { white-space: pre-wrap; background: #f4f4f6; padding: .8em; }
.note { color: #555; }
.legend .swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px;
  margin: 0 .3em 0 .8em; vertical-align: -1px; }
"""


@dataclass(frozen=True)
class StudyData:
    """What a study's page shows, read in one go from the database."""

    nct_id: str
    title: str
    status: str
    page_markdown: str
    changes: tuple[FieldChange, ...]
    states: tuple[State, ...]
    last_seen_at: str
    as_of: date


def _value(fields: dict[str, str], path: str) -> Any:
    """Return a field's value from canonical JSON, or None."""
    text = fields.get(path)
    return json.loads(text) if text is not None else None


def _state(observed_at: str, fields: dict[str, str]) -> State:
    """Return what a snapshot says about the timeline's values."""
    completion = _value(fields, "status.primaryCompletionDate")
    enrollment = _value(fields, "design.enrollmentCount")
    return State(
        observed_at,
        _value(fields, "status.overallStatus"),
        completion.get("date") if isinstance(completion, dict) else completion,
        enrollment if isinstance(enrollment, int) and not isinstance(enrollment, bool) else None,
    )


def read_study(conn: Any, nct_id: str, as_of: date | None) -> StudyData | None:
    """Return a study's page data, or None when it is not stored."""
    row = study_row(conn, nct_id)
    if row is None:
        return None
    latest = conn.execute("select max(last_seen_at) from sightings").fetchone()[0]
    # The window ends on the database's latest observation: today's for a database that syncs
    # daily, and still a useful one for an archive.
    day = as_of or utc_day(latest or row["last_seen_at"])
    page = render_study_page(conn, nct_id, day, RECENT_DAYS, "", "") or ""
    states = tuple(_state(snap["observed_at"], study_fields(conn, nct_id, snap["seq"]))
                   for snap in snapshots_of(conn, nct_id))
    return StudyData(
        nct_id, row.get("brief_title") or nct_id, row.get("overall_status") or "",
        page, tuple(query_changes(conn, ChangeFilter((nct_id,)))), states,
        row.get("last_seen_at") or states[-1].observed_at, day,
    )


def page_html(markdown: str) -> str:
    """Return a trial page's Markdown as HTML, front matter left out, raw HTML escaped."""
    if markdown.startswith("---\n"):
        markdown = markdown.split("\n---\n", 1)[-1]
    return str(_MARKDOWN.render(markdown))


def changes_html(changes: Sequence[FieldChange]) -> str:
    """Return a study's changes, newest day first, each day as the feed's change list."""
    if not changes:
        return '<p class="note">No field changes yet: the first snapshot is the baseline.</p>'
    items = annotate(recent_order(changes))
    out = []
    for day, group in groupby(items, key=lambda a: a.change.detected_at[:10]):
        out += [f"<h3>{escape(day)}</h3>", entry_html(list(group))]
    return "\n".join(out)


def study_body(data: StudyData, database: str, base: str) -> str:
    """Return the page's content: heading, links, timeline, changes and trial page."""
    nct = escape(data.nct_id)
    query = urlencode({"nct_id": data.nct_id})
    links = [
        (DEFAULT.study_url(data.nct_id), "ClinicalTrials.gov"),
        (f"{base}/change_log?{query}", "its rows in the change log"),
        (f"{base}/snapshots?{query}", "its snapshots"),
        (f"{base}/study_timeline?{query}", "timeline query"),
        (f"{base}/study_timeline.atom?{query}", "Atom feed"),
    ]
    marks = [Mark(a.change.detected_at, a.change.path, a.change.kind, a.severity)
             for a in annotate(list(data.changes))]
    count = len(data.changes)
    return "\n".join([
        f"<h1>{nct}: {escape(visible(data.title))}</h1>",
        f'<p class="note">{escape(data.status)} \u00b7 '
        f'{plural(len(data.states), "snapshot")} \u00b7 '
        f"{count} field change{'s' if count != 1 else ''} \u00b7 last seen "
        f"{escape(data.last_seen_at[:10])}</p>",
        '<p class="study-links">' + "".join(
            f'<a href="{escape(href, quote=True)}">{escape(text)}</a>' for href, text in links
        ) + "</p>",
        '<section class="timeline-section"><h2>Timeline</h2>',
        timeline_svg(data.states, marks, data.last_seen_at),
        '<p class="legend note">Change marks: ' + "".join(
            f'<span class="swatch" style="background: {colour}"></span>{level} '
            for level, colour in SEVERITY_COLOURS.items()
        ) + "\u00b7 hover over a band, point or mark for its details</p></section>",
        f'<section class="changes"><h2>Changes, newest first</h2>{changes_html(data.changes)}'
        "</section>",
        f'<section class="trial-page"><p class="note">The trial page, with recent changes '
        f"as of {escape(data.as_of.isoformat())}:</p>{page_html(data.page_markdown)}</section>",
    ])


async def study_index(datasette: Any, request: Any) -> Response:
    """Send /study, which names no study, to the table of studies."""
    database = datasette.plugin_config("trialdiff")["database"]
    return Response.redirect(datasette.urls.table(database, "studies"))


async def study_page(datasette: Any, request: Any) -> Response:
    """Serve /study/NCT…: a study's timeline, changes and trial page."""
    nct_id = request.url_vars["nct_id"].upper()
    database = datasette.plugin_config("trialdiff")["database"]
    as_of_text = request.args.get("as_of")
    try:
        as_of = utc_day(as_of_text) if as_of_text else None
    except ValueError:
        return Response.text("as_of must be an ISO 8601 date or time, such as 2025-07-07",
                             status=400)
    db = datasette.get_database(database)
    try:
        data = await db.execute_fn(lambda conn: read_study(conn, nct_id, as_of))
    except UsageError as exc:  # a day whose window leaves the calendar (9999-12-31)
        return Response.text(f"as_of: {exc}", status=400)
    if data is None:
        raise NotFound(f"{nct_id} is not in the database")
    body = study_body(data, database, datasette.urls.database(database))
    template = datasette.jinja_env.from_string(TEMPLATE)
    html = await datasette.render_template(template, {
        "nct_id": data.nct_id, "title": visible(data.title), "style": Markup(STYLE),
        "body": Markup(body), "database": database,
    }, request=request)
    return Response.html(html)
