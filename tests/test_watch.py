"""Watch rules: facts and filters on real edits, stored rules, the outbox rows, scope, previews."""

from __future__ import annotations

import copy
import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ALERT_STUDIES,
    CHANGE_DAYS,
    FIXTURES,
    SAMPLE,
    SAMPLE_DAYS,
    bodies,
    import_day,
    run,
    sample_changes,
    sample_record,
    sent_changes,
    version_pair,
)
from sqlite_utils import Database
from webhook_receiver import WebhookReceiver

from trialdiff.diff import diff_snapshots
from trialdiff.errors import UsageError
from trialdiff.export import ordered
from trialdiff.lifecycle import start_run
from trialdiff.meaning import Annotated, annotate
from trialdiff.model import Snapshot
from trialdiff.normalize import extract_fields
from trialdiff.query import transaction
from trialdiff.schema import open_db
from trialdiff.watch import (
    AlertWriter,
    Fact,
    Watch,
    add_watch,
    alert_changes,
    get_watch,
    idempotency_key,
    in_scope,
    load_watches,
    parse_fact,
    remember_members,
    remove_watch,
    validate,
    would_match,
)

pytestmark = pytest.mark.usefixtures("secrets_file")

AT = "2025-07-07T06:00:00.000Z"  # when the sample archive's second day was observed


def pair_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Annotated]:
    """Return the annotated changes from one record to another (the same study)."""
    nct_id = old["protocolSection"]["identificationModule"]["nctId"]
    return annotate(diff_snapshots(Snapshot(nct_id, CHANGE_DAYS[0], extract_fields(old)),
                                   Snapshot(nct_id, CHANGE_DAYS[1], extract_fields(new))))


def holding(fact: str, items: list[Annotated]) -> list[str]:
    """Return the paths of the changes a fact holds for."""
    parsed = parse_fact(fact)
    return [i.change.path for i in items if parsed.holds(i)]


@pytest.fixture
def sample_db(db_path: str) -> Database:
    """Return a database that imported the sample archive's two real days."""
    for day in SAMPLE_DAYS:
        code, _, err = run(db_path, "import", "--at", f"{day}T06:00:00Z", str(SAMPLE / day))
        assert code == 0, err
    return open_db(db_path)


def test_a_digest_is_one_message_per_run_not_per_study(
    tmp_path: Path, alert_days: list[Path], receiver: WebhookReceiver
) -> None:
    db = str(tmp_path / "t.db")
    run(db, "watch", "add", "each", "--min-severity", "major", "--to", f"{receiver.url}/each")
    run(db, "watch", "add", "all", "--min-severity", "major", "--digest", "--to",
        f"{receiver.url}/all")
    for number in (1, 2, 3):
        import_day(db, alert_days, number)
    each, digest = bodies(receiver, "/each"), bodies(receiver, "/all")
    assert len(each) == 4 and len(digest) == 2
    assert [len({c["nct_id"] for c in b["changes"]}) for b in each] == [1, 1, 1, 1]
    assert [sorted({c["nct_id"] for c in b["changes"]}) for b in digest] == [
        list(ALERT_STUDIES), ["NCT06060392"]]
    assert sent_changes(receiver, "/each") == sent_changes(receiver, "/all")


def test_a_fact_reads_back_as_written_and_a_malformed_one_is_refused() -> None:
    # Facts are stored as their text and parsed again when a watch is loaded.
    for text, fact in (("stopped", Fact("stopped")), ("date_slip>=90", Fact("date_slip", 90)),
                       ("enrollment_change>=12.5", Fact("enrollment_change", 12.5)),
                       ("site_added", Fact("site_added")),
                       ("site_added:United Kingdom", Fact("site_added", country="United Kingdom"))):
        assert parse_fact(text) == fact and str(fact) == text
    # Written out in full: `:g` once stored 1e+06, which no longer parsed, and 12.3457.
    for text in ("enrollment_change>=1000000", "enrollment_change>=12.3456789",
                 "date_slip>=100000000000000000000"):
        assert str(parse_fact(text)) == text
    assert parse_fact("enrollment_change>=1e+06") == Fact("enrollment_change", 1e6)  # as stored
    assert parse_fact(" site_added: Greece ") == Fact("site_added", country="Greece")
    for bad in ("date_slip>90", "date_slip>=", "stopped_soon", "site_added:", "results"):
        with pytest.raises(UsageError, match="is not a fact"):
            parse_fact(bad)
    # A threshold past a float's range was stored as "Infinity", which made every later load
    # of the watches (each import and sync, and `watch remove` itself) fail with exit 2.
    for huge in ("date_slip>=1e999", "enrollment_change>=1e400"):
        with pytest.raises(UsageError, match="past the largest threshold a fact takes"):
            parse_fact(huge)


def test_a_rule_stored_with_an_infinite_threshold_still_loads_and_can_be_removed(
    db_path: str, secrets_file: Path,
) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    assert run(db_path, "watch", "add", "big", "--fact", "date_slip>=90", "--to", "env:X")[0] == 0
    with sqlite3.connect(db_path) as conn:  # as the first release stored 1e999
        conn.execute("update watches set facts = '[\"date_slip>=Infinity\"]'")
    code, out, err = run(db_path, "watch", "list")
    assert (code, err) == (0, "") and "fact date_slip>=Infinity" in out
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    assert run(db_path, "watch", "remove", "big")[0] == 0


def test_date_slip_holds_from_its_threshold_for_later_start_and_completion_dates() -> None:
    # NCT06060392's real edit: completion 245 days later, primary completion 274, and its
    # last-update date 573 days later, which is no slip.
    slipped = pair_changes(*version_pair("NCT06060392"))
    assert holding("date_slip>=245", slipped) == ["status.completionDate",
                                                  "status.primaryCompletionDate"]
    assert holding("date_slip>=246", slipped) == ["status.primaryCompletionDate"]
    assert holding("date_slip>=275", slipped) == []
    # NCT04280705's dates moved earlier (completion by 1045 days): never a slip.
    earlier = pair_changes(*version_pair("NCT04280705"))
    assert holding("date_slip>=0", earlier) == []


def test_enrollment_change_counts_either_way_and_always_from_zero() -> None:
    older, newer = version_pair("NCT04280705")  # enrollment 394 -> 1062: +169.5%
    grown = pair_changes(older, newer)
    assert holding("enrollment_change>=169.5", grown) == ["design.enrollmentCount"]
    assert holding("enrollment_change>=169.6", grown) == []
    shrunk = pair_changes(newer, older)  # 1062 -> 394: -62.9%
    assert holding("enrollment_change>=62.9", shrunk) == ["design.enrollmentCount"]
    assert holding("enrollment_change>=63", shrunk) == []
    empty = copy.deepcopy(older)
    empty["protocolSection"]["designModule"]["enrollmentInfo"]["count"] = 0
    assert holding("enrollment_change>=1000000", pair_changes(empty, newer)) == [
        "design.enrollmentCount"]  # no percentage from 0: any threshold holds


def test_site_added_takes_added_sites_only_in_a_country_named_in_any_case() -> None:
    items = annotate(sample_changes("NCT05827016", *CHANGE_DAYS))
    sites = [i for i in items if i.change.path.startswith("locations.")]
    added = [i.change.path for i in sites if i.change.kind == "added"]
    assert len(added) < len(sites)  # removed and changed sites too, which must not count
    assert holding("site_added", items) == added
    greek = [i.change.path for i in sites
             if i.change.kind == "added" and i.change.new["country"] == "Greece"]
    assert greek and holding("site_added:GREECE", items) == greek


def test_path_prefixes_match_whole_segments_and_kinds_filter() -> None:
    changes = sample_changes("NCT05827016", *CHANGE_DAYS)
    status = [c for c in changes if c.path.startswith("status.")]
    assert status and len(status) < len(changes)
    for prefix in ("status", "status."):
        assert [c for c in changes if Watch("w", ("env:X",), paths=(prefix,)).passes(c)] == status
    assert not any(Watch("w", ("env:X",), paths=("stat",)).passes(c) for c in changes)
    exact = Watch("w", ("env:X",), paths=("status.overallStatus",))
    assert [c.path for c in changes if exact.passes(c)] == ["status.overallStatus"]
    removed = Watch("w", ("env:X",), kinds=("removed",))
    kept = [c for c in changes if removed.passes(c)]
    assert kept and {c.kind for c in kept} == {"removed"}


def test_select_counts_a_sites_facts_over_its_whole_observation_as_changes_does() -> None:
    changes = sample_changes("NCT05827016", *CHANGE_DAYS)
    whole = {a.change.path: a.facts for a in annotate(ordered(changes))}
    found = Watch("w", ("env:X",), paths=("locations",), kinds=("added",)).select(changes)
    # The watch sends the added sites, each with the facts stored with it: its observation's
    # counts (234 added, 230 removed, 48 changed), not those of the sites the watch keeps.
    assert found and {r["kind"] for r in found} == {"added"}
    assert all(r["facts"] == whole[r["path"]] for r in found)
    assert found[0]["facts"]["sites"] == {"added": 234, "removed": 230, "changed": 48}
    major = Watch("w", ("env:X",), min_severity="major").select(changes)
    assert [r["path"] for r in major] == [
        a.change.path for a in annotate(ordered(changes)) if a.severity == "major"]


def test_validate_refuses_a_rule_that_cannot_work() -> None:
    good = Watch("slips.2025_v-1", ("env:HOOK",))
    validate(good)
    for rule, message in (
        (replace(good, name="-slips"), "is not a watch name"),
        (replace(good, name="x" * 65), "is not a watch name"),
        (replace(good, targets=()), "at least one target"),
        (replace(good, studies=("NCT06060392",), query="query.cond=x"), "not both"),
        (replace(good, min_severity="urgent"), "unknown severity 'urgent'"),
        (replace(good, kinds=("added", "moved")), "unknown kind 'moved'"),
    ):
        with pytest.raises(UsageError, match=message):
            validate(rule)


def test_a_watch_is_stored_and_read_back_whole(db_path: str) -> None:
    db = open_db(db_path)
    rule = Watch("slips", ("env:A", "config:0123456789abcdef"), studies=("NCT06060392",
                 "NCT05827016"), paths=("status",), kinds=("changed",), min_severity="minor",
                 facts=(parse_fact("date_slip>=90"), parse_fact("site_added:Greece")),
                 digest=True, secret="env:SECRET", created_at=AT)
    with transaction(db):
        add_watch(db, rule)
        add_watch(db, Watch("all", ("env:B",), created_at=AT))
    # Studies are stored sorted; everything else as given.
    assert get_watch(db.conn, "slips") == replace(rule, studies=("NCT05827016", "NCT06060392"))
    assert [w.name for w in load_watches(db.conn)] == ["all", "slips"]
    with pytest.raises(UsageError, match="a watch named 'all' exists"):
        add_watch(db, Watch("all", ("env:C",)))
    with pytest.raises(UsageError, match="no watch named 'none'"):
        get_watch(db.conn, "none")


def test_alerts_are_one_per_study_or_one_digest_per_run_with_a_delivery_per_target(
    sample_db: Database
) -> None:
    db = sample_db
    with transaction(db):
        add_watch(db, Watch("each", ("env:A", "env:B"), min_severity="major", created_at=AT))
        add_watch(db, Watch("all", ("env:C",), digest=True, created_at=AT))
        add_watch(db, Watch("one", ("env:D",), studies=("NCT06060392",), created_at=AT))
        run_id = start_run(db, "import", AT)
        writer = AlertWriter(db, run_id)
        found = {n: sample_changes(n, *CHANGE_DAYS) for n in ("NCT05827016", "NCT06060392")}
        # NCT05827016's changes come in two saves, each with one of its two major changes
        # (status, criteria): the second adds to the alerts the first raised.
        first = found["NCT05827016"]
        cut = next(i for i, c in enumerate(first) if c.path == "eligibility.criteria")
        assert writer.add("NCT05827016", first[:cut]) == 2  # all, each
        assert writer.add("NCT05827016", first[cut:]) == 2
        assert writer.add("NCT06060392", found["NCT06060392"]) == 3  # each, all, one
        assert writer.add("NCT04642755", []) == 0
    alerts = db.execute("select id, watch, scope, idempotency_key, run from alerts order by id"
                        ).fetchall()
    assert [(w, s) for _, w, s, _, _ in alerts] == [  # watches apply in name order
        ("all", "digest"), ("each", "NCT05827016"), ("each", "NCT06060392"),
        ("one", "NCT06060392")]
    assert {k for _, _, _, k, _ in alerts} == {
        idempotency_key(AT, run_id, w, s) for _, w, s, _, _ in alerts}
    assert all(json.loads(r) == {"id": run_id, "command": "import", "started_at": AT}
               for *_, r in alerts)
    deliveries = db.execute("select a.watch, d.target, d.state, d.attempts from deliveries d "
                            "join alerts a on a.id = d.alert_id order by d.id").fetchall()
    assert deliveries == [("all", "env:C", "pending", 0), ("each", "env:A", "pending", 0),
                          ("each", "env:B", "pending", 0), ("each", "env:A", "pending", 0),
                          ("each", "env:B", "pending", 0), ("one", "env:D", "pending", 0)]
    # Each alert carries what its watch selects, in export order, with the study's title.
    each = get_watch(db.conn, "each")
    changes, titles = alert_changes(db.conn, alerts[1][0])
    assert changes == each.select(found["NCT05827016"])
    assert titles == {"NCT05827016": sample_record(SAMPLE_DAYS[1], "NCT05827016")[
        "protocolSection"]["identificationModule"]["briefTitle"]}
    digest, _ = alert_changes(db.conn, alerts[0][0])
    assert len(digest) == sum(len(c) for c in found.values())
    # Each change is compressed (a copy per watch kept results whole), and read back whole.
    assert digest == get_watch(db.conn, "all").select([c for v in found.values() for c in v])
    assert db.execute("select distinct typeof(change) from alert_changes").fetchall() == [
        ("blob",)]
    assert [c["nct_id"] for c in digest] == sorted(c["nct_id"] for c in digest)


def test_a_run_with_no_id_raises_no_alert(sample_db: Database) -> None:
    with transaction(sample_db):
        add_watch(sample_db, Watch("all", ("env:C",), created_at=AT))
        # What a backfill without --alert does: its writer has no run, so no watch applies.
        assert AlertWriter(sample_db, None).add(
            "NCT06060392", sample_changes("NCT06060392", *CHANGE_DAYS)) == 0
    assert sample_db.execute("select count(*) from alerts").fetchone() == (0,)


def test_removing_a_watch_cancels_its_undelivered_alerts_and_keeps_the_rows(
    sample_db: Database
) -> None:
    db = sample_db
    with transaction(db):
        for name in ("gone", "kept"):
            add_watch(db, Watch(name, ("env:A", "env:B"), created_at=AT))
        AlertWriter(db, start_run(db, "import", AT)).add(
            "NCT06060392", sample_changes("NCT06060392", *CHANGE_DAYS))
    # As if the first target had taken "gone"'s alert already.
    db.execute("update deliveries set state = 'delivered' where id = 1")
    with transaction(db):
        removed = remove_watch(db, "gone")
    assert removed.name == "gone" and removed.targets == ("env:A", "env:B")
    rows = db.execute("select a.watch, d.target, d.state, d.last_error from deliveries d "
                      "join alerts a on a.id = d.alert_id order by d.id").fetchall()
    assert rows == [("gone", "env:A", "delivered", None),
                    ("gone", "env:B", "failed", "the watch was removed"),
                    ("kept", "env:A", "pending", None), ("kept", "env:B", "pending", None)]
    assert [w.name for w in load_watches(db.conn)] == ["kept"]


def test_a_query_watch_covers_what_its_query_returned_and_keeps_the_first_sighting(
    sample_db: Database
) -> None:
    db = sample_db
    expr = "filter.overallStatus=RECRUITING"
    db.execute("insert into queries (expr, added_at) values (?, ?)", [expr, AT])
    (query_id,) = db.execute("select id from queries where expr = ?", [expr]).fetchone()
    rule = Watch("q", ("env:A",), query=expr)
    assert not in_scope(db.conn, rule, "NCT06060392")
    remember_members(db, query_id, ["NCT06060392"], AT)
    remember_members(db, query_id, ["NCT06060392", "NCT05827016"], "2025-07-08T06:00:00.000Z")
    assert in_scope(db.conn, rule, "NCT06060392") and in_scope(db.conn, rule, "NCT05827016")
    assert not in_scope(db.conn, rule, "NCT04642755")
    assert db.execute("select nct_id, first_seen_at from query_studies order by nct_id"
                      ).fetchall() == [("NCT05827016", "2025-07-08T06:00:00.000Z"),
                                       ("NCT06060392", AT)]
    listed = Watch("l", ("env:A",), studies=("NCT04642755",))
    assert in_scope(db.conn, listed, "NCT04642755")
    assert not in_scope(db.conn, listed, "NCT06060392")
    assert in_scope(db.conn, Watch("every", ("env:A",)), "NCT06060392")


def test_a_digest_preview_merges_the_window_into_one_message(sample_db: Database) -> None:
    each = Watch("each", ("env:A",), min_severity="major")
    groups = would_match(sample_db.conn, each, "2025-07-07T00:00:00Z")
    assert [scope for scope, _ in groups] == ["NCT05827016", "NCT06060392"]
    merged = would_match(sample_db.conn, replace(each, digest=True), "2025-07-07T00:00:00Z")
    assert merged == [("digest", [c for _, found in groups for c in found])]
    assert would_match(sample_db.conn, each, "2025-07-01T00:00:00Z", "2025-07-07T00:00:00Z"
                       ) == []  # the window ends before the second day's changes



def test_a_preview_is_one_message_per_study_per_observation_the_latest_last(
    sample_db: Database, tmp_path: Path
) -> None:
    # Grouped by study alone, two observations of a study were one message that no alert had,
    # a digest merged every run of the window, and `watch test` sent the highest id's, not the
    # latest.
    record = json.loads((SAMPLE / SAMPLE_DAYS[-1] / "NCT06060392.json").read_text("utf-8"))
    record["protocolSection"]["statusModule"]["overallStatus"] = "TERMINATED"
    (tmp_path / "NCT06060392.json").write_text(json.dumps(record), encoding="utf-8")
    db_path = sample_db.conn.execute("pragma database_list").fetchone()[2]
    assert run(db_path, "import", "--at", "2025-07-10T06:00:00Z", str(tmp_path))[0] == 0
    each = Watch("each", ("env:A",), min_severity="major")
    groups = would_match(sample_db.conn, each, "2025-07-07T00:00:00Z")
    assert [(scope, {c["detected_at"][:10] for c in found}) for scope, found in groups] == [
        ("NCT05827016", {"2025-07-07"}), ("NCT06060392", {"2025-07-07"}),
        ("NCT06060392", {"2025-07-10"})]
    digests = would_match(sample_db.conn, replace(each, digest=True), "2025-07-07T00:00:00Z")
    assert [(scope, len(found)) for scope, found in digests] == [
        ("digest", len(groups[0][1]) + len(groups[1][1])), ("digest", len(groups[2][1]))]

@pytest.mark.usefixtures("secrets_file")
def test_a_large_threshold_is_stored_as_it_reads_and_the_rule_stays_usable(
    tmp_path: Path
) -> None:
    db = str(tmp_path / "t.db")
    assert run(db, "watch", "add", "big", "--fact", "enrollment_change>=1000000",
               "--to", "https://hooks.example.org/x")[0] == 0
    code, out, err = run(db, "watch", "list")
    assert (code, err) == (0, "") and "enrollment_change>=1000000" in out
    assert run(db, "import", str(FIXTURES / "v2"))[0] == 0  # every run loads the rules
    assert run(db, "watch", "remove", "big")[:2] == (0, "watch remove: big\n")


def test_a_target_given_twice_is_kept_once(db_path: str, secrets_file: Path) -> None:
    assert run(db_path, "import", str(SAMPLE))[0] == 0
    hook = "https://hooks.example.org/trials"
    assert run(db_path, "watch", "add", "w", "--to", hook, "--to", "env:X", "--to", hook)[0] == 0
    code, out, _ = run(db_path, "watch", "list")
    assert code == 0 and out.count("hooks.example.org") == 1 and "env:X" in out
