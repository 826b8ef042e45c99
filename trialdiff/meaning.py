"""Say what a change means: derived facts, a severity by a declarative rule table (pure).

Facts, where they apply (keys of the dict `facts()` returns):

- `status`: {from, to, stopped} for `status.overallStatus`; `stopped` is true when the study
  enters TERMINATED, SUSPENDED or WITHDRAWN.
- `date`: {from, to, days, precision} for date fields whose date moved. Registry dates come at
  day (`2025-09-15`), month (`2025-06`) or year (`2025`) precision; a partial date is read as
  the first day of its month (or year), so `2025-06` → `2025-09-15` is 106 days, and
  `precision` names the coarser of the two sides so a reader knows the count is approximate.
- `type`: {from, to} when a date's or the enrollment's type changed; `actualized` is true for
  ESTIMATED → ACTUAL.
- `enrollment`: {from, to, delta, delta_pct} for `design.enrollmentCount`; `delta_pct` is
  rounded to one decimal and null when the count was 0.
- `results_posted`: true when `results.hasResults` turns true, a `results.*` module is added, or
  `status.resultsFirstPostDate` is added.
- `site`: added, removed or changed, for each `locations.*` change; `site_status` {from, to}
  when a site's own recruitment status changed; `sites` {added, removed, changed}: the counts
  over the `locations.*` changes of that study in that observation (`annotate` adds it, as it
  needs the other changes; it counts the changes it is given, so a filtered export counts
  what it exports).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any, Final, Literal, NamedTuple

from .errors import UsageError
from .fields import LOCATION_PREFIX, field_kind
from .model import CHANGE_KINDS, ChangeKind, FieldChange

Severity = Literal["major", "minor", "info"]
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "minor", "major")  # ascending
STOPPED_STATUSES: Final = frozenset({"TERMINATED", "SUSPENDED", "WITHDRAWN"})
NONE: Final = "\u2205"  # how a report shows an absent value
MAX_COUNT: Final = 10**15  # above any enrollment; larger "counts" are odd values, no facts
_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?", re.ASCII)


class Rule(NamedTuple):
    """One severity rule: the first rule whose every condition holds decides."""

    severity: Severity
    paths: tuple[str, ...]  # fnmatch patterns over the field path
    why: str  # the rule in words, for the docs and for a report's reader
    kinds: tuple[ChangeKind, ...] = ()  # empty: any kind
    fact: str = ""  # a dotted key of facts() that must be present and truthy
    at_least: float | None = None  # ... and whose absolute value is at least this


_ENROLS: Final = ("eligibility.criteria", "eligibility.sex", "eligibility.minimumAge",
                  "eligibility.maximumAge", "eligibility.healthyVolunteers")
_BOOKKEEPING: Final = ("status.lastUpdatePostDate", "status.statusVerifiedDate",
                       "status.studyFirstPostDate", "status.dispFirstPostDate")
_ADMIN: Final = ("contacts.*", "references.*", "conditions.keywords", "ipdSharing.*",
                 "identification.orgStudyId", "identification.secondaryIds",
                 "identification.nctIdAliases", "oversight.is*", "oversight.hasDmc")

# Facts that are null when their base is 0 (enrollment from 0): a threshold on one is met.
_UNBOUNDED_WHEN_NULL: Final = frozenset({"enrollment.delta_pct"})

# Top to bottom, first match wins; the last rule matches everything, so every change gets one.
SEVERITY_RULES: Final[tuple[Rule, ...]] = (
    Rule("major", ("status.overallStatus",),
         "the study stopped: it entered TERMINATED, SUSPENDED or WITHDRAWN",
         fact="status.stopped"),
    Rule("major", ("status.overallStatus",), "the overall recruitment status changed"),
    Rule("major", ("*",), "results were posted", fact="results_posted"),
    Rule("major", ("status.whyStopped",), "a reason for stopping was given", kinds=("added",)),
    Rule("major", ("design.enrollmentCount",), "the enrollment moved by 25% or more, or from 0",
         fact="enrollment.delta_pct", at_least=25),
    Rule("major", ("status.primaryCompletionDate", "status.completionDate"),
         "a completion date moved by 180 days or more", fact="date.days", at_least=180),
    Rule("major", ("design.phases",), "the phase changed"),
    Rule("major", ("outcomes.primary",), "a primary outcome changed"),
    Rule("major", _ENROLS, "who can enrol changed"),
    Rule("info", _BOOKKEEPING, "registry bookkeeping: a posting or verification date"),
    Rule("minor", ("locations.*",), "a site's own recruitment status changed",
         fact="site_status"),
    Rule("minor", ("locations.*",), "a site was added or removed", kinds=("added", "removed")),
    Rule("info", ("locations.*",), "a site's contacts or address details changed"),
    Rule("info", _ADMIN, "contacts, references, keywords, identifiers and oversight flags"),
    Rule("minor", ("*",), "any other change to what the registry says about the study"),
)


def parse_partial_date(text: Any) -> tuple[date, str] | None:
    """Return a registry date (YYYY, YYYY-MM or YYYY-MM-DD) as a day and its precision."""
    if not isinstance(text, str):
        return None
    match = _PARTIAL_DATE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day = match.groups()
    precision = "day" if day else ("month" if month else "year")
    try:
        # A partial date stands for its first day: the one rule that needs no calendar.
        return date(int(year), int(month or 1), int(day or 1)), precision
    except ValueError:
        return None


def _date_and_type(value: Any) -> tuple[Any, Any]:
    """Return (date text, type) of a date field's value: a struct or a bare date string."""
    if isinstance(value, Mapping):
        return value.get("date"), value.get("type")
    return value, None


def _coarser(first: str, second: str) -> str:
    """Return the coarser of two date precisions."""
    order = ("day", "month", "year")
    return max(first, second, key=order.index)


def _date_facts(old: Any, new: Any, found: dict[str, Any]) -> None:
    """Add the shift in days and the type flip of a date field."""
    old_date, old_type = _date_and_type(old)
    new_date, new_type = _date_and_type(new)
    before, after = parse_partial_date(old_date), parse_partial_date(new_date)
    if before and after and old_date != new_date:
        found["date"] = {
            "from": old_date,
            "to": new_date,
            "days": (after[0] - before[0]).days,
            "precision": _coarser(before[1], after[1]),
        }
    _type_facts(old_type, new_type, found)


def _type_facts(old_type: Any, new_type: Any, found: dict[str, Any]) -> None:
    """Add an ESTIMATED/ACTUAL type change; only a change between two known types counts."""
    if isinstance(old_type, str) and isinstance(new_type, str) and old_type != new_type:
        found["type"] = {"from": old_type, "to": new_type}
        if old_type == "ESTIMATED" and new_type == "ACTUAL":
            found["actualized"] = True


def _is_count(value: Any) -> bool:
    """Tell whether a value is a plausible head count (bool is not one, nor a 30-digit number)."""
    # The bound keeps delta_pct a finite float: int / int overflows beyond about 10**308.
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < MAX_COUNT


def _is_word(value: Any) -> bool:
    """Tell whether a value can be a registry code such as RECRUITING: a string or absent."""
    return value is None or isinstance(value, str)


def facts(change: FieldChange) -> dict[str, Any]:
    """Return the facts one change carries on its own (see the module docstring).

    Any value is taken: a value of an unexpected type (a list where a status belongs, a dict
    for a count) yields no fact, so the change gets the severity its path and kind give.
    """
    found: dict[str, Any] = {}
    path, old, new = change.path, change.old, change.new
    if path == "status.overallStatus":
        if _is_word(old) and _is_word(new):
            found["status"] = {"from": old, "to": new, "stopped": new in STOPPED_STATUSES}
    elif field_kind(path) == "date":
        _date_facts(old, new, found)
    elif path == "design.enrollmentCount" and _is_count(old) and _is_count(new):
        delta = new - old
        found["enrollment"] = {
            "from": old,
            "to": new,
            "delta": delta,
            "delta_pct": round(delta * 100 / old, 1) if old else None,
        }
    elif path == "design.enrollmentType":
        _type_facts(old, new, found)
    elif path.startswith(LOCATION_PREFIX):
        found["site"] = change.kind
        old_status = old.get("status") if isinstance(old, Mapping) else None
        new_status = new.get("status") if isinstance(new, Mapping) else None
        if (change.kind == "changed" and old_status != new_status and _is_word(old_status)
                and _is_word(new_status)):
            found["site_status"] = {"from": old_status, "to": new_status}
    if _results_posted(change):
        found["results_posted"] = True
    return found


def _results_posted(change: FieldChange) -> bool:
    """Tell whether a change is one of the signs that results were posted."""
    if change.path == "results.hasResults":
        return change.new is True and change.old is not True
    if change.kind != "added":
        return False
    return change.path.startswith("results.") or change.path == "status.resultsFirstPostDate"


def _lookup(found: Mapping[str, Any], dotted: str) -> Any:
    """Return the fact a dotted key names, or None."""
    value: Any = found
    for key in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


@functools.cache
def _paths_pattern(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Return one regex for a rule's fnmatch patterns (a rule is tried on every change)."""
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns) or "(?!)")


def rule_matches(rule: Rule, change: FieldChange, found: Mapping[str, Any]) -> bool:
    """Tell whether every condition of a rule holds for a change and its facts."""
    if _paths_pattern(rule.paths).match(change.path) is None:
        return False
    if rule.kinds and change.kind not in rule.kinds:
        return False
    if rule.fact:
        value = _lookup(found, rule.fact)
        if value is None and rule.fact in _UNBOUNDED_WHEN_NULL and _lookup(
                found, rule.fact.rpartition(".")[0]):
            return True  # a move from 0: no percentage, and more than any threshold
        if not value:
            return False
        if rule.at_least is not None and not (
            isinstance(value, int | float) and abs(value) >= rule.at_least
        ):
            return False
    return True


def matching_rule(change: FieldChange, found: Mapping[str, Any] | None = None) -> Rule:
    """Return the first rule of SEVERITY_RULES that a change meets."""
    found = facts(change) if found is None else found
    for rule in SEVERITY_RULES:
        if rule_matches(rule, change, found):
            return rule
    raise AssertionError("SEVERITY_RULES must end with a rule that matches every change")


def severity(change: FieldChange, found: Mapping[str, Any] | None = None) -> Severity:
    """Return a change's severity: major, minor or info."""
    return matching_rule(change, found).severity


def severity_at_least(level: str, minimum: str) -> bool:
    """Tell whether a severity is at or above a minimum (info < minor < major)."""
    return SEVERITIES.index(level) >= SEVERITIES.index(minimum)


def check_severity(minimum: str) -> None:
    """Raise UsageError unless a minimum severity is one of SEVERITIES."""
    if minimum not in SEVERITIES:
        raise UsageError(f"unknown severity {minimum!r}; use one of {', '.join(SEVERITIES)}")


def check_kinds(kinds: Iterable[str]) -> None:
    """Raise UsageError unless every kind of change named is one of CHANGE_KINDS."""
    if bad := [kind for kind in kinds if kind not in CHANGE_KINDS]:
        raise UsageError(f"unknown kind {bad[0]!r}; use {', '.join(CHANGE_KINDS)}")


def check_path_prefixes(prefixes: Iterable[str]) -> None:
    """Raise UsageError for an empty path prefix: it matches no path (an unset variable)."""
    if any(not prefix.strip(" .") for prefix in prefixes):
        raise UsageError("an empty path prefix matches no path: give one, such as status")


def keep_severity(items: Iterable[Annotated], minimum: str) -> list[Annotated]:
    """Keep the annotated changes whose severity is at least `minimum` (--min-severity)."""
    check_severity(minimum)
    return [item for item in items if severity_at_least(item.severity, minimum)]


class SiteCounts(NamedTuple):
    """How many sites of one study one observation added, removed and changed."""

    added: int = 0
    removed: int = 0
    changed: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counts as the `sites` fact."""
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def site_counts(changes: Iterable[FieldChange]) -> dict[tuple[str, str], SiteCounts]:
    """Return site counts per (nct_id, detected_at), i.e. per study per observation."""
    tally: dict[tuple[str, str], dict[str, int]] = {}
    for change in changes:
        if change.path.startswith(LOCATION_PREFIX) and change.kind in SiteCounts._fields:
            counts = tally.setdefault((change.nct_id, change.detected_at), {})
            counts[change.kind] = counts.get(change.kind, 0) + 1
    return {key: SiteCounts(**counts) for key, counts in sorted(tally.items())}


class Annotated(NamedTuple):
    """A change with its facts and severity, as every format and the report carry it."""

    change: FieldChange
    facts: dict[str, Any]
    severity: Severity


def annotate(changes: Sequence[FieldChange]) -> list[Annotated]:
    """Return each change with its facts (site counts of its observation added) and severity."""
    sites = site_counts(changes)
    out = []
    for change in changes:
        found = facts(change)
        if "site" in found:
            found["sites"] = sites[(change.nct_id, change.detected_at)].as_dict()
        out.append(Annotated(change, found, severity(change, found)))
    return out


def _signed(number: float) -> str:
    """Return a number with its sign, minus as U+2212 for legibility."""
    # One decimal, as delta_pct is rounded, never an exponent (`:g` wrote 2.04071e+06).
    text = f"{number:+.1f}".removesuffix(".0") if isinstance(number, float) else f"{number:+d}"
    return text.replace("-", "\u2212")


def describe_facts(found: Mapping[str, Any], with_sites: bool = True) -> list[str]:
    """Return the facts as short English phrases, in a fixed order (plain text, unescaped)."""
    # Listings that show a study's site counts once, above its lines, pass with_sites=False.
    phrases = []
    # Every rendering shows old -> new next to these phrases, so they add only what it lacks.
    if (status := found.get("status")) and status.get("stopped"):
        phrases.append(f"stopped ({status['to']})")
    if shift := found.get("date"):
        approx = "" if shift["precision"] == "day" else f", {shift['precision']} precision"
        unit = "day" if abs(shift["days"]) == 1 else "days"
        phrases.append(f"moved {_signed(shift['days'])} {unit}{approx}")
    if found.get("actualized"):
        phrases.append("estimate became actual")
    elif kind := found.get("type"):
        phrases.append(f"type {kind['from']} \u2192 {kind['to']}")
    if enrol := found.get("enrollment"):
        pct = "" if enrol["delta_pct"] is None else f", {_signed(enrol['delta_pct'])}%"
        phrases.append(f"enrollment \u0394 {_signed(enrol['delta'])}{pct}")
    if found.get("results_posted"):
        phrases.append("results posted")
    if site_status := found.get("site_status"):
        phrases.append(f"site status {site_status['from'] or NONE} \u2192 "
                       f"{site_status['to'] or NONE}")
    if with_sites and (sites := found.get("sites")):
        phrases.append(sites_phrase(SiteCounts(**sites)))
    return phrases


def sites_phrase(counts: SiteCounts) -> str:
    """Return site counts as `sites: 3 added, 1 removed, 2 changed` (zeros left out)."""
    parts = [f"{n} {what}" for n, what in zip(counts, SiteCounts._fields, strict=True) if n]
    return "sites: " + ", ".join(parts) if parts else "sites: none changed"


def severity_rules_markdown() -> str:
    """Return SEVERITY_RULES as the Markdown table the README documents."""
    lines = ["| # | severity | paths | kinds | condition | why |", "|---|---|---|---|---|---|"]
    for number, rule in enumerate(SEVERITY_RULES, start=1):
        condition = ""
        if rule.fact:
            condition = f"`{rule.fact}`" + (f" \u2265 {rule.at_least:g}" if rule.at_least
                                            is not None else "")
        paths = ", ".join(f"`{p}`" for p in rule.paths)
        kinds = ", ".join(rule.kinds) or "any"
        lines.append(f"| {number} | {rule.severity} | {paths} | {kinds} | {condition} | "
                     f"{rule.why} |")
    return "\n".join(lines) + "\n"
