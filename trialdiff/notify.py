"""Deliver the outbox: each pending alert to each of its targets, after the changes committed.

`deliver_pending` is self-contained: call it after a run's writes (import and sync do), or on
its own (`trialdiff notify`). Under the write lock, so no run is adding to an alert meanwhile.

- http(s) targets get trialdiff's JSON webhook: a POST of `{"watch", "run", "changes",
  "studies"}` with `Idempotency-Key` (stable per alert) and, given a secret,
  `X-Trialdiff-Signature: sha256=<hex HMAC-SHA256 of the body>`, GitHub's scheme. Any 2xx is
  delivered.
- Every other scheme goes through Apprise (the optional `trialdiff[notify]` extra): a title
  such as `NCT05827016: status RECRUITING → TERMINATED (+2 more)` and a Markdown body, which
  Apprise turns into what the service takes (HTML mail, plain text).

The body is rebuilt from the stored alert byte for byte, so a retry sends the same body, key
and signature. A failure (refused, 5xx, timeout) leaves the delivery pending, retried after a
backoff doubling from `backoff` seconds up to 6 hours; past `max_age_hours` since the alert was
raised it is given up (`failed`). Delivery never writes a change, so it cannot lose one. Killed
between a POST and recording it, the next run sends it again with the same Idempotency-Key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from .apprise_client import check_apprise_url, send_apprise
from .errors import UsageError
from .export import to_markdown
from .fields import LOCATION_PREFIX
from .jsoncsv import json_text
from .meaning import NONE, SEVERITIES, Annotated
from .model import FieldChange, utc_timestamp
from .present import ARROW, ItemLines, Values, body, short, short_pair, site_name
from .query import transaction
from .registry import DEFAULT
from .render import plural, visible
from .settings import check_number_setting
from .shield import SendStopped, shielded_send
from .targets import HTTP_SCHEMES, names_host, redact, resolve, scrub, shown
from .webhooks import WebhookClient, webhook_client

MAX_BACKOFF = 6 * 3600.0
TITLE_WIDTH = 200


@dataclass(frozen=True)
class Delivery:
    """What to send to one target: a pending delivery row with its alert."""

    delivery_id: int
    target: str  # a reference (targets.py)
    attempts: int
    watch: str
    scope: str
    created_at: str
    key: str
    run: dict[str, Any]
    changes: list[dict[str, Any]]
    titles: dict[str, str]


@dataclass
class DeliveryTotals:
    """What one delivery pass did, for the summary line and the exit code."""

    delivered: int = 0
    failed_now: int = 0  # attempts that failed in this pass (still pending, or given up)
    given_up: int = 0
    pending: int = 0  # deliveries still pending after the pass
    errors: list[str] = field(default_factory=list)


def webhook_body(watch: str, run: Mapping[str, Any], changes: Sequence[Mapping[str, Any]],
                 titles: Mapping[str, str]) -> bytes:
    """Return the webhook's JSON body, byte for byte the same for the same alert.

    `studies` gives each study's title (as the alert stored it) and its registry page, so a
    receiver can show a change without asking the registry.
    """
    studies = {nct_id: {"title": titles.get(nct_id), "url": DEFAULT.study_url(nct_id)}
               for nct_id in sorted({c["nct_id"] for c in changes})}
    payload = {"watch": watch, "run": run, "changes": changes, "studies": studies}
    return json_text(payload).encode("utf-8")


def _headline(item: Mapping[str, Any]) -> str:
    """Return one change in a few words: `status RECRUITING → TERMINATED`."""
    status = item["facts"].get("status")
    if status:
        return f"status {status['from'] or NONE} {ARROW} {status['to'] or NONE}"
    if shift := item["facts"].get("date"):
        return f"{item['path']} {shift['from']} {ARROW} {shift['to']}"
    change = _field_change(item)
    what = change.path
    if change.path.startswith(LOCATION_PREFIX):  # its path is a lower-cased key: its name
        what = "site " + site_name(change.new if change.new is not None else change.old)
    if change.kind != "changed":
        return f"{what} {change.kind}"
    shown = body(Annotated(change, item["facts"], item["severity"]))  # as the message shows it
    if isinstance(shown, ItemLines) and shown.lines:  # the first item, not the list's JSON
        line = shown.lines[0]
        if not line.edits:
            return f"{what}: {short(line.item, 60)} {line.op}"
        edit = line.edits[0]
        where = f"{short(line.item, 40)} {edit.at}" if line.op == "changed" else edit.at
        return f"{what}: {where} " + f" {ARROW} ".join(edit.texts(40))
    pair = shown.texts(40) if isinstance(shown, Values) else short_pair(change.old, change.new, 40)
    return f"{what} " + f" {ARROW} ".join(pair)


def message_title(watch: str, scope: str, changes: Sequence[Mapping[str, Any]]) -> str:
    """Return a message title: its most severe change first, then how many more."""
    rank = {level: index for index, level in enumerate(reversed(SEVERITIES))}
    top = min(changes, key=lambda c: rank[c["severity"]])  # stable: the first of the most severe
    more = f" (+{len(changes) - 1} more)" if len(changes) > 1 else ""
    if scope == "digest":
        studies = len({c["nct_id"] for c in changes})
        text = f"{watch}: {top['nct_id']}: {_headline(top)}{more} in {studies} " + (
            "study" if studies == 1 else "studies")
    else:
        text = f"{top['nct_id']}: {_headline(top)}{more}"
    # One line: a title is a mail subject or a chat headline, where a newline could forge one.
    flat = " ".join(visible(text).split())
    return flat if len(flat) <= TITLE_WIDTH else flat[: TITLE_WIDTH - 1] + "\u2026"


def message_body(watch: str, changes: Sequence[Mapping[str, Any]], titles: Mapping[str, str]
                 ) -> str:
    """Return the Markdown body: the export's changelog of the alert's changes."""
    found = [_field_change(c) for c in changes]
    return to_markdown(found, title=f"trialdiff watch {watch}", titles=titles)


def _field_change(item: Mapping[str, Any]) -> FieldChange:
    """Return an alert's stored change (an object of `changes --format json`) as a FieldChange."""
    return FieldChange(item["nct_id"], item["path"], item["kind"], item["detected_at"],
                       item["old"], item["new"], item["detail"])


def check_target(url: str) -> None:
    """Raise UsageError unless trialdiff can deliver to a target URL."""
    if url.startswith(HTTP_SCHEMES):
        if not names_host(url):
            raise UsageError(f"{redact(url)} is not a URL a webhook can be sent to: give "
                             "http(s)://host/path")
        return
    if "://" not in url:
        # Nothing to redact down to: the value itself is not shown, since it may be a secret.
        raise UsageError("a target with no scheme (no ://) is not a URL: give http://, "
                         "https://, an Apprise URL or env:NAME")
    check_apprise_url(url)


def send(delivery: Delivery, secret_ref: str | None, timeout: float,
         client: WebhookClient | None) -> str | None:
    """Deliver one alert to one target now; return why it failed (redacted), or None."""
    values: list[str] = []
    try:
        url = resolve(delivery.target)
        values.append(url)
        secret = resolve(secret_ref) if secret_ref else None
        values.append(secret or "")
        if url.startswith(HTTP_SCHEMES):
            body = webhook_body(delivery.watch, delivery.run, delivery.changes, delivery.titles)
            assert client is not None  # a pass with deliveries has one
            post, key = client.post, delivery.key
            # A stop waits for the receiver's answer (the POST is bounded whole by `timeout`),
            # so a POST it took is recorded, not sent again (the margin is for a stuck thread).
            error = shielded_send(lambda: post(url, body, key, secret), timeout + 5,
                                  f"no answer within {timeout + 5:g} s; the alert may have "
                                  "arrived, and may be sent again", "trialdiff-webhook")
        else:
            error = send_apprise(url, message_title(delivery.watch, delivery.scope,
                                                    delivery.changes),
                                 message_body(delivery.watch, delivery.changes, delivery.titles),
                                 timeout)
    except UsageError as exc:
        error = str(exc)
    except SendStopped as stopped:  # the message's outcome, known before the stop is raised
        stopped.error = None if stopped.error is None else scrub(stopped.error, values)
        raise
    except Exception as exc:  # a target's failure must not stop the others
        error = f"{type(exc).__name__}: {exc}"
    return None if error is None else scrub(error, values)


def _due(db: sqlite_utils.Database, now: str) -> list[tuple[Delivery, str | None]]:
    """Return the pending deliveries due now, oldest alert first, with their secrets."""
    from .watch import alert_changes

    rows = db.execute(
        "select d.id, d.target, d.attempts, a.watch, a.scope, a.created_at, a.idempotency_key, "
        "a.run, a.id, w.secret from deliveries d join alerts a on a.id = d.alert_id "
        "left join watches w on w.name = a.watch where d.state = 'pending' and "
        "(d.next_attempt_at is null or d.next_attempt_at <= ?) order by a.id, d.id", [now],
    ).fetchall()
    due = []
    for r in rows:
        changes, titles = alert_changes(db, r[8])
        due.append((Delivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]),
                             changes, titles), r[9]))
    return due


def _later(now: str, seconds: float) -> str:
    """Return the time some seconds after now."""
    moment = datetime.fromisoformat(now.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return utc_timestamp(moment.isoformat())


def check_settings(timeout: float, backoff: float, max_age_hours: float) -> None:
    """Raise UsageError unless a delivery pass can use these settings (ALERT_BOUNDS)."""
    for name, value in (("alert_timeout", timeout), ("alert_backoff", backoff),
                        ("alert_max_age", max_age_hours)):
        check_number_setting(name, value)


def deliver_pending(
    db: sqlite_utils.Database, *, timeout: float = 10.0, backoff: float = 300.0,
    max_age_hours: float = 72.0, now: str | None = None,
) -> DeliveryTotals:
    """Deliver every pending alert that is due (settings as `check_settings` takes them)."""
    totals = DeliveryTotals()
    now = now or utc_timestamp()
    give_up_before = _later(now, -max_age_hours * 3600)
    due = _due(db, now)
    hung: dict[str, int] = {}  # targets that took the whole timeout: alerts held this pass
    with webhook_client(timeout, bool(due)) as client:
        for delivery, secret_ref in due:
            if delivery.target in hung:  # a dead target costs one timeout a pass, not one each
                hung[delivery.target] += 1
                continue
            started = time.monotonic()
            if _deliver_one(db, delivery, secret_ref, give_up_before, max_age_hours, backoff,
                            timeout, client, totals) and time.monotonic() - started >= timeout:
                hung[delivery.target] = 0
    totals.errors += [f"{_shown(target)}: {plural(held, 'more alert')} held for the next pass "
                      "(it took the whole timeout)" for target, held in hung.items() if held]
    (totals.pending,) = db.execute(
        "select count(*) from deliveries where state = 'pending'").fetchone()
    return totals


def _deliver_one(
    db: sqlite_utils.Database, delivery: Delivery, secret_ref: str | None, give_up_before: str,
    max_age_hours: float, backoff: float, timeout: float, client: WebhookClient | None,
    totals: DeliveryTotals,
) -> bool:
    """Try one delivery and record its outcome in its own transaction; return if it failed."""
    tried = not (delivery.created_at < give_up_before and delivery.attempts)
    if not tried:
        hours = "hour" if max_age_hours == 1 else "hours"
        error: str | None = f"given up after {max_age_hours:g} {hours} undelivered"
    else:
        try:
            error = send(delivery, secret_ref, timeout, client)
        except SendStopped as stopped:  # recorded first: what went out is not sent again
            _record(db, delivery, stopped.error, tried, give_up_before, backoff, totals)
            raise stopped.stop from None
    return _record(db, delivery, error, tried, give_up_before, backoff, totals)


def _record(db: sqlite_utils.Database, delivery: Delivery, error: str | None, tried: bool,
            give_up_before: str, backoff: float, totals: DeliveryTotals) -> bool:
    """Record one delivery's outcome in its own transaction; return if it failed."""
    at = utc_timestamp()
    with transaction(db):
        if error is None:
            db.execute("update deliveries set state = 'delivered', delivered_at = ?, "
                       "attempts = attempts + 1, last_attempt_at = ?, last_error = null "
                       "where id = ?", [at, at, delivery.delivery_id])
            totals.delivered += 1
            return False
        give_up = delivery.created_at < give_up_before
        wait = min(backoff * 2 ** delivery.attempts, MAX_BACKOFF)
        # Given up untried, it counts no attempt and keeps its last one's time, and why that
        # one failed: the reason an operator has to act on.
        db.execute("update deliveries set state = ?, attempts = attempts + ?, "
                   "last_attempt_at = coalesce(?, last_attempt_at), next_attempt_at = ?, "
                   "last_error = ? || case when ? then '' else coalesce('; last error: ' || "
                   "last_error, '') end where id = ?",
                   ["failed" if give_up else "pending", int(tried), at if tried else None,
                    None if give_up else _later(at, wait), error, tried, delivery.delivery_id])
    totals.failed_now += 1
    totals.given_up += give_up
    totals.errors.append(f"{delivery.watch} {delivery.scope} \u2192 "
                         f"{_shown(delivery.target)}: {error}")
    return True


def _shown(reference: str) -> str:
    """Return a target reference as an error line shows it (redacted)."""
    try:
        return shown(reference)
    except UsageError:  # the secrets file cannot be read: the error beside it says so
        return reference


def list_alerts(conn: Any, states: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Return the outbox's deliveries, newest alert first, of some states (none: all)."""
    sql = ("select a.id, a.watch, a.scope, a.created_at, a.run_id, (select count(*) from "
           "alert_changes c where c.alert_id = a.id) as changes, d.target, "
           "d.state, d.attempts, d.last_attempt_at, d.next_attempt_at, d.delivered_at, "
           "d.last_error from alerts a join deliveries d on d.alert_id = a.id")
    params: list[Any] = []
    if states:
        sql += f" where d.state in ({', '.join('?' * len(states))})"
        params.extend(states)
    cursor = conn.execute(sql + " order by a.id desc, d.id", params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def test_alert(watch: Any, groups: list[tuple[str, list[dict[str, Any]]]], timeout: float
               ) -> list[tuple[str, str | None]]:
    """Send a watch's test message to each target now; return (target shown, error) pairs."""
    scope, changes = groups[-1] if groups else ("test", [])
    now = utc_timestamp()
    run = {"id": None, "command": "watch test", "started_at": now}
    key = "trialdiff-test-" + hashlib.sha256(now.encode()).hexdigest()[:16]
    results = []
    with webhook_client(timeout) as client:
        for target in watch.targets:
            delivery = Delivery(0, target, 0, watch.name, scope, now, key, run, changes, {})
            try:
                if not changes and not resolve_is_http(target):
                    error = _send_note(target, watch.name, timeout)
                else:
                    error = send(delivery, watch.secret, timeout, client)
            except SendStopped as stopped:  # a test records nothing: just stop
                raise stopped.stop from None
            results.append((_shown(target), error))
    return results


def resolve_is_http(reference: str) -> bool:
    """Tell whether a target reference holds a webhook URL (False when it cannot be read)."""
    try:
        return resolve(reference).startswith(HTTP_SCHEMES)
    except UsageError:
        return False


def _send_note(target: str, watch: str, timeout: float) -> str | None:
    """Send a plain test note through Apprise when there are no changes to show."""
    try:
        url = resolve(target)
    except UsageError as exc:
        return str(exc)
    error = send_apprise(url, f"trialdiff: test of watch {watch}",
                         "This is a test message from trialdiff.", timeout)
    return None if error is None else scrub(error, [url])
