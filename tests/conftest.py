"""Shared scaffolding: real records from tests/fixtures, a fresh database file, the CLI
runner `run()` and the stand-in API fixture `api`, each defined here once."""

from __future__ import annotations

import copy
import functools
import html
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from standin_api import StandinAPI
from webhook_receiver import WebhookReceiver

from trialdiff.cli import cli
from trialdiff.diff import changed_paths, diff_snapshots
from trialdiff.folders import read_studies
from trialdiff.ingest import RunTotals, save_studies
from trialdiff.model import FieldChange, Snapshot
from trialdiff.normalize import extract_fields, study_id
from trialdiff.report import DiffReport, build_report
from trialdiff.schema import open_db
from trialdiff.sources import SourceItem

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "snapshots" / "sample"  # the quickstart's real archive: 2 days, 3 studies
SAMPLE_DAYS = ("2024-06-14", "2025-07-07")
# Observation times of the storage tests: the sample's two days, and the day after the second.
T1, T2, T3 = "2024-06-14T00:00:00.000Z", "2025-07-07T00:00:00.000Z", "2025-07-08T00:00:00.000Z"


def load(relative: str) -> dict[str, Any]:
    """Load one fixture record."""
    return json.loads((FIXTURES / relative).read_text(encoding="utf-8"))


def version_pair(nct_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the older and newer real versions of a study."""
    older, newer = sorted((FIXTURES / "versions" / nct_id).glob("*.json"))
    return load(str(older.relative_to(FIXTURES))), load(str(newer.relative_to(FIXTURES)))


def real_records() -> list[dict[str, Any]]:
    """Return every real v2 fixture record, sorted by NCT id."""
    return [load(f"v2/{p.name}") for p in sorted((FIXTURES / "v2").glob("*.json"))]


def clones(count: int, edit: bool = False) -> list[dict[str, Any]]:
    """Return real records under new ids; `edit` gives every third one a day's edit."""
    records = real_records()
    return [clone_study(records[number % len(records)], number, edit and number % 3 == 0)
            for number in range(count)]


def clone_study(record: dict[str, Any], number: int, edit: bool) -> dict[str, Any]:
    """Return a real record under a new id, NCT9 and `number`; `edit` moves its status."""
    copied = copy.deepcopy(record)
    copied["protocolSection"]["identificationModule"]["nctId"] = f"NCT9{number:07d}"
    if edit:
        copied["protocolSection"]["statusModule"]["overallStatus"] = "SUSPENDED"
    return copied


def write_day(folder: Path, records: list[dict[str, Any]]) -> Path:
    """Write records as one JSON file each; return the folder."""
    folder.mkdir()
    for number, record in enumerate(records):
        (folder / f"{number:04d}.json").write_text(json.dumps(record))
    return folder


def real_words() -> list[str]:
    """Return the words of every fixture record's criteria and detailed description."""
    words = []
    for record in real_records():
        section = record["protocolSection"]
        words += section.get("eligibilityModule", {}).get("eligibilityCriteria", "").split()
        words += section.get("descriptionModule", {}).get("detailedDescription", "").split()
    return words


def edited_words(words: list[str], edits: int, seed: int = 12) -> list[str]:
    """Return a copy of words with scattered substitutions, deletions and insertions."""
    out, rng = words[:], random.Random(seed)
    for number in range(edits):
        at = rng.randrange(len(out))
        if number % 3 == 0:
            out[at] = f"EDITED{number}"
        elif number % 3 == 1:
            del out[at]
        else:
            out.insert(at, f"INSERTED{number}")
    return out


def sample_record(day: str, nct_id: str) -> dict[str, Any]:
    """Return a real record of the sample archive."""
    record: dict[str, Any] = json.loads((SAMPLE / day / f"{nct_id}.json").read_text())
    return record


def sample_changes(nct_id: str, before: str, after: str) -> list[FieldChange]:
    """Return a sample study's real changes across the archive's two days, at given times."""
    old, new = (sample_record(day, nct_id) for day in SAMPLE_DAYS)
    return diff_snapshots(Snapshot(nct_id, before, extract_fields(old)),
                          Snapshot(nct_id, after, extract_fields(new)))


GOLDEN = ROOT / "tests" / "golden"  # rendered reports; TRIALDIFF_UPDATE_GOLDEN=1 rewrites them
REPORT_DAYS = tuple(f"{day}T00:00:00.000Z" for day in SAMPLE_DAYS)  # sample_report's snapshots


def sample_report(nct_id: str, keep: Callable[[str], bool] = lambda path: True) -> DiffReport:
    """Return the report of a sample-archive study from 2024-06-14 (1) to 2025-07-07 (2)."""
    snapshots = []
    for day, at in zip(SAMPLE_DAYS, REPORT_DAYS, strict=True):
        fields = {p: v for p, v in extract_fields(sample_record(day, nct_id)).items() if keep(p)}
        snapshots.append(Snapshot(nct_id, at, fields))
    return build_report(snapshots[0], snapshots[1], 1, 2)


def few_sites(path: str) -> bool:
    """Keep every field but the sites, save the few named `university of t…`."""
    return not path.startswith("locations.") or path.startswith("locations.university of t")


def check_golden(name: str, text: str) -> None:
    """Compare text with a golden file (or rewrite it when TRIALDIFF_UPDATE_GOLDEN is set)."""
    path = GOLDEN / name
    if os.environ.get("TRIALDIFF_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


ATOM = "{http://www.w3.org/2005/Atom}"  # the Atom namespace, as ElementTree names tags
CHANGE_DAYS = ("2024-06-14T06:00:00.000Z", "2025-07-07T06:00:00.000Z")  # real_changes' days
HOSTILE_TEXT = "a `tick` ``` | pipe\n# heading\r\n<script>&amp; \x00\x07\x1b[31m\x7f\u2028 end"
# Hand-made: hostile strings in every slot a registry record (or a path) can reach.
HOSTILE = (
    FieldChange("NCT00000001", "identification.briefTitle", "changed", CHANGE_DAYS[1],
                HOSTILE_TEXT, "=HYPERLINK(\"http://evil\")"),
    FieldChange("NCT00000001", "locations.`x`|<b>&c|\n- item|=1+1", "added", CHANGE_DAYS[1], None,
                {"facility": "+SUM(A1)", "status": "@cmd", "city": "-2+3"}),
    FieldChange("NCT00000001", "design.enrollmentCount", "changed", CHANGE_DAYS[1], -5, 10),
    FieldChange("NCT00000001", "description.briefSummary", "changed", CHANGE_DAYS[1],
                "Patients with `code` and <b>bold</b> & more", "Patients with | pipes\x1b and"
                " <b>bold</b> & more"),
    FieldChange("NCT00000001", "'quoted|path", "removed", CHANGE_DAYS[1], "\tTAB", None),
)


@functools.cache
def real_changes() -> tuple[FieldChange, ...]:
    """Return the sample archive's 528 real changes of three studies, at CHANGE_DAYS."""
    return tuple(change for nct_id in ("NCT04642755", "NCT05827016", "NCT06060392")
                 for change in sample_changes(nct_id, *CHANGE_DAYS))


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Return the path of a fresh database file."""
    return str(tmp_path / "trialdiff.db")


@pytest.fixture
def read_only_media(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """Mount a small tmpfs for one test, and a function that remounts it read-only."""
    folder = tmp_path / "media"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a filesystem needs root")

    def freeze() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True,
                       capture_output=True)

    try:
        yield folder, freeze
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def copy_db(source: str | Path, target: str | Path) -> None:
    """Copy a database as SQLite does: the file alone misses what still sits in its WAL."""
    reader, writer = sqlite3.connect(source), sqlite3.connect(target)
    reader.backup(writer)
    reader.close()
    writer.close()


def changes_of(db: str) -> list[tuple[Any, ...]]:
    """Return every stored change, sorted, without row ids."""
    return sorted(stored_rows(db, "select nct_id, path, kind, detected_at, old, new from changes"))


def records_leaves(db: str) -> tuple[int, int, int]:
    """Return the records table's leaf pages: how many, their bytes and their unused bytes."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("select count(*), sum(pgsize), sum(unused) from dbstat "
                            "where name = 'records' and pagetype = 'leaf'").fetchone()
    finally:
        conn.close()


def stored_rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Return the rows a query of a database file finds."""
    return sqlite3.connect(db).execute(sql).fetchall()


def save_records(db: str, records: list[dict[str, Any]], at: str) -> RunTotals:
    """Save records as one input observed at `at`, each labelled `test`; return its totals."""
    totals = RunTotals()
    items = [SourceItem("test", r, study_id(r)) for r in records]
    save_studies(open_db(db), items, at, totals)
    return totals


def day_lines(records: list[dict[str, Any]], stamp: str) -> list[bytes]:
    """Return records as compact NDJSON lines, re-stamped as a new data release does."""
    lines = []
    for record in records:
        record = copy.deepcopy(record)
        record["derivedSection"]["miscInfoModule"]["versionHolder"] = stamp
        lines.append(orjson.dumps(record))
    return lines


def import_ndjson(db: str, path: Path, at: str, parse: bool) -> RunTotals:
    """Save one NDJSON file, its lines parsed up front or left to the store."""
    totals = RunTotals()
    save_studies(open_db(db), read_studies([str(path)], parse=parse), at, totals)
    return totals


def trialdiff_env() -> dict[str, str]:
    """Return the environment as the test has set it, with this checkout's trialdiff on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def trialdiff_process(db: str, *args: str) -> subprocess.Popen[bytes]:
    """Start a real `trialdiff` process on a database (this checkout's code), output discarded."""
    return subprocess.Popen([sys.executable, "-m", "trialdiff", "--db", db, *args],
                            env=trialdiff_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_after(process: subprocess.Popen[bytes], seconds: float) -> None:
    """SIGKILL a process after some seconds, as a crash or the OOM killer would; reap it."""
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()


def run(db: str, *args: str, obj: Mapping[str, Any] | None = None) -> tuple[int, str, str]:
    """Run trialdiff in-process on a database; return (exit code, stdout, stderr).

    `obj` goes to the API clients the command builds (`sleep`, `transport`), so a test can
    record backoff waits instead of sleeping them.
    """
    result = CliRunner().invoke(cli, ["--db", db, *args], obj=dict(obj) if obj else None)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[StandinAPI]:
    """Serve real records on 127.0.0.1 for one test.

    A test module may set API_RECORDS (records, or a function returning them; default: every
    real v2 fixture record) and API_OPTIONS (StandinAPI keyword arguments); with API_STRICT,
    the server must have logged no error by the end.
    """
    records = getattr(request.module, "API_RECORDS", None)
    if callable(records):
        records = records()
    options = getattr(request.module, "API_OPTIONS", {})
    with StandinAPI(copy.deepcopy(records) if records is not None else real_records(),
                    **options) as server:
        yield server
    if getattr(request.module, "API_STRICT", False):
        assert server.errors == []


# Backfill against the stand-in's record-history endpoints (test_history, test_history_api).
# The listing dates NCT05827016's two real versions by the day the registry QC'd them; each
# version's body says the day it went public (its last update post date).
HISTORY_NCT = "NCT05827016"
HISTORY_QC_DAYS = ("2023-06-06", "2025-06-28")
HISTORY_PUBLIC_DAYS = ("2023-06-07", "2025-07-01")
NO_SLEEP = {"sleep": lambda seconds: None}  # backoff waits are not slept in these tests
_MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|])")
_LIST_ITEM = re.compile(r"^(?:[*-]|\d+\.)\s+")


def html_text(text: str) -> str:
    """Write Markdown text as the history endpoint writes it: HTML, `/` as `&#x2F;`."""
    escaped = html.escape(_MARKDOWN_ESCAPE.sub(r"\1", text), quote=False).replace("/", "&#x2F;")
    if "\n" not in text:
        return escaped
    blocks = []
    for block in escaped.split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines and all(_LIST_ITEM.match(line) for line in lines):
            tag = "ol" if lines[0][0].isdigit() else "ul"
            items = "".join(f"<li>{_LIST_ITEM.sub('', line)}</li>" for line in lines)
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


def html_history(nct_id: str, qc_days: tuple[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Return a study's two real versions as the history endpoints serve them, by QC day."""
    return [(day, html_record(record))
            for day, record in zip(qc_days, version_pair(nct_id), strict=True)]


def backfill(db: str, api: StandinAPI, *args: str) -> tuple[int, str, str]:
    """Run `trialdiff backfill` (of HISTORY_NCT unless ids are given) with no politeness delay."""
    ids = [a for a in args if a.startswith("NCT")] or [HISTORY_NCT]
    options = [a for a in args if not a.startswith("NCT")]
    return run(db, "backfill", *ids, "--api", api.base_url, "--delay", "0", "--retries", "1",
               *options, obj=NO_SLEEP)


def stored_changes(db: str) -> list[tuple[str, str, str]]:
    """Return the stored changes as (day, path, kind), sorted."""
    return sorted(stored_rows(db, "select substr(detected_at, 1, 10), path, kind from changes"))


def request_log(api: StandinAPI) -> list[tuple[str, dict[str, str]]]:
    """Return the stand-in's request log as (path, query) pairs."""
    return [(r.path, r.query) for r in api.requests]


def real_change_set(day: str, old: Any = None, new: Any = None) -> list[tuple[str, str, str]]:
    """Return the real changes between two versions (HISTORY_NCT's by default), dated on a day."""
    if old is None or new is None:
        old, new = version_pair(HISTORY_NCT)
    return sorted((day, path, kind)
                  for path, kind in changed_paths(extract_fields(old), extract_fields(new)))


# Alerts: three observation days of real records. Days 1 and 2 are the real older and newer
# versions of ALERT_STUDIES; day 3 is NCT06060392's newer record terminated, title hostile.
ALERT_STUDIES = ("NCT04280705", "NCT05827016", "NCT06060392")
ALERT_DAYS = ("2025-07-01T07:00:00Z", "2025-07-02T07:00:00Z", "2025-07-03T07:00:00Z")
HOSTILE_TITLE = ('<script>alert(1)</script> **bold** [x](http://evil.example) `tick` | pipe\n'
                 'Subject: x')


def terminated(record: dict[str, Any]) -> dict[str, Any]:
    """Return a real record as its sponsor would edit it to stop the study, title hostile."""
    edited = copy.deepcopy(record)
    status = edited["protocolSection"]["statusModule"]
    status["overallStatus"] = "TERMINATED"
    status["whyStopped"] = "Sponsor decision"
    edited["protocolSection"]["identificationModule"]["briefTitle"] = HOSTILE_TITLE
    return edited


@pytest.fixture
def alert_days(tmp_path: Path) -> list[Path]:
    """Write the three observation days as folders of records."""
    folders = [tmp_path / f"day{n}" for n in (1, 2, 3)]
    for folder in folders:
        folder.mkdir()
    for nct_id in ALERT_STUDIES:
        older, newer = version_pair(nct_id)
        third = terminated(newer) if nct_id == "NCT06060392" else newer
        for folder, record in zip(folders, (older, newer, third), strict=True):
            (folder / f"{nct_id}.json").write_text(json.dumps(record), encoding="utf-8")
    return folders


def import_day(db: str, days: list[Path], number: int) -> tuple[int, str, str]:
    """Import observation day `number` (1-based)."""
    return run(db, "import", "--summary", "--at", ALERT_DAYS[number - 1], str(days[number - 1]))


def changes_json(db: str, *filters: str) -> list[dict[str, Any]]:
    """Return `changes --format json` with some filters, parsed."""
    code, out, err = run(db, "changes", "--format", "json", *filters)
    assert code == 0, err
    parsed: list[dict[str, Any]] = json.loads(out)
    return parsed


@pytest.fixture
def secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep a test's targets in its own secrets file; retry failed deliveries at once."""
    path = tmp_path / "config" / "secrets.json"
    monkeypatch.setenv("TRIALDIFF_SECRETS", str(path))
    monkeypatch.setenv("TRIALDIFF_ALERT_BACKOFF", "0")
    monkeypatch.setenv("TRIALDIFF_ALERT_TIMEOUT", "5")
    return path


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """Serve a real webhook receiver on 127.0.0.1 for one test."""
    with WebhookReceiver() as server:
        yield server


def bodies(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """Return the parsed bodies that arrived at a path."""
    return [json.loads(r.body) for r in receiver.at(path)]


def sent_changes(receiver: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """Return every change the webhooks at a path carried, in export order."""
    found = [c for body in bodies(receiver, path) for c in body["changes"]]
    return sorted(found, key=lambda c: (c["detected_at"], c["nct_id"], c["path"]))


@contextmanager
def raw_server(answer: Callable[[socket.socket, threading.Event], None],
               listens_first: bool = True) -> Iterator[int]:
    """Serve on 127.0.0.1, handing each connection to `answer(conn, stop)`; yield its port.

    With `listens_first` it reads the client's request before answering, as HTTP does; else it
    answers at once, as an SMTP server greets.
    """
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    if listens_first:
                        conn.recv(65536)
                    answer(conn, stop)
                except OSError:
                    continue  # the client gave up, or closed it having had its answer

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()

