"""Backfill against the stand-in's record-history endpoints, in HTML and in Markdown markup."""

from __future__ import annotations

import copy
import html
import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import load, version_pair
from standin_api import Fault, StandinAPI

from trialdiff.cli import cli
from trialdiff.diff import changed_paths
from trialdiff.errors import UsageError
from trialdiff.history import int_base
from trialdiff.normalize import extract_fields, neutral_text

NCT = "NCT05827016"
OLD, NEW = version_pair(NCT)  # real versions: 2023-06-07 and 2025-07-01
V0_DAY, V1_DAY, SYNC_AT = "2023-06-07", "2025-07-01", "2025-07-07T06:00:00Z"
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


@pytest.fixture
def api() -> Iterator[StandinAPI]:
    with StandinAPI([copy.deepcopy(NEW)]) as server:
        yield server


def run(db: str, *args: str) -> tuple[int, str, str]:
    """Run trialdiff and return (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, ["--db", db, *args])
    return result.exit_code, result.stdout, result.stderr


def backfill(db: str, api: StandinAPI, *args: str) -> tuple[int, str, str]:
    """Run `trialdiff backfill` against the stand-in with no politeness delay."""
    return run(db, "backfill", NCT, "--api", api.base_url, "--delay", "0", "--retries", "1",
               *args)


def stored(db: str) -> list[tuple[str, str, str]]:
    """Return the study's stored changes as (day, path, kind), sorted."""
    conn = sqlite3.connect(db)
    rows = conn.execute("select substr(detected_at, 1, 10), path, kind from changes")
    return sorted(rows)


def real_change_set(day: str) -> list[tuple[str, str, str]]:
    """Return the real changes between the two versions, dated on a day."""
    return sorted((day, path, kind)
                  for path, kind in changed_paths(extract_fields(OLD), extract_fields(NEW)))


def test_html_conversion_keeps_the_words() -> None:
    criteria = NEW["protocolSection"]["eligibilityModule"]["eligibilityCriteria"]
    converted = html_text(criteria)
    assert "<li>" in converted and "\n" not in converted
    assert neutral_text(converted) == neutral_text(criteria)


def test_the_history_base_is_api_int() -> None:
    assert int_base("https://clinicaltrials.gov/api/v2") == "https://clinicaltrials.gov/api/int"
    with pytest.raises(UsageError):
        int_base("https://example.org/v2")


@pytest.mark.parametrize("markup", ["html", "markdown"])
def test_backfill_of_an_untracked_study_stores_dated_versions(
    db_path: str, api: StandinAPI, markup: str
) -> None:
    convert = html_record if markup == "html" else copy.deepcopy
    api.set_history(NCT, [(V0_DAY, convert(OLD)), (V1_DAY, convert(NEW))])
    code, out, err = backfill(db_path, api)
    assert (code, err) == (0, "")
    assert f"{NCT}  {V1_DAY}  status.overallStatus \u2014 changed" in out
    assert stored(db_path) == real_change_set(V1_DAY)
    _, history, _ = run(db_path, "history", NCT)
    assert f"{V0_DAY}T00:00:00.000Z  backfill v0" in history
    assert f"{V1_DAY}T00:00:00.000Z  backfill v1" in history
    # The synced present, in Markdown, meets the backfilled history with no false change.
    code, out, _ = run(db_path, "sync", NCT, "--api", api.base_url, "--delay", "0",
                       "--at", SYNC_AT)
    assert code == 0 and "0 changes" in out
    assert stored(db_path) == real_change_set(V1_DAY)
    assert run(db_path, "check")[0] == 0


def test_backfill_slots_versions_in_before_the_first_synced_snapshot(
    db_path: str, api: StandinAPI
) -> None:
    run(db_path, "sync", NCT, "--api", api.base_url, "--delay", "0", "--at", SYNC_AT)
    assert stored(db_path) == []  # the first synced snapshot is a silent baseline
    api.set_history(NCT, [(V0_DAY, html_record(OLD)), (V1_DAY, html_record(NEW))])
    code, _, _ = backfill(db_path, api)
    assert code == 0
    assert stored(db_path) == real_change_set(V1_DAY)  # nothing at the seam
    _, section, _ = run(db_path, "recent", NCT, "--as-of", "2025-07-10", "--limit", "2")
    assert section.splitlines()[2:] == [
        f"- `status.lastUpdatePostDate` \u2014 changed _({V1_DAY})_",
        f"- `status.overallStatus` \u2014 changed _({V1_DAY})_",
    ]
    conn = sqlite3.connect(db_path)
    sources = conn.execute("select source, source_version, markup from snapshots "
                           "where nct_id = ? order by seq", [NCT]).fetchall()
    assert sources == [("backfill", 0, "html"), ("backfill", 1, "html"), ("sync", None,
                                                                             "markdown")]
    assert run(db_path, "check")[0] == 0


def test_backfill_is_idempotent_and_fetches_nothing_twice(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, [(V0_DAY, html_record(OLD)), (V1_DAY, html_record(NEW))])
    backfill(db_path, api)
    before = stored(db_path)
    api.clear_requests()
    code, out, _ = backfill(db_path, api)
    assert code == 0 and "0 changes" in out
    assert [r.path for r in api.requests] == [f"/api/int/studies/{NCT}/history"]
    assert stored(db_path) == before


def test_a_failed_backfill_resumes_at_the_next_version(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, [(V0_DAY, html_record(OLD)), (V1_DAY, html_record(NEW))])
    api.add_fault(Fault("status", status=503, path_prefix=f"/api/int/studies/{NCT}/history/1",
                        times=5))
    code, _, err = backfill(db_path, api)
    assert code == 1 and "503" in err
    assert stored(db_path) == []  # version 0 stored, as a silent baseline
    api.clear_faults()
    api.clear_requests()
    code, _, _ = backfill(db_path, api)
    assert code == 0
    assert [r.path for r in api.requests] == [f"/api/int/studies/{NCT}/history",
                                             f"/api/int/studies/{NCT}/history/1"]
    assert stored(db_path) == real_change_set(V1_DAY)


def test_since_takes_only_later_versions(db_path: str, api: StandinAPI) -> None:
    api.set_history(NCT, [(V0_DAY, html_record(OLD)), (V1_DAY, html_record(NEW))])
    code, _, _ = backfill(db_path, api, "--since", "2024-01-01")
    assert code == 0 and stored(db_path) == []
    _, history, _ = run(db_path, "history", NCT)
    assert "backfill v1" in history and "backfill v0" not in history


@pytest.mark.parametrize(
    ("listing_or_version", "body", "message"),
    [
        ("", {"changes": [{"version": 0, "date": V0_DAY}, {"version": 2, "date": V1_DAY}]},
         "not contiguous from 0"),
        ("", {"versions": []}, "changed shape"),
        ("/1", {"studyVersion": 0, "study": NEW}, "the body is version 0"),
        ("/1", {"studyVersion": 1, "study": load("v2/NCT04857515.json")},
         "the body is for 'NCT04857515'"),
    ],
)
def test_a_changed_shape_stops_with_a_clear_message_and_stores_nothing(
    db_path: str, api: StandinAPI, listing_or_version: str, body: dict[str, Any], message: str
) -> None:
    api.set_history(NCT, [(V0_DAY, html_record(OLD)), (V1_DAY, html_record(NEW))])
    path = f"/api/int/studies/{NCT}/history{listing_or_version}"
    api.add_fault(Fault("status", status=200, body=json.dumps(body), path_prefix=path,
                        headers={"Content-Type": "application/json"}))
    code, _, err = backfill(db_path, api)
    assert code == 1 and message in err and "Traceback" not in err
    assert stored(db_path) == []
    if not listing_or_version:
        assert sqlite3.connect(db_path).execute("select count(*) from snapshots").fetchone()[0] == 0


def test_sync_backfill_new_takes_in_newly_tracked_studies_once(
    db_path: str, api: StandinAPI
) -> None:
    api.set_history(NCT, [(V0_DAY, html_record(OLD)), (V1_DAY, html_record(NEW))])
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
        server.set_history("NCT04280705", [("2020-02-21", v0)])
        run(db_path, "sync", "NCT04280705", "--api", server.base_url, "--delay", "0", "--at",
            "2025-03-21T06:00:00Z")
        code, _, err = run(db_path, "backfill", "NCT04280705", "--api", server.base_url,
                           "--delay", "0")
    assert code == 0, err
    expected = changed_paths(extract_fields(v0, markup="html"), extract_fields(current), True)
    assert sorted((p, k) for _, p, k in stored(db_path)) == sorted(expected)
    assert {d for d, _, _ in stored(db_path)} == {"2025-03-21"}  # seen at the first sync
    assert run(db_path, "check")[0] == 0
