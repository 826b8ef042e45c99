"""The Tracker, the Python API: its runs, sinks, clients and reads, each as the CLI's."""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import FIXTURES, SAMPLE, SAMPLE_DAYS, run
from standin_api import StandinAPI

import trialdiff
from trialdiff.check import CheckTotals
from trialdiff.errors import DatabaseError, UnknownStudy, UsageError
from trialdiff.model import Observation, Outcome
from trialdiff.tracker import Tracker


def test_change_to_dict_is_what_changes_format_json_prints(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    code, out, err = run(db_path, "changes", "--format", "json")
    assert (code, err) == (0, "")
    with trialdiff.open(db_path) as tracker:
        assert [c.to_dict() for c in tracker.changes()] == json.loads(out)
        code, out, _ = run(db_path, "changes", "NCT06060392", "--path", "status",
                           "--min-severity", "major", "--format", "json")
        chosen = tracker.changes(["nct06060392"], path="status", min_severity="major")
        assert [c.to_dict() for c in chosen] == json.loads(out) != []


def test_a_changes_dict_is_a_copy_the_change_does_not_share(imported: str) -> None:
    # A probe reshaped `to_dict()` for pandas, and the frozen change moved with it.
    with trialdiff.open(imported) as tracker:
        change = next(c for c in tracker.changes() if c.path == "status.completionDate")
        before = change.to_dict()
        mine = change.to_dict()
        mine["old"]["date"], mine["facts"]["date"]["days"] = "1900-01-01", 0
        mine["detail"]["edits"].clear()
        assert change.to_dict() == before != mine


def test_recent_and_page_are_what_the_commands_print(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    with trialdiff.open(db_path) as tracker:
        recent = tracker.recent_section("NCT06060392", days=400, as_of="2025-07-07")
        page = tracker.page("NCT06060392", as_of="2025-07-07", footer="Fed by trialdiff.")
    assert run(db_path, "recent", "NCT06060392", "--days", "400",
               "--as-of", "2025-07-07")[1] == recent
    assert run(db_path, "page", "NCT06060392", "--as-of", "2025-07-07",
               "--footer", "Fed by trialdiff.")[1] == page


class Kept:
    """A sink that keeps what it sees."""

    def __init__(self) -> None:
        self.seen: list[Outcome] = []
        self.finished: list[trialdiff.Run] = []
        self.closed = 0

    def show(self, outcome: Outcome) -> None:
        """Keep an outcome."""
        self.seen.append(outcome)

    def finish(self, run: trialdiff.Run) -> None:
        """Keep the finished run."""
        self.finished.append(run)

    def close(self) -> None:
        """Count closings."""
        self.closed += 1


def test_a_run_feeds_its_sinks_and_records_its_row(db_path: str) -> None:
    kept = Kept()
    with trialdiff.open(db_path) as tracker:
        done = tracker.import_paths([str(SAMPLE)], sinks=[kept])
        assert tracker.watches() == []
    observations = [o for o in kept.seen if isinstance(o, Observation)]
    assert len(observations) == done.checked == 6 and kept.closed == 1
    assert len(kept.finished) == 1 and kept.finished[0].id == done.id == 1
    assert done.changes == len(done.stored_changes) == sum(len(o.changes) for o in observations)
    row = sqlite3.connect(db_path).execute("select status, checked, changes from runs").fetchone()
    assert row == ("ok", done.checked, done.changes)


def test_a_crashing_import_is_recorded_as_ended_and_its_sinks_closed(
    db_path: str, tmp_path: Path
) -> None:
    class Crash(Kept):
        def show(self, outcome: Outcome) -> None:
            raise RuntimeError("the disk went away")

    crash = Crash()
    with trialdiff.open(db_path) as tracker:
        with pytest.raises(RuntimeError):
            tracker.import_paths([str(SAMPLE)], sinks=[crash])
        assert tracker.last_run is not None and tracker.last_run.status == "partial"
    # Not left `running`: one study was saved before the crash, so the run is partial.
    assert sqlite3.connect(db_path).execute("select status, errors from runs").fetchone() == (
        "partial", '[{"input": "import", "error": "the disk went away"}]')
    assert crash.closed == 1


def test_sync_and_backfill_close_their_clients_and_a_bad_setting_names_no_flag(
    db_path: str, api: StandinAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trialdiff.fetch import Client

    closed: list[str] = []
    close = Client.close

    def counted(client: Client) -> None:
        closed.append(client.base_url)
        close(client)

    monkeypatch.setattr(Client, "close", counted)
    with trialdiff.open(db_path) as tracker:
        with pytest.raises(trialdiff.UsageError) as caught:
            tracker.sync(api="ftp://example.org")
        assert "--" not in str(caught.value) and caught.value.setting == "api"
        with pytest.raises(trialdiff.UsageError, match="'NCT1' is not an NCT id"):
            tracker.backfill(["NCT1"], api=api.base_url)
        assert closed == [] and tracker.last_run is None  # refused before any run began
        done = tracker.sync(["NCT00000410"], api=api.base_url, delay=0)
        assert closed == [api.base_url]
        with pytest.raises(trialdiff.FetchError):  # the stand-in has no history for it
            tracker.backfill(["NCT00000410"], api=api.base_url, delay=0)
        assert closed == [api.base_url, api.base_url.removesuffix("/api/v2")]
        assert tracker.last_run is not None and tracker.last_run.status == "failed"
    assert (done.status, done.checked) == ("ok", 1)




def test_a_tracker_that_keeps_no_changes_still_feeds_its_sinks(db_path: str) -> None:
    kept = Kept()
    with trialdiff.open(db_path, keep_changes=False) as tracker:
        done = tracker.import_paths([str(SAMPLE)], sinks=[kept])
        # The run holds none of what it stored (a registry-wide rewrite stores millions) ...
        assert done.stored is None and done.changes > 500
        with pytest.raises(trialdiff.UsageError, match="keep_changes=False"):
            done.stored_changes  # noqa: B018
        # ... while its sinks saw every change, and the database has them all.
        seen = sum(len(o.changes) for o in kept.seen if isinstance(o, Observation))
        assert seen == done.changes == len(list(tracker.changes()))


@pytest.fixture
def imported(db_path: str) -> str:
    """Return a database holding the sample archive: 3 real studies over 2 days."""
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    return db_path


def test_ids_are_read_as_the_cli_reads_them_and_a_malformed_one_writes_nothing(
    db_path: str,
) -> None:
    with trialdiff.open(db_path) as tracker:
        assert tracker.track([" nct05827016 ", "NCT06060392"], ["query.cond=asthma"]) == (2, 1)
        assert tracker.track(["NCT05827016"], [" ?query.cond=asthma"]) == (0, 0)  # the same
        with pytest.raises(UsageError, match="'NCT1' is not an NCT id like NCT01234567"):
            tracker.track(["NCT04642755", "NCT1"])
        with pytest.raises(UsageError, match="'pageSize' is not a parameter a saved query takes"):
            tracker.track(["NCT04642755"], ["pageSize=5"])
        # One that is not tracked (a typo in a script) fails it all, and removes nothing.
        with pytest.raises(UnknownStudy, match=r"^NCT05827061 is not tracked; query\.cond="
                           r"myeloma is not a saved query \(nothing was removed\)$"):
            tracker.untrack(["NCT06060392", "NCT05827061"], ["query.cond=myeloma"])
        assert len(run(db_path, "tracked")[1].splitlines()) == 3
        assert tracker.untrack(["nct06060392"], ["query.cond=asthma"]) == 2
    assert run(db_path, "tracked")[1].splitlines()[0].startswith("NCT05827016  tracked  since ")
    assert len(run(db_path, "tracked")[1].splitlines()) == 1  # NCT04642755 was never added
    assert run(db_path, "untrack", "NCT06060392") == (
        1, "", "trialdiff: error: NCT06060392 is not tracked (nothing was removed)\n")


def test_reads_refuse_an_unknown_study_and_a_time_that_is_not_one(imported: str) -> None:
    with trialdiff.open(imported) as tracker:
        for read in (tracker.recent_section, tracker.page,
                     lambda i: list(tracker.changes([i, "NCT06060392"]))):
            # changes() yielded nothing for a typo, where the CLI names it (a probe).
            with pytest.raises(UnknownStudy, match=r"^NCT09999999 is not in the database$"):
                read("nct09999999")
        with pytest.raises(UsageError, match="'last week' is not an ISO 8601 date or time"):
            list(tracker.changes(since="last week"))
        # Every change of the sample was seen on its second day: a window splits them there.
        day = f"{SAMPLE_DAYS[1]}T00:00:00Z"
        assert len(list(tracker.changes(since=day))) == len(list(tracker.changes())) == 528
        assert list(tracker.changes(until=day)) == []
        with pytest.raises(UsageError, match="is not after since"):  # reversed: not a quiet window
            list(tracker.changes(since="2025-07-08", until="2025-07-01"))
        with pytest.raises(UsageError, match="'yesterday' is not an ISO 8601 date"):
            tracker.backfill("NCT06060392", api="http://127.0.0.1:9", since="yesterday")
        assert sqlite3.connect(imported).execute(
            "select count(*) from runs where command = 'backfill'").fetchone() == (0,)  # no run
        # A day, a timestamp on that day and a date are the same `as_of`.
        sections = {tracker.recent_section("NCT06060392", days=400, as_of=as_of)
                    for as_of in (SAMPLE_DAYS[1], f"{SAMPLE_DAYS[1]}T23:00:00Z",
                                  datetime.date.fromisoformat(SAMPLE_DAYS[1]))}
        assert len(sections) == 1


def test_an_archive_cannot_be_observed_at_one_time_and_no_run_begins(db_path: str) -> None:
    with trialdiff.open(db_path) as tracker:
        with pytest.raises(UsageError, match="observed on their dates") as caught:
            tracker.import_paths([str(SAMPLE)], at=SAMPLE_DAYS[1])
        assert caught.value.setting == "at" and tracker.last_run is None
    assert sqlite3.connect(db_path).execute("select count(*) from runs").fetchone() == (0,)


def test_check_and_reannotate_on_a_real_import(imported: str) -> None:
    totals = CheckTotals()
    with trialdiff.open(imported) as tracker:
        assert tracker.check(totals) == []
        assert (totals.studies, totals.snapshots, totals.changes) == (3, 5, 528)
        # The stored severities and facts are today's rules already: all checked, none updated.
        assert tracker.reannotate() == (528, 0)
        assert tracker.last_run is not None and tracker.last_run.command == "reannotate"
        assert tracker.last_run.status == "ok"


@pytest.mark.parametrize("method", ["compact", "reannotate", "notify", "untrack"])
def test_open_creates_a_database_and_a_write_that_needs_one_will_not(
    tmp_path: Path, method: str,
) -> None:
    created = tmp_path / "new.db"
    with trialdiff.open(str(created)) as tracker:
        assert tracker.check() == [] and list(tracker.changes()) == []
    assert created.is_file()
    missing = tmp_path / "missing.db"
    with Tracker(str(missing)) as tracker, pytest.raises(DatabaseError, match="no database at"):
        getattr(tracker, method)()
    assert not missing.exists() and tracker.last_run is None


def test_import_paths_takes_one_path_as_one_and_refuses_an_empty_one(
    db_path: str, tmp_path: Path
) -> None:
    one = SAMPLE / "2024-06-14" / "NCT05827016.json"
    with trialdiff.open(db_path) as tracker:
        # A string is one path, not its characters: "/" would have been the whole disk.
        assert tracker.import_paths(str(one)).checked == 1
        assert tracker.import_paths(one).checked == 1
        for empty in ("", " ", ["", str(one)]):
            with pytest.raises(UsageError, match="an empty path names no input"):
                tracker.import_paths(empty)
        with pytest.raises(UsageError, match=r"^no path given"):  # not "an empty path"
            tracker.import_paths([])
    code, out, err = run(db_path, "import", "")  # "" would have been the current folder
    assert (code, out) == (2, "")
    assert err == "trialdiff: error: an empty path names no input: give a file, a folder or a zip\n"


def test_a_bad_window_or_severity_is_a_usage_error_in_the_library_too(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    with trialdiff.open(db_path) as tracker:
        for days in (0, -5, 36_526, 1.5, True):
            with pytest.raises(UsageError, match="a window of days must be 1 to 36,525"):
                tracker.recent_section("NCT06060392", days=days)  # type: ignore[arg-type]
            with pytest.raises(UsageError, match="a window of days must be 1 to 36,525"):
                tracker.page("NCT06060392", days=days)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="unknown severity 'huge'"):
            list(tracker.changes(min_severity="huge"))
        for as_of in ("9999-12-31", "0001-01-01"):  # an OverflowError escaped before
            with pytest.raises(UsageError, match="leave the calendar"):
                tracker.recent_section("NCT06060392", as_of=as_of)
            with pytest.raises(UsageError, match="leave the calendar"):
                tracker.page("NCT06060392", as_of=as_of)
        assert tracker.recent_section("NCT06060392", days=36_525, as_of="2025-07-07")


def test_open_refuses_an_empty_path_or_a_wait_that_is_no_time(db_path: str) -> None:
    # SQLite's private databases, which no reader could see; None is no path at all.
    for path in ("", ":memory:", None):
        with pytest.raises(UsageError, match="names no database file: give a file's path"):
            trialdiff.open(path)  # type: ignore[arg-type]
    assert list(Path(db_path).parent.iterdir()) == []  # no `None` nor `:memory:.lock` made
    for wait in (float("nan"), -1.0, float("inf"), "2", True):
        with pytest.raises(UsageError, match="the wait must be a finite number of seconds"):
            trialdiff.open(db_path, wait=wait)  # type: ignore[arg-type]
    trialdiff.open(db_path).close()  # on a current database, open() takes no lock: still refused
    with pytest.raises(UsageError, match="the wait must be a finite number of seconds"):
        trialdiff.open(db_path, wait="2")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="the delay must be a number, not '0'"):
        trialdiff.open(db_path).sync("NCT06060392", api="http://127.0.0.1:9", delay="0")


def test_one_nct_id_may_be_given_as_a_string(db_path: str) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    with trialdiff.open(db_path) as tracker:
        # A string is one id, not its characters ("'N' is not an NCT id").
        assert list(tracker.changes("NCT06060392")) == list(tracker.changes(["NCT06060392"]))
        assert tracker.track("NCT06060392") == (1, 0)
        assert tracker.untrack("nct06060392") == 1


def test_each_read_sees_the_last_commit_and_an_iteration_keeps_its_snapshot(
    db_path: str
) -> None:
    first, second = (str(SAMPLE / day) for day in SAMPLE_DAYS)
    with trialdiff.open(db_path) as tracker, trialdiff.open(db_path) as other:
        tracker.import_paths(first, at=SAMPLE_DAYS[0])
        assert list(tracker.changes()) == [] and list(other.changes()) == []
        reading = other.changes()
        next(iter(other.changes()), None)
        tracker.import_paths(second, at=SAMPLE_DAYS[1])  # its own write, and another's
        assert len(list(tracker.changes())) == len(list(other.changes())) == 528
        assert tracker.check() == [] and "`status.completionDate`" in tracker.recent_section(
            "NCT06060392", days=400, as_of=SAMPLE_DAYS[1])
        assert len(list(reading)) == 528  # begun after the commit
        iteration = other.changes()
        head = next(iteration)  # left unfinished, as a notebook may leave one
        tracker.import_paths(str(FIXTURES / "v2"), at="2025-08-01")  # new studies, no changes
        # Only the iteration keeps its snapshot: the reads made meanwhile see the commit (a
        # probe's unfinished `changes()` froze them, and `recent_section` said UnknownStudy).
        (studies,) = other.reader().execute("select count(*) from studies").fetchone()
        assert studies > 3 and other.recent_section("NCT00000410", as_of="2025-08-01")
        tracker.import_paths(second, at="2025-08-02")  # nothing moved: no change, a sighting
        assert len(list(other.changes())) == 528
        assert len([head, *iteration]) == 528  # still the snapshot it began with
    assert len(list(trialdiff.open(db_path).changes())) == 528


def test_a_closed_tracker_is_not_opened_again_unasked(imported: str) -> None:
    tracker = trialdiff.open(imported)
    tracker.close()
    for use in (lambda: list(tracker.changes()), tracker.check,
                lambda: tracker.import_paths(str(SAMPLE))):
        with pytest.raises(UsageError, match=r"is closed: trialdiff\.open"):
            use()
    assert run(imported, "history", "NCT06060392")[1].count("import") == 2  # no third run


def test_an_iteration_that_outlives_close_says_the_tracker_is_closed(imported: str) -> None:
    tracker = trialdiff.open(imported)
    stream = tracker.changes()
    next(stream)
    tracker.close()
    with pytest.raises(UsageError, match=r"is closed: trialdiff\.open"):
        list(stream)  # SQLite's "Cannot operate on a closed database" was a DatabaseError


def test_a_tracker_moves_between_threads_and_closes_from_any(imported: str) -> None:
    import threading

    tracker = trialdiff.open(imported)
    counts: list[int] = []
    for _ in range(2):  # its reader opened in one thread, read again from another
        worker = threading.Thread(target=lambda: counts.append(len(list(tracker.changes()))))
        worker.start()
        worker.join()
    counts.append(len(list(tracker.changes())))  # and from this one
    worker = threading.Thread(target=tracker.import_paths, args=(str(SAMPLE),))
    worker.start()
    worker.join()
    assert tracker.last_run is not None and tracker.last_run.status == "ok"
    tracker.close()  # not the thread that opened either connection
    assert counts == [528, 528, 528]
    with pytest.raises(UsageError, match="is closed"):
        tracker.check()


def test_changes_runs_and_snapshots_are_values_that_hash(imported: str) -> None:
    from trialdiff.model import Snapshot

    with trialdiff.open(imported) as tracker:
        first, again = list(tracker.changes()), list(tracker.changes())
        run_ = tracker.import_paths(SAMPLE)  # nothing new: its by_kind and errors are empty
    assert len(set(first)) == len(first) == 528  # values are dicts: each is still one change
    assert {hash(c) for c in first} == {hash(c) for c in again} and set(first) == set(again)
    assert hash(run_) == hash(run_) and run_ in {run_}
    fields = {"status.overallStatus": '"RECRUITING"'}
    one, other = (Snapshot("NCT06060392", SAMPLE_DAYS[0], dict(fields)) for _ in range(2))
    assert one == other and hash(one) == hash(other) and len({one, other}) == 1


def test_an_observation_time_may_be_a_date_or_a_datetime(db_path: str) -> None:
    day = SAMPLE / SAMPLE_DAYS[0]
    with trialdiff.open(db_path) as tracker:
        run_ = tracker.import_paths(day, at=datetime.date(2024, 6, 14))
        assert run_.status == "ok"
        moved = tracker.import_paths(SAMPLE / SAMPLE_DAYS[1],
                                     at=datetime.datetime(2025, 7, 7, 9, 30))  # naive: UTC
        assert moved.status == "ok"
        assert {c.detected_at for c in tracker.changes()} == {"2025-07-07T09:30:00.000Z"}
        first = tracker.reader().execute("select distinct first_seen_at from studies")
        assert first.fetchall() == [("2024-06-14T00:00:00.000Z",)]
        with pytest.raises(UsageError, match="not an ISO 8601"):
            tracker.import_paths(day, at=20240614)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["folder", "text"])
def test_open_leaves_no_lock_file_beside_what_is_no_database(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "notes"
    if kind == "folder":
        target.mkdir()
    else:
        target.write_text("not a database\n")
    with pytest.raises(UsageError, match="a folder, not a database" if kind == "folder"
                       else "not an SQLite file"):
        trialdiff.open(str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    assert run(str(target), "import", str(SAMPLE))[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_open_does_not_wait_for_a_writer_when_there_is_nothing_to_migrate(
    imported: str
) -> None:
    from test_lock import lock_holder

    with lock_holder(imported):
        with trialdiff.open(imported) as tracker:  # a reader's script during a cron sync
            assert len(list(tracker.changes())) == 528
        with pytest.raises(trialdiff.BusyError):
            trialdiff.open(imported).import_paths(str(SAMPLE))


def test_one_string_is_one_value_and_odd_filters_are_refused_or_exact(imported: str) -> None:
    with trialdiff.open(imported) as tracker:
        for base in ("example.org/x", "javascript:alert(1)//", "https://exa mple.org/"):
            with pytest.raises(UsageError, match=r"is not a URL like https://example\.org/"):
                tracker.page("NCT06060392", canonical_base=base)
        for bad in ({"paths": []}, {"paths": str(SAMPLE), "workers": 5},
                    {"paths": str(SAMPLE), "workers": -1}):
            with pytest.raises(UsageError):
                tracker.import_paths(**bad)  # type: ignore[arg-type]
        assert tracker.last_run is None  # no run was begun for any of them
        added = list(tracker.changes(kinds=["added"]))
        assert added and list(tracker.changes(kinds="added")) == added
        for kinds in (["ADDED"], "bogus"):
            with pytest.raises(UsageError, match="unknown kind"):
                list(tracker.changes(kinds=kinds))
        with pytest.raises(UsageError, match="'' is not an NCT id"):
            list(tracker.changes(""))  # it listed every change
        assert list(tracker.changes([])) == []  # no study: none (None is every study)
        assert tracker.track(queries="query.cond=myeloma") == (0, 1)
        assert tracker.untrack(queries="query.cond=myeloma") == 1
        for limit in (0, -1, 1.5):
            with pytest.raises(UsageError, match="a limit of lines must be 1 or more"):
                tracker.recent_section("NCT06060392", days=400, limit=limit)  # type: ignore
        # A datetime is its moment (naive: UTC), as its ISO text is; it read as a whole day.
        noon = datetime.datetime(2025, 7, 7, 12)
        assert tracker.recent_section("NCT06060392", days=1, as_of=noon) == (
            tracker.recent_section("NCT06060392", days=1, as_of="2025-07-07T12:00:00"))
        assert list(tracker.changes(since=datetime.date(2025, 7, 7))) == list(
            tracker.changes(since="2025-07-07"))
    with trialdiff.open(imported.replace(".db", "-new.db")) as fresh:
        assert fresh.track_again("derivedSection") == ("derivedSection",)


def test_arguments_of_the_wrong_type_are_usage_errors_that_say_so(imported: str) -> None:
    # A probe's list: bytes, None in a list, a list where one id goes, bytes as a path. Each
    # failed deep inside (AttributeError: 'int' object has no attribute 'strip').
    with trialdiff.open(imported) as tracker:
        for call, wrong in ((lambda: list(tracker.changes(b"NCT06060392")), "b'NCT06060392'"),
                            (lambda: list(tracker.changes([None])), "None in [None]"),
                            (lambda: tracker.recent_section(["NCT06060392"]),
                             "['NCT06060392'] in"),
                            (lambda: list(tracker.changes(path=[3])), "3 in [3]"),
                            (lambda: tracker.import_paths(b"archive"), "b'archive'")):
            with pytest.raises(UsageError, match=r"is not a string|neither a") as refused:
                call()
            assert str(refused.value).startswith(wrong)


def test_a_hook_or_sink_trialdiff_cannot_use_is_refused_before_a_run(db_path: str) -> None:
    # A probe's `sleeep` failed inside the client; a sink with only show() failed after the
    # run had committed as ok.
    with pytest.raises(UsageError, match="hooks takes clock, jitter, sleep, transport, not sleeep"):
        trialdiff.open(db_path, hooks={"sleeep": 1})

    class ShowOnly:
        def show(self, outcome: Outcome) -> None:
            pass

    with (trialdiff.open(db_path) as tracker,
          pytest.raises(UsageError, match="is no sink: it has no finish, close method")):
        tracker.import_paths(str(SAMPLE), sinks=[ShowOnly()])  # type: ignore[list-item]
    assert sqlite3.connect(db_path).execute("select count(*) from runs").fetchone() == (0,)
