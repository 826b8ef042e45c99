"""Target references: values kept in a private secrets file or the environment, shown redacted."""

from __future__ import annotations

import json
import os
import pwd
import re
import stat
from pathlib import Path

import pytest

from trialdiff.errors import UsageError
from trialdiff.targets import (
    forget,
    keep,
    keep_all,
    names_host,
    redact,
    resolve,
    scrub,
    secrets_path,
    shown,
)

HOOK = "https://hooks.example.org/services/T0KEN?sig=abc"
MAIL = "mailto://user:pa%3Ass@mail.example.org:587?to=ops@example.org"


def test_kept_values_live_in_an_owner_only_file_and_leave_it_when_forgotten(
    secrets_file: Path
) -> None:
    hook, mail = keep(HOOK), keep(MAIL)
    assert hook.startswith("config:") and len(hook) == len("config:") + 16 and hook != mail
    assert (resolve(hook), resolve(mail)) == (HOOK, MAIL)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in secrets_file.parent.iterdir()) == [
        "secrets.json", "secrets.json.lock"]  # no temp file
    assert stat.S_IMODE(secrets_file.with_name("secrets.json.lock").stat().st_mode) == 0o600
    forget([hook, "env:HOOK_URL", "config:0000000000000000"])  # unknown ones are no error
    assert json.loads(secrets_file.read_text()) == {mail.removeprefix("config:"): MAIL}
    with pytest.raises(UsageError, match=f"{hook} is not in the secrets file {secrets_file}"):
        resolve(hook)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600  # rewritten, still private


def test_an_env_reference_is_read_when_resolved_and_never_stored(
    secrets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert keep("env:HOOK_URL") == "env:HOOK_URL"
    assert not secrets_file.exists()
    with pytest.raises(UsageError, match="environment variable HOOK_URL is not set"):
        resolve("env:HOOK_URL")
    monkeypatch.setenv("HOOK_URL", HOOK)  # set after the rule was stored: read now
    assert resolve("env:HOOK_URL") == HOOK
    monkeypatch.setenv("HOOK_URL", "")
    with pytest.raises(UsageError, match="is not set"):
        resolve("env:HOOK_URL")
    for bad in ("env: ", "env:1BAD", "env:A B", "env:A-B"):  # no shell can set these
        with pytest.raises(UsageError, match="names no environment variable: give env:NAME"):
            keep(bad)
    with pytest.raises(UsageError, match="is not a target reference"):
        resolve(HOOK)  # a URL itself is never taken as a reference


def test_the_secrets_file_is_trialdiff_secrets_else_in_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIALDIFF_SECRETS", str(tmp_path / "mine.json"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert secrets_path() == tmp_path / "mine.json"
    monkeypatch.delenv("TRIALDIFF_SECRETS")
    assert secrets_path() == tmp_path / "xdg" / "trialdiff" / "secrets.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert secrets_path() == tmp_path / "home" / ".config" / "trialdiff" / "secrets.json"
    # As the database's default: not at / (HOME empty), nor under the current folder.
    account = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".config" / "trialdiff" / "secrets.json"
    for home, xdg in (("", ""), ("rel", ""), (str(tmp_path / "home"), "rel")):
        monkeypatch.setenv("HOME", home)
        monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
        assert secrets_path() == (account if not home.startswith("/") else
                                  tmp_path / "home" / ".config" / "trialdiff" / "secrets.json")


def test_a_secrets_file_that_cannot_be_written_says_where_else_to_keep_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cron's user with no home it could write saw only "Permission denied: /nonexistent".
    (tmp_path / "a-file").write_text("")
    place = tmp_path / "a-file" / "secrets.json"  # under a file: no folder can be made there
    monkeypatch.setenv("TRIALDIFF_SECRETS", str(place))
    with pytest.raises(UsageError, match=re.escape(f"cannot write the secrets file {place}: ")
                       + r".*; keep it elsewhere, or give the value as env:NAME$") as refused:
        keep(HOOK)
    assert refused.value.setting == "secrets"  # the CLI names its option and variable
    assert keep("env:HOOK") == "env:HOOK"  # nothing to write: no file needed


@pytest.mark.parametrize("content", ["{not json", "[\"a list\"]"])
def test_a_broken_secrets_file_is_named_and_left_as_it_is(secrets_file: Path,
                                                          content: str) -> None:
    secrets_file.parent.mkdir()
    secrets_file.write_text(content)
    for attempt in (lambda: keep(HOOK), lambda: resolve("config:0123456789abcdef"),
                    lambda: forget(["config:0123456789abcdef"])):
        with pytest.raises(UsageError, match=f"secrets file {secrets_file}"):
            attempt()
    assert secrets_file.read_text() == content  # not overwritten: its values may be the only copy


def test_redact_shows_scheme_host_and_port_only() -> None:
    assert redact(HOOK) == "https://hooks.example.org"
    assert redact(MAIL) == "mailto://mail.example.org:587"
    # The port tells two receivers on one host apart (a probe could not).
    assert redact("http://user:pw@127.0.0.1:8080/hook") == "http://127.0.0.1:8080"
    assert redact("mailto://user:pw@smtp.example.org:587?to=a@example.org") == (
        "mailto://smtp.example.org:587")
    assert redact("mmost://chat.example.org:x1/T0KEN") == "mmost://chat.example.org"
    assert redact("http://[::1]:8080/hook") == "http://[::1]:8080"
    assert redact("http://localhost/hook") == "http://localhost"
    # Apprise puts tokens where a host goes: a "host" with no dot is not shown.
    assert redact("slack://T1SECRET/B2/C3") == "slack://\u2026"
    assert redact("tgram://123456:ABCDEF/42") == "tgram://\u2026"
    assert redact("hooks.example.org/T0KEN") == "?://"  # no scheme: nothing of it
    # A URL urlsplit refuses (an unbalanced "["): its scheme alone.
    assert redact("http://[::1/hook?token=T0KEN") == "http://"
    assert redact("slack://[T0KEN/B2") == "slack://"
    assert redact("env:HOOK_URL") == "env:HOOK_URL"
    assert redact("config:0123456789abcdef") == "config:0123456789abcdef"


def test_names_host_takes_a_url_that_parses_with_a_host() -> None:
    assert names_host(HOOK) and names_host("http://user:pw@127.0.0.1:8080/hook")
    assert names_host("http://[::1]:8080/hook")
    for broken in ("http://[::1/hook", "https://hooks.example.org:T0KEN/x", "https:///x",
                   "http://host:99999/x", "https://exa mple.org/", "https://x.org/a b"):
        assert not names_host(broken), broken


def test_shown_names_env_references_and_redacts_or_flags_stored_ones(secrets_file: Path) -> None:
    hook = keep(HOOK)
    assert shown(hook) == "https://hooks.example.org"
    assert shown("env:HOOK_URL") == "env:HOOK_URL"  # unset is fine: only the name is shown
    forget([hook])
    assert shown(hook) == f"{hook} (missing from the secrets file)"
    secrets_file.write_text("{not json", encoding="utf-8")  # unreadable is not "missing"
    with pytest.raises(UsageError, match="cannot read the secrets file"):
        shown(hook)


def test_scrub_leaves_no_target_or_secret_in_an_error() -> None:
    url = "mailto://user:s3cret@127.0.0.1:25?to=ops@example.org"
    error = (f"cannot send to {url}: login user:s3cret refused; signed with whsec-42; "
             f"see {HOOK}")
    text = scrub(error, [HOOK, url, "whsec-42", ""])
    assert text == ("cannot send to mailto://127.0.0.1:25: login \u2026 refused; signed with "
                    "\u2026; see https://hooks.example.org")
    # The longer value is replaced first, so a URL inside another is not half redacted.
    inner = "https://hooks.example.org/a"
    assert scrub(f"{inner}/b failed", [inner, f"{inner}/b"]) == "https://hooks.example.org failed"


def test_scrub_takes_a_path_or_query_part_out_where_a_service_names_it_alone() -> None:
    # Apprise's ntfy error names the topic, which is the target's secret; words that only
    # hold a part ("notification" holds "notify") stay as they are.
    topic = "ntfy://127.0.0.1:18766/TopicSecret123"
    error = "Failed to send ntfy notification to topic 'TopicSecret123': error=500."
    assert scrub(error, [topic]) == "Failed to send ntfy notification to topic '\u2026': error=500."
    slack = "slack://T1abc/B2def/C3%20ghi?footer=no"
    assert scrub("token T1abc B2def, channel C3 ghi, footer: no", [slack]) == (
        "token \u2026 \u2026, channel \u2026, footer: no")  # the host place is a token too
    assert scrub("topic 'mytopic' failed", ["ntfy://mytopic"]) == "topic '\u2026' failed"
    # A webhook's path is mostly words: only a part that looks like a token goes, so the
    # error's own words stay ("alert timeout", "webhook", "refused").
    assert scrub("took longer than the 10 s alert timeout; webhook refused",
                 ["http://127.0.0.1:9/alert/timeout/webhook?x=refused"]) == (
        "took longer than the 10 s alert timeout; webhook refused")
    assert scrub("POST /services/T0ABCDEF failed", [
        "https://hooks.slack.com/services/T0ABCDEF/B0ABCDEF/abcdefghijklmnopqrstuvwx"]) == (
        "POST /services/\u2026 failed")


def test_an_entry_another_database_added_is_kept_by_forget(
    secrets_file: Path, tmp_path: Path
) -> None:
    original, copy = str(tmp_path / "t.db"), str(tmp_path / "staging.db")
    hook, mail = keep_all([HOOK, MAIL], owner=original)
    entries = json.loads(secrets_file.read_text())
    assert entries[f"database:{hook.removeprefix('config:')}"] == os.path.realpath(original)
    assert forget([hook], owner=copy) == [hook]  # the copy's removal leaves the original's
    assert resolve(hook) == HOOK
    assert forget([hook], owner=original) == []  # its own: gone, with its owner's note
    assert set(json.loads(secrets_file.read_text())) == {
        mail.removeprefix("config:"), f"database:{mail.removeprefix('config:')}"}
    assert forget([mail]) == []  # no owner given: no check (a library caller's way)
    assert json.loads(secrets_file.read_text()) == {}


def test_writers_of_one_secrets_file_at_once_lose_no_entry(
    secrets_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe: `watch add` on 12 databases at once (one secrets file per user) each replaced the
    # file with only its own entry added; other watches then named targets it did not hold.
    import threading
    import time

    import trialdiff.targets

    read = trialdiff.targets._read

    def slow_read(path: Path) -> dict[str, str]:
        entries = read(path)
        time.sleep(0.02)  # the time between reading the file and replacing it, made wide
        return entries

    monkeypatch.setattr(trialdiff.targets, "_read", slow_read)
    kept: list[str] = []
    workers = [threading.Thread(target=lambda n=n: kept.extend(
        keep_all([f"https://h{n}.example.org/x"], owner=f"/srv/db{n}.db"))) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(resolve(reference) for reference in kept) == sorted(
        f"https://h{n}.example.org/x" for n in range(8))
    assert len(json.loads(secrets_file.read_text())) == 16  # 8 targets, 8 owner notes
