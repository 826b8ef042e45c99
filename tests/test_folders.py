"""The files an input names: folders searched recursively, linked folders once, dated folders."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import real_records

import trialdiff
from trialdiff.errors import UsageError
from trialdiff.folders import dated_folders, import_batches, read_studies

RECORDS = real_records()[:5]
IDS = [r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS]


def ids(paths: list[Path]) -> list[str | None]:
    """Return the NCT ids (None for errors) read from paths."""
    return [item.nct_id for item in read_studies([str(p) for p in paths])]


def test_directory_is_searched_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "c" / "x.json").write_text(json.dumps(RECORDS[1]))
    (tmp_path / "a.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "notes.txt").write_text("skip me")
    assert ids([tmp_path]) == IDS[:2]


def test_missing_path_is_named(tmp_path: Path) -> None:
    (item,) = read_studies([str(tmp_path / "nope.json")])
    assert item.error == "no such file or directory"


def test_dated_folders_make_an_archive(tmp_path: Path) -> None:
    for day in ("2025-07-07", "2024-06-14"):
        (tmp_path / day).mkdir()
    archive = dated_folders(str(tmp_path))
    assert archive is not None and archive.ignored == []
    assert [d for d, _ in archive.days] == ["2024-06-14T00:00:00.000Z", "2025-07-07T00:00:00.000Z"]
    assert dated_folders(str(tmp_path / "2024-06-14")) is None  # no dated folders: plain


def test_an_archive_leaves_out_stray_files_and_refuses_what_it_cannot_date(tmp_path: Path) -> None:
    for day in ("2025-07-07", "2024-06-14"):
        (tmp_path / day).mkdir()
        (tmp_path / day / "one.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "README.md").write_text("Daily pulls of the registry.\n")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    archive = dated_folders(str(tmp_path))
    assert archive is not None and archive.ignored == ["README.md"]
    assert [d[:10] for d, _ in archive.days] == ["2024-06-14", "2025-07-07"]
    # A study file or a folder beside the dated ones cannot be dated: refused, not re-dated.
    for stray in ("NCT00000410.json", "latest"):
        path = tmp_path / stray
        path.mkdir() if stray == "latest" else path.write_text(json.dumps(RECORDS[0]))
        with pytest.raises(UsageError, match=f"{stray} beside them has no date"):
            dated_folders(str(tmp_path))
        path.rmdir() if stray == "latest" else path.unlink()


@pytest.mark.parametrize(("name", "reason"), [
    ("2025-13-45", "is not an ISO 8601 date or time"),
    ("2205-01-01", "is in the future"),
    ("1999-12-31", "is before ClinicalTrials.gov existed"),
])
def test_an_archive_folder_named_by_no_sane_date_is_refused(
    tmp_path: Path, name: str, reason: str
) -> None:
    (tmp_path / "2024-06-14").mkdir()
    (tmp_path / name).mkdir()
    with pytest.raises(UsageError, match=f": archive folder '{name}' {reason}"):
        dated_folders(str(tmp_path))


def test_a_folder_with_no_study_files_is_named_as_a_failed_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("not a study", encoding="utf-8")
    items = list(read_studies([str(tmp_path / "empty"), str(tmp_path / "notes")]))
    assert [(i.label, i.error) for i in items] == [
        (str(tmp_path / p),
         "no study files here (.json, .ndjson, .jsonl, one of them .gz, or .zip)")
        for p in ("empty", "notes")
    ]


def test_a_linked_folder_is_searched_once_and_a_loop_is_no_loop(tmp_path: Path) -> None:
    # A linked subfolder was skipped in silence, exit 0: its studies went missing.
    (tmp_path / "real").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "real" / "a.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "elsewhere" / "b.json").write_text(json.dumps(RECORDS[1]))
    (tmp_path / "real" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "back").symlink_to(tmp_path / "real")  # a loop
    assert ids([tmp_path / "real"]) == IDS[:2]


def refusing_locked(real: Any) -> Any:
    """Return os.scandir or os.listdir, refusing a folder named `locked` as mode 000 would."""
    def call(path: Any = ".") -> Any:  # running as root, a mode cannot refuse: this does
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    return call


def test_a_folder_that_cannot_be_read_and_a_fifo_are_named_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "locked").mkdir()
    os.mkfifo(tmp_path / "ok" / "pipe.json")  # read, it would wait for a writer for ever
    monkeypatch.setattr(os, "scandir", refusing_locked(os.scandir))
    items = list(read_studies([str(tmp_path)]))
    assert [(item.label, item.error) for item in items if item.error] == [
        (str(tmp_path / "locked"), "cannot read this folder: Permission denied"),
        (str(tmp_path / "ok" / "pipe.json"), "not a regular file (a FIFO or device in a folder "
                                             "is not read: give it as a path of its own)")]
    assert [item.nct_id for item in items if not item.error] == IDS[:1]


def test_a_folder_given_that_cannot_be_read_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given as a path of its own, it ended the whole import with a PermissionError (a probe):
    # looking for dated folders in it listed it unguarded.
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(os, "listdir", refusing_locked(os.listdir))
    monkeypatch.setattr(os, "scandir", refusing_locked(os.scandir))
    with trialdiff.open(tmp_path / "t.db") as tracker:
        run = tracker.import_paths([str(tmp_path / "locked"), str(tmp_path / "ok")])
        assert (run.checked, run.failed, run.status) == (1, 1, "partial")
        assert tracker.reader().execute("select nct_id from studies").fetchall() == [(IDS[0],)]


def test_the_days_of_several_archives_are_imported_oldest_first(tmp_path: Path) -> None:
    # A probe gave the newer archive first: its day went in first, and the older day's
    # studies were refused as older than their latest snapshot.
    for archive, day in (("X", "2025-07-07"), ("Y", "2024-06-14")):
        (tmp_path / archive / day).mkdir(parents=True)
        (tmp_path / archive / day / "NCT00000001.json").write_text("{}")
    batches, _ = import_batches([str(tmp_path / "X"), str(tmp_path / "Y")], None)
    assert [day[:10] for day, _ in batches] == ["2024-06-14", "2025-07-07"]


def test_a_path_that_cannot_be_looked_at_is_a_failed_input(tmp_path: Path) -> None:
    # A name too long for the file system ended the whole import (a probe).
    (tmp_path / "ok.json").write_text(json.dumps(real_records()[0]))
    long = str(tmp_path / ("x" * 300 + ".json"))
    items = list(read_studies([str(tmp_path / "ok.json"), long]))
    assert items[0].error is None and len(items) == 2
    assert items[1].error is not None and items[1].error.startswith("cannot read")
    assert import_batches([long], "2024-06-14")[0][0][1] == [long]  # a plain input, then
