"""Draw a study's timeline as inline SVG, with no plotting library (pure).

Over observation time: the overall status as bands, one per period; the primary completion
date and the enrollment as step lines (a value holds until the next snapshot changes it); and
a mark for every change, coloured by severity. Every text and attribute is escaped, so a
hostile status or path stays text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Final

from ..meaning import parse_partial_date
from ..render import visible

WIDTH: Final = 960
LEFT: Final = 150  # room for the lane labels
RIGHT: Final = 24
STATUS_COLOURS: Final = {
    "RECRUITING": "#9fdab4", "NOT_YET_RECRUITING": "#c4e3f5", "ENROLLING_BY_INVITATION": "#a8dcd2",
    "ACTIVE_NOT_RECRUITING": "#a9c6ea", "COMPLETED": "#cfd3d9", "SUSPENDED": "#f6d58e",
    "TERMINATED": "#f2a9a1", "WITHDRAWN": "#e7b3c6", "UNKNOWN": "#e3e5e8",
    "AVAILABLE": "#9fdab4", "NO_LONGER_AVAILABLE": "#cfd3d9", "none": "#f1f2f4",
}
SEVERITY_COLOURS: Final = {"major": "#c0392b", "minor": "#e08a1e", "info": "#9aa3ad"}
_LANES: Final = {"status": (26, 62), "completion": (92, 150), "enrollment": (180, 238),
                 "changes": (262, 292)}
HEIGHT: Final = 336


@dataclass(frozen=True)
class State:
    """What a study's snapshot said: observation time, status, completion date, enrollment."""

    observed_at: str
    status: str | None
    primary_completion: str | None  # a registry date: YYYY, YYYY-MM or YYYY-MM-DD
    enrollment: int | None


@dataclass(frozen=True)
class Mark:
    """One stored change, to be marked at its observation time."""

    detected_at: str
    path: str
    kind: str
    severity: str


@dataclass(frozen=True)
class Period:
    """A stretch of observation time with one overall status."""

    status: str | None
    start: str
    end: str


def _seconds(timestamp: str) -> float:
    """Return a UTC timestamp (or a date) as seconds since the epoch."""
    text = timestamp.replace("Z", "+00:00")
    moment = datetime.fromisoformat(text if "T" in text else text + "T00:00:00+00:00")
    return moment.timestamp()


def status_periods(states: Sequence[State], end: str) -> list[Period]:
    """Return the status periods: consecutive snapshots with the same status make one."""
    periods: list[Period] = []
    for index, state in enumerate(states):
        until = states[index + 1].observed_at if index + 1 < len(states) else end
        if periods and periods[-1].status == state.status:
            periods[-1] = Period(state.status, periods[-1].start, until)
        else:
            periods.append(Period(state.status, state.observed_at, until))
    return periods


def _iso(seconds: float) -> str:
    """Return an observation time as the ISO text the periods hold (UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _tag(name: str, text: str | None = None, title: str | None = None,
         **attrs: str | float) -> str:
    """Return an SVG element, text and attributes escaped; `class_` and `text_anchor` style
    names lose their trailing underscore and take dashes."""
    pairs = []
    for key, value in attrs.items():
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        pairs.append(f'{key.rstrip("_").replace("_", "-")}="{escape(shown, quote=True)}"')
    # Record text (a site's name in a mark's path) may hold ESC or a bidi override: shown as
    # escapes, as everywhere else, not acted on in a tooltip.
    inner = (f"<title>{escape(visible(title))}</title>" if title is not None else "") + \
        (escape(visible(text)) if text is not None else "")
    opening = " ".join([name, *pairs])
    return f"<{opening}>{inner}</{name}>" if inner else f"<{opening}/>"


def _steps(
    states: Sequence[State], value: Callable[[State], float | None], label: Callable[[State], str],
    x: Callable[[str], float], lane: tuple[int, int], end: str, css: str,
) -> list[str]:
    """Return a step line of one value over time (a gap where it is absent) and its points."""
    known = [v for v in (value(s) for s in states) if v is not None]
    top, bottom = lane[0] + 8, lane[1] - 8
    if not known:
        return [_tag("text", "not given", x=LEFT + 6.0, y=(top + bottom) / 2 + 4, class_="empty")]
    low, high = min(known), max(known)

    def y(v: float) -> float:
        if high == low:
            return (top + bottom) / 2
        return bottom - (v - low) / (high - low) * (bottom - top)

    out, path, drawing, shown = [], [], False, None
    for index, state in enumerate(states):
        v = value(state)
        if v is None:
            drawing = False
            continue
        until = states[index + 1].observed_at if index + 1 < len(states) else end
        here = x(state.observed_at)
        path.append(f"V {y(v):.1f}" if drawing else f"M {here:.1f} {y(v):.1f}")
        path.append(f"H {x(until):.1f}")
        drawing = True
        out.append(_tag("circle", title=f"{label(state)} (observed {state.observed_at[:10]})",
                        cx=here, cy=y(v), r=3.5, class_=f"point {css}"))
        if v != shown:  # label a value where it starts; near the right edge, to its left
            near_edge = here > WIDTH - RIGHT - 90
            out.append(_tag("text", label(state), x=here - 6 if near_edge else here + 6,
                            y=y(v) - 7, text_anchor="end" if near_edge else "start",
                            class_="value"))
            shown = v
    return [_tag("path", d=" ".join(path), class_=f"step {css}", fill="none"), *out]


def _day_value(text: str | None) -> float | None:
    """Return a registry date as a day number, for a step line's height."""
    found = parse_partial_date(text)
    return float(found[0].toordinal()) if found else None


def _ticks(first: float, last: float, x: Callable[[str], float]) -> list[str]:
    """Return the time axis: six dated ticks from the first observation to the last."""
    out = [_tag("line", x1=float(LEFT), y1=304.0, x2=float(WIDTH - RIGHT), y2=304.0,
                class_="axis")]
    for step in range(6):
        moment = datetime.fromtimestamp(first + (last - first) * step / 5, UTC)
        at = x(moment.isoformat())
        anchor = "start" if step == 0 else ("end" if step == 5 else "middle")
        out.append(_tag("line", x1=at, y1=304.0, x2=at, y2=309.0, class_="axis"))
        out.append(_tag("text", f"{moment:%Y-%m-%d}", x=at, y=324.0, text_anchor=anchor,
                        class_="tick"))
    return out


def timeline_svg(states: Sequence[State], marks: Sequence[Mark], end: str) -> str:
    """Return the timeline of a study's snapshots and changes as an inline SVG element."""
    if not states:
        return ""
    times = [_seconds(s.observed_at) for s in states] + [_seconds(m.detected_at) for m in marks]
    first, last = min(times), max([*times, _seconds(end)])
    seen = last  # the last observation: what the timeline knows of, and says
    # Room after the last observation, so the latest state shows as more than a line.
    last += max((last - first) * 0.12, 86400.0)

    def x(timestamp: str) -> float:
        return LEFT + (_seconds(timestamp) - first) / (last - first) * (WIDTH - LEFT - RIGHT)

    end = _iso(last)  # the last band runs to the end
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
           'class="timeline" role="img" aria-label="Timeline: overall status, primary '
           'completion date, enrollment and changes over observation time">']
    for lane, label in (("status", "Overall status"), ("completion", "Primary completion"),
                        ("enrollment", "Enrollment"), ("changes", "Changes")):
        top, bottom = _LANES[lane]
        out.append(_tag("text", label, x=8.0, y=(top + bottom) / 2 + 4, class_="lane"))
        out.append(_tag("line", x1=float(LEFT), y1=float(bottom), x2=float(WIDTH - RIGHT),
                        y2=float(bottom), class_="grid"))
    top, bottom = _LANES["status"]
    for period in status_periods(states, end):
        left, right = x(period.start), x(period.end)
        name = period.status or "none"
        until = min(period.end, _iso(seen))  # the room after it is no observation
        out.append(_tag("rect", title=f"{name}: {period.start[:10]} to {until[:10]}",
                        x=left, y=float(top), width=max(right - left, 2.0),
                        height=float(bottom - top), rx=3, class_="status-band",
                        fill=STATUS_COLOURS.get(name, "#d9cdea"), data_status=name))
        if right - left > 7.5 * len(name) + 12:
            out.append(_tag("text", name, x=left + 6, y=(top + bottom) / 2 + 4,
                            class_="band-label"))
    out += _steps(states, lambda s: _day_value(s.primary_completion),
                  lambda s: s.primary_completion or "", x, _LANES["completion"], end,
                  "primary-completion")
    out += _steps(states, lambda s: None if s.enrollment is None else float(s.enrollment),
                  lambda s: str(s.enrollment), x, _LANES["enrollment"], end, "enrollment")
    top, bottom = _LANES["changes"]
    order = {"info": 0, "minor": 1, "major": 2}  # major drawn last, on top
    for mark in sorted(marks, key=lambda m: (order.get(m.severity, 0), m.detected_at, m.path)):
        at = x(mark.detected_at)
        out.append(_tag("line", title=f"{mark.detected_at[:10]}: {mark.path} \u2014 "
                                      f"{mark.kind} ({mark.severity})",
                        x1=at, y1=float(top), x2=at, y2=float(bottom), class_="change-mark",
                        stroke=SEVERITY_COLOURS.get(mark.severity, "#9aa3ad"),
                        data_severity=mark.severity))
    out += _ticks(first, seen if seen > first else last, x)  # none in the room after it
    return "\n".join([*out, "</svg>"])
