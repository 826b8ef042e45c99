"""Watch rules, what they match, and the outbox rows written with the changes they carry.

A watch names its scope (explicit studies, a saved query's studies, or every study), filters
(path prefixes, kinds, a minimum severity) and facts, of which one must hold for a change to
be sent. Facts are the ones `meaning.facts` derives; this module only reads them:

- `stopped`: the overall status entered TERMINATED, SUSPENDED or WITHDRAWN;
- `results_posted`; `actualized` (an ESTIMATED date or enrollment became ACTUAL);
- `date_slip>=DAYS`: the start or (primary) completion date moved DAYS or more later;
- `enrollment_change>=PCT`: the enrollment moved by PCT percent or more, either way (a change
  from 0 always counts);
- `site_added[:COUNTRY]`: a site was added (in that country, case ignored).

`AlertWriter` runs inside the store's write transaction: the alert rows (one per study per
run, or one per watch per run with `digest`) and one delivery row per target commit together
with the changes, so a change stored is an alert owed. Delivery is notify.py's, after commit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlite_utils

from . import codec
from .errors import UsageError
from .export import ordered
from .fields import is_under, order_key
from .meaning import (
    Annotated,
    annotate,
    check_kinds,
    check_path_prefixes,
    check_severity,
    keep_severity,
)
from .model import FieldChange, utc_timestamp
from .present import record
from .query import Connection

SLIP_PATHS = ("status.startDate", "status.primaryCompletionDate", "status.completionDate")
# A threshold is written out in full (`1000000`, `12.3456789`); an exponent (`1e+06`) is what
# rules stored before it was, still read.
_FACT = re.compile(r"(stopped|results_posted|actualized)|(date_slip|enrollment_change)>=(\d+(?:"
                   r"\.\d+)?(?:e[+-]?\d+)?)|site_added(?::(.+))?", re.ASCII)
DIGEST = "digest"


@dataclass(frozen=True)
class Fact:
    """One fact a change must carry: a name, and its threshold or country if it takes one."""

    name: str
    threshold: float | None = None
    country: str | None = None

    def __str__(self) -> str:
        if self.threshold is not None:
            # The shortest decimal that reads back the same, never with an exponent.
            return f"{self.name}>={format(Decimal(repr(self.threshold)), 'f').removesuffix('.0')}"
        return f"{self.name}:{self.country}" if self.country else self.name

    def holds(self, item: Annotated) -> bool:
        """Tell whether an annotated change carries this fact."""
        found, change = item.facts, item.change
        if self.name == "stopped":
            return bool((found.get("status") or {}).get("stopped"))
        if self.name in ("results_posted", "actualized"):
            return bool(found.get(self.name))
        if self.name == "date_slip":
            days = (found.get("date") or {}).get("days")
            return change.path in SLIP_PATHS and days is not None and days >= (self.threshold or 0)
        if self.name == "enrollment_change":
            if "enrollment" not in found:
                return False
            pct = found["enrollment"]["delta_pct"]
            return pct is None or abs(pct) >= (self.threshold or 0)
        if found.get("site") != "added":
            return False
        country = change.new.get("country") if isinstance(change.new, Mapping) else None
        return self.country is None or (country or "").casefold() == self.country.casefold()


def parse_fact(text: str) -> Fact:
    """Return the fact a --fact value names, or raise UsageError."""
    match = _FACT.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{text!r} is not a fact: use stopped, results_posted, actualized, "
                         "date_slip>=DAYS, enrollment_change>=PCT or site_added[:COUNTRY]")
    simple, name, number, country = match.groups()
    if simple:
        return Fact(simple)
    if name:
        threshold = float(number)
        if not math.isfinite(threshold):  # stored as "Infinity", which would not parse back
            raise UsageError(f"{text!r}: {number} is past the largest threshold a fact takes")
        return Fact(name, threshold)
    return Fact("site_added", country=country.strip() if country else None)


def _stored_fact(text: str) -> Fact:
    """Return a stored fact; one stored with an infinite threshold (before it was refused) too."""
    name, sep, number = text.partition(">=")
    if sep and number == "Infinity":  # a rule that never fires, as 1e999 days never pass
        return Fact(name, math.inf)
    return parse_fact(text)


@dataclass(frozen=True)
class Watch:
    """One watch rule, as stored in the `watches` table."""

    name: str
    targets: tuple[str, ...]  # references (targets.py), never the URLs themselves
    studies: tuple[str, ...] | None = None
    query: str | None = None
    paths: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    min_severity: str | None = None
    facts: tuple[Fact, ...] = ()
    digest: bool = False
    secret: str | None = None
    created_at: str = ""

    def passes(self, change: FieldChange) -> bool:
        """Tell whether a change passes the path and kind filters."""
        if self.kinds and change.kind not in self.kinds:
            return False
        return not self.paths or any(is_under(change.path, p) for p in self.paths)

    def select(self, changes: Sequence[FieldChange]) -> list[dict[str, Any]]:
        """Return the changes this watch sends, as `changes --format json` has them."""
        # Annotated whole, then filtered, as `changes` does: a site's counts are its
        # observation's, as the stored facts say, whatever the watch keeps.
        items = [i for i in annotate(ordered(changes)) if self.passes(i.change)]
        if self.min_severity:
            items = keep_severity(items, self.min_severity)
        if self.facts:
            items = [i for i in items if any(f.holds(i) for f in self.facts)]
        return [record(item) for item in items]


def validate(watch: Watch) -> None:
    """Raise UsageError when a rule cannot work."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", watch.name):
        raise UsageError(f"{watch.name!r} is not a watch name: letters, digits, . _ - (max 64)")
    if not watch.targets:
        raise UsageError("a watch needs at least one target URL")
    if watch.studies is not None and watch.query is not None:
        raise UsageError("give studies or a query, not both")
    if watch.min_severity is not None:
        check_severity(watch.min_severity)
    check_kinds(watch.kinds)
    check_path_prefixes(watch.paths)


def add_watch(db: sqlite_utils.Database, watch: Watch) -> None:
    """Store a new watch rule (the caller tracks its studies); UsageError if the name is taken."""
    validate(watch)
    if db.execute("select 1 from watches where name = ?", [watch.name]).fetchone():
        raise UsageError(f"a watch named {watch.name!r} exists; remove it first")
    db.execute(
        "insert into watches (name, studies, query, paths, kinds, min_severity, facts, digest, "
        "targets, secret, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [watch.name, None if watch.studies is None else json.dumps(sorted(watch.studies)),
         watch.query, json.dumps(list(watch.paths)), json.dumps(list(watch.kinds)),
         watch.min_severity, json.dumps([str(f) for f in watch.facts]), int(watch.digest),
         json.dumps(list(watch.targets)), watch.secret, watch.created_at],
    )


def remove_watch(db: sqlite_utils.Database, name: str) -> Watch:
    """Delete a watch rule and return it; its undelivered alerts are cancelled, not sent."""
    found = get_watch(db, name)
    db.execute("delete from watches where name = ?", [name])
    # Its targets and secret leave the secrets file with it, so nothing could be sent (or
    # signed) anyway; the outbox keeps the rows, to show what was cancelled.
    db.execute("update deliveries set state = 'failed', last_error = 'the watch was removed' "
               "where state = 'pending' and alert_id in (select id from alerts where watch = ?)",
               [name])
    return found


def _watch(row: Mapping[str, Any]) -> Watch:
    """Return the Watch a stored row holds."""
    return Watch(
        name=row["name"], targets=tuple(json.loads(row["targets"])),
        studies=None if row["studies"] is None else tuple(json.loads(row["studies"])),
        query=row["query"], paths=tuple(json.loads(row["paths"])),
        kinds=tuple(json.loads(row["kinds"])), min_severity=row["min_severity"],
        facts=tuple(_stored_fact(f) for f in json.loads(row["facts"])),
        digest=bool(row["digest"]), secret=row["secret"], created_at=row["created_at"],
    )


def load_watches(conn: Connection) -> list[Watch]:
    """Return every watch rule, by name."""
    cursor = conn.execute("select * from watches order by name")
    names = [d[0] for d in cursor.description]
    return [_watch(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def get_watch(conn: Connection, name: str) -> Watch:
    """Return one watch rule; UsageError when there is none by that name."""
    for watch in load_watches(conn):
        if watch.name == name:
            return watch
    raise UsageError(f"no watch named {name!r} (see `trialdiff watch list`)")


def in_scope(conn: Connection, watch: Watch, nct_id: str) -> bool:
    """Tell whether a study is in a watch's scope."""
    if watch.studies is not None:
        return nct_id in watch.studies
    if watch.query is not None:
        return conn.execute(
            "select 1 from query_studies m join queries q on q.id = m.query_id "
            "where q.expr = ? and m.nct_id = ?", [watch.query, nct_id]).fetchone() is not None
    return True


def remember_members(db: sqlite_utils.Database, query_id: int, nct_ids: Iterable[str],
                     at: str) -> None:
    """Record that a saved query returned these studies (a query watch's scope)."""
    db.conn.executemany(
        "insert or ignore into query_studies (query_id, nct_id, first_seen_at) values (?, ?, ?)",
        [(query_id, nct_id, at) for nct_id in nct_ids],
    )


def idempotency_key(started_at: str, run_id: int, watch: str, scope: str) -> str:
    """Return an alert's stable key: the same for every retry, unique across runs and files."""
    text = f"{started_at}|{run_id}|{watch}|{scope}"
    return "trialdiff-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def alert_changes(conn: Connection, alert_id: int
                  ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return an alert's changes in export order, and its studies' titles."""
    rows = conn.execute("select nct_id, title, change from alert_changes where alert_id = ? "
                        "order by id", [alert_id]).fetchall()
    titles = {nct_id: title for nct_id, title, _ in rows if title}
    return sorted((json.loads(codec.unpack_value(conn, row[2]) or "null") for row in rows),
                  key=_change_key), titles


def _change_key(item: Mapping[str, Any]) -> tuple[str, str, Any]:
    """Return the export order of a change record: oldest first, study, rule 7's order."""
    return item["detected_at"], item["nct_id"], order_key(item["path"])


class AlertWriter:
    """Write the alerts a study's changes raise, inside the caller's transaction."""

    def __init__(self, db: sqlite_utils.Database, run_id: int | None) -> None:
        self.db = db
        self.run_id = run_id
        self.watches = load_watches(db) if run_id is not None else []

    def add(self, nct_id: str, changes: Sequence[FieldChange]) -> int:
        """Add a study's new changes to the alerts of every watch they match; return how many."""
        written = 0
        for watch in self.watches:
            if not changes or not in_scope(self.db, watch, nct_id):
                continue
            found = watch.select(changes)
            if found:
                self._append(watch, DIGEST if watch.digest else nct_id, found)
                written += 1
        return written

    def _append(self, watch: Watch, scope: str, found: list[dict[str, Any]]) -> None:
        """Add changes to the run's alert for this watch and scope, raising it if new."""
        assert self.run_id is not None
        db, run_id = self.db, self.run_id
        row = db.execute("select id from alerts where watch = ? and run_id = ? and scope = ?",
                         [watch.name, run_id, scope]).fetchone()
        if row is None:
            command, started_at = db.execute(
                "select command, started_at from runs where id = ?", [run_id]).fetchone()
            run = {"id": run_id, "command": command, "started_at": started_at}
            cursor = db.execute(
                "insert into alerts (watch, run_id, scope, created_at, idempotency_key, run) "
                "values (?, ?, ?, ?, ?, ?)",
                [watch.name, run_id, scope, utc_timestamp(),
                 idempotency_key(started_at, run_id, watch.name, scope), _dump(run)],
            )
            row = (cursor.lastrowid,)
            for target in watch.targets:
                db.execute("insert into deliveries (alert_id, target, state, attempts) "
                           "values (?, ?, 'pending', 0)", [row[0], target])
        (title,) = db.execute("select brief_title from studies where nct_id = ?",
                              [found[0]["nct_id"]]).fetchone() or (None,)
        # Compressed, each (9 µs): a copy per watch of every change, posted results whole,
        # was most of a month's database (a probe); the sample's 528 keep 58% of their bytes.
        db.conn.executemany(
            "insert into alert_changes (alert_id, nct_id, title, change) values (?, ?, ?, ?)",
            [(row[0], item["nct_id"], title, codec.pack_value(db, _dump(item), inline=0))
             for item in found])


def withdraw_alerts(db: sqlite_utils.Database, run_id: int, nct_id: str) -> None:
    """Take a study's changes out of a run's alerts, once its write was undone (dedupe.py).

    An alert left carrying nothing goes, with its deliveries: they run after the run commits.
    """
    db.execute("delete from alert_changes where nct_id = ? and alert_id in "
               "(select id from alerts where run_id = ?)", [nct_id, run_id])
    empty = ("select id from alerts a where run_id = ? and not exists "
             "(select 1 from alert_changes c where c.alert_id = a.id)")
    db.execute(f"delete from deliveries where alert_id in ({empty})", [run_id])
    db.execute(f"delete from alerts where id in ({empty})", [run_id])


def _dump(value: Any) -> str:
    """Return stored JSON: sorted keys, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def would_match(
    conn: Connection, watch: Watch, since: str, until: str | None = None
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Return the messages a watch would have sent for the changes stored since a time.

    As the sender sends them: one per study per observation (a digest: one per observation),
    oldest first, so the last is the latest.
    """
    from .query import ChangeFilter, query_changes

    observed: dict[tuple[str, str], list[FieldChange]] = {}
    for change in query_changes(conn, ChangeFilter(watch.studies or (), since=since, until=until)):
        observed.setdefault((change.detected_at, change.nct_id), []).append(change)
    scoped: dict[str, bool] = {}
    groups: list[tuple[str, str, list[dict[str, Any]]]] = []
    for (at, nct_id), changes in sorted(observed.items()):
        if nct_id not in scoped:
            scoped[nct_id] = in_scope(conn, watch, nct_id)
        if scoped[nct_id] and (found := watch.select(changes)):
            groups.append((at, nct_id, found))
    if watch.digest:
        return [(DIGEST, sorted((r for when, _, found in groups if when == at for r in found),
                                key=_change_key))
                for at in dict.fromkeys(when for when, _, _ in groups)]
    return [(nct_id, found) for _, nct_id, found in groups]

