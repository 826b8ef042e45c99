"""Delivery: webhooks signed and retried with one key, Apprise mail, titles, backoff, giving up."""

from __future__ import annotations

import asyncio
import email
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ALERT_DAYS,
    ALERT_STUDIES,
    CHANGE_DAYS,
    HOSTILE,
    HOSTILE_TITLE,
    ROOT,
    SAMPLE,
    bodies,
    changes_json,
    import_day,
    real_changes,
    run,
    sample_changes,
)
from sqlite_utils import Database
from webhook_receiver import WebhookReceiver

from trialdiff.errors import UsageError
from trialdiff.lifecycle import start_run
from trialdiff.model import utc_timestamp
from trialdiff.notify import (
    MAX_BACKOFF,
    TITLE_WIDTH,
    check_target,
    deliver_pending,
    message_title,
    webhook_body,
)
from trialdiff.query import transaction
from trialdiff.schema import open_db
from trialdiff.targets import keep
from trialdiff.watch import AlertWriter, Watch, add_watch, alert_changes
from trialdiff.webhooks import signature

pytestmark = pytest.mark.usefixtures("secrets_file")

AT = "2025-07-07T06:00:00.000Z"  # when the sample's second day was observed


def raise_alert(db: Database, url: str, nct_id: str = "NCT06060392", secret: str | None = None
                ) -> int:
    """Store a status watch to a URL and raise its alert on a sample study's real changes."""
    if not db.execute("select 1 from watches where name = 'stops'").fetchone():
        add_watch(db, Watch("stops", (keep(url),), paths=("status",),
                            secret=keep(secret) if secret else None))
    with transaction(db):
        run_id = start_run(db, "import", AT)
        assert AlertWriter(db, run_id).add(nct_id, sample_changes(nct_id, *CHANGE_DAYS)) == 1
    (alert_id,) = db.execute("select max(id) from alerts").fetchone()
    return int(alert_id)


def delivery(db: Database, alert_id: int) -> dict[str, Any]:
    """Return an alert's one delivery row."""
    cursor = db.execute("select * from deliveries where alert_id = ?", [alert_id])
    names = [d[0] for d in cursor.description]
    (row,) = cursor.fetchall()
    return dict(zip(names, row, strict=True))


def seconds_between(earlier: str, later: str) -> float:
    """Return the seconds from one stored timestamp to another."""
    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment(later) - moment(earlier)).total_seconds()


README_SNIPPET = re.compile(r"<!-- verify:start -->\n```python\n(.*?)```\n<!-- verify:end -->",
                            re.S)


def test_signed_webhooks_verify_with_the_readme_snippet(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver, secrets_file: Path
) -> None:
    db = str(tmp_path / "t.db")
    secret = "whsec-0123456789"
    run(db, "watch", "add", "signed", "--study", "NCT06060392", "--to", f"{receiver.url}/s",
        "--secret", secret)
    for number in (1, 2):
        import_day(db, alert_days, number)
    (arrived,) = receiver.at("/s")
    assert arrived.headers["Content-Type"] == "application/json"
    assert arrived.headers["Idempotency-Key"].startswith("trialdiff-")
    expected = "sha256=" + hmac.new(secret.encode(), arrived.body, hashlib.sha256).hexdigest()
    assert arrived.headers["X-Trialdiff-Signature"] == expected
    snippet = README_SNIPPET.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert snippet, "README lacks the verification snippet"
    namespace: dict[str, Any] = {}
    exec(snippet.group(1), namespace)
    header = arrived.headers["X-Trialdiff-Signature"]
    assert namespace["verify"](secret.encode(), arrived.body, header) is True
    assert namespace["verify"](secret.encode(), arrived.body + b" ", header) is False
    assert namespace["verify"](b"wrong", arrived.body, header) is False
    # The database holds a reference only; the secrets file holds the value, mode 0600.
    assert secret.encode() not in Path(db).read_bytes()
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert secret in secrets_file.read_text()


def test_a_503_stays_pending_and_notify_delivers_it_with_the_same_key(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver
) -> None:
    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "stops", "--fact", "stopped", "--to",
        f"http://user:hunter2@127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/stops")
    for number in (1, 2):
        import_day(db, alert_days, number)
    receiver.script = [503]
    code, out, err = import_day(db, alert_days, 3)
    assert code == 1  # the changes are stored; an alert is owed
    assert "import: 3 studies checked, 1 changed" in out
    assert "alerts: 0 delivered, 1 pending, 0 given up" in out
    assert "HTTP 503" in err and "hunter2" not in err and f"{receiver.url}: " in err
    assert receiver.refused == 1 and receiver.received == []
    code, out, _ = run(db, "alerts", "--pending")
    assert code == 0 and "stops  NCT06060392  1 change" in out and "pending" in out
    assert "hunter2" not in out and receiver.url in out
    # Nothing rolled back:
    assert len(changes_json(db, "NCT06060392", "--since", ALERT_DAYS[2])) == 3
    code, out, err = run(db, "notify")
    assert (code, err) == (0, "") and out == "alerts: 1 delivered, 0 pending, 0 given up\n"
    (arrived,) = receiver.at("/stops")
    assert [c["path"] for c in json.loads(arrived.body)["changes"]] == ["status.overallStatus"]
    assert run(db, "alerts", "--pending")[1] == ""
    assert "delivered  attempts 2" in run(db, "alerts")[1]
    assert run(db, "notify")[1] == ""  # nothing left: a second notify sends nothing
    assert len(receiver.at("/stops")) == 1
    assert "hunter2" not in Path(db).read_bytes().decode("utf-8", "replace")


def test_the_hostile_title_is_data_in_json_and_markdown(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver
) -> None:
    from trialdiff.notify import message_body, message_title

    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "titles", "--path", "identification", "--to", f"{receiver.url}/t")
    for number in (1, 2, 3):
        import_day(db, alert_days, number)
    body = bodies(receiver, "/t")[-1]
    (change,) = body["changes"]
    # As stored (whitespace folded), as data:
    assert change["new"] == " ".join(HOSTILE_TITLE.split())
    markdown = message_body("titles", body["changes"], {"NCT06060392": HOSTILE_TITLE})
    heading = next(line for line in markdown.splitlines() if line.startswith("### "))
    assert heading.startswith("### NCT06060392 \u2014 \\<script\\>alert(1)\\</script\\>")
    assert "\\*\\*bold\\*\\* \\[x\\](http://evil.example)" in heading
    import markdown as python_markdown  # what Apprise renders HTML mail with

    rendered = python_markdown.markdown(markdown)
    assert "<script>" not in rendered and "<strong>" not in rendered and "<a " not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    title = message_title("titles", "NCT06060392", body["changes"])
    assert "\n" not in title and title.startswith("NCT06060392: identification.briefTitle")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Message]]]:
    """Run a real SMTP server (aiosmtpd) on 127.0.0.1 that wants user / pa:ss."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    mails: list[Message] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            mails.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        good = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"user", b"pa:ss")
        return AuthResult(success=good)

    controller = Controller(Handler(), hostname="127.0.0.1", port=_free_port(),
                            authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield controller.port, mails
    finally:
        controller.stop()


def test_mailto_alerts_go_through_apprise_with_the_diff_escaped(
    tmp_path: Path, alert_days: list[Path], smtp: tuple[int, list[Message]], secrets_file: Path
) -> None:
    port, mails = smtp
    db = str(tmp_path / "t.db")
    url = (f"mailto://user:pa%3Ass@127.0.0.1:{port}?from=trialdiff@example.org"
           "&to=ops@example.org")
    code, _, err = run(db, "watch", "add", "mail", "--study", "NCT06060392", "--to", url)
    assert code == 0, err
    code, out, _ = run(db, "watch", "list")
    assert out == f"mail  studies NCT06060392  \u2192 mailto://127.0.0.1:{port}\n"
    for number in (1, 2, 3):
        assert import_day(db, alert_days, number)[0] == 0
    assert len(mails) == 2
    subject = str(email.header.make_header(email.header.decode_header(mails[1]["Subject"])))
    assert subject == "NCT06060392: status RECRUITING \u2192 TERMINATED (+2 more)"
    html = next(p for p in mails[1].walk() if p.get_content_type() == "text/html")
    text = html.get_payload(decode=True).decode("utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "TERMINATED" in text and "Sponsor decision" in text
    assert '<span style="font-family: monospace">RECRUITING</span>' in text
    # Apprise writes the text/plain part from the HTML, and started a line at every <code>.
    part = next(p for p in mails[1].walk() if p.get_content_type() == "text/plain")
    lines = part.get_payload(decode=True).decode("utf-8").splitlines()
    status = [line for line in lines if "status.overallStatus" in line]
    assert status == ["- status.overallStatus \u2014 changed (major): RECRUITING \u2192 "
                      "TERMINATED \u2014 stopped (TERMINATED)"]
    assert "pa%3Ass" not in Path(db).read_bytes().decode("utf-8", "replace")
    assert "pa%3Ass" in secrets_file.read_text()


def test_a_chat_message_longer_than_its_service_takes_arrives_split(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver, secrets_file: Path
) -> None:
    # Mattermost takes 4,000 characters a post (Discord 2,000): a longer digest was sent
    # whole, refused on every retry, and never arrived.
    db = str(tmp_path / "t.db")
    url = f"mmost://{receiver.url.removeprefix('http://')}/hooktoken"
    assert run(db, "watch", "add", "chat", "--digest", "--to", url)[0] == 0
    for number in (1, 2):
        assert import_day(db, alert_days, number)[0] == 0
    posts = [json.loads(r.body)["text"] for r in receiver.at("/hooks/hooktoken")]
    assert len(posts) > 1 and all(len(post) <= 4000 for post in posts)
    whole = "".join(posts)
    for nct_id in ALERT_STUDIES:
        assert nct_id in whole
    code, out, _ = run(db, "alerts")
    assert code == 0 and "delivered" in out and "pending" not in out


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_a_mail_send_records_the_send_so_it_is_not_sent_twice(
    tmp_path: Path, signum: int, code: int
) -> None:
    from aiosmtpd.controller import Controller

    events: list[str] = []

    class SlowHandler:  # holds the message a while before its 250, as a busy relay may
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            events.append("data")
            await asyncio.sleep(2)
            events.append("accepted")
            return "250 OK"

    controller = Controller(SlowHandler(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    db_path = str(tmp_path / "t.db")
    url = f"mailto://127.0.0.1:{controller.port}?from=a@example.org&to=b@example.org"
    try:
        alert_id = raise_alert(open_db(db_path), url)
        process = subprocess.Popen([sys.executable, "-m", "trialdiff", "--db", db_path, "notify"],
                                   env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signum)  # the server has the message, and has not answered yet
        _, err = process.communicate(timeout=30)
        assert process.returncode == code, err
        assert "Traceback" not in err and events == ["data", "accepted"]
        assert delivery(open_db(db_path), alert_id)["state"] == "delivered"
        assert run(db_path, "notify")[0] == 0 and events == ["data", "accepted"]  # not again
    finally:
        controller.stop()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_during_a_webhook_post_records_it_so_it_is_not_sent_twice(
    tmp_path: Path, signum: int, code: int
) -> None:
    # A month probe's `timeout --preserve-status` sync: the receiver had the POST and answered
    # 200, the stop left it pending, and the next sync posted it again (same key).
    db_path = str(tmp_path / "t.db")
    with WebhookReceiver(delay=2) as receiver:
        alert_id = raise_alert(open_db(db_path), f"{receiver.url}/hook")
        process = subprocess.Popen([sys.executable, "-m", "trialdiff", "--db", db_path, "notify"],
                                   env={**os.environ, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not receiver.arrived and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signum)  # the receiver has the POST, and has not answered yet
        _, err = process.communicate(timeout=30)
        assert process.returncode == code, err
        assert "Traceback" not in err and len(receiver.at("/hook")) == 1
        assert delivery(open_db(db_path), alert_id)["state"] == "delivered"
        assert run(db_path, "notify")[0] == 0 and len(receiver.at("/hook")) == 1  # not again


def test_an_unreachable_mail_server_leaves_the_alert_pending_and_says_so_redacted(
    tmp_path: Path, alert_days: list[Path]
) -> None:
    db = str(tmp_path / "t.db")
    url = (f"mailto://user:s3cretpw@127.0.0.1:{_free_port()}?from=trialdiff@example.org"
           "&to=ops@example.org")
    assert run(db, "watch", "add", "mail", "--fact", "stopped", "--to", url)[0] == 0
    for number in (1, 2):
        assert import_day(db, alert_days, number)[0] == 0
    code, out, err = import_day(db, alert_days, 3)
    assert code == 1 and "alerts: 0 delivered, 1 pending, 0 given up" in out
    assert re.match(r"trialdiff: alert: mail NCT06060392 \u2192 mailto://127\.0\.0\.1:\d+: ", err)
    assert "s3cretpw" not in err + out
    code, out, _ = run(db, "alerts", "--pending")
    assert re.match(r"1  mail  NCT06060392  1 change  run 3  mailto://127\.0\.0\.1:\d+  "
                    "pending  attempts 1", out)
    assert "s3cretpw" not in out
    assert "s3cretpw" not in Path(db).read_bytes().decode("utf-8", "replace")


def test_a_mail_server_that_refuses_the_recipient_is_quoted_in_the_error(
    tmp_path: Path, alert_days: list[Path]
) -> None:
    # A probe's 550 was reported as only `Sending email to "…" failed.`
    from aiosmtpd.controller import Controller

    class Refusing:
        async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                              options: list[str]) -> str:
            return "550 5.1.1 no such user"

    controller = Controller(Refusing(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        db = str(tmp_path / "t.db")
        url = f"mailto://127.0.0.1:{controller.port}?from=a@example.org&to=nobody@example.org"
        assert run(db, "watch", "add", "mail", "--fact", "stopped", "--to", url)[0] == 0
        for number in (1, 2, 3):
            code, _, err = import_day(db, alert_days, number)
    finally:
        controller.stop()
    assert code == 1 and "550" in err and "no such user" in err


def test_a_target_whose_url_does_not_parse_fails_alone(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An env: target is read only when sent: its unbalanced "[" once raised out of the
    # redaction of its error, stopping the pass with every other target's alert unsent.
    db = str(tmp_path / "t.db")
    monkeypatch.setenv("ODD_HOOK", "http://[::1/hook")
    assert run(db, "watch", "add", "odd", "--fact", "stopped", "--to", "env:ODD_HOOK")[0] == 0
    assert run(db, "watch", "add", "good", "--fact", "stopped", "--to",
               f"{receiver.url}/good")[0] == 0
    for number in (1, 2):
        assert import_day(db, alert_days, number)[0] == 0
    code, out, err = import_day(db, alert_days, 3)
    assert code == 1 and "alerts: 1 delivered, 1 pending, 0 given up" in out
    assert err.startswith("trialdiff: alert: odd NCT06060392 \u2192 env:ODD_HOOK: ")
    assert "unexpected" not in err and len(err.splitlines()) == 1
    assert len(receiver.at("/good")) == 1


def test_a_secrets_file_that_cannot_be_read_fails_its_deliveries_alone(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch, secrets_file: Path,
) -> None:
    # Naming the failed target read the secrets file again, which raised: the run's changes
    # were stored, but it exited 2 with the other targets' alerts unsent.
    db = str(tmp_path / "t.db")
    monkeypatch.setenv("GOOD_HOOK", f"{receiver.url}/good")
    assert run(db, "watch", "add", "kept", "--fact", "stopped", "--to",
               f"{receiver.url}/kept")[0] == 0  # kept in the secrets file
    assert run(db, "watch", "add", "env", "--fact", "stopped", "--to", "env:GOOD_HOOK")[0] == 0
    for number in (1, 2):
        assert import_day(db, alert_days, number)[0] == 0
    secrets_file.write_text("{bad json", encoding="utf-8")
    code, out, err = import_day(db, alert_days, 3)
    assert code == 1 and "alerts: 1 delivered, 1 pending, 0 given up" in out
    (line,) = err.splitlines()
    assert line.startswith("trialdiff: alert: kept NCT06060392 \u2192 config:")
    assert "cannot read the secrets file" in line
    assert len(receiver.at("/good")) == 1 and receiver.at("/kept") == []


def test_a_failed_delivery_waits_a_doubling_backoff_capped_at_six_hours(
    db_path: str, receiver: WebhookReceiver
) -> None:
    db = open_db(db_path)
    alert_id = raise_alert(db, f"{receiver.url}/s")
    receiver.script = [503, 503, 503]
    waits, now = [], None
    for _ in range(3):
        totals = deliver_pending(db, backoff=10_000, now=now)
        assert (totals.failed_now, totals.pending, totals.given_up) == (1, 1, 0)
        row = delivery(db, alert_id)
        waits.append(seconds_between(row["last_attempt_at"], row["next_attempt_at"]))
        # Not due yet: a pass before the retry time sends nothing and changes nothing.
        idle = deliver_pending(db, backoff=10_000, now=row["last_attempt_at"])
        assert (idle.failed_now, idle.delivered, idle.pending) == (0, 0, 1)
        assert delivery(db, alert_id) == row
        now = row["next_attempt_at"]
    assert waits == [10_000, 20_000, MAX_BACKOFF]  # backoff, doubled, then the 6-hour cap
    assert receiver.refused == 3 and receiver.received == []
    totals = deliver_pending(db, backoff=10_000, now=now)
    assert (totals.delivered, totals.failed_now, totals.pending) == (1, 0, 0)
    row = delivery(db, alert_id)
    assert (row["state"], row["attempts"], row["last_error"]) == ("delivered", 4, None)
    assert row["delivered_at"] == row["last_attempt_at"]


def test_the_webhook_is_rebuilt_from_the_stored_alert_byte_for_byte(
    db_path: str, receiver: WebhookReceiver
) -> None:
    db = open_db(db_path)
    alert_id = raise_alert(db, f"{receiver.url}/s", secret="whsec-rebuilt")
    assert deliver_pending(db).delivered == 1
    (arrived,) = receiver.at("/s")
    watch, run_json, key = db.execute("select watch, run, idempotency_key from alerts where id = ?",
                                      [alert_id]).fetchone()
    changes, titles = alert_changes(db, alert_id)
    body = webhook_body(watch, json.loads(run_json), changes, titles)
    assert arrived.body == body  # what a retry would send, from the rows alone
    assert arrived.headers["Idempotency-Key"] == key
    assert arrived.headers["X-Trialdiff-Signature"] == signature("whsec-rebuilt", body)
    assert changes  # so the bodies compared are not empty by accident
    # The study's title and page ride along: a probe's receiver had only the NCT id to show.
    assert json.loads(body)["studies"] == {"NCT06060392": {
        "title": None, "url": "https://clinicaltrials.gov/study/NCT06060392"}}  # no record


def test_an_old_alert_is_given_up_unsent_but_its_first_try_still_goes(
    db_path: str, receiver: WebhookReceiver
) -> None:
    db = open_db(db_path)
    tried = raise_alert(db, f"{receiver.url}/s")
    receiver.script = [503]
    assert deliver_pending(db, backoff=0).failed_now == 1
    untried = raise_alert(db, f"{receiver.url}/s", "NCT05827016")
    later = utc_timestamp((datetime.now(UTC) + timedelta(hours=2)).isoformat())
    totals = deliver_pending(db, backoff=0, max_age_hours=1, now=later)
    assert (totals.delivered, totals.failed_now, totals.given_up, totals.pending) == (1, 1, 1, 0)
    assert totals.errors == [f"stops NCT06060392 \u2192 {receiver.url}: "
                             "given up after 1 hour undelivered"]
    given_up = delivery(db, tried)
    # One POST was made: given up untried counts no attempt, and keeps that POST's time.
    assert (given_up["state"], given_up["attempts"]) == ("failed", 1)
    assert given_up["next_attempt_at"] is None and given_up["last_attempt_at"] < later
    code, out, _ = run(db_path, "alerts", "--failed")
    assert code == 0 and out.rstrip().endswith(
        f"failed  attempts 1  {given_up['last_attempt_at']}  given up after 1 hour undelivered; "
        "last error: HTTP 503")  # why it failed stays (a probe saw only the give-up)
    assert delivery(db, untried)["state"] == "delivered"
    raise_alert(db, f"{receiver.url}/s", "NCT05827016")  # one pending, beside the failed one
    both = run(db_path, "alerts", "--pending", "--failed")[1].splitlines()
    assert sorted(line.split("  ")[6] for line in both) == ["failed", "pending"]  # not the last
    # The given-up alert was not sent again: the one POST accepted is the untried one's.
    assert receiver.refused == 1
    assert [b["changes"][0]["nct_id"] for b in bodies(receiver, "/s")] == ["NCT05827016"]


def test_titles_put_the_most_severe_change_first_on_one_bounded_line() -> None:
    watch = Watch("all", ("env:HOOK",))
    kept = watch.select(sample_changes("NCT05827016", *CHANGE_DAYS))
    # Two changes are major; the status comes first in export order, so it heads the title.
    assert next(c["path"] for c in kept if c["severity"] == "major") == "status.overallStatus"
    assert message_title("all", "NCT05827016", kept) == (
        f"NCT05827016: status NOT_YET_RECRUITING \u2192 RECRUITING (+{len(kept) - 1} more)")
    other = watch.select(sample_changes("NCT06060392", *CHANGE_DAYS))
    assert message_title("all", "digest", kept + other) == (
        f"all: NCT05827016: status NOT_YET_RECRUITING \u2192 RECRUITING "
        f"(+{len(kept) + len(other) - 1} more) in 2 studies")
    dated = next(c for c in kept if c["path"] == "status.lastUpdatePostDate")
    assert message_title("all", "digest", [dated]) == (
        "all: NCT05827016: status.lastUpdatePostDate 2023-06-07 \u2192 2025-07-01 in 1 study")
    # A date whose type alone moved reads as the message's body shows it, not as JSON.
    actual = {**dated, "old": {"date": "2023-06-07", "type": "ESTIMATED"},
              "new": {"date": "2023-06-07", "type": "ACTUAL"}, "facts": {}}
    assert message_title("all", "NCT05827016", [actual]) == (
        "NCT05827016: status.lastUpdatePostDate 2023-06-07 ESTIMATED \u2192 2023-06-07 ACTUAL")
    # Every real change alone: one line, at most 200 characters, cut ones marked as cut.
    changes = watch.select(list(real_changes()))
    titles = {message_title("all", c["nct_id"], [c]) for c in changes}
    assert all("\n" not in t and len(t) <= TITLE_WIDTH for t in titles)
    cut = message_title("x" * 300, "digest", changes[:1])
    assert len(cut) == TITLE_WIDTH and cut.endswith("\u2026")
    # A site by its name, a list by its item: not a lower-cased key, nor cut-up JSON (a probe).
    assert {
        "NCT05827016: site Cleveland Clinic Florida, Weston, Florida, United States removed",
        "NCT05827016: site Augusta University - Georgia Cancer Center, Augusta, Georgia, United "
        "States: status \u2205 \u2192 RECRUITING",
        "NCT05827016: outcomes.secondary: Achievement of CR or better and maintaining "
        "MRD-negative st\u2026 reworded",
        "NCT06060392: references.references: Alkhouri N, Herring R, Kabler H, Kayali\u2026 type "
        "RESULT \u2192 BACKGROUND",
    } <= titles
    assert not [t for t in titles if "|" in t]  # no site's key
    # Hostile values: control characters are shown escaped, never sent raw.
    hostile = [message_title("h", "NCT00000001", [c]) for c in watch.select(list(HOSTILE))]
    assert len(hostile) == len(HOSTILE) and all(t.isprintable() for t in hostile)


def test_a_url_apprise_cannot_use_is_refused_up_front_redacted() -> None:
    with pytest.raises(UsageError) as refused:
        check_target("nosuchservice://T0KEN/abc")
    assert str(refused.value) == ("Apprise cannot use nosuchservice://\u2026: check the URL "
                                  "against its docs")
    check_target("https://hooks.example.org/T0KEN")  # webhooks need no Apprise
    check_target("slack://T1/B2/C3")


def test_a_target_in_capitals_or_with_blanks_around_it_is_the_url_it_names(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    # Both were refused as "Apprise cannot use http://127.0.0.1", though schemes are case-blind.
    db = str(tmp_path / "t.db")
    upper = receiver.url.replace("http://", "HTTP://", 1)
    assert run(db, "watch", "add", "a", "--to", f"{upper}/a", "--to", f" {receiver.url}/b ",
               "--to", f"{receiver.url}/a")[:2] == (0, "watch add: a \u2192 2 targets\n")


@pytest.mark.parametrize(("url", "shown"), [
    ("http://[::1/hook?token=T0KEN", "http://"),  # an unbalanced bracket: urlsplit refuses it
    ("https://hooks.example.org:T0KEN/hook", "https://hooks.example.org"),  # not a port
    ("https:///hook/T0KEN", "https://"),  # no host
])
def test_a_webhook_url_that_is_not_a_url_is_refused_and_nothing_is_stored(
    db_path: str, url: str, shown: str,
) -> None:
    open_db(db_path).close()
    code, out, err = run(db_path, "watch", "add", "hook", "--to", url)
    assert (code, out) == (2, "")
    assert err == (f"trialdiff: error: {shown} is not a URL a webhook can be sent to: give "
                   "http(s)://host/path\n")
    code, out, err = run(db_path, "watch", "list")  # once, such a URL broke every listing
    assert code == 0 and "hook" not in out and err == ""


TIMEOUT, BACKOFF, MAX_AGE = "0<x<=86400", "0<=x<=315360000", "0<x<=87600"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--alert-timeout", "0", f"0.0 is not in the range {TIMEOUT}"),
    ("--alert-timeout", "nan", "'nan' is not a number"),
    ("--alert-timeout", "-5", f"-5.0 is not in the range {TIMEOUT}"),
    ("--alert-timeout", "inf", f"inf is not in the range {TIMEOUT}"),
    # Past ~1e10 s the thread timer overflowed: a traceback in a delivery thread.
    ("--alert-timeout", "1e10", f"10000000000.0 is not in the range {TIMEOUT}"),
    ("--alert-backoff", "-1", f"-1.0 is not in the range {BACKOFF}"),
    ("--alert-backoff", "1e999", f"inf is not in the range {BACKOFF}"),
    ("--alert-max-age", "1e9", f"1000000000.0 is not in the range {MAX_AGE}"),
    ("--alert-max-age", "0", f"0.0 is not in the range {MAX_AGE}"),
])
def test_alert_settings_a_delivery_cannot_use_are_refused_before_any_run(
    db_path: str, option: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    variable = "TRIALDIFF_" + option.removeprefix("--").replace("-", "_").upper()
    for command in (["notify"], ["import", str(SAMPLE)], ["watch", "test", "w"]):
        code, out, err = run(db_path, *command, option, value)
        assert (code, out) == (2, "") and f"Invalid value for '{option}': {message}" in err
        # From cron's environment, the variable is named (it named the option).
        monkeypatch.setenv(variable, value)
        code, out, err = run(db_path, *command)
        monkeypatch.delenv(variable)
        assert (code, out) == (2, "") and (
            f"Invalid value for {variable} (the setting of '{option}'): {message}" in err)
    assert not Path(db_path).exists()  # neither opened the database: the import stored nothing


def test_the_library_holds_the_alert_settings_to_the_same_bounds(db_path: str) -> None:
    from trialdiff.notify import check_settings

    with pytest.raises(UsageError, match=r"^the alert timeout must be more than 0, at most "
                                         r"86400, not 10000000000\.0$"):
        check_settings(1e10, 300, 72)
    with pytest.raises(UsageError, match=r"^the alert max age must be more than 0"):
        check_settings(10, 300, 0)


def test_watch_test_sends_a_note_when_nothing_matched_and_names_a_lost_target(
    db_path: str, smtp: tuple[int, list[Message]], receiver: WebhookReceiver,
    secrets_file: Path
) -> None:
    port, mails = smtp
    mail = f"mailto://user:pa%3Ass@127.0.0.1:{port}?from=trialdiff@example.org&to=ops@example.org"
    assert run(db_path, "watch", "add", "w", "--to", f"{receiver.url}/hook", "--to", mail,
               "--to", f"{receiver.url}/lost")[0] == 0
    entries = json.loads(secrets_file.read_text())
    (lost,) = [ref for ref, url in entries.items() if url.endswith("/lost")]
    del entries[lost]
    secrets_file.write_text(json.dumps(entries))
    code, out, err = run(db_path, "watch", "test", "w")
    assert code == 1
    assert out.splitlines() == [f"watch test: {receiver.url}: delivered",
                                f"watch test: mailto://127.0.0.1:{port}: delivered"]
    assert err.startswith(f"trialdiff: watch test: config:{lost} (missing from the secrets "
                          f"file): config:{lost} is not in the secrets file")
    # No stored change matched: the webhook carries none, the mail is a plain note.
    (arrived,) = bodies(receiver, "/hook")
    assert arrived["changes"] == [] and arrived["run"]["command"] == "watch test"
    (note,) = mails
    subject = email.header.make_header(email.header.decode_header(note["Subject"]))
    assert str(subject) == "trialdiff: test of watch w"
    assert "This is a test message from trialdiff." in note.as_string()


def test_a_target_that_hangs_costs_one_timeout_a_pass_and_its_other_alerts_wait(
    db_path: str,
) -> None:
    # 300 alerts to a dead receiver were 300 timeouts under the write lock (50 minutes at 10 s),
    # while every cron sync and notify meanwhile exited 75.
    db = open_db(db_path)
    with WebhookReceiver(delay=3.0) as slow:
        for nct_id in ("NCT06060392", "NCT05827016", "NCT06060392"):
            raise_alert(db, f"{slow.url}/s", nct_id)
        started = time.monotonic()
        totals = deliver_pending(db, timeout=0.5)
        spent = time.monotonic() - started
    assert (totals.delivered, totals.failed_now, totals.pending) == (0, 1, 3)
    assert spent < 2.5
    assert totals.errors[-1] == (f"{slow.url}: 2 more alerts held for the next pass (it "
                                 "took the whole timeout)")  # shown as every target: its host
    attempts = [row[0] for row in db.execute("select attempts from deliveries order by id")]
    assert attempts == [1, 0, 0]  # the held ones were not tried: no backoff for them
