"""Render a study's trial page: front matter, the record's sections, recent changes (pure).

The page is built from the latest raw API v2 record, not from canonical field values: those
have whitespace folded, and the page shows the eligibility criteria and descriptions with
their line breaks. Rules, derived from the sample page (shared/sample-page/NCT05085444.md):

- Front matter: `title` is the brief title; `phase` the phases joined by ", ";
  `primary_condition` the first condition; `countries` the sorted unique site countries joined
  by "; " (names such as "Korea, Republic of" hold commas); `canonical_url` is the canonical
  base + `<NCT>.md` (left out without a base). A key without a value is left out. Values are
  written plain unless YAML could misread them (see `yaml_scalar`), so URLs and timestamps
  come out quoted and titles usually not.
- Key Facts: lines without a value are left out; "Target Enrollment" for an ESTIMATED count,
  "Actual Enrollment" for an ACTUAL one.
- Markup fields (summary, description, criteria, arm/intervention/outcome descriptions) are
  Markdown from the API (a backfilled version's HTML is written as that Markdown first:
  `render.markdown_of_html`) and go out as they are, but for what the API's Markdown never holds
  (a heading, a code fence, a setext underline, an HTML tag: escaped); block text keeps its
  line breaks, list items have their whitespace folded to one line. Plain fields (titles,
  names, measures, sites) are escaped the way the API escapes its markup fields, so they show
  as written.
- Eligibility: Sex and Healthy Volunteers, as in the sample (ages only when asked for), then
  the criteria in a fenced block whose fence outgrows any backtick run inside.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .canonical import fold_whitespace
from .registry import DEFAULT
from .render import markdown_of_html, visible

SOURCE_NOTE: Final = "ClinicalTrials.gov (mirrored, no enrichment)"
# Characters CommonMark reads as syntax inside a line; `_` only counts at a word's edge.
_MD_INLINE: Final = re.compile(r"[\\`*\[\]<>&]|(?<![^\W_])_|_(?![^\W_])")
# What begins a block at a line's start (`>` and backticks are escaped as inline syntax): a
# list item, a heading, a fence, a rule (`---`, or `--` after a list item's `- `; `***` and
# `___` are escaped as inline syntax).
_BLOCK_START: Final = re.compile(r"^(?:(?:\d{1,9}[.)]|#{1,6}|[+-])(?=\s|$)|~{3,}|-{2,})")
# A heading's optional closing sequence: `# Trial #` is the heading `Trial`, `# ###` empty.
_CLOSING_HASHES: Final = re.compile(r"(?:^|(?<=\s))#+$")
# In block text (the registry's Markdown, which escapes `<` as `\<` and never writes a heading
# nor a code fence): a heading, a fence (unclosed, it would hold the rest of the page), a setext
# underline under a line of text, and an HTML tag or comment. The registry writes `<!-- -->`
# alone on a line between two lists, to keep them apart, and that line is left as it is.
_BLOCK_OPENER: Final = re.compile(r"^ {0,3}(#{1,6}(?=[ \t]|$)|`{3}|~{3})")
_SETEXT: Final = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_LIST_SEPARATOR: Final = "<!-- -->"
# A `<` after an even run of backslashes (none, or escaped backslashes: `\\<b>` is a
# backslash, then a tag) starts a tag.
_HTML_START: Final = re.compile(r"(?<!\\)((?:\\\\)*)<(?=[A-Za-z/?!])")
_YAML_INDICATORS: Final = frozenset("-?:,[]{}#&*!|>'\"%@`")
# Plain scalars that YAML 1.1 or 1.2 resolve to null, a bool or a number, not a string.
_YAML_NON_STRING: Final = re.compile(
    r"~|null|Null|NULL|y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
    r"|on|On|ON|off|Off|OFF|=|<<"
    r"|[-+]?(?=\.?[0-9])[0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+"
)


def yaml_scalar(value: str, is_date: bool = False) -> str:
    """Return a front-matter value: plain when YAML reads it back as written, else quoted."""
    # Quoted when it is empty, has a ':' or '#' (so URLs and timestamps are, as in the sample),
    # starts with an indicator or a space, ends with a space, holds a character that is not
    # printable, or would read as null, a bool, a number or a date. A date field's value stays
    # plain, as in the sample, so YAML reads it as a date. The escapes are JSON's, which YAML
    # reads too.
    if (
        not value
        or ":" in value
        or "#" in value
        or value[0] in _YAML_INDICATORS
        or value != value.strip()
        or not value.isprintable()
        or _YAML_NON_STRING.fullmatch(value)
        or (not is_date and _YAML_DATE.fullmatch(value))
    ):
        return _yaml_quoted(value)
    return value


_YAML_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}")
_DATE_KEYS: Final = frozenset({"ct_last_update_post_date"})


def _yaml_printable(code: int) -> bool:
    """Tell whether YAML allows a code point unescaped (its c-printable set)."""
    return (
        code in (0x09, 0x0A, 0x0D)
        or 0x20 <= code <= 0x7E
        or 0xA0 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _yaml_quoted(value: str) -> str:
    """Return a value in YAML's double-quoted style, every risky character escaped."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for char in value:
        code = ord(char)
        if char in escapes:
            out.append(escapes[char])
        elif 0xD800 <= code <= 0xDFFF:
            continue  # a lone surrogate cannot be written in UTF-8 at all
        elif _yaml_printable(code) and char not in "\u2028\u2029\ufeff":
            out.append(char)  # U+2028/9 are line breaks to YAML 1.1, U+FEFF a byte order mark
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


def md_inline(text: str) -> str:
    """Return a plain registry value as one line of Markdown that shows it as written."""
    # Control characters (ESC, BEL, NUL) and bidi overrides show as escapes: a published page
    # or a terminal showing it must not act on them.
    line = _MD_INLINE.sub(r"\\\g<0>", visible(fold_whitespace(text)))
    # At a line's start (a list item's text, a heading's) `#`, `-`, `+`, `1.`, `1)` and `~~~`
    # begin a block: a site named `# Hash Hospital` became a heading inside the Locations list.
    # With a character escaped, the marker is text (`\~~~`, `1\.`: a digit has no escape);
    # so is a closing run of `#`.
    line = _BLOCK_START.sub(lambda marker: marker[0][:-1] + "\\" + marker[0][-1]
                            if marker[0][0].isdigit() else "\\" + marker[0], line)
    return _CLOSING_HASHES.sub(lambda hashes: "\\" + hashes[0], line)


def one_line(text: str) -> str:
    """Return Markdown text folded to one line, for list items (it stays Markdown)."""
    return visible(fold_whitespace(markdown_of_html(text)))


def md_item(text: str) -> str:
    """Return a markup field as `one_line` does, for a list item, with no HTML tag left live."""
    # The registry's list separator shows nothing; folded into a line it would be escaped.
    return _HTML_START.sub(r"\1\\<", one_line(text.replace(_LIST_SEPARATOR, " ")))


def block(text: str) -> str:
    """Return block text with its line breaks kept and its ends stripped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip().split("\n")
    return "\n".join("\t".join(visible(part) for part in line.split("\t")) for line in lines)


def md_block(text: str) -> str:
    """Return Markdown block text as `block` does, less what the registry's Markdown never holds.

    A heading, a code fence, a setext underline and an HTML tag are escaped, so that a record
    cannot open a section of the page (`## Recent Field Changes`), hide the sections after it
    in a code block, or put live HTML on it.
    """
    out: list[str] = []
    for line in block(markdown_of_html(text)).split("\n"):
        line = _BLOCK_OPENER.sub(r"\\\1", line)
        if line.strip() != _LIST_SEPARATOR:  # any other comment starts a block of raw HTML
            line = _HTML_START.sub(r"\1\\<", line)
        if out and out[-1].strip() and _SETEXT.match(line):
            line = "\\" + line.lstrip(" ")
        out.append(line)
    return "\n".join(out)


def _get(record: Any, *keys: str) -> Any:
    """Return the value at a path of keys, or None when any step is missing or not an object."""
    value = record
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    """Return a value as text when it is a non-blank string or a number, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


def _items(value: Any) -> list[Mapping[str, Any]]:
    """Return the objects of a list value (anything else is skipped)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    """Return the non-blank strings of a list value."""
    return [s for s in (_text(v) for v in value) if s] if isinstance(value, list) else []


def fence(text: str) -> str:
    """Return text in a fenced code block that no backtick run inside can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}\n{text}\n{marks}"


def _bullets(lines: Sequence[str]) -> str:
    """Return list lines as one Markdown list."""
    return "\n".join(f"- {line}" for line in lines)


def _labelled(item: Mapping[str, Any], name: str, extra: str = "") -> str | None:
    """Return `**name** (TYPE) — description` for an arm, intervention or outcome."""
    title = _text(item.get(name))
    if title is None:
        return None
    kind = _text(item.get("type"))
    line = f"**{md_inline(title)}**" + (f" ({md_inline(kind)})" if kind else "") + extra
    description = _text(item.get("description"))
    return line + (f" \u2014 {md_item(description)}" if description else "")


def _outcome(item: Mapping[str, Any]) -> str | None:
    """Return one outcome line, its time frame after the measure."""
    frame = _text(item.get("timeFrame"))
    extra = f" _(time frame: {md_inline(frame)})_" if frame else ""
    return _labelled(item, "measure", extra)


def _site(item: Mapping[str, Any]) -> str | None:
    """Return one site line: facility, city, state, country — _STATUS_."""
    parts = [p.strip() for p in (_text(item.get(k)) for k in ("facility", "city", "state",
                                                                "country")) if p]
    if not parts:
        return None
    status = _text(item.get("status"))
    # Escaping the joined line is escaping each part: ", " holds nothing to escape. Sites are
    # most of a big study's page, so one call per site, not four, is what keeps pages fast.
    return md_inline(", ".join(parts)) + (f" \u2014 _{md_inline(status)}_" if status else "")


def _section(heading: str, lines: Sequence[str | None]) -> str | None:
    """Return a `## heading` section of list lines, or None when there are none."""
    kept = [line for line in lines if line]
    return f"## {heading}\n\n{_bullets(kept)}" if kept else None


def _facts(pairs: Sequence[tuple[str, str | None]]) -> list[str]:
    """Return `**Label:** value` lines for the pairs that have a value."""
    return [f"**{label}:** {md_inline(value)}" for label, value in pairs if value]


def canonical_url(canonical_base: str, nct_id: str) -> str | None:
    """Return a page's canonical URL: the base, a slash if it lacks one, then `<NCT>.md`."""
    if not canonical_base:
        return None
    return canonical_base + ("" if canonical_base.endswith("/") else "/") + f"{nct_id}.md"


def render_page(
    record: Mapping[str, Any],
    last_seen_at: str,
    recent_section: str,
    canonical_base: str,
    footer: str,
    ages: bool = False,
) -> str:
    """Return a study's whole trial page in the sample page's format.

    The sample's Eligibility section shows only Sex and Healthy Volunteers, though its record
    has ages; `ages` adds Minimum Age and Maximum Age lines, an opt-in beyond the format.
    """
    p = _get(record, "protocolSection") or {}
    nct_id = _text(_get(p, "identificationModule", "nctId")) or "NCT00000000"
    # A plain value: as Markdown text too (one_line), `<` was escaped twice, `\\\<script`.
    title = (_text(_get(p, "identificationModule", "briefTitle"))
             or _text(_get(p, "identificationModule", "officialTitle")) or nct_id)
    status = _text(_get(p, "statusModule", "overallStatus"))
    phase = ", ".join(_strings(_get(p, "designModule", "phases"))) or None
    sponsor = _text(_get(p, "sponsorCollaboratorsModule", "leadSponsor", "name"))
    study_type = _text(_get(p, "designModule", "studyType"))
    conditions = _strings(_get(p, "conditionsModule", "conditions"))
    sites = _items(_get(p, "contactsLocationsModule", "locations"))
    countries = "; ".join(sorted({c for c in (_text(s.get("country")) for s in sites) if c}))
    updated = _text(_get(p, "statusModule", "lastUpdatePostDateStruct", "date"))
    study_url = DEFAULT.study_url(nct_id)
    canonical = canonical_url(canonical_base, nct_id)

    front = [
        ("title", title), ("nct_id", nct_id), ("overall_status", status), ("phase", phase),
        ("sponsor", sponsor), ("study_type", study_type),
        ("primary_condition", conditions[0] if conditions else None),
        ("countries", countries or None), ("canonical_url", canonical),
        ("clinicaltrials_gov", study_url), ("ct_last_update_post_date", updated),
        ("last_seen_at", last_seen_at), ("source", SOURCE_NOTE),
    ]
    matter = "\n".join(f"{key}: {yaml_scalar(one_line(value), key in _DATE_KEYS)}"
                       for key, value in front if value)

    enrollment = _get(p, "designModule", "enrollmentInfo") or {}
    label = {"ACTUAL": "Actual Enrollment"}.get(_get(enrollment, "type"), "Target Enrollment")
    collaborators = [_text(c.get("name")) for c in
                     _items(_get(p, "sponsorCollaboratorsModule", "collaborators"))]
    key_facts = _facts([
        ("Status", status), ("Phase", phase), ("Study Type", study_type),
        (label, _text(_get(enrollment, "count"))), ("Lead Sponsor", sponsor),
        ("Collaborators", ", ".join(c for c in collaborators if c) or None),
        ("Conditions", ", ".join(conditions) or None),
        ("Start Date", _text(_get(p, "statusModule", "startDateStruct", "date"))),
        ("Completion Date", _text(_get(p, "statusModule", "completionDateStruct", "date"))),
        ("CT.gov Last Update", updated),
    ])

    eligibility = _get(p, "eligibilityModule") or {}
    volunteers = _get(eligibility, "healthyVolunteers")
    criteria = _text(_get(eligibility, "eligibilityCriteria"))
    eligibility_lines = _facts([
        ("Sex", _text(_get(eligibility, "sex"))),
        ("Healthy Volunteers", {True: "Yes", False: "No"}.get(volunteers)
         if isinstance(volunteers, bool) else None),
        ("Minimum Age", _text(_get(eligibility, "minimumAge")) if ages else None),
        ("Maximum Age", _text(_get(eligibility, "maximumAge")) if ages else None),
    ])
    eligibility_parts = [_bullets(eligibility_lines)] if eligibility_lines else []
    if criteria:
        eligibility_parts.append(fence(block(markdown_of_html(criteria))))

    summary = _text(_get(p, "descriptionModule", "briefSummary"))
    description = _text(_get(p, "descriptionModule", "detailedDescription"))
    arms = _get(p, "armsInterventionsModule") or {}
    outcomes = _get(p, "outcomesModule") or {}
    blocks: list[str | None] = [
        f"# {md_inline(title)}",
        f"**NCT ID:** [{nct_id}]({study_url})",
        _section("Key Facts", key_facts),
        f"## Brief Summary\n\n{md_block(summary)}" if summary else None,
        f"## Detailed Description\n\n{md_block(description)}" if description else None,
        "## Eligibility\n\n" + "\n\n".join(eligibility_parts) if eligibility_parts else None,
        _section("Arms", [_labelled(a, "label") for a in _items(_get(arms, "armGroups"))]),
        _section("Interventions",
                 [_labelled(i, "name") for i in _items(_get(arms, "interventions"))]),
        _section("Primary Outcomes",
                 [_outcome(o) for o in _items(_get(outcomes, "primaryOutcomes"))]),
        _section("Secondary Outcomes",
                 [_outcome(o) for o in _items(_get(outcomes, "secondaryOutcomes"))]),
        _section(f"Locations ({len(sites)})", [_site(s) for s in sites]),
        recent_section.strip("\n") or None,
        "---",
        _footer(canonical, study_url, footer),
    ]
    body = "\n\n".join(b for b in blocks if b)
    return f"---\n{matter}\n---\n{body}\n"


def _footer(canonical: str | None, study_url: str, note: str) -> str:
    """Return the footer lines, joined by Markdown hard breaks (two spaces, newline)."""
    lines = [f"*Canonical: {_url(canonical)}*"] if canonical else []
    lines.append(f"*Source data (authoritative): {_url(study_url)}*")
    if note.strip():
        lines.append(f"*{one_line(note)}*")
    return "  \n".join(lines)


def _url(url: str) -> str:
    """Return a URL as Markdown that shows it as written: an autolink if it holds syntax."""
    # `https://x.org/a*b*/` would be emphasis; inside `<...>` nothing is (`<`, `>` and blanks
    # are refused in a canonical base).
    return f"<{url}>" if _MD_INLINE.search(url) else url
