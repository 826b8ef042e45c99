"""Alerts end to end: watch rules over real-record edits, delivered to real servers on loopback.

The observation days are conftest's `alert_days`: three days of real records, the last one
terminating NCT06060392 under a hostile title. A real HTTP receiver takes the alerts.
"""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import ALERT_DAYS, bodies, changes_json, import_day, run, sent_changes
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.usefixtures("secrets_file")


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
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver
) -> None:
    db = str(tmp_path / "t.db")
    for name, (options, _) in FILTER_WATCHES.items():
        assert run(db, "watch", "add", name, *options, "--to", f"{receiver.url}/{name}")[0] == 0
    for name, (fact, _) in FACT_WATCHES.items():
        assert run(db, "watch", "add", name, "--fact", fact, "--to",
                   f"{receiver.url}/{name}")[0] == 0
    for number in (1, 2, 3):
        code, out, err = import_day(db, alert_days, number)
        assert code == 0 and err == "", err
    assert "alerts: " in out and ", 0 pending, 0 given up" in out
    everything = changes_json(db)
    for name, (_, filters) in FILTER_WATCHES.items():
        assert sent_changes(receiver, f"/{name}") == in_order(changes_json(db, *filters)), name
    for name, (_, holds) in FACT_WATCHES.items():
        assert sent_changes(receiver, f"/{name}") == in_order(
            [c for c in everything if holds(c)]), name
    # What the real edits hold, so no expectation above is empty by accident.
    picked = {name: {(c["nct_id"], c["path"], c["detected_at"][:10]) for c in
                     sent_changes(receiver, f"/{name}")} for name in FACT_WATCHES}
    assert picked["stopped"] == {("NCT06060392", "status.overallStatus", "2025-07-03")}
    (stopped,) = bodies(receiver, "/stopped")
    title = sqlite3.connect(db).execute("select brief_title from studies where nct_id = "
                                        "'NCT06060392'").fetchone()[0]
    assert stopped["studies"] == {"NCT06060392": {
        "title": title, "url": "https://clinicaltrials.gov/study/NCT06060392"}} and title
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



def test_a_refused_watch_add_leaves_nothing_and_remove_needs_the_secrets_file(
    tmp_path: Path, secrets_file: Path
) -> None:
    # A target refused after another was kept left the study tracked and the other target's
    # URL in the secrets file; a remove that could not drop its targets removed the rule.
    db = str(tmp_path / "t.db")
    code, _, err = run(db, "watch", "add", "ok", "--to", "http://127.0.0.1:9/a", "--secret", "on")
    # A probe's 2-character key blanked out every "on" in errors: "C…nectError".
    assert code == 2 and "--secret is 2 characters: give at least 16" in err
    assert run(db, "watch", "add", "ok", "--to", "http://127.0.0.1:9/a", "--secret",
               "s3cret-of-16-chars") == (0, "watch add: ok \u2192 1 target\n", "")  # no target
    kept = secrets_file.read_text(encoding="utf-8")
    code, out, err = run(db, "watch", "add", "w1", "--study", "NCT06060392",
                         "--to", "http://127.0.0.1:9/b", "--to", "env:")
    assert (code, out) == (2, "") and "'env:' names no environment variable" in err
    code, out, err = run(db, "watch", "add", "w2", "--to", "http://127.0.0.1:9/c",
                         "--secret", "")
    assert (code, out) == (2, "") and "--secret '' is no secret" in err
    assert secrets_file.read_text(encoding="utf-8") == kept
    assert run(db, "tracked")[1] == ""  # NCT06060392 was not tracked
    secrets_file.write_text("{bad", encoding="utf-8")
    code, _, err = run(db, "watch", "remove", "ok")
    assert code == 2 and "secrets file" in err
    secrets_file.write_text(kept, encoding="utf-8")
    assert run(db, "watch", "list")[1].startswith("ok  every study")  # the rule stayed
    assert run(db, "watch", "remove", "ok")[0] == 0
    assert json.loads(secrets_file.read_text(encoding="utf-8")) == {}


def test_removing_a_watch_from_a_copy_leaves_the_originals_targets(
    tmp_path: Path, secrets_file: Path, receiver: WebhookReceiver, alert_days: list[Path]
) -> None:
    # A probe removed a watch from a staging copy: the original's alerts then failed, its
    # target gone from the secrets file they share.
    db, copy = str(tmp_path / "t.db"), str(tmp_path / "staging.db")
    assert run(db, "watch", "add", "a", "--fact", "stopped", "--to", f"{receiver.url}/a")[0] == 0
    shutil.copyfile(db, copy)
    code, out, err = run(copy, "watch", "remove", "a")
    assert (code, out) == (0, "watch remove: a\n") and "stay in the secrets file" in err
    for number in (1, 2, 3):
        assert import_day(db, alert_days, number)[0] == 0
    assert len(receiver.at("/a")) == 1  # the original still sends
    assert run(db, "watch", "remove", "a")[:2] == (0, "watch remove: a\n")
    assert json.loads(secrets_file.read_text(encoding="utf-8")) == {}  # its owner removed it


def test_env_targets_are_read_at_delivery_and_show_previews(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "slips", "--fact", "date_slip>=90", "--to", "env:SLIP_HOOK")
    for number in (1, 2):
        code, out, err = import_day(db, alert_days, number)
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


@pytest.mark.parametrize("digest", [False, True])
def test_a_study_refused_as_a_conflict_raises_no_alert(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver, digest: bool
) -> None:
    # Day 3 given again with the study stopped twice, once resumed: no version of it is stored,
    # so the changes its first copy raised are no news to send.
    db = str(tmp_path / "t.db")
    assert run(db, "watch", "add", "all", *(["--digest"] if digest else []),
               "--to", f"{receiver.url}/all")[0] == 0
    for number in (1, 2):
        assert import_day(db, alert_days, number)[0] == 0
    sent = len(receiver.at("/all"))
    stopped = json.loads((alert_days[2] / "NCT06060392.json").read_text())
    resumed = copy.deepcopy(stopped)
    resumed["protocolSection"]["statusModule"]["overallStatus"] = "RECRUITING"
    dump = tmp_path / "twice.ndjson"
    dump.write_text(f"{json.dumps(stopped)}\n{json.dumps(stopped)}\n{json.dumps(resumed)}\n")
    code, _, err = run(db, "import", "--at", ALERT_DAYS[2], str(dump))
    assert code == 1 and "a conflict, so no version of it was stored" in err
    assert len(receiver.at("/all")) == sent
    conn = sqlite3.connect(db)
    assert conn.execute("select count(*) from alerts a join runs r on r.id = a.run_id "
                        "where r.status = 'partial'").fetchone() == (0,)
    assert conn.execute("select count(*) from alert_changes c left join alerts a on "
                        "a.id = c.alert_id where a.id is null").fetchone() == (0,)
