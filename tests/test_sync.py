"""`trialdiff sync` against the stand-in API: exact change sets per day, faults, resumption."""

from __future__ import annotations

import copy
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import (
    FIXTURES,
    ROOT,
    SAMPLE,
    kill_after,
    real_records,
    run,
    trialdiff_env,
    trialdiff_process,
)
from standin_api import Fault, StandinAPI

from trialdiff.diff import changed_paths
from trialdiff.normalize import extract_fields

RECORDS = real_records()
FIXTURES_V2 = FIXTURES / "v2"
IDS = sorted(r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS)
DAY1, DAY2, DAY3 = "2026-05-11T06:00:00Z", "2026-05-12T06:00:00Z", "2026-05-13T06:00:00Z"


RELEASE1, RELEASE2, RELEASE3 = "2026-05-10T09:00:00", "2026-05-11T09:00:00", "2026-05-12T09:00:00"


API_OPTIONS = {"data_timestamp": RELEASE1}


WAITS: list[float] = []  # the in-process sync client's backoff waits, recorded, not slept


@pytest.fixture(autouse=True)
def backoff_waits() -> list[float]:
    """Return this test's recorded backoff waits (none yet)."""
    WAITS.clear()
    return WAITS


def sync(db: str, api: StandinAPI, *args: str) -> tuple[int, str, str]:
    """Run `trialdiff sync` against the stand-in with no politeness delay or real backoff."""
    return run(db, "sync", "--api", api.base_url, "--delay", "0", "--retries", "2",
               "--timeout", "2", *args, obj={"sleep": WAITS.append})


def problems(err: str) -> list[str]:
    """Return the error lines of stderr (progress log lines are not problems)."""
    return [line for line in err.splitlines() if line.startswith("trialdiff:") or
            "Traceback" in line]


def stored_changes(db: str) -> list[tuple[str, str, str, str]]:
    """Return every stored change as (nct_id, path, kind, detected_at), sorted."""
    conn = sqlite3.connect(db)
    return sorted(conn.execute("select nct_id, path, kind, detected_at from changes"))


def original(nct_id: str) -> dict[str, Any]:
    """Return the real record of a study."""
    return next(r for r in RECORDS if r["protocolSection"]["identificationModule"]["nctId"]
                == nct_id)


def edited(nct_id: str) -> dict[str, Any]:
    """Return a real record with a realistic day's edit: status moves, completion slips."""
    record = copy.deepcopy(original(nct_id))
    status = record["protocolSection"]["statusModule"]
    status["overallStatus"] = "TERMINATED"
    status["whyStopped"] = "Sponsor decision"
    status.setdefault("completionDateStruct", {})["date"] = "2030-01-31"
    status["lastUpdatePostDateStruct"] = {"date": "2026-05-12", "type": "ACTUAL"}
    record["derivedSection"] = {"miscInfoModule": {"versionHolder": "2026-05-12"}}
    return record


def test_days_of_edits_give_exact_change_sets(db_path: str, api: StandinAPI) -> None:
    assert run(db_path, "track", *IDS[:20])[0] == 0
    code, out, err = sync(db_path, api, "--at", DAY1)
    assert (code, problems(err)) == (0, [])
    assert "sync: saved a page of 20 (tracked studies)" in err  # not a terminal: log lines
    assert out.strip() == "sync: 20 studies checked, 0 changed, 0 changes, 0 failed"
    # /version, then one filter.ids request for 20 tracked studies.
    assert [r.path for r in api.requests] == ["/api/v2/version", "/api/v2/studies"]

    target = IDS[3]
    api.set_data_timestamp(RELEASE2)
    api.put_study(edited(target))
    for record in copy.deepcopy(RECORDS):  # a new data release re-stamps every record
        if record["protocolSection"]["identificationModule"]["nctId"] != target:
            record["derivedSection"]["miscInfoModule"]["versionHolder"] = "2026-05-12"
            api.put_study(record)
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2)
    assert code == 0
    assert out.splitlines()[-1] == (
        "sync: 20 studies checked, 1 changed, 4 changes (1 added, 3 changed), 0 failed"
    )
    assert stored_changes(db_path) == [
        (target, "status.completionDate", "changed", "2026-05-12T06:00:00.000Z"),
        (target, "status.lastUpdatePostDate", "changed", "2026-05-12T06:00:00.000Z"),
        (target, "status.overallStatus", "changed", "2026-05-12T06:00:00.000Z"),
        (target, "status.whyStopped", "added", "2026-05-12T06:00:00.000Z"),
    ]
    conn = sqlite3.connect(db_path)
    assert conn.execute("select data_timestamp from runs order by id desc").fetchone()[0]


def test_quiet_prints_only_news(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", *IDS[:5])
    for day in (DAY1, DAY2):
        code, out, err = sync(db_path, api, "--quiet", "--at", day)
        assert (code, out, problems(err)) == (0, "", [])
    api.put_study(edited(IDS[2]))
    api.set_data_timestamp(RELEASE2)
    code, out, _ = sync(db_path, api, "--quiet", "--at", DAY3)
    assert code == 0 and f"{IDS[2]}  status.overallStatus" in out


def test_a_sync_with_nothing_tracked_says_so_even_quiet(db_path: str, api: StandinAPI) -> None:
    # A probe's cron job, set up as the README's cron section says, printed nothing and exited
    # 0 every day: no step had tracked a study.
    code, out, err = sync(db_path, api, "--quiet")
    assert (code, out) == (0, "") and err == (
        "trialdiff: sync: nothing is tracked, so nothing was fetched: run "
        "`trialdiff track NCT...` (or `track --query EXPR`) first\n")
    assert run(db_path, "track", IDS[0])[0] == 0
    assert sync(db_path, api, "--quiet")[2] == ""


def test_a_failed_page_stores_nothing_and_exits_1(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", *IDS[:6])
    api.add_fault(Fault("truncate", path_prefix="/api/v2/studies", times=10))
    code, out, err = sync(db_path, api, "--at", DAY1, "--page-size", "3")
    assert code == 1
    assert "200 with an invalid body" in err and "Traceback" not in err
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from snapshots").fetchone()[0] == 0
    assert out.strip().endswith("0 studies checked, 0 changed, 0 changes, 2 failed")  # 2 batches


def test_html_from_a_proxy_is_retried(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", *IDS[:4])
    api.add_fault(Fault("html", path_prefix="/api/v2/studies"))
    api.add_fault(Fault("status", status=429, headers={"Retry-After": "0"},
                        path_prefix="/api/v2/studies"))
    code, out, _ = sync(db_path, api, "--at", DAY1)
    assert code == 0 and "4 studies checked" in out
    assert [r.path for r in api.requests].count("/api/v2/studies") == 3


def test_studies_that_leave_scope_or_move_are_events(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", *IDS[:4])
    sync(db_path, api, "--at", DAY1)
    api.remove_study(IDS[0])
    api.remove_study(IDS[1])
    api.set_aliases({IDS[1]: IDS[10]})
    api.set_data_timestamp(RELEASE2)
    code, out, err = sync(db_path, api, "--at", DAY2)
    assert code == 1  # a tracked study is gone: the user should hear of it
    assert f"{IDS[0]}  (left scope)" in out
    assert [line for line in err.splitlines() if line.startswith("trialdiff:")] == [
        f"trialdiff: {IDS[0]}: not returned by the API (404)"]  # as every failed input
    assert f"{IDS[1]}  (moved \u2192 {IDS[10]})" in out
    conn = sqlite3.connect(db_path)
    events = conn.execute("select nct_id, kind, detail from events order by id").fetchall()
    assert events == [(IDS[0], "left_scope", json.dumps({"answer": "404"})),
                      (IDS[1], "moved", json.dumps({"moved_to": IDS[10]}))]
    _, listing, _ = run(db_path, "tracked")
    assert f"{IDS[0]}  missing" in listing and f"{IDS[10]}  tracked" in listing
    api.set_data_timestamp(RELEASE3)
    code, out, _ = sync(db_path, api, "--at", DAY3)  # still gone: not reported again
    assert code == 0 and "left scope" not in out


def test_a_study_that_moved_is_an_event_when_a_batch_answers_for_its_old_id(
    db_path: str, api: StandinAPI
) -> None:
    # The registry's new record lists the old id in nctIdAliases, so filter.ids finds it by
    # the old id: a batch of two or more (any watchlist at the default page size) answered
    # with it, the old id was marked seen, and the move was never recorded nor printed.
    run(db_path, "track", *IDS[:4])
    sync(db_path, api, "--at", DAY1)
    moved = copy.deepcopy(next(r for r in RECORDS if r["protocolSection"][
        "identificationModule"]["nctId"] == IDS[1]))
    ident = moved["protocolSection"]["identificationModule"]
    ident["nctId"], ident["nctIdAliases"] = "NCT09900001", [IDS[1]]
    api.remove_study(IDS[1])
    api.put_study(moved)
    api.set_data_timestamp(RELEASE2)
    code, out, err = sync(db_path, api, "--quiet", "--at", DAY2)
    assert (code, problems(err)) == (0, [])
    assert f"{IDS[1]}  (moved \u2192 NCT09900001)" in out  # --quiet prints it
    assert not any(r.path.startswith(f"/api/v2/studies/{IDS[1]}") for r in api.requests)
    conn = sqlite3.connect(db_path)
    assert conn.execute("select nct_id, kind, detail from events").fetchall() == [
        (IDS[1], "moved", json.dumps({"moved_to": "NCT09900001"}))]
    _, listing, _ = run(db_path, "tracked")
    assert f"{IDS[1]}  moved \u2192 NCT09900001" in listing
    assert "NCT09900001  tracked" in listing
    api.set_data_timestamp(RELEASE3)
    code, out, _ = sync(db_path, api, "--quiet", "--at", DAY3)  # moved once: not again
    assert code == 0 and "moved" not in out


def test_a_study_back_from_missing_is_returned_even_if_the_run_that_saw_it_stopped(
    db_path: str, api: StandinAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(db_path, "track", *IDS[:4])
    sync(db_path, api, "--at", DAY1)
    gone = next(r for r in RECORDS if r["protocolSection"]["identificationModule"][
        "nctId"] == IDS[0])
    api.remove_study(IDS[0])
    api.set_data_timestamp(RELEASE2)
    assert sync(db_path, api, "--at", DAY2)[0] == 1  # left scope: missing
    api.put_study(gone)
    api.set_data_timestamp(RELEASE3)
    # The run is stopped in the batch after the one that holds it: the `returned` event used
    # to be recorded only after every batch, so the rerun (which does not fetch a batch
    # fetched under this release again) never recorded it, until the next release.
    import trialdiff.sync as sync_module

    batches: list[list[str]] = []

    def second_stops(client: Any, batch: list[str]) -> Any:
        batches.append(batch)
        if len(batches) == 2:
            raise KeyboardInterrupt
        return fetch_batch(client, batch)

    fetch_batch = sync_module.fetch_batch
    monkeypatch.setattr(sync_module, "fetch_batch", second_stops)
    assert sync(db_path, api, "--at", DAY3, "--page-size", "2")[0] == 130
    assert batches[0] == IDS[:2]
    monkeypatch.undo()
    assert sync(db_path, api, "--at", DAY3, "--page-size", "2")[0] == 0  # the rerun
    conn = sqlite3.connect(db_path)
    kinds = [row[0] for row in conn.execute("select kind from events order by id")]
    assert kinds == ["left_scope", "returned"]
    _, listing, _ = run(db_path, "tracked")
    assert f"{IDS[0]}  tracked" in listing


def test_one_id_the_api_does_not_know_is_asked_once_and_named_on_stderr(
    db_path: str, api: StandinAPI
) -> None:
    code, out, err = sync(db_path, api, "NCT99999999", "--at", DAY1)
    assert code == 1
    assert err == "trialdiff: NCT99999999: not returned by the API (404)\n"
    assert out == "sync: 0 studies checked, 0 changed, 0 changes, 1 failed\n"
    assert [r.path for r in api.requests].count("/api/v2/studies/NCT99999999") == 1


def test_a_tracked_id_the_api_never_returned_fails_on_every_sync_and_leaves_no_scope(
    db_path: str, api: StandinAPI
) -> None:
    # A typo tracked: "left scope" would say it was once in scope, and only once.
    run(db_path, "track", "NCT09999999", IDS[0])
    for day, release in ((DAY1, None), (DAY2, RELEASE2)):
        if release:
            api.set_data_timestamp(release)
        code, out, err = sync(db_path, api, "--at", day)
        assert code == 1 and "left scope" not in out
        assert [line for line in err.splitlines() if line.startswith("trialdiff:")] == [
            "trialdiff: NCT09999999: not returned by the API (404)"]
    assert sqlite3.connect(db_path).execute("select count(*) from events").fetchone() == (0,)


def test_one_tracked_study_leaving_scope_is_one_event(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", IDS[0])
    sync(db_path, api, "--at", DAY1)
    api.remove_study(IDS[0])
    api.set_data_timestamp(RELEASE2)
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2)
    assert code == 1 and out.count(f"{IDS[0]}  (left scope)") == 1
    assert [r.path for r in api.requests].count(f"/api/v2/studies/{IDS[0]}") == 1
    assert sqlite3.connect(db_path).execute(
        "select count(*) from events where kind = 'left_scope'").fetchone() == (1,)


def test_a_typo_is_asked_again_and_named_by_every_sync_under_one_release(
    db_path: str, api: StandinAPI
) -> None:
    # A probe's second sync under the same release skipped the 404'd typo and exited 0.
    assert run(db_path, "track", "NCT09999999", IDS[0])[0] == 0
    for at in (DAY1, DAY2):
        code, _, err = sync(db_path, api, "--at", at)
        assert code == 1 and "NCT09999999: not returned by the API (404)" in err, at
    assert [r.path for r in api.requests].count("/api/v2/studies/NCT09999999") == 2


@pytest.mark.parametrize("tracked", [1, 2])  # one id is asked alone; two in a batch
def test_a_record_refused_by_a_wrong_at_is_asked_again_under_the_same_release(
    db_path: str, api: StandinAPI, tracked: int
) -> None:
    # The refused record's ETag (and its fetched_release) were kept: the next sync took it as
    # stored, a 304 or the release skipped it, and the edit was lost even with --force.
    ids, target = IDS[:tracked], IDS[0]
    assert run(db_path, "track", *ids)[0] == 0
    assert sync(db_path, api, "--at", DAY2)[0] == 0
    api.set_data_timestamp(RELEASE2)
    api.put_study(edited(target))
    code, _, err = sync(db_path, api, "--at", DAY1)  # a slip: older than what is stored
    assert code == 1 and f"{target}" in err
    assert sync(db_path, api, "--at", DAY3)[0] == 0
    assert ("status.overallStatus", "changed") in [
        (path, kind) for nct_id, path, kind, _ in stored_changes(db_path) if nct_id == target]


def test_a_query_whose_study_was_refused_keeps_its_window(db_path: str, api: StandinAPI) -> None:
    target = IDS[0]
    query = f"filter.ids={target}"
    assert run(db_path, "track", "--query", query)[0] == 0
    assert sync(db_path, api, "--at", DAY2)[0] == 0
    api.set_data_timestamp(RELEASE2)
    api.put_study(edited(target))
    assert sync(db_path, api, "--at", DAY1)[0] == 1
    assert sqlite3.connect(db_path).execute(
        "select substr(last_synced_at, 1, 10), fetched_release from queries").fetchone() == (
        DAY2[:10], RELEASE1)
    assert sync(db_path, api, "--at", DAY3)[0] == 0
    assert (target, "status.overallStatus", "changed", DAY3.replace("Z", ".000Z")) in (
        stored_changes(db_path))


def test_a_query_whose_page_held_a_record_without_an_id_keeps_its_window(
    db_path: str, api: StandinAPI
) -> None:
    # A probe: the failed item was reported once, but the window moved on, so the study it
    # stood for was never asked again (a later run asks only for what was updated since).
    target, other = IDS[0], IDS[1]
    by_id = {r["protocolSection"]["identificationModule"]["nctId"]: r for r in RECORDS}
    anonymous = copy.deepcopy(by_id[target])
    del anonymous["protocolSection"]["identificationModule"]["nctId"]
    assert run(db_path, "track", "--query", f"filter.ids={target},{other}")[0] == 0
    api.add_fault(Fault("status", status=200, times=1, path_prefix="/api/v2/studies",
                        body=json.dumps({"studies": [anonymous, by_id[other]]}),
                        headers={"Content-Type": "application/json"}))
    code, _, err = sync(db_path, api, "--at", DAY1)
    assert code == 1 and "not a study: no nctId" in err
    conn = sqlite3.connect(db_path)
    assert conn.execute("select last_synced_at, fetched_release from queries").fetchone() == (
        None, None)
    assert sync(db_path, api, "--at", DAY2)[0] == 0
    assert conn.execute("select nct_id from studies order by 1").fetchall() == [
        (target,), (other,)]


def test_saved_queries_run_whole_then_incrementally(db_path: str, api: StandinAPI) -> None:
    code, out, _ = run(db_path, "track", "--query", "filter.overallStatus=COMPLETED")
    assert code == 0 and out == "track: 0 new studies, 1 new query\n"
    sync(db_path, api, "--at", DAY1)
    first = [r for r in api.requests if r.path == "/api/v2/studies"]
    assert first[0].query["filter.overallStatus"] == "COMPLETED"
    assert "filter.advanced" not in first[0].query
    api.clear_requests()
    api.set_data_timestamp(RELEASE2)
    sync(db_path, api, "--at", DAY2)
    second = [r for r in api.requests if r.path == "/api/v2/studies"]
    # The day before the earlier of the last run's day and its release's (2026-05-10).
    assert second[0].query["filter.advanced"] == (
        "AREA[LastUpdatePostDate]RANGE[2026-05-09,MAX]"
    )
    assert run(db_path, "track", "--query", "pageSize=5")[0] == 2


def test_a_query_window_follows_the_registrys_release_and_force_fetches_it_whole(
    db_path: str, api: StandinAPI
) -> None:
    # A probe's machine clock ran ahead of the registry: the window began the day before the
    # machine's date, after every edit of the next release, and --force did not widen it.
    assert run(db_path, "track", "--query", "filter.overallStatus=COMPLETED")[0] == 0
    sync(db_path, api, "--at", "2026-11-20T06:00:00Z")  # under RELEASE1, 2026-05-10
    api.clear_requests()
    api.set_data_timestamp(RELEASE2)
    sync(db_path, api, "--at", "2026-11-21T06:00:00Z")
    (window,) = [r.query.get("filter.advanced") for r in api.requests
                 if r.path == "/api/v2/studies"][:1]
    assert window == "AREA[LastUpdatePostDate]RANGE[2026-05-09,MAX]"
    api.clear_requests()
    sync(db_path, api, "--force", "--at", "2026-11-22T06:00:00Z")
    assert [r.query.get("filter.advanced") for r in api.requests
            if r.path == "/api/v2/studies"][:1] == [None]  # whole


def test_sync_from_a_bulk_source(db_path: str, tmp_path: Path) -> None:
    dump = tmp_path / "dump.ndjson"
    dump.write_text("\n".join(json.dumps(r) for r in RECORDS[:5]))
    code, out, _ = run(db_path, "sync", "--source", str(dump), "--at", DAY1)
    assert code == 0 and "5 studies checked" in out


def test_sync_from_a_dump_takes_the_studies_a_saved_query_returned(
    db_path: str, api: StandinAPI, tmp_path: Path
) -> None:
    # With a query and one tracked id, the query's studies in the dump were skipped; with a
    # query alone, every study in the dump was stored.
    members = [r for r in RECORDS if r["protocolSection"]["statusModule"]["overallStatus"]
               == "COMPLETED"][:3]
    api.set_studies(copy.deepcopy(members))
    assert run(db_path, "track", "--query", "filter.overallStatus=COMPLETED", IDS[-1])[0] == 0
    sync(db_path, api, "--at", DAY1)
    dump = tmp_path / "dump.ndjson"
    dump.write_text("\n".join(json.dumps(r) for r in RECORDS))
    code, out, _ = run(db_path, "sync", "--source", str(dump), "--at", DAY2)
    assert code == 0 and "sync: 4 studies checked" in out
    stored = {n for (n,) in sqlite3.connect(db_path).execute("select nct_id from studies")}
    assert stored == {IDS[-1]} | {r["protocolSection"]["identificationModule"]["nctId"]
                                  for r in members}


def test_a_study_that_leaves_a_querys_results_is_fetched_by_id_and_its_change_stored(
    db_path: str, api: StandinAPI
) -> None:
    # A RECRUITING filter's study that stopped is no longer in its results: it was never seen
    # again, so a query watch's `--fact stopped` could never fire.
    recruiting = sorted(r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS
                        if r["protocolSection"]["statusModule"]["overallStatus"] == "RECRUITING")
    target = recruiting[0]
    assert run(db_path, "track", "--query", "filter.overallStatus=RECRUITING")[0] == 0
    assert sync(db_path, api, "--at", DAY1)[0] == 0
    api.set_data_timestamp(RELEASE2)
    api.put_study(edited(target))  # TERMINATED, updated 2026-05-12
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY3)
    assert code == 0 and f"{target}  status.overallStatus \u2014 changed: " in out
    leavers = studies_requests(api)[-1][1].split(",")
    # Every study it returned before, asked in its window: only the edited one answers.
    assert sorted(leavers) == recruiting
    assert sqlite3.connect(db_path).execute(
        "select count(*) from changes where nct_id != ?", [target]).fetchone() == (0,)
    # A proxy's shorter URL limit (414) halves the batch, as for tracked studies.
    asked = api.requests[-1]
    whole = len(f"{asked.path}?{urlencode(asked.query)}")  # as the client writes it
    api.max_url = whole - len("NCT00000000%2C") * (len(recruiting) // 2)
    api.set_data_timestamp(RELEASE3)
    api.put_study(edited(recruiting[1]))
    api.clear_requests()
    code, out, err = sync(db_path, api, "--at", "2026-05-14T06:00:00Z")
    assert code == 0 and f"{recruiting[1]}  status.overallStatus" in out, err
    assert len([r for r in api.requests if r.query.get("filter.ids")]) >= 2


def test_sync_refuses_an_archive_of_dated_folders_before_any_run(db_path: str) -> None:
    code, out, err = run(db_path, "sync", "--source", str(SAMPLE))
    assert (code, out) == (2, "")
    assert err == (f"trialdiff: error: {SAMPLE} is an archive of dated folders, one observation "
                   "a day: `trialdiff import` replays it day by day; sync reads one dump\n")
    assert not Path(db_path).exists()


def test_sync_from_a_dump_parses_only_tracked_lines_whose_bytes_moved(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orjson

    import trialdiff.ingest
    import trialdiff.sources

    def day(records: list[dict[str, Any]], stamp: str) -> Path:
        path = tmp_path / f"{stamp}.ndjson"
        lines = []
        for record in records:
            record = copy.deepcopy(record)
            record["derivedSection"]["miscInfoModule"]["versionHolder"] = stamp
            lines.append(orjson.dumps(record))
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path

    tracked = [r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS[:3]]
    assert run(db_path, "track", *tracked)[0] == 0
    assert run(db_path, "sync", "--source", str(day(RECORDS, "2025-07-06")), "--at", DAY1)[0] == 0
    edited = copy.deepcopy(RECORDS)
    edited[1]["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    # A record that does not open with its id (another key first) is parsed to learn its id.
    edited[10] = {"aaa": 1, **edited[10]}
    parses: list[str] = []
    for module in (trialdiff.sources, trialdiff.ingest):
        real = module.parsed
        monkeypatch.setattr(module, "parsed",
                            lambda item, real=real: parses.append(item.label) or real(item))
    dump = day(edited, "2025-07-07")
    code, out, _ = run(db_path, "sync", "--source", str(dump), "--at", DAY2)
    assert code == 0 and out.endswith("sync: 3 studies checked, 1 changed, 1 change "
                                      "(1 changed), 0 failed\n")
    assert sorted(set(parses)) == [f"{dump}:11", f"{dump}:2"]  # the disguised line, the edit
    stored = sqlite3.connect(db_path).execute("select distinct nct_id from studies").fetchall()
    assert sorted(n for (n,) in stored) == sorted(tracked)


def test_a_second_writer_exits_75_naming_the_holder(db_path: str, api: StandinAPI) -> None:
    from trialdiff.lock import WriteLock

    with WriteLock(db_path, command="sync"):
        code, out, err = sync(db_path, api)
        assert code == 75 and out == ""
        assert f"pid {os.getpid()} (sync) since 20" in err
        code, _, _ = run(db_path, "recent", IDS[0])  # readers are never blocked
        assert code in (0, 1)


def _kill_sync_at_random(db: str, api: StandinAPI, at: str, seed: int) -> None:
    """Start a real sync process and SIGKILL it at a random moment."""
    kill_after(trialdiff_process(db, "sync", "--api", api.base_url, "--delay", "0.05",
                                 "--page-size", "3", "--at", at, "--quiet"),
               random.Random(seed).uniform(0.2, 1.2))


def test_a_killed_sync_resumes_without_losing_or_doubling_changes(
    tmp_path: Path, api: StandinAPI
) -> None:
    reference, crashed = str(tmp_path / "reference.db"), str(tmp_path / "crashed.db")
    for db in (reference, crashed):
        run(db, "track", *IDS)
        sync(db, api, "--at", DAY1, "--page-size", "3")
    for nct_id in IDS[::3]:
        api.put_study(edited(nct_id))
    api.set_data_timestamp(RELEASE2)
    assert sync(reference, api, "--at", DAY2, "--page-size", "3")[0] == 0
    for seed in range(4):
        _kill_sync_at_random(crashed, api, DAY2, seed)
        assert sqlite3.connect(crashed).execute("pragma integrity_check").fetchone() == ("ok",)
    code, _, err = sync(crashed, api, "--at", DAY2, "--page-size", "3")
    assert code == 0, err
    assert stored_changes(crashed) == stored_changes(reference)
    expected = sum(len(changed_paths(extract_fields(original(i)), extract_fields(edited(i))))
                   for i in IDS[::3])
    assert len(stored_changes(reference)) == expected > 3 * len(IDS[::3])


def test_on_a_terminal_sync_shows_a_progress_bar(db_path: str, api: StandinAPI) -> None:
    import pty

    run(db_path, "track", *IDS)
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", db_path, "sync", "--api", api.base_url,
         "--delay", "0.3", "--page-size", "5", "--at", DAY1],
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", "TERM": "xterm"},
        stdout=subprocess.PIPE, stderr=slave,
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=60) == 0
    assert process.stdout is not None
    assert b"28 studies checked" in process.stdout.read()
    assert "\u2501".encode() in seen  # rich's bar, drawn on the terminal (stderr)
    assert b"saved a page" not in seen  # log lines are for logs, not terminals


def test_a_failed_batch_is_reported_and_the_next_batches_are_done(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "track", *IDS[:9])
    api.add_fault(Fault("status", status=503, path_prefix="/api/v2/studies", times=3))
    code, out, err = sync(db_path, api, "--at", DAY1, "--page-size", "3")
    assert code == 1
    assert f"trialdiff: tracked studies {IDS[0]}..{IDS[2]}: " in err and "503" in err
    assert out.strip().endswith("6 studies checked, 0 changed, 0 changes, 1 failed")
    assert "left scope" not in out  # a failed batch is not a study gone
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from snapshots").fetchone()[0] == 6
    assert conn.execute("select count(*) from events").fetchone()[0] == 0


def studies_requests(api: StandinAPI) -> list[tuple[str, str]]:
    """Return each request after /version as (path, filter.ids or query), in order."""
    return [(r.path, r.query.get("filter.ids", "")) for r in api.requests
            if r.path != "/api/v2/version"]


def test_a_batch_refused_because_of_one_id_is_split_down_to_that_id(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "track", *IDS[:8], "--query", "filter.overallStatus=COMPLETED")
    api.reject_ids([IDS[5]])
    code, out, err = sync(db_path, api, "--at", DAY1, "--page-size", "8")
    assert code == 1
    assert problems(err) == [
        f"trialdiff: {IDS[5]}: /studies/{IDS[5]}: the API refused the request (400): "
        f"invalid NCT number '{IDS[5]}'"
    ]
    ids = ",".join
    log = studies_requests(api)
    assert log[:7] == [
        ("/api/v2/studies", ids(IDS[:8])),  # 400
        ("/api/v2/studies", ids(IDS[:4])),
        ("/api/v2/studies", ids(IDS[4:8])),  # 400
        ("/api/v2/studies", ids(IDS[4:6])),  # 400
        (f"/api/v2/studies/{IDS[4]}", ""),
        (f"/api/v2/studies/{IDS[5]}", ""),  # 400: reported by name
        ("/api/v2/studies", ids(IDS[6:8])),
    ]
    assert log[7:] and set(log[7:]) == {("/api/v2/studies", "")}  # the saved query still runs
    completed = {r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS
                 if r["protocolSection"]["statusModule"]["overallStatus"] == "COMPLETED"}
    stored = {row[0] for row in sqlite3.connect(db_path).execute("select nct_id from studies")}
    assert stored == (set(IDS[:8]) - {IDS[5]}) | completed
    assert out.splitlines()[-1] == (
        f"sync: {len(stored)} studies checked, 0 changed, 0 changes, 1 failed"
    )


def test_no_new_data_release_means_no_work(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", *IDS[:6], "--query", "filter.overallStatus=COMPLETED")
    assert sync(db_path, api, "--at", DAY1)[0] == 0
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2)
    assert code == 0
    assert out.splitlines() == [
        f"sync: no new data release since {RELEASE1}: 6 tracked studies and 1 saved query not "
        "fetched again (--force fetches them)",
        "sync: 0 studies checked, 0 changed, 0 changes, 0 failed",
    ]
    assert [r.path for r in api.requests] == ["/api/v2/version"]
    # Never-fetched ids are fetched: one newly tracked, one given on the command line.
    run(db_path, "track", IDS[6])
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2, IDS[7])
    assert code == 0 and out.splitlines()[-1].startswith("sync: 2 studies checked")
    assert studies_requests(api) == [("/api/v2/studies", f"{IDS[6]},{IDS[7]}")]
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2, "--force")
    assert code == 0 and "no new data" not in out
    assert studies_requests(api) == [("/api/v2/studies", ",".join(IDS[:7])),
                                     ("/api/v2/studies", "")]
    api.set_data_timestamp(RELEASE2)
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY3)
    # The tracked ids; the query, in its window; its studies it did not return, in the same
    # window (one that left its results changed).
    assert code == 0 and "no new data" not in out and len(studies_requests(api)) == 3
    releases = sqlite3.connect(db_path).execute("select data_timestamp from runs order by id")
    assert [row[0] for row in releases] == [RELEASE1] * 4 + [RELEASE2]


def test_a_single_study_is_fetched_conditionally_on_its_etag(
    db_path: str, api: StandinAPI
) -> None:
    target = IDS[3]
    run(db_path, "track", target)
    assert sync(db_path, api, "--at", DAY1)[0] == 0
    assert [r.path for r in api.requests] == ["/api/v2/version", f"/api/v2/studies/{target}"]
    api.set_data_timestamp(RELEASE2)
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2)
    assert (code, out) == (0, "sync: 1 study checked, 0 changed, 0 changes, 0 failed\n")
    (etag,) = sqlite3.connect(db_path).execute("select etag from records").fetchone()
    assert api.etags_sent == [(f"/api/v2/studies/{target}", etag)]  # answered 304
    last_seen = sqlite3.connect(db_path).execute("select last_seen_at from sightings")
    assert last_seen.fetchone()[0] == "2026-05-12T06:00:00.000Z"  # seen, unchanged
    api.clear_requests()
    code, out, _ = sync(db_path, api, "--at", DAY2)  # same release: not asked again
    assert code == 0 and out.startswith(f"sync: no new data release since {RELEASE2}: 1 "
                                        "tracked study not fetched again (--force")
    assert [r.path for r in api.requests] == ["/api/v2/version"]
    api.put_study(edited(target))
    api.set_data_timestamp(RELEASE3)
    code, out, _ = sync(db_path, api, "--at", DAY3)
    assert code == 0 and out.splitlines()[-1] == (
        "sync: 1 study checked, 1 changed, 4 changes (1 added, 3 changed), 0 failed"
    )
    assert stored_changes(db_path) == [
        (target, "status.completionDate", "changed", "2026-05-13T06:00:00.000Z"),
        (target, "status.lastUpdatePostDate", "changed", "2026-05-13T06:00:00.000Z"),
        (target, "status.overallStatus", "changed", "2026-05-13T06:00:00.000Z"),
        (target, "status.whyStopped", "added", "2026-05-13T06:00:00.000Z"),
    ]
    (new_etag,) = sqlite3.connect(db_path).execute("select etag from records").fetchone()
    assert new_etag and new_etag != etag


def test_a_study_tracked_and_returned_by_queries_is_counted_once(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "track", *IDS[:3], "--query", f"filter.ids={','.join(IDS[:4])}",
        "--query", f"filter.ids={','.join(IDS[2:5])}")
    code, out, _ = sync(db_path, api, "--at", DAY1)
    assert code == 0
    assert out.strip() == "sync: 5 studies checked, 0 changed, 0 changes, 0 failed"
    assert sqlite3.connect(db_path).execute("select checked from runs").fetchone() == (5,)


@pytest.mark.parametrize(("status", "headers"), [(404, {}), (301, {"Location": "/elsewhere"})])
def test_a_404_or_301_for_a_page_is_a_failed_input_not_a_usage_error(
    db_path: str, api: StandinAPI, status: int, headers: dict[str, str]
) -> None:
    run(db_path, "track", *IDS[:4], "--query", "filter.overallStatus=COMPLETED")
    api.add_fault(Fault("status", status=status, headers=headers, body="Not Here",
                        path_prefix="/api/v2/studies", times=2))
    code, out, err = sync(db_path, api, "--at", DAY1)
    assert code == 1
    assert problems(err) == [
        f"trialdiff: tracked studies {IDS[0]}..{IDS[3]}: /studies: unexpected answer "
        f"{status}: Not Here",
        f"trialdiff: filter.overallStatus=COMPLETED: /studies: unexpected answer {status}: "
        "Not Here",
    ]
    assert out.strip() == "sync: 0 studies checked, 0 changed, 0 changes, 2 failed"


def test_a_base_url_that_is_not_the_api_is_a_failed_run_not_a_usage_error(
    db_path: str, api: StandinAPI
) -> None:
    code, out, err = run(db_path, "sync", "--api", api.root_url + "/nope", "--delay", "0")
    assert (code, out) == (1, "")
    assert err == (f"trialdiff: error: {api.root_url}/nope/version: unexpected answer 404: "
                   "Not Found\n")
    assert _run_status(db_path) == ["failed"]


@pytest.mark.parametrize("url", ["clinicaltrials.gov/api/v2", "http://", "http://h:99999/v2"])
def test_a_malformed_api_url_is_a_usage_error_at_once(db_path: str, url: str) -> None:
    started = time.monotonic()
    code, out, err = run(db_path, "sync", "--api", url)
    assert (code, out) == (2, "")
    assert err.startswith(f"trialdiff: error: --api {url!r} is not a URL like ")
    assert len(err.splitlines()) == 1 and time.monotonic() - started < 2
    assert not Path(db_path).exists()  # nothing was started


def test_an_answer_dripping_in_meets_the_deadline(db_path: str, api: StandinAPI,
                                                  backoff_waits: list[float]) -> None:
    run(db_path, "track", *IDS[:2])
    api.add_fault(Fault("drip", seconds=0.05, chunk=64, path_prefix="/api/v2/studies", times=3))
    started = time.monotonic()
    code, out, err = sync(db_path, api, "--at", DAY1, "--timeout", "0.5", "--deadline", "0.3")
    assert code == 1 and time.monotonic() - started < 10
    (problem,) = problems(err)
    assert re.fullmatch(rf"trialdiff: tracked studies {IDS[0]}..{IDS[1]}: /studies: took longer "
                        r"than the 0.3 s deadline; gave up after 3 attempts in \d+ s", problem)
    assert len(backoff_waits) == 2 and out.strip().endswith("0 studies checked, 0 changed, "
                                                            "0 changes, 1 failed")


def _start_sync(db: str, api: StandinAPI, *args: str) -> subprocess.Popen[str]:
    """Start a real `trialdiff sync` process."""
    return subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", db, "sync", "--api", api.base_url,
         "--delay", "0", "--at", DAY1, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def test_a_repeated_page_token_stops_the_sync_and_frees_the_lock(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "track", "--query", "query.term=a")
    api.add_fault(Fault("repeat_token", path_prefix="/api/v2/studies", times=10_000))
    process = _start_sync(db_path, api, "--page-size", "5")
    out, err = process.communicate(timeout=60)  # looping forever would fail here
    assert process.returncode == 1
    assert "the API sent nextPageToken" in err and "again; stopped paging" in err
    assert out.strip() == "sync: 5 studies checked, 0 changed, 0 changes, 1 failed"
    assert len(api.requests) == 3  # /version, page 1, the page that repeated the token
    api.clear_faults()
    assert sync(db_path, api, "--at", DAY2, "--force")[0] == 0  # the lock is free


def test_headers_dripping_in_meet_the_deadline_and_free_the_lock(
    db_path: str, api: StandinAPI
) -> None:
    # A real process against a proxy that sends the status line and headers a byte per 0.1 s:
    # over 6 s for the head, each read inside --timeout; --deadline ends the request at 1 s.
    run(db_path, "track", *IDS[:2])
    api.add_fault(Fault("drip_head", seconds=0.1, chunk=1, path_prefix="/api/v2/version"))
    started = time.monotonic()
    process = _start_sync(db_path, api, "--timeout", "0.5", "--deadline", "1", "--retries", "0")
    out, err = process.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert (process.returncode, out) == (1, "")
    assert re.fullmatch(r"trialdiff: error: /version: took longer than the 1 s deadline; "
                        r"gave up after 1 attempt in 1 s\n", err)
    assert 1.0 <= elapsed < 6.0  # the head alone would take over 6 s
    assert _run_status(db_path) == ["failed"]
    assert [r.path for r in api.requests] == ["/api/v2/version"]
    assert sync(db_path, api, "--at", DAY2)[0] == 0  # the lock is free
    assert _run_status(db_path) == ["failed", "ok"]


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    """Poll until predicate() is true, or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _run_status(db: str) -> list[str]:
    """Return the status of every run, oldest first (empty while the file is not made)."""
    if not Path(db).exists():
        return []
    try:
        return [row[0] for row in sqlite3.connect(db).execute("select status from runs")]
    except sqlite3.OperationalError:  # the schema is not there yet
        return []


def test_ctrl_c_during_a_sync_records_it_interrupted_and_exits_130(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "track", *IDS[:6])
    api.add_fault(Fault("slow", seconds=30, path_prefix="/api/v2/studies/", times=5))
    api.reject_ids([IDS[0]])  # the first batch splits; its single ids meet the slow fault
    process = _start_sync(db_path, api, "--page-size", "3")
    _wait_for(lambda: any(r.path.startswith("/api/v2/studies/") for r in api.requests))
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert out == ""
    assert err.strip() == "trialdiff: interrupted; run 1 recorded as interrupted (what was " \
        "saved stays: run again to resume)"
    assert _run_status(db_path) == ["interrupted"]



def _stop_an_import_under_way(db_path: str, tmp_path: Path, signum: int
                              ) -> tuple[subprocess.Popen[str], str, str]:
    """Start an import reading a FIFO, signal it once its run is under way; return its ends."""
    fifo = tmp_path / "studies.ndjson"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", db_path, "import", "--at", DAY1, str(fifo)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    with open(fifo, "w", encoding="utf-8") as feed:  # opening waits for the reader
        feed.write(json.dumps(RECORDS[0]) + "\n")
        feed.flush()
        _wait_for(lambda: _run_status(db_path) == ["running"])
        process.send_signal(signum)
        out, err = process.communicate(timeout=20)
    return process, out, err


def test_ctrl_c_during_an_import_records_it_interrupted_and_exits_130(
    db_path: str, tmp_path: Path
) -> None:
    process, out, err = _stop_an_import_under_way(db_path, tmp_path, signal.SIGINT)
    assert (process.returncode, out) == (130, "")
    assert "trialdiff: interrupted; run 1 recorded as interrupted" in err
    assert "Traceback" not in err and "Aborted" not in err
    assert _run_status(db_path) == ["interrupted"]


def test_schema_2_databases_gain_the_release_and_etag_columns(db_path: str) -> None:
    from trialdiff.schema import SCHEMA_VERSION, open_db

    db = open_db(db_path)
    for table, column in (("watchlist", "fetched_release"), ("queries", "fetched_release"),
                          ("records", "etag")):
        db.execute(f"alter table {table} drop column {column}")
    db.execute("update meta set value = '2' where key = 'schema_version'")
    db.close()
    for _ in range(2):  # idempotent
        db = open_db(db_path)
        assert "etag" in db["records"].columns_dict
        assert "fetched_release" in db["watchlist"].columns_dict
        assert "fetched_release" in db["queries"].columns_dict
        assert db.execute("select value from meta where key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)
        db.close()


def test_another_studys_record_for_an_id_is_no_answer_and_the_id_is_asked_again(
    db_path: str, api: StandinAPI
) -> None:
    # A proxy or cache that answers /studies/A with B's record (or with a 200 that is no
    # record): A's edit would be missed all day, B stored untracked, and the run said 0 failed.
    stranger = json.dumps(next(r for r in RECORDS if r["protocolSection"][
        "identificationModule"]["nctId"] == IDS[1]))
    run(db_path, "track", IDS[0])
    api.add_fault(Fault("status", status=200, body=stranger,
                        path_prefix=f"/api/v2/studies/{IDS[0]}", times=10))
    code, out, err = sync(db_path, api, "--at", DAY1)
    assert code == 1 and out.endswith("0 studies checked, 0 changed, 0 changes, 1 failed\n")
    assert problems(err) == [
        f"trialdiff: {IDS[0]}: /studies/{IDS[0]}: 200 with an invalid body (the record of "
        f"{IDS[1]}, which does not answer to {IDS[0]}); gave up after 3 attempts in 0 s"]
    conn = sqlite3.connect(db_path)
    assert conn.execute("select count(*) from studies").fetchone() == (0,)
    assert conn.execute("select fetched_release from watchlist").fetchone() == (None,)
    api.clear_faults()
    api.add_fault(Fault("status", status=200, body='{"message": "temporarily unavailable"}',
                        path_prefix=f"/api/v2/studies/{IDS[0]}"))
    code, out, err = sync(db_path, api, "--at", DAY2)  # the same release: asked again
    assert (code, problems(err)) == (0, []) and "1 study checked, 0 changed" in out
    assert conn.execute("select nct_id from studies").fetchall() == [(IDS[0],)]


def test_a_batch_page_keeps_only_the_studies_asked_for(db_path: str, api: StandinAPI) -> None:
    run(db_path, "track", *IDS[:3])
    page = {"studies": [r for r in RECORDS if r["protocolSection"]["identificationModule"][
        "nctId"] in (*IDS[:3], IDS[7])]}
    api.add_fault(Fault("status", status=200, body=json.dumps(page),
                        path_prefix="/api/v2/studies"))
    code, out, err = sync(db_path, api, "--at", DAY1)
    assert (code, problems(err)) == (0, []) and "3 studies checked" in out
    stored = sqlite3.connect(db_path).execute("select nct_id from studies order by nct_id")
    assert stored.fetchall() == [(i,) for i in IDS[:3]]


def test_a_body_that_does_not_decode_is_retried_not_the_end_of_the_run(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "track", *IDS[:4])
    api.add_fault(Fault("status", status=200, headers={"Content-Encoding": "gzip"},
                        body="not gzip at all", path_prefix="/api/v2/studies"))
    code, out, err = sync(db_path, api, "--at", DAY1)
    assert (code, problems(err)) == (0, []) and "4 studies checked" in out


@pytest.mark.parametrize("stamp", [None, {"a": 1}, "", "2025/01/05 09:00:00", "1736000000"])
def test_a_version_with_no_usable_data_release_still_syncs_everything(
    db_path: str, api: StandinAPI, stamp: Any
) -> None:
    # The spec requires only apiVersion. A probe's `2025/01/05 09:00:00` was stored as the
    # release, and every later sync of a saved query failed reading its day back.
    assert run(db_path, "track", "--query", "filter.overallStatus=COMPLETED")[0] == 0
    api.set_data_timestamp(stamp)
    for day in (DAY1, DAY2):
        code, out, err = sync(db_path, api, IDS[0], "--at", day)
        assert code == 0 and "no new data release" not in out, err
        assert problems(err) == ["trialdiff: warning: /version gave no data release "
                                 "(dataTimestamp) that is a date: every tracked study and saved "
                                 "query is fetched"]
    conn = sqlite3.connect(db_path)
    assert conn.execute("select fetched_release from queries").fetchall() == [(None,)]
    assert conn.execute("select status from runs").fetchall() == [("ok",), ("ok",)]


def test_a_release_an_older_version_stored_in_another_form_does_not_stop_a_sync(
    db_path: str, api: StandinAPI
) -> None:
    assert run(db_path, "track", "--query", "filter.overallStatus=COMPLETED")[0] == 0
    sync(db_path, api, "--at", "2026-11-20T06:00:00Z")
    with sqlite3.connect(db_path) as conn:
        conn.execute("update queries set fetched_release = '2026/05/10 09:00:00'")
    api.clear_requests()
    api.set_data_timestamp(RELEASE2)
    code, _, err = sync(db_path, api, "--at", "2026-11-21T06:00:00Z")
    assert (code, problems(err)) == (0, [])
    # The window starts from the day the last run was (the release says none it can use).
    assert [r.query.get("filter.advanced") for r in api.requests
            if r.path == "/api/v2/studies"][:1] == ["AREA[LastUpdatePostDate]RANGE[2026-11-19,MAX]"]


def test_a_retry_after_past_the_budget_says_so(db_path: str, api: StandinAPI) -> None:
    api.add_fault(Fault("status", status=429, headers={"Retry-After": "600"},
                        path_prefix="/api/v2/studies"))
    code, _, err = sync(db_path, api, IDS[0], "--at", DAY1)
    assert code == 1
    assert ("(the server asked to wait 600 s; the next retry, 600 s on, would pass the retry "
            "budget of 300 s)") in err
    # A backoff longer than the server asked: its own number, not the wait (a probe read 4 s
    # where the server had asked for 2).
    api.clear_faults()
    api.add_fault(Fault("status", status=429, headers={"Retry-After": "2"}, times=3,
                        path_prefix="/api/v2/studies"))
    code, _, err = sync(db_path, api, IDS[0], "--at", DAY2, "--retry-budget", "1")
    assert code == 1 and "the server asked to wait 2 s; the next retry, " in err


@pytest.mark.usefixtures("secrets_file")
def test_ctrl_c_while_alerts_go_out_says_the_run_finished_and_its_alerts_wait(
    db_path: str, api: StandinAPI
) -> None:
    # Delivery comes after the run is recorded: "recorded as interrupted" was not so (the run
    # read ok), and what needs attention is the alerts left pending.
    from webhook_receiver import WebhookReceiver

    run(db_path, "track", IDS[2])
    assert sync(db_path, api, "--at", DAY1)[0] == 0
    api.put_study(edited(IDS[2]))
    api.set_data_timestamp(RELEASE2)
    with WebhookReceiver(delay=30) as slow:
        assert run(db_path, "watch", "add", "all", "--to", f"{slow.url}/h")[0] == 0
        process = subprocess.Popen(
            [sys.executable, "-m", "trialdiff", "--db", db_path, "sync", "--api", api.base_url,
             "--delay", "0", "--at", DAY2, "--alert-timeout", "60"],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: _run_status(db_path)[-1:] == ["ok"])
        # Into the POST, which the receiver holds for 30 s (a fixed half second lost the race
        # on a busy machine: the signal came before delivery began).
        _wait_for(lambda: slow.arrived >= 1)
        process.send_signal(signal.SIGINT)  # it waits for the receiver's answer...
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)  # ...unless told twice
        _, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert err.strip().endswith("trialdiff: interrupted while delivering alerts; run 2 had "
                                "finished (ok): the alerts not sent yet stay pending "
                                "(`trialdiff notify` sends them)")
    assert _run_status(db_path) == ["ok", "ok"]
    pending = sqlite3.connect(db_path).execute("select state from deliveries").fetchall()
    assert pending == [("pending",)]


def test_sigterm_stops_a_run_as_ctrl_c_does_and_exits_143(db_path: str, tmp_path: Path) -> None:
    # What `timeout` and systemd send: the run was left `running`, with no word, exit 143 raw.
    process, out, err = _stop_an_import_under_way(db_path, tmp_path, signal.SIGTERM)
    assert (process.returncode, out) == (143, "")
    assert err.strip() == ("trialdiff: terminated; run 1 recorded as interrupted (what was "
                           "saved stays: run again to resume)")
    assert _run_status(db_path) == ["interrupted"]



def test_a_stop_python_swallowed_is_raised_at_the_next_outcome(db_path: str) -> None:
    # A probe's SIGTERM sometimes landed in a weakref callback: Python printed "Exception
    # ignored in: ... Terminated" and went on, and the sync ran to its end, recorded ok, exit 0.
    # Here the stop is raised in a finaliser, as the handler would raise it there.
    script = f"""
import sys
from trialdiff import dedupe
from trialdiff.cli import main, sinks

class Stop:
    def __del__(self):
        raise sinks.Terminated

first, calls = dedupe.InputLedger.first, []
def swallowing_first(self, *args):
    calls.append(1)
    if len(calls) == 2:
        Stop()  # dropped at once: its finaliser raises
    return first(self, *args)

dedupe.InputLedger.first = swallowing_first
sys.argv = ["trialdiff", "--db", {db_path!r}, "import", "--at", {DAY1!r}, {str(FIXTURES_V2)!r}]
main()
"""
    result = subprocess.run([sys.executable, "-c", script], env=trialdiff_env(),
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (143, (
        "trialdiff: terminated; run 1 recorded as interrupted (what was saved stays: run again "
        "to resume)\n"))
    assert _run_status(db_path) == ["interrupted"]


def test_sigterm_while_waiting_for_the_lock_is_said_as_terminated(db_path: str) -> None:
    from test_lock import lock_holder

    with lock_holder(db_path):
        process = subprocess.Popen(
            [sys.executable, "-m", "trialdiff", "--db", db_path, "import", "--wait", "30",
             str(SAMPLE)], env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # started, and waiting for the lock
        process.terminate()
        out, err = process.communicate(timeout=20)
    assert (process.returncode, out) == (143, "")
    assert err.strip() == "trialdiff: terminated (what was saved stays: run again to resume)"
