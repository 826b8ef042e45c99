"""Backfill against the stand-in's record-history endpoints, as the real site serves them.

The stand-in lists versions by their QC date, as the real listing does, while each version's
body says the day it went public (its last update post date): NCT05827016's two real versions
were submitted on 2023-06-06 and 2025-06-27 and went public on 2023-06-07 and 2025-07-01.

Run `TRIALDIFF_UPDATE_GOLDEN=1 python -m pytest tests/test_history.py` to rewrite the golden
history table after a deliberate change.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import load, run, version_pair
from standin_api import Fault, StandinAPI

from trialdiff.diff import changed_paths
from trialdiff.errors import FetchError, UsageError
from trialdiff.fetch import Client, Pacing
from trialdiff.history_api import HistoryAPI, site_root
from trialdiff.normalize import extract_fields, neutral_text
from trialdiff.schema import SCHEMA_VERSION, open_db, schema_version

NCT = "NCT05827016"
OLD, NEW = version_pair(NCT)  # real versions, public on 2023-06-07 and 2025-07-01
OTHER = "NCT06060392"
OTHER_OLD, OTHER_NEW = version_pair(OTHER)  # public on 2023-11-18 and 2025-06-13
V0_QC, V0_DAY = "2023-06-06", "2023-06-07"
# The seam case of issue 10: a sync on day S, the next version QC'd on S-1, public on S+2.
S, V1_QC, V1_DAY = "2025-06-29", "2025-06-28", "2025-07-01"
SYNC_AT = "2025-07-07T06:00:00Z"
LISTING = f"/api/int/studies/{NCT}"
GOLDEN = Path(__file__).parent / "golden"
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|])")
_ITEM = re.compile(r"^(?:[*-]|\d+\.)\s+")


def html_text(text: str) -> str:
    """Write Markdown text as the history endpoint writes it: HTML, `/` as `&#x2F;`."""
    escaped = html.escape(_ESCAPE.sub(r"\1", text), quote=False).replace("/", "&#x2F;")
    if "\n" not in text:
        return escaped
    blocks = []
    for block in escaped.split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines and all(_ITEM.match(line) for line in lines):
            tag = "ol" if lines[0][0].isdigit() else "ul"
            items = "".join(f"<li>{_ITEM.sub('', line)}</li>" for line in lines)
            blocks.append(f"<{tag}>{items}</{tag}>")
        elif lines:
            blocks.append("<p>" + " ".join(lines) + "</p>")
    return "".join(blocks)


def html_record(value: Any) -> Any:
    """Return a record with all its text in the history endpoint's HTML markup."""
    if isinstance(value, dict):
        return {k: html_record(v) for k, v in value.items() if k != "derivedSection"}
    if isinstance(value, list):
        return [html_record(v) for v in value]
    return html_text(value) if isinstance(value, str) else value


HISTORY = [(V0_QC, html_record(OLD)), (V1_QC, html_record(NEW))]


API_RECORDS = [NEW]
NO_SLEEP = {"sleep": lambda seconds: None}  # backoff waits are not slept in these tests


def backfill(db: str, api: StandinAPI, *args: str) -> tuple[int, str, str]:
    """Run `trialdiff backfill` against the stand-in with no politeness delay."""
    ids = [a for a in args if a.startswith("NCT")] or [NCT]
    options = [a for a in args if not a.startswith("NCT")]
    return run(db, "backfill", *ids, "--api", api.base_url, "--delay", "0", "--retries", "1",
               *options, obj=NO_SLEEP)


def sync(db: str, api: StandinAPI, at: str) -> tuple[int, str, str]:
    """Run `trialdiff sync` of the study against the stand-in, observed at a given time."""
    return run(db, "sync", NCT, "--api", api.base_url, "--delay", "0", "--at", at, obj=NO_SLEEP)


def stored(db: str) -> list[tuple[str, str, str]]:
    """Return the stored changes as (day, path, kind), sorted."""
    conn = sqlite3.connect(db)
    rows = conn.execute("select substr(detected_at, 1, 10), path, kind from changes")
    return sorted(rows)


def requests(api: StandinAPI) -> list[tuple[str, dict[str, str]]]:
    """Return the stand-in's request log as (path, query) pairs."""
    return [(r.path, r.query) for r in api.requests]


def real_change_set(day: str, old: Any = OLD, new: Any = NEW) -> list[tuple[str, str, str]]:
    """Return the real changes between two versions, dated on a day."""
    return sorted((day, path, kind)
                  for path, kind in changed_paths(extract_fields(old), extract_fields(new)))


def test_html_conversion_keeps_the_words() -> None:
    criteria = NEW["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    converted = html_text(criteria)
    assert "<li>" in converted and "\n" not in converted
    assert neutral_text(converted) == neutral_text(criteria)


def test_the_history_endpoints_sit_at_the_site_root() -> None:
    assert site_root("https://clinicaltrials.gov/api/v2/") == "https://clinicaltrials.gov"
    with pytest.raises(UsageError):
        site_root("https://example.org/v2")


@pytest.mark.parametrize("markup", ["html", "markdown"])
def test_backfill_dates_each_version_by_when_it_went_public(
    db_path: str, api: StandinAPI, markup: str
) -> None:
    convert = html_record if markup == "html" else copy.deepcopy
    api.set_history(NCT, [(V0_QC, convert(OLD)), (V1_QC, convert(NEW))])
    code, out, err = backfill(db_path, api)
    assert (code, err) == (0, "")
    assert f"{NCT}  {V1_DAY}  status.overallStatus \u2014 changed" in out
    assert stored(db_path) == real_change_set(V1_DAY)  # not the QC day, 2025-06-28
    assert requests(api) == [(LISTING, {"history": "true"}), (f"{LISTING}/history/0", {}),
                             (f"{LISTING}/history/1", {})]
    # The synced present, in Markdown, meets the backfilled history with no false change.
    code, out, _ = sync(db_path, api, SYNC_AT)
    assert code == 0 and "0 changes" in out
    assert stored(db_path) == real_change_set(V1_DAY)
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
    assert stored(db_path) == real_change_set(V1_DAY)
    lines = out.splitlines()
    assert len(lines) - 1 == len(real_change_set(V1_DAY))
    code, out, _ = sync(db_path, api, "2025-07-03T06:00:00Z")
    assert code == 0 and "0 changes" in out
    # Exactly the consecutive-version changes, each dated by when its version went public.
    assert stored(db_path) == real_change_set(V1_DAY)
    conn = sqlite3.connect(db_path)
    assert conn.execute("select observed_at, source, source_version from snapshots "
                        "order by seq").fetchall() == [
        (f"{V0_DAY}T00:00:00.000Z", "backfill", 0),
        (f"{S}T06:00:00.000Z", "sync", None),
        (f"{V1_DAY}T00:00:00.000Z", "backfill", 1),
        ("2025-07-03T06:00:00.000Z", "sync", None),  # Markdown after HTML: no change
    ]
    assert run(db_path, "check")[0] == 0


def test_a_version_synced_late_is_redated_to_when_it_went_public(
    db_path: str, api: StandinAPI
) -> None:
    api.put_study(copy.deepcopy(OLD))
    sync(db_path, api, f"{S}T06:00:00Z")
    api.put_study(copy.deepcopy(NEW))
    sync(db_path, api, "2025-07-03T06:00:00Z")  # saw version 1 two days after it went public
    assert stored(db_path) == real_change_set("2025-07-03")
    api.set_history(NCT, HISTORY)
    code, out, _ = backfill(db_path, api)
    assert code == 0
    count = len(real_change_set(V1_DAY))
    assert stored(db_path) == real_change_set(V1_DAY)
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
    assert stored(db_path) == expected
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
    before = stored(db_path)
    api.clear_requests()
    code, out, _ = backfill(db_path, api)
    assert code == 0 and "0 changes" in out
    assert requests(api) == [(LISTING, {"history": "true"})]
    assert stored(db_path) == before


def test_a_failed_backfill_counts_what_it_stored_and_resumes(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("status", status=503, path_prefix=f"{LISTING}/history/1", times=5))
    code, out, err = backfill(db_path, api)
    assert code == 1 and "503" in err
    assert stored(db_path) == []  # version 0 stored, as a silent baseline
    assert "0 changes, 1 failed" in out
    api.clear_faults()
    api.clear_requests()
    code, _, _ = backfill(db_path, api)
    assert code == 0
    assert requests(api) == [(LISTING, {"history": "true"}), (f"{LISTING}/history/1", {})]
    assert stored(db_path) == real_change_set(V1_DAY)


def test_since_takes_only_versions_public_since(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    # Version 1 was QC'd the day before, but went public on the day asked for.
    code, _, _ = backfill(db_path, api, "--since", V1_DAY)
    assert code == 0 and stored(db_path) == []
    assert [p for p, _ in requests(api)] == [LISTING, f"{LISTING}/history/1"]
    _, history, _ = run(db_path, "history", NCT)
    assert "backfill v1" in history and "backfill v0" not in history


def test_route_a_only_the_way_the_site_and_published_clients_list(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history_routes("query")  # /history answers 404
    code, _, err = backfill(db_path, api)
    assert (code, err) == (0, "")
    assert [p for p, _ in requests(api)] == [LISTING, f"{LISTING}/history/0",
                                             f"{LISTING}/history/1"]
    assert stored(db_path) == real_change_set(V1_DAY)


def test_route_b_only_is_the_fallback_and_then_asked_first(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history(OTHER, [("2023-11-14", html_record(OTHER_OLD)),
                            ("2025-06-12", html_record(OTHER_NEW))])
    api.set_history_routes("path")  # ?history=true answers 404
    code, out, err = backfill(db_path, api, NCT, OTHER)
    assert (code, err) == (0, "")
    assert [p for p, _ in requests(api)] == [
        LISTING, f"{LISTING}/history", f"{LISTING}/history/0", f"{LISTING}/history/1",
        f"/api/int/studies/{OTHER}/history", f"/api/int/studies/{OTHER}/history/0",
        f"/api/int/studies/{OTHER}/history/1",
    ]
    assert stored(db_path) == sorted(real_change_set(V1_DAY) + real_change_set(
        "2025-06-13", OTHER_OLD, OTHER_NEW))
    assert "2 studies checked, 2 changed" in out


def test_route_a_without_its_history_falls_back_with_a_warning(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    body = json.dumps({"study": NEW, "history": {"changes": []}})
    api.add_fault(Fault("status", status=200, body=body, path_prefix=LISTING,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api)
    assert code == 0
    assert err == (f"trialdiff: warning: {NCT}: {LISTING}?history=true answered without the "
                   "keys history.lastUpdateVersions, history.originalData, "
                   f"history.outcomesUpdateCount; used {LISTING}/history instead\n")
    assert stored(db_path) == real_change_set(V1_DAY)


def test_unknown_keys_are_named_in_one_warning_and_the_rest_is_stored(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    listing = json.loads(api.respond(LISTING, "history=true", {"history": "true"}).body)
    listing["studyCardsV2"] = {}
    for entry in listing["history"]["changes"]:
        entry["submitter"] = "x"
    api.add_fault(Fault("status", status=200, body=json.dumps(listing), path_prefix=LISTING,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api)
    assert code == 0
    assert err.splitlines() == [
        "trialdiff: warning: /api/int/studies/{id}?history=true has keys trialdiff does not "
        f"know: studyCardsV2 (first seen for {NCT}); they were ignored",
        "trialdiff: warning: a history listing entry has keys trialdiff does not know: "
        f"submitter (first seen for {NCT}); they were ignored",
    ]
    assert stored(db_path) == real_change_set(V1_DAY)


def _listing(*entries: dict[str, Any]) -> dict[str, Any]:
    """Return a route-A listing with the given entries."""
    return {"study": {}, "history": {"changes": list(entries), "originalData": {},
                                     "lastUpdateVersions": {}, "outcomesUpdateCount": 0}}


def _entry(version: int, day: str, **extra: Any) -> dict[str, Any]:
    """Return one listing entry with every key the real listing has."""
    entry = {"version": version, "date": day, "status": "RECRUITING",
             "studyType": "INTERVENTIONAL", "moduleLabels": [], "lastUpdateSubmitQcDate": day}
    entry.update(extra)
    return {k: v for k, v in entry.items() if v is not ...}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (LISTING, _listing(_entry(0, V0_QC), _entry(2, V1_QC)), "not contiguous from 0"),
        (LISTING, _listing(_entry(0, V0_QC), _entry(1, V1_QC, moduleLabels=...)),
         "history entry 1 lacks the keys moduleLabels"),
        (LISTING, _listing(_entry(0, V1_QC), _entry(1, V0_QC)),
         f"version 1 is dated {V0_QC}, before version 0 ({V1_QC}): the version dates go "
         "backwards"),
        (f"{LISTING}/history/1", {"studyVersion": 0, "study": NEW}, "the body is version 0"),
        (f"{LISTING}/history/1", {"studyVersion": 1, "study": load("v2/NCT04857515.json")},
         "the body is for 'NCT04857515'"),
        (f"{LISTING}/history/1", {"studyVersion": 1}, "the body lacks the keys study"),
    ],
)
def test_a_changed_shape_stops_with_a_clear_message(
    db_path: str, api: StandinAPI, path: str, body: dict[str, Any], message: str
) -> None:
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("status", status=200, body=json.dumps(body), path_prefix=path,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api, NCT, OTHER)
    assert code == 1 and message in err and "Traceback" not in err
    assert stored(db_path) == []
    assert not [p for p, _ in requests(api) if OTHER in p]  # the run stopped
    conn = sqlite3.connect(db_path)
    status, errors = conn.execute("select status, errors from runs").fetchone()
    # A bad listing stops before the study is checked; a bad version after.
    assert status == ("failed" if path == LISTING else "partial") and message in errors


def test_version_dates_going_backwards_by_publication_are_refused(
    db_path: str, api: StandinAPI
) -> None:
    earlier = html_record(NEW)
    earlier["protocolSection"]["statusModule"]["lastUpdatePostDateStruct"]["date"] = "2023-06-01"
    api.set_history(NCT, [(V0_QC, html_record(OLD)), (V1_QC, earlier)])
    code, _, err = backfill(db_path, api)
    assert code == 1
    assert err == (f"trialdiff: error: {NCT}: version 1 went public on 2023-06-01 but version 0 on "
                   f"{V0_DAY}: the version dates go backwards; nothing more was stored\n")
    assert sqlite3.connect(db_path).execute(
        "select version from history_versions").fetchall() == [(0,)]


def test_both_routes_failing_for_a_study_api_v2_knows_stops_the_run(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    api.set_history_routes()  # neither route answers
    code, out, err = backfill(db_path, api, NCT, OTHER)
    assert code == 1
    assert err == (f"trialdiff: error: {NCT}: API v2 knows this study but no record-history "
                   f"listing answers ({LISTING}?history=true answered 404; {LISTING}/history "
                   "answered 404); the endpoints changed shape, so nothing was stored\n")
    assert [p for p, _ in requests(api)] == [LISTING, f"{LISTING}/history",
                                             f"/api/v2/studies/{NCT}"]
    assert out == ""


def test_a_study_the_registry_does_not_know_fails_alone(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    code, out, err = backfill(db_path, api, OTHER, NCT)  # OTHER: no history, not in API v2
    assert code == 1
    assert err == (f"trialdiff: {OTHER}: not in the registry (404 from API v2 and from both "
                   "record-history listings)\n")
    assert stored(db_path) == real_change_set(V1_DAY)
    assert "1 failed" in out.splitlines()[-1]


def test_a_history_listing_whose_headers_drip_in_meets_the_deadline(api: StandinAPI) -> None:
    api.set_history(NCT, HISTORY)
    api.add_fault(Fault("drip_head", seconds=0.1, chunk=1, path_prefix=LISTING))
    client = Client(api.root_url, Pacing(delay=0, timeout=0.5, deadline=1, retries=0))
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"^{LISTING}: took longer than the 1 s deadline; "
                                         r"gave up after 1 attempt in 1 s$"):
        HistoryAPI(client).listing(NCT)
    assert time.monotonic() - started < 2.5  # the head alone would take over 6 s
    assert [v.number for v in HistoryAPI(client).listing(NCT)] == [0, 1]  # then it answers
    client.close()


def test_a_version_past_the_end_is_no_such_version_not_a_user_agent_problem(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    client = Client(api.root_url, Pacing(delay=0, retries=1))
    with pytest.raises(FetchError, match="no such version 2") as raised:
        HistoryAPI(client).version(NCT, 2)
    assert "User-Agent" not in str(raised.value)
    # The listing names a version the version endpoint does not have: one request, no retry.
    stale = _listing(_entry(0, V0_QC), _entry(1, V1_QC), _entry(2, V1_QC))
    api.add_fault(Fault("status", status=200, body=json.dumps(stale), path_prefix=LISTING,
                        headers={"Content-Type": "application/json"}))
    api.clear_requests()
    code, out, err = backfill(db_path, api)
    assert code == 1 and "no such version 2" in err and "User-Agent" not in err
    assert [p for p, _ in requests(api)].count(f"{LISTING}/history/2") == 1
    assert stored(db_path) == real_change_set(V1_DAY)  # what was there is kept and counted
    assert f"{len(real_change_set(V1_DAY))} changes" in out


def test_sync_backfill_new_takes_in_newly_tracked_studies_once(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, HISTORY)
    run(db_path, "track", NCT)
    args = ("sync", "--api", api.base_url, "--delay", "0", "--backfill-new")
    code, out, _ = run(db_path, *args, "--at", SYNC_AT)
    assert code == 0 and f"{NCT}  {V1_DAY}  status.overallStatus" in out
    assert stored(db_path) == real_change_set(V1_DAY)
    api.clear_requests()
    run(db_path, *args, "--at", "2025-07-08T06:00:00Z")
    assert not [r for r in api.requests if "/api/int/" in r.path]


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
    expected = changed_paths(extract_fields(v0, markup="html"), extract_fields(current), True)
    assert sorted((p, k) for _, p, k in stored(db_path)) == sorted(expected)
    assert {d for d, _, _ in stored(db_path)} == {"2025-03-21"}  # seen at the first sync
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
