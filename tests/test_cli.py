"""The command line, through click's CliRunner: stdout, stderr and exit codes apart."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, ROOT, import_day, run, stored_rows, trialdiff_env
from webhook_receiver import WebhookReceiver

from trialdiff.cli import cli

SAMPLE = ROOT / "snapshots" / "sample"
GOLDEN = FIXTURES / "NCT05085444"


def test_golden_recent_field_changes_section(db_path: str) -> None:
    code, _, _ = run(db_path, "import", "--at", "2026-04-20T09:00:00Z",
                     str(GOLDEN / "partial.json"))
    assert code == 0
    code, out, err = run(db_path, "import", "--at", "2026-05-12T07:21:49.285Z",
                         str(GOLDEN / "full.json"))
    assert (code, err) == (0, "")
    assert out.endswith("import: 1 study checked, 1 changed, 16 changes (16 added), 0 failed\n")
    code, out, err = run(db_path, "recent", "NCT05085444", "--as-of", "2026-05-12")
    assert (code, err) == (0, "")
    assert out == (GOLDEN / "expected-section.md").read_text(encoding="utf-8")


def test_recent_says_so_in_one_line_when_nothing_changed(db_path: str) -> None:
    run(db_path, "import", "--at", "2026-04-20", str(GOLDEN / "partial.json"))
    code, out, _ = run(db_path, "recent", "NCT05085444", "--days", "7", "--as-of", "2026-04-21")
    assert code == 0
    assert out.splitlines()[-1] == "_No field changes in the last 7 days._"


def test_recent_of_a_study_not_stored_says_so_rather_than_no_changes(db_path: str) -> None:
    run(db_path, "import", "--at", "2026-04-20", str(GOLDEN / "partial.json"))
    code, out, err = run(db_path, "recent", "NCT05085445")
    assert (code, out) == (1, "")
    assert err == "trialdiff: error: NCT05085445 is not in the database\n"


def test_recent_limit_and_window(db_path: str) -> None:
    run(db_path, "import", "--at", "2026-04-20", str(GOLDEN / "partial.json"))
    run(db_path, "import", "--at", "2026-05-12T07:21:49.285Z", str(GOLDEN / "full.json"))
    _, out, _ = run(db_path, "recent", "NCT05085444", "--limit", "2", "--as-of", "2026-05-30")
    assert out.count("\n- ") == 2
    _, out, _ = run(db_path, "recent", "NCT05085444", "--days", "5", "--as-of", "2026-05-30")
    assert "_No field changes" in out


def test_quickstart_archive_import_reports_real_changes(db_path: str) -> None:
    code, out, err = run(db_path, "import", str(SAMPLE))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[-1] == (
        "import: 6 studies checked, 2 changed, 528 changes (235 added, 62 changed, 231 removed), "
        "0 failed"
    )
    assert any(
        line.startswith("NCT05827016  status.overallStatus \u2014 changed: NOT_YET_RECRUITING")
        for line in lines
    )
    code, out, _ = run(db_path, "history", "NCT05827016")
    assert code == 0 and "2024-06-14T00:00:00.000Z" in out and "2025-07-07T00:00:00.000Z" in out


def test_changes_json_filters(db_path: str) -> None:
    run(db_path, "import", "--summary", str(SAMPLE))
    code, out, err = run(db_path, "changes", "NCT06060392", "--format", "json")
    assert (code, err) == (0, "")
    items = json.loads(out)
    assert [i["path"] for i in items] == [
        "status.completionDate", "status.lastUpdatePostDate", "status.primaryCompletionDate",
        "status.statusVerifiedDate", "oversight.isUsExport", "references.references",
    ]
    assert set(items[0]) >= {"nct_id", "path", "kind", "detected_at", "old", "new"}
    assert all(i["detected_at"] == "2025-07-07T00:00:00.000Z" for i in items)
    _, out, _ = run(db_path, "changes", "--path", "status", "--kind", "changed")
    assert {i["path"].split(".")[0] for i in json.loads(out)} == {"status"}
    _, out, _ = run(db_path, "changes", "--since", "2025-07-08")
    assert json.loads(out) == []
    _, out, _ = run(db_path, "changes", "--days", "1", "--as-of", "2025-07-07")
    assert len(json.loads(out)) == 528
    _, out, _ = run(db_path, "changes")
    assert len(json.loads(out)) == 528


def test_diff_prints_the_last_two_snapshots(db_path: str) -> None:
    run(db_path, "import", "--summary", str(SAMPLE))
    code, out, _ = run(db_path, "diff", "NCT06060392")
    assert code == 0
    assert "2025-11-01" in out and "(moved +245 days)" in out
    code, out, _ = run(db_path, "diff", "NCT06060392", "--format", "md")
    assert code == 0 and "`status.completionDate`" in out
    code, out, err = run(db_path, "diff", "NCT06060392", "--from", "7")
    assert code == 2 and "no snapshot 7" in err


def test_malformed_nct_id_is_a_usage_error(db_path: str) -> None:
    code, out, err = run(db_path, "recent", "NCT123")
    assert code == 2 and out == ""
    assert "'NCT123' is not an NCT id" in err
    code, out, err = run(db_path, "track", "NCT\uff10\uff15\uff18\uff12\uff17\uff10\uff11\uff16")
    assert (code, out) == (2, "") and "is not an NCT id" in err


def test_bad_timestamp_is_a_usage_error(db_path: str) -> None:
    code, _, err = run(db_path, "import", "--at", "yesterday", str(SAMPLE))
    assert code == 2 and "'yesterday' is not an ISO 8601" in err


def test_broken_inputs_exit_1_and_the_good_ones_are_done(db_path: str, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(GOLDEN / "full.json", inputs / "good.json")
    (inputs / "cut.json").write_text('{"protocolSection": {')
    (inputs / "other.json").write_text('{"hello": 1}')
    code, out, err = run(db_path, "import", str(inputs))
    assert code == 1
    assert "Traceback" not in err + out
    assert f"trialdiff: {inputs / 'cut.json'}: not valid JSON" in err
    assert f"trialdiff: {inputs / 'other.json'}: not a study" in err
    assert out.endswith("1 study checked, 0 changed, 0 changes, 2 failed\n")


def test_reader_on_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    code, out, err = run(str(tmp_path / "none.db"), "recent", "NCT05085444")
    assert code == 1 and out == ""
    assert err.startswith("trialdiff: error: no database at")


@pytest.mark.parametrize("command", ["history", "recent", "diff", "page"])
def test_a_study_the_database_does_not_hold_is_an_error_for_every_reader(
    db_path: str, command: str
) -> None:
    assert run(db_path, "import", str(FIXTURES / "v2"))[0] == 0
    code, out, err = run(db_path, command, "NCT09999999")
    assert (code, out, err) == (1, "", "trialdiff: error: NCT09999999 is not in the database\n")


@pytest.mark.parametrize("args", [
    ("notify", "--quiet"), ("reannotate",), ("untrack", "NCT05085444"), ("watch", "remove", "x"),
])
def test_a_write_that_needs_a_database_refuses_a_missing_one_and_creates_none(
    tmp_path: Path, args: tuple[str, ...],
) -> None:
    missing = tmp_path / "typo.db"
    assert run(str(missing), *args) == (
        1, "", f"trialdiff: error: no database at {missing}: run `trialdiff import` or "
               "`trialdiff sync`\n")
    assert list(tmp_path.iterdir()) == []  # not even a lock file


def test_missing_directory_for_the_database_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = run(str(tmp_path / "no" / "such" / "x.db"), "import", str(SAMPLE))
    assert code == 1 and "Traceback" not in err
    assert err.startswith("trialdiff: error:")


def test_db_from_the_environment(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    result = CliRunner().invoke(cli, ["import", "--summary", str(GOLDEN / "full.json")],
                                env={"TRIALDIFF_DB": str(db)})
    assert result.exit_code == 0 and db.exists()


@pytest.mark.parametrize("command", ["import", "recent", "changes", "history", "diff"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


FOOTER = ("This page is a raw mirror with no AI summary, no editorial enrichment, and no "
          "Parkinson's-specific filtering.")
BASE = "https://parkinsonspathways.com/agent/trials/"


def golden_db(db_path: str) -> None:
    """Store the sample page's study as an early partial sighting, then the full record."""
    run(db_path, "import", "--at", "2026-04-20T09:00:00Z", str(GOLDEN / "partial.json"))
    run(db_path, "import", "--at", "2026-05-12T07:21:49.285Z", str(GOLDEN / "full.json"))


def test_page_reproduces_the_sample_page_byte_for_byte(db_path: str) -> None:
    golden_db(db_path)
    code, out, err = run(db_path, "page", "NCT05085444", "--as-of", "2026-05-12",
                         "--canonical-base", BASE, "--footer", FOOTER)
    assert (code, err) == (0, "")
    assert out == (GOLDEN / "page.md").read_text(encoding="utf-8")


def test_page_settings_come_from_the_environment(db_path: str) -> None:
    golden_db(db_path)
    result = CliRunner().invoke(
        cli, ["--db", db_path, "page", "NCT05085444", "--as-of", "2026-05-12"],
        env={"TRIALDIFF_CANONICAL_BASE": BASE, "TRIALDIFF_FOOTER": FOOTER},
    )
    assert result.stdout == (GOLDEN / "page.md").read_text(encoding="utf-8")


def test_site_pages_are_written_atomically_and_only_when_changed(
    db_path: str, tmp_path: Path
) -> None:
    run(db_path, "import", "--summary", str(SAMPLE))
    out = tmp_path / "site"
    code, text, _ = run(db_path, "page", "--all", "--out", str(out), "--as-of", "2025-07-07")
    assert code == 0 and text.strip().endswith("3 pages written, 0 unchanged, in " + str(out))
    assert sorted(p.name for p in out.iterdir()) == [
        "NCT04642755.md", "NCT05827016.md", "NCT06060392.md"]
    page = (out / "NCT06060392.md").read_text()
    assert "- `status.completionDate` \u2014 changed _(2025-07-07)_" in page
    mtime = (out / "NCT06060392.md").stat().st_mtime_ns
    code, text, _ = run(db_path, "page", "--changed-since", "2025-07-01", "--out", str(out),
                        "--as-of", "2025-07-07")
    assert "0 pages written, 3 unchanged" in text
    assert (out / "NCT06060392.md").stat().st_mtime_ns == mtime
    # 40 days on, the changes slid out of the 30-day window: those pages change.
    code, text, _ = run(db_path, "page", "--changed-since", "2025-08-01", "--out", str(out),
                        "--as-of", "2025-08-16")
    assert "2 pages written, 0 unchanged" in text
    assert "_No field changes in the last 30 days._" in (out / "NCT06060392.md").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


def test_page_has_no_ages_unless_given_ages(db_path: str, tmp_path: Path) -> None:
    run(db_path, "import", "--summary", str(SAMPLE))
    code, plain, err = run(db_path, "page", "NCT04642755", "--as-of", "2025-07-07")
    assert (code, err) == (0, "")
    assert "## Eligibility\n\n- **Sex:** ALL\n\n```" in plain  # as the sample: no ages
    code, aged, err = run(db_path, "page", "NCT04642755", "--as-of", "2025-07-07", "--ages")
    assert (code, err) == (0, "")
    lines = "- **Sex:** ALL\n- **Minimum Age:** 14 Years\n- **Maximum Age:** 65 Years\n\n```"
    assert f"## Eligibility\n\n{lines}" in aged
    out = tmp_path / "site"
    code, text, err = run(db_path, "page", "--all", "--ages", "--out", str(out),
                          "--as-of", "2025-07-07")
    assert (code, err) == (0, "") and "3 pages written" in text
    assert (out / "NCT04642755.md").read_text(encoding="utf-8") == aged
    assert "- **Minimum Age:** 30 Years\n" in (out / "NCT06060392.md").read_text()


def test_page_usage_errors(db_path: str, tmp_path: Path) -> None:
    golden_db(db_path)
    assert run(db_path, "page")[0] == 2
    assert run(db_path, "page", "--all")[0] == 2
    assert run(db_path, "page", "NCT05085444", "--all", "--out", str(tmp_path))[0] == 2
    # One study's page with --out: the message named what was given as missing (a probe).
    assert run(db_path, "page", "NCT05085444", "--out", str(tmp_path)) == (
        2, "", "trialdiff: error: --out DIR goes with --all or --changed-since; one study's "
               "page is printed (trialdiff page NCT_ID > FILE)\n")
    code, _, err = run(db_path, "page", "NCT99999999")
    assert code == 1 and "not in the database" in err


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv", "md", "atom"])
def test_every_export_format_carries_the_same_changes(
    db_path: str, tmp_path: Path, fmt: str
) -> None:
    run(db_path, "import", "--summary", str(SAMPLE))
    target = tmp_path / f"out.{fmt}"
    code, out, _ = run(db_path, "changes", "NCT06060392", "--format", fmt, "-o", str(target))
    assert (code, out) == (0, "")
    text = target.read_text(encoding="utf-8")
    for path in ("status.completionDate", "oversight.isUsExport", "references.references"):
        assert path in text
    assert "2025-11-01" in text


def test_min_severity_filters_every_format(db_path: str) -> None:
    run(db_path, "import", "--summary", str(SAMPLE))
    _, out, _ = run(db_path, "changes", "NCT06060392", "--min-severity", "major")
    assert [c["path"] for c in json.loads(out)] == [
        "status.completionDate", "status.primaryCompletionDate"]
    assert all(c["severity"] == "major" for c in json.loads(out))


def test_importing_a_folder_without_study_files_fails_it_by_name(
    db_path: str, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = run(db_path, "import", str(tmp_path / "empty"))
    assert code == 1
    assert err == (f"trialdiff: {tmp_path / 'empty'}: no study files here (.json, .ndjson, "
                   ".jsonl, one of them .gz, or .zip)\n")
    assert out == "import: 0 studies checked, 0 changed, 0 changes, 1 failed\n"


def test_the_command_line_freezes_its_loaded_code_for_the_garbage_collector() -> None:
    import subprocess
    import sys

    script = ("import gc, sys\nfrom trialdiff.cli import main\n"
              "sys.argv = ['trialdiff', '--version']\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print(gc.get_freeze_count(), gc.get_threshold()[0])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    frozen, young = map(int, done.stdout.split()[-2:])
    assert frozen > 10_000  # the engine's objects, loaded before the run
    assert young == 20_000


def closed_stdout(db: str, *args: str) -> tuple[int, bytes]:
    """Run a real trialdiff whose stdout has no reader from the start; return (code, stderr)."""
    process = subprocess.Popen([sys.executable, "-m", "trialdiff", "--db", db, *args],
                               env=trialdiff_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `| head -1` does once it has its line
    err = process.stderr.read()
    process.stderr.close()
    return process.wait(timeout=120), err


@pytest.mark.usefixtures("secrets_file")
def test_a_closed_stdout_ends_every_command_quietly_and_a_run_still_finishes(
    db_path: str, alert_days: list[Path], receiver: WebhookReceiver,
) -> None:
    assert run(db_path, "watch", "add", "w", "--to", f"{receiver.url}/hook")[0] == 0
    assert import_day(db_path, alert_days, 1)[0] == 0
    assert import_day(db_path, alert_days, 2)[0] == 0
    for args in (("watch", "list"), ("alerts",), ("tracked",), ("changes",)):
        assert closed_stdout(db_path, *args) == (0, b""), args
    # A run's report has no reader, but its work is done: stored, committed, alerts sent.
    sent = len(receiver.at("/hook"))
    assert closed_stdout(db_path, "import", "--at", "2025-07-03T07:00:00Z",
                         str(alert_days[2])) == (0, b"")
    assert stored_rows(db_path, "select status from runs order by id desc limit 1") == [("ok",)]
    assert run(db_path, "alerts", "--pending")[1:] == ("", "")
    assert len(receiver.at("/hook")) > sent


def test_a_closed_stdout_ends_the_study_commands_quietly(db_path: str) -> None:
    # rich's console exits 1 when its reader has gone; `diff | head -1` ends as the others do.
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    for args in (("diff", "NCT05827016"), ("diff", "NCT05827016", "--format", "md"),
                 ("history", "NCT05827016"), ("page", "NCT05827016"),
                 ("recent", "NCT05827016", "--days", "9999", "--as-of", "2025-07-07")):
        assert closed_stdout(db_path, *args) == (0, b""), args


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_a_locale_that_is_not_utf8_still_gets_every_line_in_utf8(
    tmp_path: Path, encoding: str
) -> None:
    # A legacy server's cron (LANG=en_US.ISO-8859-1): the dash of a change line, or a title's
    # letters, once stopped the run with an encoding error; the output is UTF-8 as git's is.
    db = str(tmp_path / "t.db")

    def trialdiff(*args: str, io_encoding: str = encoding) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "trialdiff", "--db", db, *args],
                              capture_output=True, timeout=120,
                              env={**trialdiff_env(), "PYTHONIOENCODING": io_encoding})
        return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")

    code, out, err = trialdiff("import", str(SAMPLE))
    assert (code, err) == (0, "")
    assert "NCT05827016  status.overallStatus — changed: " in out
    assert out.endswith("import: 6 studies checked, 2 changed, 528 changes (235 added, "
                        "62 changed, 231 removed), 0 failed\n")
    for command in (["changes", "--format", "md"], ["changes", "--format", "csv"],
                    ["page", "NCT05827016"]):
        assert trialdiff(*command) == trialdiff(*command, io_encoding="utf-8")
    code, _, err = trialdiff("recent", "NCT99999999")
    assert code == 1 and "NCT99999999" in err and "Unicode" not in err


def test_text_arguments_are_read_as_utf8_under_a_locale_that_is_not(tmp_path: Path) -> None:
    # Python reads argv in the locale's encoding: a crontab's `Türkiye` under LC_ALL=C (or a
    # Latin-1 locale) was stored as escapes (or mojibake) that match nothing (a probe).
    db = str(tmp_path / "t.db")
    env = {**trialdiff_env(), "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}

    def trialdiff(*args: str | bytes) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "trialdiff", "--db", db, *args],
                              capture_output=True, timeout=120, env=env)
        return done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8")

    probe = subprocess.run([sys.executable, "-c",
                            "import sys; print(sys.getfilesystemencoding())"],
                           capture_output=True, text=True, env=env)
    if probe.stdout.strip() == "utf-8":
        pytest.skip("this Python reads argv as UTF-8 under LC_ALL=C")
    code, _, err = trialdiff("watch", "add", "tr", "--fact", "site_added:T\u00fcrkiye",
                             "--path", "locations.h\u00f4pital", "--to", "env:HOOK")
    assert (code, err) == (0, "")
    assert trialdiff("track", "--query", "query.cond=gr\u00f6\u00dfe")[0] == 0
    conn = sqlite3.connect(db)
    (facts, paths), = conn.execute("select facts, paths from watches").fetchall()
    assert "site_added:T\u00fcrkiye" in json.loads(facts)
    assert json.loads(paths) == ["locations.h\u00f4pital"]
    assert conn.execute("select expr from queries").fetchall() == [("query.cond=gr%C3%B6%C3%9Fe",)]
    code, out, _ = trialdiff("watch", "list")
    assert code == 0 and "site_added:T\u00fcrkiye" in out
    # Bytes that are text in no encoding it can read are refused, not stored as escapes.
    code, _, err = trialdiff("watch", "add", "raw", "--fact", b"site_added:T\xfcrkiye",
                             "--to", "env:HOOK")
    assert code == 2 and "b'site_added:T\\xfcrkiye' is not UTF-8 text" in err


def test_changes_into_dev_stdout_streams_and_into_the_database_is_refused(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    done = subprocess.run([sys.executable, "-m", "trialdiff", "--db", db_path, "changes",
                           "--format", "csv", "-o", "/dev/stdout"],
                          capture_output=True, timeout=120, env=trialdiff_env())
    direct = subprocess.run([sys.executable, "-m", "trialdiff", "--db", db_path, "changes",
                             "--format", "csv"], capture_output=True, timeout=120,
                            env=trialdiff_env())
    assert (done.returncode, done.stderr) == (0, b"") and done.stdout == direct.stdout
    before = Path(db_path).read_bytes()
    code, out, err = run(db_path, "changes", "-o", db_path)
    assert (code, out) == (2, "")
    assert err == (f"trialdiff: error: -o {db_path} is the database itself: write the export "
                   "to another file\n")
    assert Path(db_path).read_bytes() == before



def test_changes_into_a_file_kept_beside_the_database_is_refused_and_dash_is_stdout(
        db_path: str) -> None:
    # Replacing the WAL loses what it holds of committed writes; replacing the lock file lets
    # a second writer lock another inode while the first still runs.
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    for companion in (f"{db_path}-wal", f"{db_path}-shm", f"{db_path}.lock"):
        code, out, err = run(db_path, "changes", "--format", "csv", "-o", companion)
        assert (code, out) == (2, ""), companion
        assert err.startswith(f"trialdiff: error: -o {companion} is a file SQLite or trialdiff "
                              "keeps beside the database")
        assert not Path(companion).exists() or b"nct_id" not in Path(companion).read_bytes()
    code, out, err = run(db_path, "changes", "--format", "csv", "-o", "-")
    assert (code, err) == (0, "") and out == run(db_path, "changes", "--format", "csv")[1]
    assert out.startswith('"nct_id","path"') and not Path("-").exists()


def test_an_import_goes_on_past_a_file_name_that_is_not_utf8(tmp_path: Path, db_path: str) -> None:
    folder = tmp_path / "day"
    folder.mkdir()
    shutil.copy(FIXTURES / "v2" / "NCT00000410.json", os.fsdecode(bytes(folder) + b"/\xff.json"))
    (folder / "broken.json").write_text("{not json", encoding="utf-8")
    code, out, err = run(db_path, "import", "--summary", str(folder))
    assert code == 1  # the broken file failed; the one with the odd name was saved
    assert out.startswith("import: 1 study checked") and "1 failed" in out
    assert err.startswith(f"trialdiff: {folder}/broken.json: not valid JSON")


def test_control_characters_from_the_registry_reach_no_terminal_raw(
        tmp_path: Path, db_path: str) -> None:
    # A facility's name is the registry's text: an ESC sequence in it must not recolour the
    # terminal (nor a BEL ring it) in the change lines an import prints, nor in `recent`.
    record = json.loads((FIXTURES / "v2" / "NCT00000410.json").read_text(encoding="utf-8"))
    for day, facility in (("2025-02-01", None), ("2025-02-02", "Evil\x1b[31m Clinic\x07")):
        if facility:
            record["protocolSection"].setdefault("contactsLocationsModule", {}).setdefault(
                "locations", []).append({"facility": facility, "city": "X", "country": "Y"})
        folder = tmp_path / day
        folder.mkdir()
        (folder / "NCT00000410.json").write_text(json.dumps(record), encoding="utf-8")
    code, out, err = run(db_path, "import", str(tmp_path))
    assert (code, err) == (0, "")
    assert "evil\\x1b[31m clinic\\x07|x||y — added" in out
    code, out, err = run(db_path, "recent", "NCT00000410", "--as-of", "2025-02-02")
    assert (code, err) == (0, "") and "\\x1b[31m" in out
    for text in (out, run(db_path, "import", str(tmp_path))[1]):
        assert "\x1b" not in text and "\x07" not in text



def test_changes_of_an_id_the_database_does_not_hold_names_it_and_exits_1(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    code, out, err = run(db_path, "changes", "NCT99999999", "NCT05827016", "--format", "ndjson")
    assert code == 1 and err == "trialdiff: NCT99999999 is not in the database\n"
    assert out and out == run(db_path, "changes", "NCT05827016", "--format", "ndjson")[1]
    assert run(db_path, "changes", "NCT05827016", "--format", "ndjson")[0] == 0


def test_a_stopped_run_that_stored_changes_says_how_many_and_where_they_are(
    capsys: pytest.CaptureFixture[str]
) -> None:
    # A probe's SIGTERM came while a stored page's lines were printed: 621 changes stored, 2
    # lines shown, and the next run had nothing new to print.
    import click

    from trialdiff.cli.sinks import Terminated
    from trialdiff.cli.write import _say_interrupted
    from trialdiff.lifecycle import Run

    class Opened:
        last_run = Run(7, "sync", "interrupted", 6, 4, 621, 0, ())

    class Printer:
        def close(self) -> None:
            pass

    with pytest.raises(click.exceptions.Exit) as stopped:
        _say_interrupted(click.Context(cli), Printer(), Opened(), Terminated())  # type: ignore[arg-type]
    assert stopped.value.exit_code == 143
    assert capsys.readouterr().err == (
        "trialdiff: terminated; run 7 recorded as interrupted (what was saved stays: run again "
        "to resume); it stored 621 changes, which `trialdiff changes` lists (the lines above may "
        "stop short)\n")


def _trialdiff(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the real trialdiff process, its stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "trialdiff", *args], stderr=subprocess.PIPE,
                          text=True, env=trialdiff_env(), timeout=120, check=False, **kwargs)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_stdout_loses_the_report_not_the_run(tmp_path: Path) -> None:
    # The first batch's lines raised ENOSPC, which ended the import after that batch, as a
    # failed input named "import", and the message said nothing of stdout.
    db = str(tmp_path / "t.db")
    with open("/dev/full", "w") as full:
        done = _trialdiff("--db", db, "import", str(ROOT / "snapshots" / "sample"), stdout=full)
    assert (done.returncode, done.stderr) == (1, (
        "trialdiff: the report could not all be written to stdout (No space left on device); "
        "the run stored 528 changes: `trialdiff changes` lists them\n"))
    assert stored_rows(db, "select status, changes, failed from runs") == [("ok", 528, 0)]
    with open("/dev/full", "w") as full:
        for args in (["--help"], ["--version"], ["--db", db, "recent", "NCT06060392"]):
            done = _trialdiff(*args, stdout=full)
            assert (done.returncode, done.stderr) == (
                1, "trialdiff: error: cannot write to stdout: No space left on device\n"
                if args[0] != "--db" else "trialdiff: error: No space left on device\n"), args


def test_a_closed_stdout_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # `changes` crashed (AttributeError) and every other command wrote nothing and exited 0.
    db = tmp_path / "t.db"
    for args in (["import", str(ROOT / "snapshots" / "sample")], ["changes"]):
        done = _trialdiff("--db", str(db), *args, stdout=None, pass_fds=(),
                          preexec_fn=lambda: os.close(1))
        assert (done.returncode, done.stderr) == (1, (
            "trialdiff: error: stdout is closed: give it somewhere to write (`>/dev/null` to "
            "discard it)\n"))
    assert not db.exists()
