"""Backfill against the stand-in's record-history endpoints, as the real site serves them.

The stand-in lists versions by their QC date, as the real listing does, while each version's
body says the day it went public (its last update post date): NCT05827016's two real versions
were submitted on 2023-06-06 and 2025-06-27 and went public on 2023-06-07 and 2025-07-01.

Run `TRIALDIFF_UPDATE_GOLDEN=1 python -m pytest tests/test_history.py` to rewrite the golden
history table after a deliberate change.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    HISTORY_NCT,
    HISTORY_PUBLIC_DAYS,
    HISTORY_QC_DAYS,
    NO_SLEEP,
    backfill,
    html_history,
    html_record,
    html_text,
    load,
    real_change_set,
    request_log,
    run,
    stored_changes,
    version_pair,
)
from standin_api import Fault, StandinAPI

from trialdiff.diff import changed_paths, neutral_text
from trialdiff.normalize import extract_fields
from trialdiff.schema import SCHEMA_VERSION, open_db, schema_version

NCT = HISTORY_NCT
OLD, NEW = version_pair(NCT)  # real versions, public on 2023-06-07 and 2025-07-01
V0_QC, V1_QC = HISTORY_QC_DAYS
V0_DAY, V1_DAY = HISTORY_PUBLIC_DAYS
# The seam case of issue 10: a sync on day S, the next version QC'd on S-1, public on S+2.
S = "2025-06-29"
SYNC_AT = "2025-07-07T06:00:00Z"
LISTING = f"/api/int/studies/{NCT}"
GOLDEN = Path(__file__).parent / "golden"
HISTORY = html_history(NCT, HISTORY_QC_DAYS)
API_RECORDS = [NEW]


def sync(db: str, api: StandinAPI, at: str) -> tuple[int, str, str]:
    """Run `trialdiff sync` of the study against the stand-in, observed at a given time."""
    return run(db, "sync", NCT, "--api", api.base_url, "--delay", "0", "--at", at, obj=NO_SLEEP)


def posted_on(record: dict[str, Any], day: str) -> dict[str, Any]:
    """Return a record as the history endpoint serves it, its body saying it went public on day."""
    served = html_record(record)
    served["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = day
    return served


def snapshot_rows(db: str) -> list[tuple[str, str, int | None]]:
    """Return the stored snapshots' (observed_at, source, source_version), in order."""
    return sqlite3.connect(db).execute(
        "select observed_at, source, source_version from snapshots order by seq").fetchall()


def test_html_conversion_keeps_the_words() -> None:
    criteria = NEW["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    converted = html_text(criteria)
    assert "<li>" in converted and "\n" not in converted
    assert neutral_text(converted, "html") == neutral_text(criteria, "markdown")


@pytest.mark.parametrize("markup", ["html", "markdown"])
def test_backfill_dates_each_version_by_when_it_went_public(
    db_path: str, api: StandinAPI, markup: str
) -> None:
    convert = html_record if markup == "html" else copy.deepcopy
    api.set_history(NCT, [(V0_QC, convert(OLD)), (V1_QC, convert(NEW))])
    code, out, err = backfill(db_path, api)
    assert (code, err) == (0, "")
    assert f"{NCT}  {V1_DAY}  status.overallStatus \u2014 changed" in out
    assert stored_changes(db_path) == real_change_set(V1_DAY)  # not the QC day, 2025-06-28
    assert request_log(api) == [(LISTING, {"history": "true"}), (f"{LISTING}/history/0", {}),
                             (f"{LISTING}/history/1", {})]
    # The synced present, in Markdown, meets the backfilled history with no false change.
    code, out, _ = sync(db_path, api, SYNC_AT)
    assert code == 0 and "0 changes" in out
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    assert run(db_path, "check")[0] == 0


def test_history_shows_each_versions_status_and_sections(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    backfill(db_path, api)
    sync(db_path, api, SYNC_AT)
    code, out, err = run(db_path, "history", NCT)
    assert (code, err) == (0, "")
    golden = GOLDEN / f"history-{NCT}.txt"
    if os.environ.get("TRIALDIFF_UPDATE_GOLDEN"):
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")
    listing = json.loads(api.respond(LISTING, "history=true", {"history": "true"}).body)
    conn = sqlite3.connect(db_path)
    assert conn.execute("select version, version_date, qc_date, status, module_labels "
                        "from history_versions order by version").fetchall() == [
        (e["version"], day, e["date"], e["status"], json.dumps(e["moduleLabels"]))
        for e, day in zip(listing["history"]["changes"], (V0_DAY, V1_DAY), strict=True)
    ]
    assert [e["status"] for e in listing["history"]["changes"]] == ["NOT_YET_RECRUITING",
                                                                    "RECRUITING"]


def test_the_seam_a_version_qcd_before_a_sync_but_public_after_it(
    db_path: str, api: StandinAPI
) -> None:
    """Sync on S; the next version QC'd on S-1, public on S+2; backfill; sync again."""
    api.put_study(copy.deepcopy(OLD))
    sync(db_path, api, f"{S}T06:00:00Z")  # sees version 0: a silent baseline
    api.set_history(NCT, HISTORY)
    api.put_study(copy.deepcopy(NEW))
    code, out, err = backfill(db_path, api)
    assert (code, err) == (0, "")
    # Version 1 is placed after the sync that saw version 0, never before it.
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    lines = out.splitlines()
    assert len(lines) - 1 == len(real_change_set(V1_DAY))
    code, out, _ = sync(db_path, api, "2025-07-03T06:00:00Z")
    assert code == 0 and "0 changes" in out
    # Exactly the consecutive-version changes, each dated by when its version went public.
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    assert snapshot_rows(db_path) == [
        (f"{V0_DAY}T00:00:00.000Z", "backfill", 0),
        (f"{S}T06:00:00.000Z", "sync", None),
        (f"{V1_DAY}T00:00:00.000Z", "backfill", 1),
        ("2025-07-03T06:00:00.000Z", "sync", None),  # Markdown after HTML: no change
    ]
    assert run(db_path, "check")[0] == 0


def test_a_sync_on_the_day_a_version_went_public_that_saw_the_old_record_comes_before_it(
    db_path: str, api: StandinAPI
) -> None:
    # A sync on V1_DAY that still saw version 0 (the registry posts during the day) sorts by
    # the post date of what it saw. That date is inside a struct field: read as a bare date it
    # never parsed, so the sync sorted by its own day, after version 1, and backfill stored
    # every change three times (forward, back, forward again).
    api.put_study(copy.deepcopy(OLD))
    sync(db_path, api, f"{V1_DAY}T06:00:00Z")
    api.put_study(copy.deepcopy(NEW))
    sync(db_path, api, "2025-07-02T06:00:00Z")
    api.set_history(NCT, HISTORY)
    assert backfill(db_path, api)[0] == 0
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    assert snapshot_rows(db_path) == [
        (f"{V0_DAY}T00:00:00.000Z", "backfill", 0),
        (f"{V1_DAY}T06:00:00.000Z", "sync", None),
        (f"{V1_DAY}T06:00:00.000Z", "backfill", 1),  # no earlier than what the sync saw
        ("2025-07-02T06:00:00.000Z", "sync", None),  # Markdown after HTML: no change
    ]
    assert run(db_path, "check")[0] == 0


def test_a_version_synced_late_is_redated_to_when_it_went_public(
    db_path: str, api: StandinAPI
) -> None:
    api.put_study(copy.deepcopy(OLD))
    sync(db_path, api, f"{S}T06:00:00Z")
    api.put_study(copy.deepcopy(NEW))
    sync(db_path, api, "2025-07-03T06:00:00Z")  # saw version 1 two days after it went public
    assert stored_changes(db_path) == real_change_set("2025-07-03")
    api.set_history(NCT, HISTORY)
    code, out, _ = backfill(db_path, api)
    assert code == 0
    count = len(real_change_set(V1_DAY))
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    assert f"{NCT}  ({count} stored changes replaced: the registry's versions date them)" in out
    assert sqlite3.connect(db_path).execute(
        "select changes from runs where command = 'backfill'").fetchone() == (count,)
    assert run(db_path, "check")[0] == 0


def test_backfill_prints_and_counts_exactly_what_it_stored(db_path: str, api: StandinAPI) -> None:
    """Issue 12: behind a synced study, 1,044 change lines were printed for 522 stored."""
    sync(db_path, api, SYNC_AT)
    api.set_history(NCT, HISTORY)
    code, out, _ = backfill(db_path, api)
    assert code == 0
    expected = real_change_set(V1_DAY)
    printed = [line for line in out.splitlines() if line.startswith(f"{NCT}  ")]
    assert sorted((line.split("  ")[1], line.split("  ")[2].split(" \u2014 ")[0],
                   line.split(" \u2014 ")[1].split(":")[0]) for line in printed) == expected
    assert stored_changes(db_path) == expected
    conn = sqlite3.connect(db_path)
    assert conn.execute("select changes, changed from runs where command = 'backfill'"
                        ).fetchone() == (len(expected), 1)
    assert f" 1 changed, {len(expected)} changes" in out.splitlines()[-1]
    sources = conn.execute("select source, source_version, markup from snapshots "
                           "where nct_id = ? order by seq", [NCT]).fetchall()
    assert sources == [("backfill", 0, "html"), ("backfill", 1, "html"),
                       ("sync", None, "markdown")]
    _, section, _ = run(db_path, "recent", NCT, "--as-of", "2025-07-10", "--limit", "2")
    assert section.splitlines()[2:] == [
        f"- `status.lastUpdatePostDate` \u2014 changed _({V1_DAY})_",
        f"- `status.overallStatus` \u2014 changed _({V1_DAY})_",
    ]
    assert run(db_path, "check")[0] == 0


def test_backfill_is_idempotent_and_fetches_nothing_twice(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    backfill(db_path, api)
    before = stored_changes(db_path)
    api.clear_requests()
    code, out, _ = backfill(db_path, api)
    assert code == 0 and "0 changes" in out
    assert request_log(api) == [(LISTING, {"history": "true"})]
    assert stored_changes(db_path) == before


def test_a_failed_backfill_counts_what_it_stored_and_resumes(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("status", status=503, path_prefix=f"{LISTING}/history/1", times=5))
    code, out, err = backfill(db_path, api)
    assert code == 1 and "503" in err
    assert stored_changes(db_path) == []  # version 0 stored, as a silent baseline
    assert "0 changes, 1 failed" in out
    api.clear_faults()
    api.clear_requests()
    code, _, _ = backfill(db_path, api)
    assert code == 0
    assert request_log(api) == [(LISTING, {"history": "true"}), (f"{LISTING}/history/1", {})]
    assert stored_changes(db_path) == real_change_set(V1_DAY)


def test_a_backfill_stopped_by_ctrl_c_counts_the_versions_it_committed(
    db_path: str, api: StandinAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stopped just after version 1 committed: its changes stay, and the run's row said 0.
    from trialdiff import history

    slot_in = history._slot_in

    def then_interrupted(*args: object, **kwargs: object) -> None:
        slot_in(*args, **kwargs)  # type: ignore[arg-type]
        if args[2].number == 1:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    monkeypatch.setattr(history, "_slot_in", then_interrupted)
    api.set_history(NCT, HISTORY)
    code, _, _ = backfill(db_path, api)
    assert code != 0
    count = len(real_change_set(V1_DAY))
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    assert sqlite3.connect(db_path).execute(
        "select status, changed, changes from runs where command = 'backfill'").fetchone() == (
        "interrupted", 1, count)


def test_a_version_answered_404_fails_its_study_alone(db_path: str, api: StandinAPI) -> None:
    # A 404 or 400 on a version was taken for a changed shape and ended the run: the studies
    # after it were neither tried nor counted as failed.
    other = "NCT06060392"
    api.set_history(NCT, HISTORY)
    api.set_history(other, html_history(other, ("2023-10-02", "2025-06-30")))
    api.add_fault(Fault("status", status=404, path_prefix=f"{LISTING}/history/1"))
    code, out, err = backfill(db_path, api, NCT, other)
    assert code == 1
    assert err == (f"trialdiff: {NCT}: {NCT} version 1: unexpected answer 404; run backfill "
                   "again\n")
    assert out.splitlines()[-1].startswith("backfill: 2 studies checked, 1 changed")
    assert out.splitlines()[-1].endswith(", 1 failed")
    assert {nct_id for (nct_id,) in sqlite3.connect(db_path).execute(
        "select distinct nct_id from changes")} == {other}


def test_since_takes_only_versions_public_since(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    # Version 1 was QC'd the day before, but went public on the day asked for.
    code, _, _ = backfill(db_path, api, "--since", V1_DAY)
    assert code == 0 and stored_changes(db_path) == []
    # Version 0 is asked too: only its body says when it went public.
    assert [p for p, _ in request_log(api)] == [LISTING, f"{LISTING}/history/1",
                                                f"{LISTING}/history/0"]
    _, history, _ = run(db_path, "history", NCT)
    assert "backfill v1" in history and "backfill v0" not in history


def test_since_in_the_future_is_a_usage_error(db_path: str, api: StandinAPI) -> None:
    # A probe's --since 2099-01-01 ran, asked the API, and took nothing, exit 0.
    api.set_history(NCT, HISTORY)
    code, out, err = backfill(db_path, api, "--since", "2099-01-01")
    assert (code, out) == (2, "")
    assert "'2099-01-01T00:00:00.000Z' is in the future: no version has gone public since" in err
    assert request_log(api) == []


def test_since_takes_a_version_public_since_however_long_after_its_qc(
    db_path: str, api: StandinAPI
) -> None:
    # Posted 35 days after QC (a real lag reaches 92): --since looked back only 14 days, so
    # the version was never asked for, and the run said nothing.
    api.set_history(NCT, [(V0_QC, html_record(OLD)), (V1_QC, posted_on(NEW, "2025-08-02"))])
    assert backfill(db_path, api, "--since", "2025-07-20")[0] == 0
    assert sqlite3.connect(db_path).execute(
        "select version, version_date from history_versions").fetchall() == [(1, "2025-08-02")]
    assert backfill(db_path, api)[0] == 0  # the rest later, in its place
    assert stored_changes(db_path) == real_change_set("2025-08-02")


def test_a_sync_that_saw_the_first_of_two_versions_public_one_day_comes_between_them(
    db_path: str, api: StandinAPI
) -> None:
    # Sorted after both, the sync stored a revert to what it saw, and the next version's
    # changes then started from the wrong values.
    third = copy.deepcopy(NEW)
    third["protocolSection"]["statusModule"]["overallStatus"] = "COMPLETED"
    api.put_study(copy.deepcopy(NEW))
    sync(db_path, api, f"{V1_DAY}T12:00:00Z")
    api.set_history(NCT, [(V0_QC, html_record(OLD)), (V1_QC, html_record(NEW)),
                          (V1_DAY, posted_on(third, V1_DAY))])
    assert backfill(db_path, api)[0] == 0
    assert snapshot_rows(db_path) == [
        (f"{V0_DAY}T00:00:00.000Z", "backfill", 0),
        (f"{V1_DAY}T00:00:00.000Z", "backfill", 1),
        (f"{V1_DAY}T12:00:00.000Z", "sync", None),  # version 1 in Markdown: no change
        (f"{V1_DAY}T12:00:00.000Z", "backfill", 2),  # no earlier than what the sync saw
    ]
    assert stored_changes(db_path) == sorted([
        *real_change_set(V1_DAY), (V1_DAY, "status.overallStatus", "changed")])
    assert sqlite3.connect(db_path).execute(
        "select old, new from changes where path = 'status.overallStatus' order by id"
    ).fetchall() == [('"NOT_YET_RECRUITING"', '"RECRUITING"'), ('"RECRUITING"', '"COMPLETED"')]
    assert run(db_path, "check")[0] == 0


def test_an_id_given_twice_is_backfilled_once(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    code, out, _ = backfill(db_path, api, NCT, NCT.lower())
    assert code == 0 and out.splitlines()[-1].startswith("backfill: 1 study checked, 1 changed")
    assert [p for p, _ in request_log(api)].count(LISTING) == 1


def test_version_dates_going_backwards_by_publication_are_refused(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, [(V0_QC, html_record(OLD)), (V1_QC, posted_on(NEW, "2023-06-01"))])
    code, _, err = backfill(db_path, api)
    assert code == 1
    assert err == (f"trialdiff: error: {NCT}: version 1 went public on 2023-06-01 but version 0 on "
                   f"{V0_DAY}: the version dates go backwards; nothing more was stored\n")
    assert sqlite3.connect(db_path).execute(
        "select version from history_versions").fetchall() == [(0,)]


def test_sync_backfill_new_counts_a_changed_shape_once_under_its_study(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history_routes()  # neither listing route answers: the endpoints changed shape
    run(db_path, "track", NCT)
    code, out, err = run(db_path, "sync", "--api", api.base_url, "--delay", "0",
                         "--backfill-new", "--at", SYNC_AT)
    # The sync is committed before the backfill stops: its summary says so, the study once.
    assert code == 1 and out == "sync: 1 study checked, 0 changed, 0 changes, 1 failed\n"
    assert err.splitlines()[-1].startswith(f"trialdiff: error: backfill: {NCT}: API v2 knows")
    failed, errors = sqlite3.connect(db_path).execute("select failed, errors from runs "
                                                      "where command = 'sync'").fetchone()
    assert failed == 1 and [e["input"] for e in json.loads(errors)] == [NCT]


def test_sync_backfill_new_takes_in_newly_tracked_studies_once(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    run(db_path, "track", NCT)
    args = ("sync", "--api", api.base_url, "--delay", "0", "--backfill-new")
    code, out, _ = run(db_path, *args, "--at", SYNC_AT)
    assert code == 0 and f"{NCT}  {V1_DAY}  status.overallStatus" in out
    assert stored_changes(db_path) == real_change_set(V1_DAY)
    api.clear_requests()
    run(db_path, *args, "--at", "2025-07-08T06:00:00Z")
    assert not [r for r in api.requests if "/api/int/" in r.path]


def test_sync_backfill_new_counts_each_study_once_and_leaves_an_unknown_one_to_the_sync(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    run(db_path, "track", NCT, "NCT09999999")  # the second: a typo the registry never knew
    code, out, err = run(db_path, "sync", "--api", api.base_url, "--delay", "0",
                         "--backfill-new", "--at", SYNC_AT)
    summary = out.splitlines()[-1]
    assert code == 1 and summary.endswith("), 1 failed")
    assert summary.startswith(f"sync: 1 study checked, 1 changed, "
                              f"{len(real_change_set(V1_DAY))} changes (")
    assert [line for line in err.splitlines() if "NCT09999999" in line] == [
        "trialdiff: NCT09999999: not returned by the API (404)"]
    assert not [r for r in api.requests if r.path.endswith("NCT09999999")
                and "/api/int/" in r.path]


def test_a_retried_backfill_new_counts_its_study_as_checked_when_the_sync_skipped_it(
    db_path: str, api: StandinAPI
) -> None:
    # The first run's backfill failed; the second, under the same release, fetches no record
    # (up to date) but takes in the history: it checked that study, and says so.
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("status", status=503, path_prefix=f"{LISTING}/history/1", times=5))
    run(db_path, "track", NCT)
    args = ("sync", "--api", api.base_url, "--delay", "0", "--retries", "1", "--backfill-new")
    code, out, _ = run(db_path, *args, "--at", SYNC_AT, obj=NO_SLEEP)
    assert code == 1 and out.splitlines()[-1].startswith("sync: 1 study checked, ")
    api.clear_faults()
    code, out, err = run(db_path, *args, "--at", "2025-07-07T07:00:00Z", obj=NO_SLEEP)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1].startswith("sync: 1 study checked, 1 changed, ")


def test_sync_from_a_dump_backfills_from_the_api_it_is_given(
    db_path: str, api: StandinAPI, tmp_path: Path
) -> None:
    # --api named the registry for the histories only; it went to the public registry before.
    api.set_history(NCT, HISTORY)
    dump = tmp_path / "dump.ndjson"
    dump.write_text(json.dumps(NEW))
    run(db_path, "track", NCT)
    code, _, err = run(db_path, "sync", "--source", str(dump), "--backfill-new", "--api",
                         api.base_url, "--delay", "0", "--at", SYNC_AT)
    assert (code, err) == (0, "")
    assert request_log(api) == [(LISTING, {"history": "true"}), (f"{LISTING}/history/0", {}),
                                (f"{LISTING}/history/1", {})]
    assert stored_changes(db_path) == real_change_set(V1_DAY)


def test_the_real_html_history_response_meets_the_real_current_record(db_path: str) -> None:
    v0 = load("history/NCT04280705_v0.json")["study"]
    current = load("versions/NCT04280705/2022-03-14__vh2025-03-21.json")
    with StandinAPI([current]) as server:
        server.set_history("NCT04280705", [("2020-02-20", v0)])
        run(db_path, "sync", "NCT04280705", "--api", server.base_url, "--delay", "0", "--at",
            "2025-03-21T06:00:00Z")
        code, _, err = run(db_path, "backfill", "NCT04280705", "--api", server.base_url,
                           "--delay", "0")
    assert code == 0, err
    expected = changed_paths(extract_fields(v0, markup="html"), extract_fields(current),
                             ("html", "markdown"))
    assert sorted((p, k) for _, p, k in stored_changes(db_path)) == sorted(expected)
    assert {d for d, _, _ in stored_changes(db_path)} == {"2025-03-21"}  # seen at the first sync
    conn = sqlite3.connect(db_path)
    assert conn.execute("select observed_at from snapshots where source = 'backfill'"
                        ).fetchall() == [("2020-02-21T00:00:00.000Z",)]  # public, not QC'd
    assert run(db_path, "check")[0] == 0


def test_a_schema_2_database_keeps_its_versions_and_gains_the_listing_columns(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    backfill(db_path, api)
    conn = sqlite3.connect(db_path)  # make it what schema 2 was
    for column in ("qc_date", "status", "module_labels"):
        conn.execute(f"alter table history_versions drop column {column}")
    conn.execute("update meta set value = '2' where key = 'schema_version'")
    conn.commit()
    conn.close()
    db = open_db(db_path)
    assert schema_version(db) == SCHEMA_VERSION
    assert db.execute("select version, version_date, qc_date, status from history_versions "
                      "order by version").fetchall() == [(0, V0_DAY, V0_DAY, None),
                                                         (1, V1_DAY, V1_DAY, None)]
    db.close()
    assert run(db_path, "check")[0] == 0
    assert run(db_path, "history", NCT)[1].count("no sections listed") == 2
