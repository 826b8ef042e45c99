"""The web view: Datasette's own test client, then a real `trialdiff serve` in headless Chromium.

The database holds the sample archive's real records (NCT05827016 goes NOT_YET_RECRUITING ->
RECRUITING and opens 200+ sites; NCT06060392's completion dates slip 245 and 274 days), the
two snapshots of NCT05085444, and a copy of NCT05085444 (as NCT09999999) whose title,
criteria, site and status were made hostile, observed again today (so the last 7 days hold it).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FIXTURES, ROOT, SAMPLE, copy_db, run, trialdiff_env

from trialdiff.model import utc_timestamp
from trialdiff.schema import SCHEMA
from trialdiff.web.app import make_datasette
from trialdiff.web.metadata import QUERIES
from trialdiff.web.timeline import status_periods

GOLDEN = FIXTURES / "NCT05085444"
ARTIFACTS = ROOT / "tests" / "artifacts"
HOSTILE = '<script>alert("x")</script>'


def hostile_record() -> dict[str, Any]:
    """Return NCT05085444's record as NCT09999999, with hostile strings where text goes."""
    record: dict[str, Any] = json.loads((GOLDEN / "full.json").read_text(encoding="utf-8"))
    p = record["protocolSection"]
    p["identificationModule"]["nctId"] = "NCT09999999"
    p["identificationModule"]["briefTitle"] = f"{HOSTILE} & \"quoted\" <b>title</b>"
    p["eligibilityModule"]["eligibilityCriteria"] = (
        f"Inclusion: <img src=x onerror=alert(1)>\n{HOSTILE}")
    p["contactsLocationsModule"]["locations"][0]["facility"] = "</title><svg onload=alert(2)>"
    p["statusModule"]["overallStatus"] = '"><script>alert(3)</script>'
    # A bidi override turns a path around wherever it is shown raw (Datasette's cells).
    p["conditionsModule"]["keywords"] = ["rtl \u202eevil\x1b[31m"]
    # An image in Markdown text would have every reader's browser fetch what it names.
    p.setdefault("descriptionModule", {})["briefSummary"] = (
        "Summary ![pixel](http://127.0.0.1:9/track.png) ends.")
    return record


@pytest.fixture(scope="module")
def web_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return a database of real records and one hostile study."""
    folder = tmp_path_factory.mktemp("web")
    path = str(folder / "trialdiff.db")
    assert run(path, "import", str(SAMPLE))[0] == 0
    for at, name in (("2026-04-20T09:00:00Z", "partial"), ("2026-05-12T07:21:49.285Z", "full")):
        assert run(path, "import", "--at", at, str(GOLDEN / f"{name}.json"))[0] == 0
    plain = json.loads((GOLDEN / "full.json").read_text(encoding="utf-8"))
    plain["protocolSection"]["identificationModule"]["nctId"] = "NCT09999999"
    (folder / "before.json").write_text(json.dumps(plain), encoding="utf-8")
    (folder / "hostile.json").write_text(json.dumps(hostile_record()), encoding="utf-8")
    assert run(path, "import", "--at", "2026-05-12", str(folder / "before.json"))[0] == 0
    assert run(path, "import", "--at", utc_timestamp(), str(folder / "hostile.json"))[0] == 0
    return path


def fetch(db_path: str, *urls: str) -> list[Any]:
    """Return Datasette's responses to some paths, through its own test client."""
    datasette = make_datasette(db_path)

    async def get_all() -> list[Any]:
        return [await datasette.client.get(url) for url in urls]

    return asyncio.run(get_all())


def test_a_database_on_read_only_media_is_served(
    db_path: str, read_only_media: tuple[Path, Callable[[], None]]
) -> None:
    # Datasette's mode=ro cannot read a WAL-mode file there: it is served as immutable.
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    media, freeze = read_only_media
    db = str(media / "trialdiff.db")
    copy_db(db_path, db)
    freeze()
    changes, study = fetch(db, "/trialdiff/changes.json?_shape=array&_size=max",
                           "/study/NCT05827016")
    assert (changes.status_code, study.status_code) == (200, 200)
    assert len(changes.json()) == 528
    assert "status.overallStatus" in study.text


def test_every_page_and_canned_query_answers(web_db: str) -> None:
    tables = ["studies", "changes", "snapshots", "runs", "change_log", "sightings"]
    urls = ["/", "/trialdiff", *(f"/trialdiff/{t}" for t in tables),
            *(f"/trialdiff/{q.name}?nct_id=NCT05827016&country=" for q in QUERIES),
            *(f"/trialdiff/{q.name}.json?nct_id=NCT05827016&country=&_shape=array"
              for q in QUERIES),
            "/study/NCT05827016", "/study/nct06060392", "/study/NCT05085444"]
    responses = fetch(web_db, *urls)
    assert {url: r.status_code for url, r in zip(urls, responses, strict=True)} == {
        url: 200 for url in urls}
    results = {q.name: responses[urls.index(f"/trialdiff/{q.name}.json?nct_id=NCT05827016"
                                            "&country=&_shape=array")].json() for q in QUERIES}
    assert {r["nct_id"] for r in results["completion_slipped"]} == {"NCT06060392"}
    assert {r["path"] for r in results["completion_slipped"]} == {
        "status.primaryCompletionDate", "status.completionDate"}
    major = results["major_last_7_days"]
    assert sorted((r["nct_id"], r["path"]) for r in major) == [
        ("NCT09999999", "eligibility.criteria"), ("NCT09999999", "status.overallStatus")]
    sites = results["sites_opened_closed"]
    assert sites and {r["event"] for r in sites} <= {"opened", "closed"}
    assert all(r["path"].startswith("locations.") and r["country"] for r in sites)
    country = sites[0]["country"]  # case-blind, as a watch's site_added:COUNTRY is
    (same,) = fetch(web_db, f"/trialdiff/sites_opened_closed.json?country={country.upper()}"
                            "&_shape=array")
    assert same.json() and {r["country"] for r in same.json()} == {country}
    timeline = results["study_timeline"]
    assert len(timeline) == 522 and {r["nct_id"] for r in timeline} == {"NCT05827016"}
    assert results["stopped"] == []  # the sample's studies start recruiting; none stopped
    feeds = fetch(web_db, *(f"/trialdiff/{q.name}.atom?nct_id=NCT05827016&country="
                            for q in QUERIES))
    for query, feed in zip(QUERIES, feeds, strict=True):  # every canned query is a feed too
        assert feed.headers["content-type"].startswith("application/atom+xml"), query.name
        root = ET.fromstring(feed.text)
        assert root.findtext("{http://www.w3.org/2005/Atom}title") == f"trialdiff: {query.title}"
        entries = root.findall("{http://www.w3.org/2005/Atom}entry")
        assert bool(entries) == bool(results[query.name]), query.name
    (missing,) = fetch(web_db, "/study/NCT00000001")
    assert missing.status_code == 404


def test_a_feed_of_a_cut_result_leaves_out_the_study_day_at_the_cut(web_db: str) -> None:
    # A table page holds 100 rows; NCT05827016's 2025-07-07 holds 522. Its entry summarised
    # the rows on the page under the day's own id: "56 field changes" against the CLI's 522.
    atom = "{http://www.w3.org/2005/Atom}"

    def entries(text: str) -> dict[str, str]:
        """Return each entry's id and what its title says of the day (a table has no titles)."""
        return {e.findtext(f"{atom}id") or "": re.sub(r"^.* on (?=\d{4}-\d\d-\d\d: )", "",
                                                     e.findtext(f"{atom}title") or "")
                for e in ET.fromstring(text).iter(f"{atom}entry")}

    code, out, _ = run(web_db, "changes", "--format", "atom")
    assert code == 0
    whole = entries(out)
    for url in ("/trialdiff/changes.atom", "/trialdiff/change_log.atom",
                "/trialdiff/changes.atom?_size=1000"):
        (feed,) = fetch(web_db, url)
        shown = entries(feed.text)
        assert shown and all(whole[key] == title for key, title in shown.items()), url
    assert "tag:trialdiff,2024:NCT05827016/2025-07-07" not in entries(
        fetch(web_db, "/trialdiff/changes.atom")[0].text)
    # Every page after the first: its first study-day went on from the page before, and was
    # summarised under the day's own id ("99 field changes" of 522).
    first = fetch(web_db, "/trialdiff/changes.json?_shape=objects")[0].json()
    token, pages, everywhere = first["next"], 0, set(entries(
        fetch(web_db, "/trialdiff/changes.atom")[0].text))
    split = set()  # the study-days that go on from one page to the next
    rows = first["rows"]
    while token:
        feed, page = fetch(web_db, f"/trialdiff/changes.atom?_next={token}",
                           f"/trialdiff/changes.json?_next={token}&_shape=objects")
        shown, pages = entries(feed.text), pages + 1
        assert all(whole[key] == title for key, title in shown.items()), pages
        everywhere |= set(shown)
        edge = [f"tag:trialdiff,2024:{r['nct_id']}/{r['detected_at'][:10]}"
                for r in (rows[-1], page.json()["rows"][0])]
        if edge[0] == edge[1]:
            split.add(edge[0])
        rows, token = page.json()["rows"], page.json()["next"]
    # Only a study-day a page boundary cuts is on no page (a clean boundary drops nothing).
    assert pages >= 1 and set(whole) - everywhere == split


def test_a_filtered_feed_names_its_filter_in_its_ids_and_a_table_without_changes_has_none(
    web_db: str
) -> None:
    atom = "{http://www.w3.org/2005/Atom}"
    major, query, studies = fetch(web_db, "/trialdiff/change_log.atom?severity=major",
                                  "/trialdiff/study_timeline.atom?nct_id=NCT05827016",
                                  "/trialdiff/studies.atom")
    for feed, subject, entry in (
            (major, "severity=major", "severity=major"),
            # A study id chooses entries, not what one holds: as the CLI's, entries leave it out.
            (query, "source=study_timeline&nct_id=NCT05827016", "source=study_timeline")):
        root = ET.fromstring(feed.text)
        assert root.findtext(f"{atom}id").endswith(f"?{subject}")
        ids = [e.findtext(f"{atom}id") for e in root.iter(f"{atom}entry")]
        assert ids and all(i.endswith(f"?{entry}") for i in ids)  # not the whole day's
    # A typed URL on a result with no changes: Datasette only hid the link (it was a 500).
    assert studies.status_code == 400 and "a feed needs whole changes" in studies.text
    (empty,) = fetch(web_db, "/trialdiff/stopped.atom")
    seen = sqlite3.connect(web_db).execute("select max(last_seen_at) from sightings").fetchone()
    assert ET.fromstring(empty.text).findtext(f"{atom}updated") == seen[0]


def test_an_error_page_prints_no_traceback_to_the_server_log(
    web_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Datasette's default handler prints every error's traceback, locals and all, when rich
    # is importable (trialdiff depends on it): a mistyped study id must not flood the log.
    (missing,) = fetch(web_db, "/study/NCT99999999")
    assert missing.status_code == 404
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err


def test_an_as_of_the_calendar_cannot_hold_is_a_400_not_a_500(
    web_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # 9999-12-31's window ends past the last date: it was a 500 with a traceback in the log.
    odd = fetch(web_db, "/study/NCT05827016?as_of=9999-12-31",
                "/study/NCT05827016?as_of=0001-01-01", "/study/NCT05827016?as_of=abc")
    assert [r.status_code for r in odd] == [400, 400, 400]
    assert odd[0].text == "as_of: 30 days ending 9999-12-31 leave the calendar"
    assert odd[2].text == "as_of must be an ISO 8601 date or time, such as 2025-07-07"
    for bare in fetch(web_db, "/study", "/study/"):  # no id: the table of studies
        assert bare.status_code == 302 and bare.headers["location"] == "/trialdiff/studies"
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err


def test_change_log_facets_and_metadata_from_the_schema(web_db: str) -> None:
    # No _facet given: the four facets are the change log's defaults.
    (response,) = fetch(web_db, "/trialdiff/change_log.json?nct_id=NCT06060392")
    body = response.json()
    facets = body["facet_results"]
    assert set(facets) == {"severity", "kind", "path", "overall_status"}
    assert {f["value"]: f["count"] for f in facets["severity"]["results"]} == {
        "major": 2, "info": 4}
    with sqlite3.connect(web_db) as conn:
        kinds = dict(conn.execute("select kind, count(*) from changes where nct_id = "
                                  "'NCT06060392' group by kind"))
    assert {f["value"]: f["count"] for f in facets["kind"]["results"]} == kinds
    assert len(facets["path"]["results"]) == 6
    (metadata,) = fetch(web_db, "/-/metadata.json")
    tables = metadata.json()["databases"]["trialdiff"]["tables"]
    assert tables["change_log"]["facets"] == ["severity", "kind", "path", "overall_status"]
    assert tables["changes"]["columns"]["severity"].startswith("major, minor or info")
    assert tables["records"]["hidden"] is True
    with sqlite3.connect(web_db) as conn:  # every column of every table and of the view
        for name in [*(t.name for t in SCHEMA), "change_log"]:
            real = [row[1] for row in conn.execute(f"pragma table_info({name})")]
            assert list(tables[name]["columns"]) == real, name
            assert tables[name]["description"], name


def test_private_columns_are_out_of_reach_of_sql(web_db: str) -> None:
    with sqlite3.connect(web_db) as conn:
        assert conn.execute("select count(*) from runs where errors is not null").fetchone()[0]
    urls = ["/trialdiff.json?sql=select+errors+from+runs&_shape=array",
            "/trialdiff.json?sql=select+group_concat(errors)+as+e+from+runs&_shape=array",
            "/trialdiff/runs.json?_shape=array"]
    plain, joined, table = (r.json() for r in fetch(web_db, *urls))
    assert plain and all(row["errors"] is None for row in plain)
    assert joined == [{"e": None}]
    assert all(row["errors"] is None for row in table)
    (attach,) = fetch(web_db, "/trialdiff.json?sql=attach+database+'/tmp/x.db'+as+x")
    assert attach.status_code == 400


def test_the_study_page_holds_its_changes_newest_first(web_db: str) -> None:
    (response,) = fetch(web_db, "/study/NCT06060392")
    html = response.text
    changes = re.findall(r"<li><code>([^<]+)</code> \u2014 (\w+) <em>\((\w+)\)</em>", html)
    with sqlite3.connect(web_db) as conn:
        stored = conn.execute("select path, kind, severity from changes "
                              "where nct_id = 'NCT06060392'").fetchall()
    assert sorted(changes) == sorted(stored)
    assert len(changes) == 6 and ("status.primaryCompletionDate", "changed", "major") in changes
    assert "moved +274 days" in html  # the feed's facts
    assert 'href="https://clinicaltrials.gov/study/NCT06060392"' in html
    assert 'href="/trialdiff/change_log?nct_id=NCT06060392"' in html
    (big,) = fetch(web_db, "/study/NCT05827016")
    assert big.text.count('class="change-mark"') == 522
    days = re.findall(r"<h3>(\d{4}-\d{2}-\d{2})</h3>", big.text)
    assert days == sorted(days, reverse=True) and days
    assert "<del>" in big.text or "<ins>" in big.text  # the criteria's word diff


def test_one_status_band_per_status_period(web_db: str) -> None:
    (response,) = fetch(web_db, "/study/NCT05827016")
    bands = re.findall(r'<rect [^>]*class="status-band"[^>]*data-status="([^"]*)"', response.text)
    assert bands == ["NOT_YET_RECRUITING", "RECRUITING"]
    (response,) = fetch(web_db, "/study/NCT06060392")
    assert re.findall(r'class="status-band"[^>]*data-status="([^"]*)"', response.text) == [
        "RECRUITING"]


def test_the_timeline_says_no_more_than_it_has_seen_and_acts_on_no_control_character(
) -> None:
    from trialdiff.web.timeline import Mark, State, timeline_svg

    states = [State("2026-04-01T00:00:00.000Z", "RECRUITING", None, None),
              State("2026-12-05T00:00:00.000Z", "SUSPENDED", None, None)]
    marks = [Mark("2026-12-05T00:00:00.000Z", "locations.a\u202eb\x1b[31m|c||d", "added",
                  "minor")]
    svg = timeline_svg(states, marks, "2026-12-05T00:00:00.000Z")
    # The band after the last observation is room to draw it, not a time it was seen in.
    assert "<title>SUSPENDED: 2026-12-05 to 2026-12-05</title>" in svg
    assert max(re.findall(r'class="tick">(\d{4}-\d\d-\d\d)<', svg)) == "2026-12-05"
    assert "\u202e" not in svg and "\x1b" not in svg
    assert "locations.a\\u202eb\\x1b[31m|c||d" in svg


def test_status_periods_merge_equal_neighbours() -> None:
    from trialdiff.web.timeline import State

    states = [State(f"2025-0{m}-01T00:00:00.000Z", s, None, None)
              for m, s in ((1, "A"), (2, "A"), (3, "B"), (4, "A"))]
    periods = status_periods(states, "2025-05-01T00:00:00.000Z")
    assert [(p.status, p.start[:7], p.end[:7]) for p in periods] == [
        ("A", "2025-01", "2025-03"), ("B", "2025-03", "2025-04"), ("A", "2025-04", "2025-05")]


def test_hostile_strings_stay_inert_in_html_svg_and_feeds(web_db: str) -> None:
    urls = ["/study/NCT09999999", "/trialdiff/change_log?nct_id=NCT09999999",
            "/trialdiff/studies", "/trialdiff/major_last_7_days",
            "/trialdiff/study_timeline?nct_id=NCT09999999"]
    for url, response in zip(urls, fetch(web_db, *urls), strict=True):
        text = response.text
        assert response.status_code == 200, url
        for raw in ("<script>alert", "<img src=x", "<svg onload", "<b>title</b>"):
            assert raw not in text, (url, raw)
    (page,) = fetch(web_db, "/study/NCT09999999")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
    (cells,) = fetch(web_db, "/trialdiff/changes?nct_id=NCT09999999&path=conditions.keywords")
    assert "rtl \\u202eevil" in cells.text and "\u202e" not in cells.text  # JSON escapes ESC
    assert "Summary" in page.text and "<img" not in page.text  # the image, no more
    assert 'data-status="&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"' in page.text
    (feed,) = fetch(web_db, "/trialdiff/study_timeline.atom?nct_id=NCT09999999")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.text)
    atom = "{http://www.w3.org/2005/Atom}"
    titles = [e.findtext(f"{atom}title") for e in root.iter(f"{atom}entry")]
    assert titles and all(HOSTILE in (t or "") for t in titles)  # text in XML, not markup
    assert "<script>" not in feed.text


def test_serve_without_the_web_extra_says_how_to_install_it(web_db: str) -> None:
    code = ("import sys; sys.modules['datasette'] = None; from trialdiff.cli import main; "
            f"sys.argv = ['trialdiff', '--db', {web_db!r}, 'serve']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("trialdiff: error: serve needs the web extra (datasette is missing): "
                           "pip install 'trialdiff[web]'\n")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def chromium(*args: str, profile: Path) -> str:
    """Run headless Chromium and return what it printed."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary is not None
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="headless Chromium is not installed (apt-get install chromium)")
def test_a_real_browser_shows_the_study_page_of_a_real_serve(tmp_path: Path) -> None:
    db = str(tmp_path / "trialdiff.db")
    assert run(db, "import", "--at", "2026-04-20T09:00:00Z", str(GOLDEN / "partial.json"))[0] == 0
    assert run(db, "import", "--at", "2026-05-12T07:21:49.285Z", str(GOLDEN / "full.json"))[0] == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", db, "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}/study/NCT05085444"
    try:
        for _ in range(100):
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        dom = chromium("--dump-dom", url, profile=tmp_path / "profile")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "study-NCT05085444.png"
        chromium(f"--screenshot={shot}", "--window-size=1280,1600", url,
                 profile=tmp_path / "profile")
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert f"read only at http://127.0.0.1:{port}/" in err
    section = dom.split("Recent Field Changes (last 30 days)</h2>")[1].split("</ul>")[0]
    expected = re.findall(r"^- `([^`]+)` \u2014 (\w+) _\((\S+)\)_$",
                          (GOLDEN / "expected-section.md").read_text(encoding="utf-8"), re.M)
    shown = re.findall(r"<li><code>([^<]+)</code> \u2014 (\w+) <em>\((\S+)\)</em></li>", section)
    assert shown == expected and len(shown) == 16
    svg = re.search(r'<svg [^>]*class="timeline".*?</svg>', dom, re.S)
    assert svg is not None
    assert re.findall(r'class="status-band"[^>]*data-status="([^"]*)"', svg.group(0)) == [
        "none", "UNKNOWN"]  # the partial sighting had no status; the full one UNKNOWN
    assert svg.group(0).count('class="change-mark"') == 16
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"


def test_a_whole_private_table_is_refused_to_sql() -> None:
    from trialdiff.web.plugin import authorizer

    conn = sqlite3.connect(":memory:")
    conn.execute("create table outbox (id integer primary key, secret text)")
    conn.execute("create table runs (id integer primary key, errors text, status text)")
    conn.execute("insert into outbox (secret) values ('hunter2')")
    conn.execute("insert into runs (errors, status) values ('[{\"input\": \"x\"}]', 'ok')")
    conn.set_authorizer(authorizer({"outbox": ("*",), "runs": ("errors",)}))
    with pytest.raises(sqlite3.DatabaseError, match="prohibited"):
        conn.execute("select secret from outbox")
    with pytest.raises(sqlite3.DatabaseError, match="prohibited"):
        conn.execute("select * from (select secret from outbox)")
    assert conn.execute("select errors, status from runs").fetchall() == [(None, "ok")]


def test_serve_warns_when_it_listens_beyond_loopback(
    web_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trialdiff.web.app as app

    calls: list[tuple[str, int, str | None]] = []
    # Record what would be served instead of binding a public address in a test.
    monkeypatch.setattr(app, "listen", lambda host, port: (host, port))
    monkeypatch.setattr(app, "run", lambda ds, address, url: calls.append((*address, url)))
    code, out, err = run(web_db, "serve", "--host", "0.0.0.0", "--port", "8123", "--open")
    assert (code, out) == (0, "")
    assert err.startswith("trialdiff: warning: listening on 0.0.0.0: anyone who can reach "
                          "this address can read the database\n")
    assert calls == [("0.0.0.0", 8123, "http://0.0.0.0:8123/")]
    code, _, err = run(web_db, "serve")
    assert code == 0 and "warning" not in err and calls[-1] == ("127.0.0.1", 8001, None)


def test_serve_on_a_port_in_use_says_so_in_one_line_and_announces_nothing(web_db: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "trialdiff", "--db", web_db, "serve",
                               "--port", str(port)], env=trialdiff_env(), capture_output=True,
                              text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"trialdiff: error: port {port} on 127.0.0.1 is in use\n"


def test_compressed_values_and_records_read_back_in_every_view(tmp_path: Path) -> None:
    from conftest import real_records

    records = real_records()
    folder = tmp_path / "day1"
    folder.mkdir()
    for number in range(80):  # enough records to train the dictionary records are kept with
        record = json.loads(json.dumps(records[number % len(records)]))
        record["protocolSection"]["identificationModule"]["nctId"] = f"NCT9{number:07d}"
        (folder / f"{number}.json").write_text(json.dumps(record))
    path = str(tmp_path / "trialdiff.db")
    assert run(path, "import", "--at", "2026-05-11", str(folder))[0] == 0
    edited = json.loads((folder / "0.json").read_text())
    # Hostile first: a table cell shows a long value's first 300 characters.
    criteria = HOSTILE + " Inclusion: adults with a confirmed diagnosis." * 40
    edited["protocolSection"]["eligibilityModule"]["eligibilityCriteria"] = criteria
    (tmp_path / "edit.json").write_text(json.dumps(edited))
    assert run(path, "import", "--at", "2026-05-12", str(tmp_path / "edit.json"))[0] == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from dictionaries").fetchone() == (1,)
        assert conn.execute("select typeof(new) from changes where path = "
                            "'eligibility.criteria'").fetchone() == ("blob",)
    study, timeline, table, feed = fetch(
        path, "/study/NCT90000000", "/trialdiff/study_timeline.json?nct_id=NCT90000000"
        "&_shape=array", "/trialdiff/changes?path=eligibility.criteria",
        "/trialdiff/change_log.atom?path=eligibility.criteria")
    assert study.status_code == 200 and "eligibility.criteria" in study.text
    (row,) = [r for r in timeline.json() if r["path"] == "eligibility.criteria"]
    assert json.loads(row["new"]) == " ".join(criteria.split())
    assert "Inclusion: adults with a confirmed diagnosis." in table.text
    assert HOSTILE not in table.text and "&lt;script&gt;" in table.text  # shown as text
    assert feed.status_code == 200 and "Inclusion: adults" in feed.text
    assert HOSTILE not in feed.text


def test_the_index_pages_count_no_private_table_and_log_no_refused_query(
    web_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home, database = fetch(web_db, "/", f"/{Path(web_db).stem}")
    assert home.status_code == database.status_code == 200
    # Datasette counted every table, the private ones too, and the authorizer refused each:
    # five "ERROR: ... not authorized" lines in the server's log for every load.
    assert "not authorized" not in capsys.readouterr().err
    assert "studies" in database.text


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_stops_serve_with_its_own_line(web_db: str, signum: int, code: int) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "trialdiff", "--db", web_db, "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=trialdiff_env())
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        server.send_signal(signum)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    # It said a write run's "interrupted (what was saved stays: run again to resume)".
    assert (server.returncode, out) == (code, "")
    assert err.splitlines()[-1] == "serve: stopped" and "resume" not in err


def _walk_pages(db_path: str, path: str, key: str) -> list[int]:
    """Return the keys of the rows on every page of a table, following each next_url."""
    datasette = make_datasette(db_path)

    async def walk() -> list[int]:
        keys, url = [], path
        while url:
            body = (await datasette.client.get(url)).json()
            keys += [row[key] for row in body["rows"]]
            url = body.get("next_url")
            url = url and url[url.index("/trialdiff/"):]
        return keys

    return asyncio.run(walk())


def test_every_change_is_on_exactly_one_page(web_db: str) -> None:
    # The changes table's default order was detected_at, which a run's changes share: Datasette
    # paged it with no tiebreaker on its first page, so page 2 repeated rows and some rows were
    # on no page, in the HTML, the JSON and the CSV (a probe).
    with sqlite3.connect(web_db) as conn:
        every = [row[0] for row in conn.execute("select id from changes order by id desc")]
    assert len(every) > 120
    assert _walk_pages(web_db, "/trialdiff/changes.json?_size=50&_shape=objects", "id") == every
    log = _walk_pages(web_db, "/trialdiff/change_log.json?_size=50&_shape=objects", "change_id")
    assert sorted(log, reverse=True) == every and len(set(log)) == len(log)


def test_a_compressed_value_is_cut_in_a_table_cell_as_a_long_text_is(web_db: str) -> None:
    # A posted results section is 90 KB to 1 MB of JSON: shown whole, a page was 5 MB.
    with sqlite3.connect(web_db) as conn:
        change_id, = conn.execute("select id from changes where typeof(new) = 'blob' "
                                  "order by id limit 1").fetchone()
    (page,) = fetch(web_db, f"/trialdiff/changes?id={change_id}")
    cells = re.findall(r'<td class="col-new[^"]*"[^>]*>(.*?)</td>', page.text, re.S)
    assert len(cells) == 1 and cells[0].strip().endswith("\u2026")
    assert len(cells[0]) < 2_000  # 300 characters and the mark, HTML-escaped: not the value


def test_the_change_log_csv_holds_every_change_past_a_long_value(web_db: str) -> None:
    # Datasette links a BLOB cell to its row by rowid, which a view lacked: the CSV ended at
    # the first compressed value with "No item with that key", answering 200 (a probe).
    with sqlite3.connect(web_db) as conn:
        (count,) = conn.execute("select count(*) from changes").fetchone()
        (blobs,) = conn.execute("select count(*) from changes where typeof(new) = 'blob' "
                                "or typeof(old) = 'blob'").fetchone()
    assert blobs
    (response,) = fetch(web_db, "/trialdiff/change_log.csv?_size=max")
    assert response.status_code == 200 and "No item with that key" not in response.text
    rows = list(csv.reader(io.StringIO(response.text)))
    assert len(rows) == count + 1 and len({row[rows[0].index("change_id")]
                                           for row in rows[1:]}) == count
