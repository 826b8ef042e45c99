"""Alerts end to end: watch rules over real-record edits, delivered to real servers on loopback.

Three observation days of real records: day 1 and day 2 are the real older and newer versions
of NCT05827016, NCT06060392 and NCT04280705; day 3 is NCT06060392's newer record terminated,
with a hostile title. A real HTTP receiver and a real SMTP server (aiosmtpd) take the alerts.
"""

from __future__ import annotations

import copy
import email
import hashlib
import hmac
import json
import re
import socket
import sqlite3
import stat
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run, version_pair
from webhook_receiver import WebhookReceiver

STUDIES = ("NCT04280705", "NCT05827016", "NCT06060392")
DAYS = ("2025-07-01T07:00:00Z", "2025-07-02T07:00:00Z", "2025-07-03T07:00:00Z")
HOSTILE = '<script>alert(1)</script> **bold** [x](http://evil.example) `tick` | pipe\nSubject: x'


def terminated(record: dict[str, Any]) -> dict[str, Any]:
    """Return a real record as its sponsor would edit it to stop the study, title hostile."""
    edited = copy.deepcopy(record)
    status = edited["protocolSection"]["statusModule"]
    status["overallStatus"] = "TERMINATED"
    status["whyStopped"] = "Sponsor decision"
    edited["protocolSection"]["identificationModule"]["briefTitle"] = HOSTILE
    return edited


@pytest.fixture
def days(tmp_path: Path) -> list[Path]:
    """Write the three observation days as folders of records."""
    folders = [tmp_path / f"day{n}" for n in (1, 2, 3)]
    for folder in folders:
        folder.mkdir()
    for nct_id in STUDIES:
        older, newer = version_pair(nct_id)
        third = terminated(newer) if nct_id == "NCT06060392" else newer
        for folder, record in zip(folders, (older, newer, third), strict=True):
            (folder / f"{nct_id}.json").write_text(json.dumps(record), encoding="utf-8")
    return folders


@pytest.fixture(autouse=True)
def secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep each test's targets in its own secrets file; retry failed deliveries at once."""
    path = tmp_path / "config" / "secrets.json"
    monkeypatch.setenv("TRIALDIFF_SECRETS", str(path))
    monkeypatch.setenv("TRIALDIFF_ALERT_BACKOFF", "0")
    monkeypatch.setenv("TRIALDIFF_ALERT_TIMEOUT", "5")
    return path


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def import_day(db: str, days: list[Path], number: int) -> tuple[int, str, str]:
    """Import observation day `number` (1-based)."""
    return run(db, "import", "--summary", "--at", DAYS[number - 1], str(days[number - 1]))


def export(db: str, *filters: str) -> list[dict[str, Any]]:
    """Return `changes --format json` with some filters, parsed."""
    code, out, err = run(db, "changes", "--format", "json", *filters)
    assert code == 0, err
    parsed: list[dict[str, Any]] = json.loads(out)
    return parsed


def bodies(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """Return the parsed bodies that arrived at a path."""
    return [json.loads(r.body) for r in receiver.at(path)]


def sent_changes(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """Return every change the webhooks at a path carried, in export order."""
    found = [c for body in bodies(receiver, path) for c in body["changes"]]
    return sorted(found, key=lambda c: (c["detected_at"], c["nct_id"], c["path"]))


def in_order(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return changes in the order sent_changes uses."""
    return sorted(changes, key=lambda c: (c["detected_at"], c["nct_id"], c["path"]))


def facts_of(change: dict[str, Any]) -> dict[str, Any]:
    """Return a change's facts."""
    facts: dict[str, Any] = change["facts"]
    return facts


SLIPS = ("status.startDate", "status.primaryCompletionDate", "status.completionDate")
FACT_WATCHES: dict[str, tuple[str, Any]] = {
    "stopped": ("stopped", lambda c: facts_of(c).get("status", {}).get("stopped")),
    "results": ("results_posted", lambda c: facts_of(c).get("results_posted")),
    "actual": ("actualized", lambda c: facts_of(c).get("actualized")),
    "slip": ("date_slip>=90", lambda c: c["path"] in SLIPS
             and facts_of(c).get("date", {}).get("days", 0) >= 90),
    "enrol": ("enrollment_change>=50", lambda c: "enrollment" in facts_of(c)
              and abs(facts_of(c)["enrollment"]["delta_pct"]) >= 50),
    "greece": ("site_added:greece", lambda c: c["kind"] == "added"
               and c["path"].startswith("locations.") and c["new"]["country"] == "Greece"),
}
FILTER_WATCHES: dict[str, tuple[list[str], list[str]]] = {  # watch options, changes filters
    "status": (["--path", "status"], ["--path", "status"]),
    "gone": (["--path", "locations", "--kind", "removed"], ["--path", "locations", "--kind",
                                                            "removed"]),
    "major": (["--min-severity", "major"], ["--min-severity", "major"]),
    "one": (["--study", "NCT06060392"], ["NCT06060392"]),
}


def test_each_filter_and_fact_sends_exactly_its_changes(
    tmp_path: Path, days: list[Path], receiver: WebhookReceiver
) -> None:
    db = str(tmp_path / "t.db")
    for name, (options, _) in FILTER_WATCHES.items():
        assert run(db, "watch", "add", name, *options, "--to", f"{receiver.url}/{name}")[0] == 0
    for name, (fact, _) in FACT_WATCHES.items():
        assert run(db, "watch", "add", name, "--fact", fact, "--to",
                   f"{receiver.url}/{name}")[0] == 0
    for number in (1, 2, 3):
        code, out, err = import_day(db, days, number)
        assert code == 0 and err == "", err
    assert "alerts: " in out and ", 0 pending, 0 given up" in out
    everything = export(db)
    for name, (_, filters) in FILTER_WATCHES.items():
        assert sent_changes(receiver, f"/{name}") == in_order(export(db, *filters)), name
    for name, (_, holds) in FACT_WATCHES.items():
        assert sent_changes(receiver, f"/{name}") == in_order(
            [c for c in everything if holds(c)]), name
    # What the real edits hold, so no expectation above is empty by accident.
    picked = {name: {(c["nct_id"], c["path"], c["detected_at"][:10]) for c in
                     sent_changes(receiver, f"/{name}")} for name in FACT_WATCHES}
    assert picked["stopped"] == {("NCT06060392", "status.overallStatus", "2025-07-03")}
    assert picked["slip"] == {("NCT06060392", "status.completionDate", "2025-07-02"),
                              ("NCT06060392", "status.primaryCompletionDate", "2025-07-02")}
    assert picked["enrol"] == {("NCT04280705", "design.enrollmentCount", "2025-07-02")}
    assert len(picked["results"]) == 7 and {n for n, _, _ in picked["results"]} == {
        "NCT04280705"}
    assert ("NCT05827016", "status.startDate", "2025-07-02") in picked["actual"]
    assert len(picked["greece"]) >= 4
    # One message per study per run: day 2 changed all three studies, day 3 one.
    assert [len(b["changes"]) > 0 for b in bodies(receiver, "/major")] == [True] * 4
    assert {(b["run"]["id"], b["changes"][0]["nct_id"]) for b in bodies(receiver, "/major")} \
        == {(2, "NCT04280705"), (2, "NCT05827016"), (2, "NCT06060392"), (3, "NCT06060392")}


README_SNIPPET = re.compile(r"<!-- verify:start -->\n```python\n(.*?)```\n<!-- verify:end -->",
                            re.S)


def test_signed_webhooks_verify_with_the_readme_snippet(
    tmp_path: Path, days: list[Path], receiver: WebhookReceiver, secrets_file: Path
) -> None:
    db = str(tmp_path / "t.db")
    secret = "whsec-0123456789"
    run(db, "watch", "add", "signed", "--study", "NCT06060392", "--to", f"{receiver.url}/s",
        "--secret", secret)
    for number in (1, 2):
        import_day(db, days, number)
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


def test_a_digest_is_one_message_per_run_not_per_study(
    tmp_path: Path, days: list[Path], receiver: WebhookReceiver
) -> None:
    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "each", "--min-severity", "major", "--to", f"{receiver.url}/each")
    run(db, "watch", "add", "all", "--min-severity", "major", "--digest", "--to",
        f"{receiver.url}/all")
    for number in (1, 2, 3):
        import_day(db, days, number)
    each, digest = bodies(receiver, "/each"), bodies(receiver, "/all")
    assert len(each) == 4 and len(digest) == 2
    assert [len({c["nct_id"] for c in b["changes"]}) for b in each] == [1, 1, 1, 1]
    assert [sorted({c["nct_id"] for c in b["changes"]}) for b in digest] == [
        list(STUDIES), ["NCT06060392"]]
    assert sent_changes(receiver, "/each") == sent_changes(receiver, "/all")


def test_a_503_stays_pending_and_notify_delivers_it_with_the_same_key(
    tmp_path: Path, days: list[Path], receiver: WebhookReceiver
) -> None:
    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "stops", "--fact", "stopped", "--to",
        f"http://user:hunter2@127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/stops")
    for number in (1, 2):
        import_day(db, days, number)
    receiver.script = [503]
    code, out, err = import_day(db, days, 3)
    assert code == 1  # the changes are stored; an alert is owed
    assert "import: 3 studies checked, 1 changed" in out
    assert "alerts: 0 delivered, 1 pending, 0 given up" in out
    assert "HTTP 503" in err and "hunter2" not in err and "http://127.0.0.1" in err
    assert receiver.refused == 1 and receiver.received == []
    code, out, _ = run(db, "alerts", "--pending")
    assert code == 0 and "stops  NCT06060392  1 change" in out and "pending" in out
    assert "hunter2" not in out and "http://127.0.0.1" in out
    assert len(export(db, "NCT06060392", "--since", DAYS[2])) == 3  # nothing rolled back
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
    tmp_path: Path, days: list[Path], receiver: WebhookReceiver
) -> None:
    from trialdiff.notify import message_body, message_title

    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "titles", "--path", "identification", "--to", f"{receiver.url}/t")
    for number in (1, 2, 3):
        import_day(db, days, number)
    body = bodies(receiver, "/t")[-1]
    (change,) = body["changes"]
    assert change["new"] == " ".join(HOSTILE.split())  # as stored (whitespace folded), as data
    markdown = message_body("titles", body["changes"], {"NCT06060392": HOSTILE})
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
    tmp_path: Path, days: list[Path], smtp: tuple[int, list[Message]], secrets_file: Path
) -> None:
    port, mails = smtp
    db = str(tmp_path / "t.db")
    url = (f"mailto://user:pa%3Ass@127.0.0.1:{port}?from=trialdiff@example.org"
           "&to=ops@example.org")
    code, _, err = run(db, "watch", "add", "mail", "--study", "NCT06060392", "--to", url)
    assert code == 0, err
    code, out, _ = run(db, "watch", "list")
    assert out == "mail  studies NCT06060392  \u2192 mailto://127.0.0.1\n"
    for number in (1, 2, 3):
        assert import_day(db, days, number)[0] == 0
    assert len(mails) == 2
    subject = str(email.header.make_header(email.header.decode_header(mails[1]["Subject"])))
    assert subject == "NCT06060392: status RECRUITING \u2192 TERMINATED (+2 more)"
    html = next(p for p in mails[1].walk() if p.get_content_type() == "text/html")
    text = html.get_payload(decode=True).decode("utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "TERMINATED" in text and "Sponsor decision" in text
    assert "pa%3Ass" not in Path(db).read_bytes().decode("utf-8", "replace")
    assert "pa%3Ass" in secrets_file.read_text()


def test_watch_add_checks_targets_and_facts_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    db = str(tmp_path / "t.db")
    code, _, err = run(db, "watch", "add", "x", "--fact", "date_slip>90", "--to", "http://h/")
    assert code == 2 and "is not a fact" in err
    code, out, err = run(db, "watch", "add", "x", "--to", "hooks.example.org/TOKEN")
    assert (code, out) == (2, "")  # a forgotten https:// is named as such, the value unshown
    assert err == ("trialdiff: error: a target with no scheme (no ://) is not a URL: give "
                   "http://, https://, an Apprise URL or env:NAME\n")
    code, _, err = run(db, "watch", "add", "x", "--to", "slack://T1/B2/C3")
    assert code == 0, err
    monkeypatch.setitem(sys.modules, "apprise", None)  # as if the [notify] extra is missing
    code, out, err = run(db, "watch", "add", "y", "--to", "slack://T1SECRET/B2/C3")
    assert code == 2 and out == ""
    assert err == ("trialdiff: error: slack://\u2026 needs Apprise: pip install "
                   "'trialdiff[notify]' (only http:// and https:// webhooks work without it)\n")
    code, _, err = run(db, "watch", "add", "z", "--to", "env:HOOK_URL", "--study", "NCT06060392")
    assert code == 0, err
    code, out, _ = run(db, "watch", "list")
    assert out.splitlines() == ["x  every study  \u2192 slack://\u2026",
                                "z  studies NCT06060392  \u2192 env:HOOK_URL"]
    assert "NCT06060392  tracked" in run(db, "tracked")[1]  # a watched study is tracked
    assert run(db, "watch", "remove", "x")[0] == 0
    assert run(db, "watch", "remove", "x")[0] == 2


def test_env_targets_are_read_at_delivery_and_show_previews(
    tmp_path: Path, days: list[Path], receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "slips", "--fact", "date_slip>=90", "--to", "env:SLIP_HOOK")
    for number in (1, 2):
        code, out, err = import_day(db, days, number)
    assert code == 1 and "environment variable SLIP_HOOK is not set" in err
    monkeypatch.setenv("SLIP_HOOK", f"{receiver.url}/env")
    assert run(db, "notify")[1] == "alerts: 1 delivered, 0 pending, 0 given up\n"
    assert len(bodies(receiver, "/env")) == 1
    code, out, _ = run(db, "watch", "show", "slips", "--as-of", "2025-07-03")
    assert code == 0
    assert out.splitlines() == [
        "NCT06060392: status.completionDate 2025-03-01 \u2192 2025-11-01 (+1 more)",
        "  NCT06060392  2025-07-02  status.completionDate \u2014 changed (major)",
        "  NCT06060392  2025-07-02  status.primaryCompletionDate \u2014 changed (major)",
        "watch show: 1 message, 2 changes in 30 days",
    ]
    assert "0 messages" in run(db, "watch", "show", "slips", "--as-of", "2025-09-30")[1]
    code, out, _ = run(db, "watch", "test", "slips")
    assert (code, out) == (0, "watch test: env:SLIP_HOOK: delivered\n")


def test_alert_tables_arrive_by_migration(tmp_path: Path) -> None:
    from trialdiff.schema import SCHEMA_VERSION, open_db

    db = str(tmp_path / "t.db")
    open_db(db).close()
    conn = sqlite3.connect(db)
    for table in ("watches", "query_studies", "alerts", "alert_changes", "deliveries"):
        conn.execute(f"drop table {table}")
    conn.execute("update meta set value = ? where key = 'schema_version'",
                 [str(SCHEMA_VERSION - 1)])
    conn.commit()
    conn.close()
    upgraded = open_db(db)
    assert {"watches", "query_studies", "alerts", "alert_changes", "deliveries"} <= set(
        upgraded.table_names())


def test_an_unreachable_mail_server_leaves_the_alert_pending_and_says_so_redacted(
    tmp_path: Path, days: list[Path]
) -> None:
    db = str(tmp_path / "t.db")
    url = (f"mailto://user:s3cretpw@127.0.0.1:{_free_port()}?from=trialdiff@example.org"
           "&to=ops@example.org")
    assert run(db, "watch", "add", "mail", "--fact", "stopped", "--to", url)[0] == 0
    for number in (1, 2):
        assert import_day(db, days, number)[0] == 0
    code, out, err = import_day(db, days, 3)
    assert code == 1 and "alerts: 0 delivered, 1 pending, 0 given up" in out
    assert err.startswith("trialdiff: alert: mail NCT06060392 \u2192 mailto://127.0.0.1: ")
    assert "s3cretpw" not in err + out
    code, out, _ = run(db, "alerts", "--pending")
    assert out.startswith("1  mail  NCT06060392  1 change  run 3  mailto://127.0.0.1  "
                          "pending  attempts 1")
    assert "s3cretpw" not in out
    assert "s3cretpw" not in Path(db).read_bytes().decode("utf-8", "replace")


def test_watch_add_and_remove_wait_for_no_writer_they_exit_75(tmp_path: Path) -> None:
    from trialdiff.lock import WriteLock

    db = str(tmp_path / "t.db")
    assert run(db, "watch", "add", "x", "--to", "http://127.0.0.1:9/hook")[0] == 0
    with WriteLock(db, command="import"):  # another writer holds the database
        for args in (("watch", "add", "y", "--to", "http://127.0.0.1:9/hook"),
                     ("watch", "remove", "x")):
            code, out, err = run(db, *args)
            assert (code, out) == (75, "") and "(import)" in err
    rules = sqlite3.connect(db).execute("select name from watches").fetchall()
    assert rules == [("x",)]  # neither wrote anything
    assert run(db, "watch", "remove", "x")[0] == 0  # the lock was let go after each command
    assert run(db, "watch", "add", "y", "--to", "http://127.0.0.1:9/hook")[0] == 0
