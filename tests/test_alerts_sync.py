"""Alerts from `sync` against the stand-in API: query scope, and SIGKILL at random moments."""

from __future__ import annotations

import copy
import json
import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import kill_after, real_records, run, trialdiff_process
from standin_api import StandinAPI
from webhook_receiver import WebhookReceiver

RECORDS = real_records()
IDS = sorted(r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS)
DAY1, DAY2 = "2026-05-11T06:00:00Z", "2026-05-12T06:00:00Z"
RELEASE1, RELEASE2 = "2026-05-11T09:00:00", "2026-05-12T09:00:00"  # a data release a day

pytestmark = pytest.mark.usefixtures("secrets_file")


def sync(db: str, api: StandinAPI, *args: str) -> tuple[int, str, str]:
    """Run `trialdiff sync` against the stand-in, without politeness delay."""
    return run(db, "sync", "--api", api.base_url, "--delay", "0", "--retries", "2",
               "--timeout", "2", *args, obj={"sleep": lambda seconds: None})


def record_of(nct_id: str) -> dict[str, Any]:
    """Return a real record."""
    return next(r for r in RECORDS
                if r["protocolSection"]["identificationModule"]["nctId"] == nct_id)


def edited(nct_id: str, stop: bool = True) -> dict[str, Any]:
    """Return a real record with a day's edit: stopped (or its completion slipped)."""
    record = copy.deepcopy(record_of(nct_id))
    status = record["protocolSection"]["statusModule"]
    if stop:
        status["overallStatus"] = "TERMINATED"
        status["whyStopped"] = "Sponsor decision"
    status.setdefault("completionDateStruct", {})["date"] = "2030-01-31"
    status["lastUpdatePostDateStruct"] = {"date": "2026-05-12", "type": "ACTUAL"}
    return record


def status_of(nct_id: str) -> str:
    """Return a real record's overall status."""
    status: str = record_of(nct_id)["protocolSection"]["statusModule"]["overallStatus"]
    return status


def test_a_query_watch_covers_the_studies_its_query_returns(
    db_path: str, api: StandinAPI
) -> None:
    completed = [i for i in IDS if status_of(i) == "COMPLETED"]
    other = next(i for i in IDS if status_of(i) != "COMPLETED")
    with WebhookReceiver() as receiver:
        assert run(db_path, "watch", "add", "done", "--query", "filter.overallStatus=COMPLETED",
                   "--to", f"{receiver.url}/done")[0] == 0
        assert run(db_path, "watch", "add", "mine", "--study", other, "--to",
                   f"{receiver.url}/mine")[0] == 0
        assert "query  filter.overallStatus=COMPLETED" in run(db_path, "tracked")[1]
        assert sync(db_path, api, "--at", DAY1)[0] == 0
        api.put_study(edited(completed[0], stop=False))
        api.put_study(edited(other))
        api.set_data_timestamp(RELEASE2)
        code, out, err = sync(db_path, api, "--at", DAY2)
        assert code == 0, err
        assert "alerts: 2 delivered, 0 pending, 0 given up" in out
        done = [json.loads(r.body) for r in receiver.at("/done")]
        mine = [json.loads(r.body) for r in receiver.at("/mine")]
    assert [{c["nct_id"] for c in b["changes"]} for b in done] == [{completed[0]}]
    assert [{c["nct_id"] for c in b["changes"]} for b in mine] == [{other}]
    assert done[0]["run"] == {"command": "sync", "id": 2, "started_at": done[0]["run"][
        "started_at"]}


def _kill_sync_at_random(db: str, api: StandinAPI, delay: float) -> None:
    """Start a real sync process and SIGKILL it after `delay` seconds."""
    kill_after(trialdiff_process(db, "sync", "--api", api.base_url, "--delay", "0.02",
                                 "--page-size", "3", "--at", DAY2, "--quiet"), delay)


def test_sync_killed_at_random_moments_then_rerun_loses_no_alert(
    tmp_path: Path, api: StandinAPI
) -> None:
    rng = random.Random(13)
    edited_ids = IDS[::3]
    with WebhookReceiver(delay=0.04) as receiver:
        for trial in range(3):
            db = str(tmp_path / f"crashed{trial}.db")
            api.set_studies(copy.deepcopy(RECORDS))
            api.set_data_timestamp(RELEASE1)
            run(db, "track", *IDS)
            run(db, "watch", "add", "each", "--to", f"{receiver.url}/each/{trial}")
            run(db, "watch", "add", "stops", "--fact", "stopped", "--digest", "--to",
                f"{receiver.url}/stops/{trial}")
            assert sync(db, api, "--at", DAY1)[0] == 0
            for nct_id in edited_ids:
                api.put_study(edited(nct_id))
            api.set_data_timestamp(RELEASE2)
            kills = 2
            for _ in range(kills):
                _kill_sync_at_random(db, api, rng.uniform(0.3, 2.5))
            code, _, err = sync(db, api, "--at", DAY2, "--page-size", "3")
            assert code == 0, err
            _check_every_alert_once(db, receiver, trial, kills, edited_ids)


def _check_every_alert_once(db: str, receiver: WebhookReceiver, trial: int, kills: int,
                            edited_ids: list[str]) -> None:
    """Every stored change went out under one key; repeats only with that key and body."""
    conn = sqlite3.connect(db)
    assert conn.execute("select count(*) from deliveries where state != 'delivered'"
                        ).fetchone() == (0,)
    keys = {row[0] for row in conn.execute("select idempotency_key from alerts")}
    stored = json.loads(run(db, "changes", "--format", "json")[1])
    for watch in ("each", "stops"):
        by_key: dict[str, list[bytes]] = defaultdict(list)
        for arrived in receiver.at(f"/{watch}/{trial}"):
            by_key[arrived.headers["Idempotency-Key"]].append(arrived.body)
        assert set(by_key) <= keys
        for bodies in by_key.values():
            assert len(set(bodies)) == 1 and len(bodies) <= 1 + kills
        sent = sorted((c for bodies in by_key.values() for c in json.loads(bodies[0])["changes"]),
                      key=lambda c: (c["nct_id"], c["path"]))
        if watch == "each":
            assert sent == sorted(stored, key=lambda c: (c["nct_id"], c["path"]))
        else:
            assert [(c["nct_id"], c["path"]) for c in sent] == [
                (i, "status.overallStatus") for i in sorted(edited_ids)
                if status_of(i) != "TERMINATED"]
    assert len(stored) > 3 * len(edited_ids)


def test_backfilled_history_raises_alerts_only_with_alert(tmp_path: Path) -> None:
    from conftest import version_pair

    nct_id = "NCT05827016"
    old, new = version_pair(nct_id)
    with StandinAPI([copy.deepcopy(new)]) as api, WebhookReceiver() as receiver:
        api.set_history(nct_id, [("2023-06-07", copy.deepcopy(old)),
                                 ("2025-07-01", copy.deepcopy(new))])
        for name, flags in (("quiet", ()), ("loud", ("--alert",))):
            db = str(tmp_path / f"{name}.db")
            run(db, "watch", "add", "status", "--path", "status.overallStatus", "--to",
                f"{receiver.url}/{name}")
            code, out, err = run(db, "backfill", nct_id, "--api", api.base_url, "--delay", "0",
                                 *flags)
            assert code == 0, err
            assert ("alerts: 1 delivered" in out) == bool(flags)
        assert receiver.at("/quiet") == []
        (arrived,) = receiver.at("/loud")
    (change,) = json.loads(arrived.body)["changes"]
    assert (change["path"], change["old"], change["new"], change["detected_at"]) == (
        "status.overallStatus", "NOT_YET_RECRUITING", "RECRUITING", "2025-07-01T00:00:00.000Z")


def test_a_backfill_after_a_sync_alerts_only_the_changes_it_leaves_stored(
    tmp_path: Path
) -> None:
    # Version 0 slotted in before the sync's snapshot made that snapshot's changes (dated by
    # the sync); version 1 then replaced them. Both were alerted: changes stored nowhere.
    from conftest import version_pair

    nct_id = "NCT05827016"
    old, new = version_pair(nct_id)
    db = str(tmp_path / "t.db")
    with StandinAPI([copy.deepcopy(new)]) as api, WebhookReceiver() as receiver:
        api.set_history(nct_id, [("2023-06-07", copy.deepcopy(old)),
                                 ("2025-07-01", copy.deepcopy(new))])
        run(db, "watch", "add", "all", "--to", f"{receiver.url}/all")
        sync = ("--api", api.base_url, "--delay", "0")
        assert run(db, "sync", nct_id, "--at", "2025-08-01T07:00:00Z", *sync)[0] == 0
        code, _, err = run(db, "backfill", nct_id, *sync, "--alert")
        assert code == 0, err
        (arrived,) = receiver.at("/all")
    sent = sorted((c["path"], c["kind"], c["detected_at"])
                  for c in json.loads(arrived.body)["changes"])
    stored = sorted(sqlite3.connect(db).execute("select path, kind, detected_at from changes"))
    assert sent == stored and len(stored) > 500
    assert {day for _, _, day in sent} == {"2025-07-01T00:00:00.000Z"}


def test_a_backfill_a_changed_shape_stops_still_sums_up_and_sends_what_it_stored(
    tmp_path: Path
) -> None:
    from conftest import version_pair

    good, bad = "NCT05827016", "NCT06060392"
    (old, new), (bad_old, bad_new) = version_pair(good), version_pair(bad)
    backwards = copy.deepcopy(bad_new)  # public before the version it follows: a new shape
    backwards["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2000-01-03"
    db = str(tmp_path / "t.db")
    with StandinAPI([copy.deepcopy(new), copy.deepcopy(bad_new)]) as api, \
            WebhookReceiver() as receiver:
        api.set_history(good, [("2023-06-07", copy.deepcopy(old)),
                               ("2025-07-01", copy.deepcopy(new))])
        api.set_history(bad, [("2023-11-18", copy.deepcopy(bad_old)), ("2025-06-13", backwards)])
        run(db, "watch", "add", "status", "--path", "status.overallStatus", "--to",
            f"{receiver.url}/w")
        code, out, err = run(db, "backfill", good, bad, "--api", api.base_url, "--delay", "0",
                             "--alert")
        assert code == 1 and "the version dates go backwards" in err
        # The first study's history was committed before the second stopped the run: its
        # summary is printed and its alert sent now, not left for the next run's delivery.
        assert out.splitlines()[-2].startswith("backfill: 2 studies checked, 1 changed, ")
        assert out.splitlines()[-1] == "alerts: 1 delivered, 0 pending, 0 given up"
        (arrived,) = receiver.at("/w")
    assert [c["nct_id"] for c in json.loads(arrived.body)["changes"]] == [good]
